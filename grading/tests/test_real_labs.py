"""The real labs graded in the sandbox: the reference solutions, handed in as a submission,
score full points, and the pristine starters score 0 (engine and GPU tests left out, but for
lab 02's engine tests in worker mode, graded in a test of their own: many minutes on two cores,
where vLLM is installed). The rest: about a minute on two cores."""

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
    failing = [(t["name"], t["reason"], t["message"][:200]) for lab in report["labs"]
               for t in lab["tests"] if t["outcome"] not in ("passed", "skipped")]
    assert report["total"] == report["max_total"] and not failing, failing  # structural too
    assert report["flags"] == []


def test_pristine_starters_score_zero_in_the_sandbox(graded):
    report = graded["pristine"]
    assert report["total"] == 0
    reasons = {t["reason"] for lab in report["labs"] for t in lab["tests"]
               if not t["structural"] and t["outcome"] != "skipped"}
    assert reasons == {"not_implemented"}, reasons


def test_grading_runs_in_worker_mode(graded):
    assert graded["solved"]["sandbox"]["workers"] is True


@pytest.mark.parametrize("lab", ["lab-01", "lab-02", "lab-03", "lab-04"])
def test_the_tests_process_imports_no_starter_in_worker_mode(lab, tmp_path, sandbox_limits):
    from grading import tree
    from grading.runner import RunOptions, run_lab
    from labkit import loader

    folder = loader.find_lab(lab)
    ws = tree.make_workspace(REAL_REPO, tmp_path / "ws", sandboxed=False)
    run = run_lab(ws.root, folder, "starter", tmp_path / "run",
                  RunOptions(marker_expr="not gpu and not engine"))
    graded = [t for t in run.tests if t.graded]
    assert graded and not any(t.outcome == "passed" for t in graded)
    assert not [n for n in run.modules if n.startswith("phase11_lab") and n[11:13].isdigit()]


def test_lab_02_with_its_engine_tests_in_worker_mode(tmp_path_factory, sandbox_limits):
    cohort = tmp_path_factory.mktemp("cohort-02")
    for lab in lab_names(REAL_REPO):
        for name, source in (("solved", "solution.py"), ("pristine", "starter.py")):
            (cohort / name / lab).mkdir(parents=True)
            shutil.copyfile(REAL_REPO / LABS_SUBDIR / lab / source,
                            cohort / name / lab / "starter.py")
    out = tmp_path_factory.mktemp("out-02")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRADING_HIDDEN_SEEDS", "1")
        assert grade.main([str(cohort), "--out", str(out), "-m", "not gpu", "--labs",
                           "lab-02"]) == 0
    reports = {p.parent.name: json.loads(p.read_text()) for p in out.glob("*/report.json")}
    assert reports["solved"]["sandbox"]["workers"] is True
    assert reports["solved"]["total"] == reports["solved"]["max_total"]
    assert reports["pristine"]["total"] == 0
