"""Instructor tooling for Phase 11: grade submissions (``grading.grade``), check that the tests
discriminate (``grading.check_starters``, ``grading.check_suite``), and build the student
release (``grading.release``). See GRADING.md."""
