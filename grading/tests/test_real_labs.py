"""The real labs graded in the sandbox: the reference solutions, handed in as a submission,
score full points, and the pristine starters score 0 (engine and GPU tests left out: lab 02's
engine path in the sandbox is measured in GRADING.md). About a minute on two cores."""

from __future__ import annotations

import json
import shutil

import pytest

from grading import grade
from grading.runner import LABS_SUBDIR, lab_names
from grading.tests.fakes import REAL_REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def graded(tmp_path_factory: pytest.TempPathFactory, sandbox_limits) -> dict[str, dict]:
    cohort = tmp_path_factory.mktemp("cohort")
    for lab in lab_names(REAL_REPO):
        for name, source in (("solved", "solution.py"), ("pristine", "starter.py")):
            (cohort / name / lab).mkdir(parents=True)
            shutil.copyfile(REAL_REPO / LABS_SUBDIR / lab / source,
                            cohort / name / lab / "starter.py")
    out = tmp_path_factory.mktemp("out")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRADING_HIDDEN_SEEDS", "1")
        assert grade.main([str(cohort), "--out", str(out), "-m", "not gpu and not engine",
                           "--jobs", "2"]) == 0
    return {p.parent.name: json.loads(p.read_text()) for p in out.glob("*/report.json")}


def test_solutions_score_full_points_in_the_sandbox(graded):
    report = graded["solved"]
    assert report["sandbox"]["kind"] == "bubblewrap"
    assert report["total"] == report["max_total"], [
        (t["name"], t["reason"], t["message"][:200]) for lab in report["labs"]
        for t in lab["tests"] if t["outcome"] not in ("passed", "skipped")]
    assert report["flags"] == []


def test_pristine_starters_score_zero_in_the_sandbox(graded):
    report = graded["pristine"]
    assert report["total"] == 0
    reasons = {t["reason"] for lab in report["labs"] for t in lab["tests"]
               if not t["structural"] and t["outcome"] != "skipped"}
    assert reasons == {"not_implemented"}, reasons
