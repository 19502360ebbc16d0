"""``grading.grade`` on a fake course: five crafted submissions graded in one batch (about a
minute on two cores: every submission runs each lab in its own pytest subprocess)."""

from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from grading import grade
from grading.tests import fakes
from grading.tree import walk

pytestmark = pytest.mark.slow

PER_TEST_TIMEOUT_S = 3  # fakes.WEIGHTS; the rogue's loops must end near this, not the budget


def tree_state(root: Path) -> dict[str, int]:
    return {str(p): (root / p).stat().st_mtime_ns for p in walk(root)} | {
        str(p.relative_to(root)): 0 for p in root.rglob("__pycache__")}


@pytest.fixture(scope="module")
def graded(fake_repo: Path, tmp_path_factory: pytest.TempPathFactory,
           sandbox_or_not: list[str]) -> dict:
    subs = fakes.make_submissions(tmp_path_factory.mktemp("subs"), fake_repo)
    out = tmp_path_factory.mktemp("out")
    before = (tree_state(fake_repo), tree_state(subs))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRADING_HIDDEN_SEEDS", "12345")
        rc = grade.main([str(subs), "--out", str(out), "--repo", str(fake_repo),
                         *sandbox_or_not])
    return {"rc": rc, "out": out, "before": before, "after": (tree_state(fake_repo),
                                                              tree_state(subs)),
            "reports": {p.parent.name: json.loads(p.read_text())
                        for p in out.glob("*/report.json")}}


def lab_tests(report: dict, lab: str) -> dict[str, dict]:
    (found,) = [x for x in report["labs"] if x["lab"] == lab]
    return {t["name"]: t for t in found["tests"]}


def kinds(report: dict) -> set[str]:
    return {f["kind"] for f in report["flags"]}


def test_grading_completes_with_status_zero(graded):
    assert graded["rc"] == 0
    assert sorted(graded["reports"]) == ["broken", "cheat", "pristine", "rogue", "solved"]


def test_pristine_starters_score_zero_with_not_implemented(graded):
    report = graded["reports"]["pristine"]
    assert report["total"] == 0
    graded_tests = [t for lab in report["labs"] for t in lab["tests"]
                    if not t["structural"] and t["outcome"] != "skipped"]
    assert graded_tests and {t["reason"] for t in graded_tests} == {"not_implemented"}
    assert kinds(report) == set()


def test_solutions_score_full_points_without_flags(graded):
    report = graded["reports"]["solved"]
    assert report["total"] == report["max_total"] == 100
    assert report["flags"] == []


def test_skips_are_reported_with_their_reason_and_not_scored(graded):
    lab1 = lab_tests(graded["reports"]["solved"], fakes.LAB1)
    assert (lab1["test_cuda_path"]["outcome"], lab1["test_cuda_path"]["reason"]) == (
        "skipped", "no_gpu")


def test_infinite_loops_end_at_the_per_test_timeout(graded):
    report = graded["reports"]["rogue"]
    lab1, lab2 = lab_tests(report, fakes.LAB1), lab_tests(report, fakes.LAB2)
    assert lab1["test_add_small_ints"]["reason"] == "timeout"
    assert lab1["test_add_small_ints"]["duration_s"] < PER_TEST_TIMEOUT_S + 2
    assert lab1["test_mul_small_ints"]["reason"] == "timeout", "a loop that swallows it"
    assert lab2["test_double_uses_lab01"]["reason"] == "timeout", "a loop deaf to SIGALRM"


def test_killing_the_interpreter_fails_only_that_test(graded):
    lab1 = lab_tests(graded["reports"]["rogue"], fakes.LAB1)
    assert (lab1["test_neg_flips_sign"]["outcome"], lab1["test_neg_flips_sign"]["reason"]) == (
        "failed", "crashed")
    assert lab1["test_total_of_a_seeded_draw"]["outcome"] == "passed", "garbage output is fine"
    assert lab1["test_public_names_exist"]["outcome"] == "passed", "the run resumed after it"


def test_import_failures_fail_each_test_with_import_error(graded):
    report = graded["reports"]["broken"]
    for lab in (fakes.LAB1, fakes.LAB2):
        reasons = {t["reason"] for t in lab_tests(report, lab).values()
                   if t["outcome"] != "skipped"}
        assert reasons == {"import_error"}, lab
    assert "syntax error" in lab_tests(report, fakes.LAB2)["test_double_uses_lab01"]["message"]


def test_reading_the_solution_is_flagged(graded):
    """By the static scan (the path is named). At run time the cheat's worker opens the host
    path of the reference, which its sandbox does not show; a worker that opens the decoys
    standing at the paths the sandbox does show is flagged (``test_hostile.py``)."""
    flags = [f["detail"] for f in graded["reports"]["cheat"]["flags"]
             if f["kind"] == "reads_solution"]
    assert any(d.startswith("starter.py:") for d in flags), flags


def test_monkeypatching_and_editing_tests_are_flagged(graded, sandbox_or_not):
    report = graded["reports"]["cheat"]
    details = [f["detail"] for f in report["flags"] if f["kind"] == "tampers_tests"]
    assert any("assigns numpy.allclose" in d for d in details), details
    assert any("names a test file: 'test_lab.py'" in d for d in details), details
    # the worker finds the test files: unsandboxed its edit lands and the fingerprint sees
    # it; sandboxed the tree is read-only, and the write fails the cheat's own test
    if sandbox_or_not:
        assert any("test_lab.py" in d and "changed" in d for d in details), details
    else:
        assert lab_tests(report, fakes.LAB2)["test_double_uses_lab01"]["outcome"] == "failed"


def test_an_answer_hard_coded_to_the_visible_seed_fails_the_hidden_one(graded):
    report = graded["reports"]["cheat"]
    assert lab_tests(report, fakes.LAB1)["test_total_of_a_seeded_draw"]["outcome"] == "passed"
    hidden = [f for f in report["flags"] if f["kind"] == "fails_hidden_seed"]
    assert [(f["lab"], f["detail"]) for f in hidden] == [
        (fakes.LAB1, "passes the visible seed but fails under a hidden seed")], hidden
    assert "12345" not in json.dumps(report), "a report never shows a hidden seed"


def test_batch_summary_has_one_row_per_submission(graded):
    with open(graded["out"] / "summary.csv", encoding="utf-8") as f:
        rows = {r["submission"]: r for r in csv.DictReader(f)}
    assert sorted(rows) == sorted(graded["reports"])
    assert rows["solved"]["total"] == "100.0" and rows["pristine"]["total"] == "0.0"
    assert "reads_solution" in rows["cheat"]["flags"]
    assert (graded["out"] / "summary.md").read_text().count("\n| ") == len(rows) + 1


def test_every_report_format_is_written_and_parses(graded):
    for name, report in graded["reports"].items():
        folder = graded["out"] / name
        suites = ET.parse(folder / "junit.xml").getroot()  # garbage output must not break XML
        assert [s.get("name") for s in suites] == [fakes.LAB1, fakes.LAB2]
        assert (folder / "report.md").read_text().startswith(f"# Grade: {name}")
        assert set(report["environment"]) >= {"python", "numpy", "torch", "vllm", "cuda_device"}
        assert (folder / "logs" / f"{fakes.LAB1}.log").is_file()


def test_grading_writes_nothing_in_the_repository_or_the_submissions(graded):
    assert graded["after"] == graded["before"]


def test_reports_inside_the_repository_are_refused(fake_repo, tmp_path):
    sub = fakes.make_submission(tmp_path / "s", fakes.LAB1_STARTER, None)
    with pytest.raises(SystemExit, match="--out: must lie outside"):
        grade.main([str(sub), "--repo", str(fake_repo), "--out", str(fake_repo / "reports")])
