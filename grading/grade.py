"""Grade one submission, or a folder of them, against the labs' tests.

    python -m grading.grade SUBMISSION [--out DIR] [-m EXPR] [--labs lab-01 ...]

SUBMISSION is a folder laid out like ``labs/`` (``<lab-folder>/starter.py``; missing labs
score 0) or a folder of such folders, one per student. Each submission is copied to a temp
dir and tested in a workspace copy of the harness without any ``solution.py``; each lab runs in
its own subprocess with a per-test timeout (``grading/weights.toml``). Reports go to ``--out``
(default: a fresh temp dir, printed at the end): ``<name>/report.{md,json}``,
``<name>/junit.xml``, ``<name>/logs/``, and for a folder of submissions ``summary.{csv,md}``.
See GRADING.md for the flags and the scoring rule.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import traceback
from pathlib import Path

from grading import honesty, report, tree
from grading.config import WEIGHTS_REL, ConfigError, LabConfig, hidden_seeds, load_weights
from grading.runner import TOOLING_ROOT, LabRun, RunOptions, lab_names, run_lab

DEFAULT_MARKERS = "not gpu"


def find_submissions(path: Path, labs: list[str]) -> tuple[list[Path], bool]:
    """(submissions, is_batch): ``path`` itself when it holds any lab folder, else its
    sub-folders (each graded, even an empty one: a wrong layout should show up as 0 points)."""
    if any((path / lab).is_dir() for lab in labs):
        return [path], False
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")), True


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "submission"


def stage(submission: Path, labs: list[str], dst: Path) -> Path:
    """Copy only the graded files, so nothing the tests do can touch the student's folder."""
    for lab in labs:
        src = submission / lab / "starter.py"
        if src.is_file():
            (dst / lab).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst / lab / "starter.py")
    return dst


def score(run: LabRun, cfg: LabConfig) -> dict:
    graded = [t for t in run.tests if t.graded]
    passed = sum(t.outcome == "passed" for t in graded)
    points = cfg.points * passed / len(graded) if graded else 0.0
    return {"lab": run.lab, "points": points, "max_points": cfg.points, "passed": passed,
            "graded": len(graded), "problems": run.problems, "wall_s": round(run.wall_s, 2),
            "tests": [{k: v for k, v in vars(t).items()} for t in run.tests]}


def hidden_seed_flags(workspace: Path, lab: str, impl: str, visible: LabRun, seeds: list[int],
                      opts: RunOptions, workdir: Path) -> list[dict]:
    """Re-run the randomized tests that passed with the visible seed under each hidden seed."""
    passed = {t.nodeid for t in visible.tests if t.randomized and t.outcome == "passed"}
    if not passed:
        return []
    failing: dict[str, list[int]] = {}
    for i, seed in enumerate(seeds, start=1):
        hidden = run_lab(workspace, lab, impl, workdir / f"hidden-{i}",
                         RunOptions(**{**vars(opts), "seed": seed, "only_randomized": True}))
        for t in hidden.tests:
            if t.nodeid in passed and t.outcome not in ("passed", "skipped"):
                failing.setdefault(t.name, []).append(i)
    return [{"kind": "fails_hidden_seed", "lab": lab,
             "detail": f"{name} passes the visible seed but fails hidden seed "
                       f"{', '.join(f'#{i}' for i in which)} of {len(seeds)}"}
            for name, which in sorted(failing.items())]


def grade_lab(workspace: Path, lab: str, impl: str, cfg: LabConfig, seeds: list[int],
              opts: RunOptions, workdir: Path, logs: Path) -> tuple[dict, list[dict]]:
    opts = RunOptions(**{**vars(opts), "timeout_s": cfg.timeout_s, "budget_s": cfg.lab_budget_s})
    before = tree.fingerprint(workspace)
    run = run_lab(workspace, lab, impl, workdir / lab, opts)
    flags = [{**f, "lab": lab} for f in run.flags]
    edited = sorted(p for p, h in tree.fingerprint(workspace).items() if before.get(p) != h)
    if edited:
        flags.append({"kind": "tampers_tests", "lab": lab,
                      "detail": f"files of the test tree changed during the run: {edited}"})
    else:
        flags += hidden_seed_flags(workspace, lab, impl, run, seeds, opts, workdir / lab)
    shutil.copyfile(run.log, logs / f"{lab}.log")
    return score(run, cfg), flags


def grade_submission(submission: Path, repo: Path, labs: list[str],
                     weights: dict[str, LabConfig], seeds: list[int], opts: RunOptions,
                     env: dict, out: Path) -> dict:
    """Grade one submission; every failure of the grader itself lands in ``errors``."""
    grade = {"submission": submission.name, "path": str(submission), "total": 0.0,
             "max_total": sum(weights[lab].points for lab in labs), "marker_expr":
             opts.marker_expr, "hidden_seeds": len(seeds), "environment": env,
             "flags": [], "errors": [], "labs": []}
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="phase11-grade-") as tmp:
        tmp = Path(tmp)
        staged = stage(submission, labs, tmp / "submission")
        for lab in labs:
            grade["flags"] += [{**f, "lab": lab} for f in honesty.scan_file(
                staged / lab / "starter.py") if (staged / lab / "starter.py").is_file()]
            workspace = tree.make_workspace(repo, tmp / f"workspace-{lab}")
            try:
                lab_grade, flags = grade_lab(workspace, lab, str(staged), weights[lab], seeds,
                                             opts, tmp / "runs", logs)
            except Exception:  # noqa: BLE001 - the grader reports its own bugs, never dies
                grade["errors"].append(f"{lab}: grader error: {traceback.format_exc(limit=3)}")
                lab_grade, flags = {"lab": lab, "points": 0.0, "max_points": weights[lab].points,
                                    "passed": 0, "graded": 0, "problems": [], "tests": []}, []
            grade["labs"].append(lab_grade)
            grade["flags"] += flags
    grade["total"] = sum(lab["points"] for lab in grade["labs"])
    if not seeds:
        grade["errors"].append("no hidden seeds configured: the hidden-seed check did not run")
    return grade


def check_out(out: Path, forbidden: list[Path]) -> None:
    for root in forbidden:
        if out.resolve().is_relative_to(root.resolve()):
            raise SystemExit(f"--out: must lie outside {root}, got {out}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grading.grade", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("submission", type=Path, help="a submission folder, or a folder of them")
    parser.add_argument("--out", type=Path, help="report folder (default: a new temp dir)")
    parser.add_argument("-m", dest="marker_expr", default=DEFAULT_MARKERS,
                        help=f"pytest marker expression (default: {DEFAULT_MARKERS!r})")
    parser.add_argument("--labs", nargs="*", help="only these labs (folder names or lab-0N)")
    parser.add_argument("--repo", type=Path, default=TOOLING_ROOT,
                        help="the course repository whose tests grade (default: this one)")
    parser.add_argument("--weights", type=Path,
                        help="points and time limits (default: <repo>/grading/weights.toml)")
    args = parser.parse_args(argv)

    if not args.submission.is_dir():
        parser.error(f"SUBMISSION: expected a folder, got {args.submission}")
    all_labs = lab_names(args.repo)
    labs = [lab for lab in all_labs if not args.labs
            or any(lab == x or lab.startswith(x + "-") for x in args.labs)]
    if not labs:
        parser.error(f"--labs: expected some of {all_labs}, got {args.labs}")
    try:
        weights = load_weights(all_labs, args.weights or args.repo / WEIGHTS_REL)
        seeds = hidden_seeds()
    except ConfigError as err:
        parser.error(str(err))
    out = args.out or Path(tempfile.mkdtemp(prefix="phase11-reports-"))
    check_out(out, [args.repo, args.submission])
    submissions, batch = find_submissions(args.submission.resolve(), labs)
    if not submissions:
        parser.error(f"SUBMISSION: no sub-folders to grade in {args.submission}")

    opts = RunOptions(marker_expr=args.marker_expr, guard=True)
    env = report.environment(opts.python)
    grades = []
    for sub in submissions:
        folder = out / slug(sub.name) if batch else out
        print(f"grading {sub.name} ...", flush=True)
        grade = grade_submission(sub, args.repo, labs, weights, seeds, opts, env, folder)
        report.write_reports(grade, folder)
        grades.append(grade)
        kinds = sorted({f["kind"] for f in grade["flags"]})
        print(f"  {report.fmt_points(grade['total'])} / {report.fmt_points(grade['max_total'])}"
              f"{'  flags: ' + ', '.join(kinds) if kinds else ''}", flush=True)
    if batch:
        report.write_summary(grades, out)
    print(f"reports: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
