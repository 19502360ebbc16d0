"""Grade one submission, or a folder of them, against the labs' tests.

    python -m grading.grade SUBMISSION [--out DIR] [-m EXPR] [--labs lab-01 ...]
                            [--jobs N] [--shard I/N] [--no-sandbox]
    python -m grading.grade merge OUT [SHARD_OUT ...]

SUBMISSION is a folder laid out like ``labs/`` (``<lab-folder>/starter.py``; missing labs
score 0) or a folder of such folders, one per student. Each submission is copied to a temp
dir and tested in a workspace copy of the harness without any ``solution.py``; each lab runs in
its own pytest subprocess inside a sandbox (``grading.sandbox``: bubblewrap, no repository, no
keys, no network, its own PID namespace, bounded time, memory and processes) with a per-test
timeout (``grading/weights.toml``). The submission's code runs only in worker processes, each
in a sandbox of its own (``labkit.isolate``; the tests' process imports none of it): a
``--repo`` whose ``labkit`` has no workers is refused. Without a working ``bwrap`` the command
refuses;
``--no-sandbox`` grades anyway and every report says UNSANDBOXED.

Reports go to ``--out`` (default: a fresh temp dir, printed at the end): ``<name>/report.{md,
json}``, ``<name>/junit.xml``, ``<name>/logs/``, and for a folder of submissions
``summary.{csv,md}``. ``--jobs N`` grades N submissions at a time (same summary as one at a
time). ``--shard I/N`` grades the I-th of N slices (round-robin over the sorted names, I from
0) and writes its reports and a ``shard-I-of-N.json`` instead of the summary; ``merge`` builds
the summary from all N shards' reports. See GRADING.md for the flags and the scoring rule.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import multiprocessing
import os
import re
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from grading import config, escape, honesty, report, safe, sandbox, schema, tree
from grading.config import WEIGHTS_REL, ConfigError, LabConfig, hidden_seeds, load_weights
from grading.report import slug
from grading.runner import TOOLING_ROOT, LabRun, RunOptions, lab_names, run_lab

DEFAULT_MARKERS = "not gpu"
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
SHARD = re.compile(r"^(\d+)/(\d+)$")
LOADS = {"lab-02": ("lab-01", "lab-03", "lab-04")}  # lab 02's tests call these labs' starters
STARTER_LIMIT = 4 << 20  # a starter.py larger than this is refused
LOG_COPY_LIMIT = 8 << 20  # the copy of a run's console log in logs/
UNSAFE = "unsafe_submission"
HIDDEN_WORDING = "fails under a hidden seed"
# a hidden run's own flags and problems: only which kinds it raised, and that it had problems
HIDDEN_FLAG_WORDING = ("raised under a hidden seed (a hidden run reports only the kinds of its "
                       "flags: no order, count, test or detail)")
HIDDEN_PROBLEMS = ("the hidden-seed runs reported problems; they are not shown (a hidden run "
                   "reports nothing the submission chose): re-run with GRADING_HIDDEN_SEEDS to "
                   "see them")
# Where the sandbox sees the workspace and the staged submission: neutral paths, so that its
# /proc/self/mountinfo and /proc/1/cmdline name no host folder of the grader's temp files
INSIDE_WORKSPACE = Path("/grading/workspace")
INSIDE_SUBMISSION = Path("/grading/submission")


def inside_binds(workspace: tree.Workspace, impl: str) -> list[tuple[str, str]]:
    """The read-only binds of a sandboxed run: the workspace at ``INSIDE_WORKSPACE``, the
    staged submission at ``INSIDE_SUBMISSION``, each large file bound over its placeholder."""
    binds = [(str(workspace.root), str(INSIDE_WORKSPACE)), (impl, str(INSIDE_SUBMISSION))]
    for src, dst in workspace.binds:
        binds.append((src, str(INSIDE_WORKSPACE / Path(dst).relative_to(workspace.root))))
    return binds


def find_submissions(path: Path, labs: list[str]) -> tuple[list[Path], bool]:
    """(submissions, is_batch): ``path`` itself when it holds any lab folder, else its
    sub-folders (each graded, even an empty one: a wrong layout should show up as 0 points)."""
    if any((path / lab).is_dir() for lab in labs):
        return [path], False
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")), True


def parse_shard(text: str) -> tuple[int, int]:
    """``"3/10"`` -> (3, 10): the fourth of ten slices (0 <= I < N)."""
    match = SHARD.match(text.strip())
    if not match or not 0 <= int(match[1]) < int(match[2]):
        raise argparse.ArgumentTypeError(f"expected I/N with 0 <= I < N (e.g. 0/4), got {text!r}")
    return int(match[1]), int(match[2])


def shard_of(submissions: list[Path], index: int, count: int) -> list[Path]:
    """Round-robin over the sorted names: deterministic, and even when names cluster."""
    return sorted(submissions, key=lambda p: p.name)[index::count]


def _matches(lab: str, prefix: str) -> bool:
    return lab == prefix or lab.startswith(prefix + "-")


def staged_labs(graded: list[str], every: list[str]) -> list[str]:
    """The labs whose starter is staged: the graded ones, and those a graded lab's tests load
    (``LOADS``: lab 02 calls 01, 03 and 04); in ``every``'s order."""
    wanted = set(graded)
    for lab in graded:
        for prefix, loads in LOADS.items():
            if _matches(lab, prefix):
                wanted |= {x for x in every if any(_matches(x, d) for d in loads)}
    return [x for x in every if x in wanted]


def unsafe_flag(lab: str, what: str) -> dict:
    return {"kind": UNSAFE, "lab": lab, "detail": f"{escape.terminal(what, 300)}; not staged: "
                                                  f"it scores as missing"}


def stage(submission: Path, labs: list[str], dst: Path) -> tuple[Path, list[dict]]:
    """Copy only the starters of ``labs``, so nothing the tests do can touch the student's
    folder; each must be a plain file (not a symlink, a hard link, a FIFO, a socket or a
    device, in a plain folder). A refused one is not staged (it scores as missing) and raises
    an ``unsafe_submission`` flag. Never follows a link, never blocks."""
    dst.mkdir(parents=True, exist_ok=True)
    flags = []
    for lab in labs:
        rel = Path(lab) / "starter.py"
        found = safe.what_is(submission / lab)
        if found == "missing" or safe.what_is(submission / rel) == "missing":
            continue
        if found != "a folder":
            flags.append(unsafe_flag(lab, f"{lab} is {found}"))
            continue
        (dst / lab).mkdir(parents=True, exist_ok=True)
        try:
            data, cut = safe.read_bytes(submission / rel, STARTER_LIMIT, root=submission,
                                        single_link=True)
        except safe.Unsafe as err:
            flags.append(unsafe_flag(lab, f"{rel}: {str(err).rpartition(': ')[2]}"))
            continue
        except OSError as err:
            flags.append(unsafe_flag(lab, f"{rel}: cannot be read ({err.strerror})"))
            continue
        if cut:
            flags.append(unsafe_flag(lab, f"{rel}: larger than {STARTER_LIMIT >> 20} MiB"))
            continue
        (dst / rel).write_bytes(data)
    return dst, flags


def score(run: LabRun, cfg: LabConfig) -> dict:
    """The lab's grade from a run that ``schema.check_run`` has checked."""
    graded = [t for t in run.tests if t.graded]
    passed = sum(t.outcome == "passed" for t in graded)
    points = cfg.points * passed / len(graded) if graded else 0.0
    return {"lab": run.lab, "points": points, "max_points": cfg.points, "passed": passed,
            "graded": len(graded), "problems": run.problems, "wall_s": round(run.wall_s, 2),
            "sandbox": run.sandbox, "tests": [{k: v for k, v in vars(t).items()}
                                              for t in run.tests]}


# --- what every submission shares ------------------------------------------------------------


@dataclass(frozen=True)
class LabSandbox:
    """A lab's share of the sandbox: host variables passed in, and the paths they name."""

    env: dict[str, str] = field(default_factory=dict)
    readonly: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class Job:
    """Everything grading one submission needs besides the submission (sent to workers)."""

    repo: Path
    labs: list[str]  # graded
    weights: dict[str, LabConfig]
    seeds: list[int]
    opts: RunOptions
    env: dict
    box: sandbox.Sandbox | None = None  # None: --no-sandbox
    decoys: list[str] = field(default_factory=list)
    lab_sandboxes: dict[str, LabSandbox] = field(default_factory=dict)
    staged: list[str] = field(default_factory=list)  # staged_labs(): lab 02 calls 01, 03, 04
    threads_env: dict[str, str] = field(default_factory=dict)  # --jobs N: cores / N each
    submission_budget_s: float | None = None  # every lab of one submission together
    run_lab: Callable[..., LabRun] = run_lab  # where run data enters (tests pass a fake)

    def sandbox_report(self) -> dict:
        mode = {"workers": True}  # the one mode: student code only in workers
        if self.box is None:
            return {"kind": None, **mode, "note": "UNSANDBOXED (--no-sandbox): the submission "
                                                  "ran with the grader's rights, files and "
                                                  "network"}
        return {**self.box.describe(), **mode, "limits": {
            lab: {"memory_mib": self.weights[lab].memory_mib,
                  "max_pids": self.weights[lab].max_pids} for lab in self.labs}}


def lab_sandbox(cfg: LabConfig, hidden: list[Path], environ: dict[str, str]) -> LabSandbox:
    """The host variables ``cfg.env`` lets through, and a read-only bind for each one that
    names an existing path; a path that would expose a course repository is refused."""
    env = {k: v for k, v in sorted(environ.items())
           if any(fnmatch.fnmatchcase(k, pattern) for pattern in cfg.env)}
    readonly = []
    for name, value in env.items():
        if not os.path.isabs(value) or not os.path.exists(value):
            continue
        if not sandbox.not_hidden(Path(value), hidden):
            raise ConfigError(f"{name}={value}: would bind a course repository (or its grading/"
                              f" folder) into the sandbox; point it at the files it needs")
        readonly.append((os.path.realpath(value), value))
    return LabSandbox(env, readonly)


def hidden_seed_flags(workspace: Path, lab: str, impl: str, visible: LabRun, seeds: list[int],
                      opts: RunOptions, workdir: Path, run=run_lab,
                      deadline: float | None = None) -> tuple[list[dict], list[str], int]:
    """(flags, problems, unarmed): re-run the randomized tests that passed with the visible seed
    under each hidden seed. A failure is one ``fails_hidden_seed`` flag for the lab, worded
    ``HIDDEN_WORDING``: never which test or which seed (per-test, per-seed results would let
    a submission encode the seeds and read them back); ``count`` (for the instructor's
    report.json) is how many (test, seed) runs failed.

    Nothing else a hidden run reports carries anything the submission chose: its flags come
    back as the set of their kinds (one flag per kind, sorted, worded ``HIDDEN_FLAG_WORDING``:
    no order, no count, no detail, no test), and its problems as one line saying how many
    there were (``HIDDEN_PROBLEMS``). ``unarmed``: how many of the hidden runs' sandboxes had
    a tripwire that could not be armed (``grade_lab`` withholds the grade)."""
    passed = {t.nodeid for t in visible.tests if t.randomized and t.outcome == "passed"}
    if not passed:
        return [], [], 0
    failures, kinds, problems, unarmed, reported = 0, set(), [], 0, 0
    for i, seed in enumerate(seeds, start=1):
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            problems.append("the hidden-seed check stopped: the submission's budget ran out")
            break
        budget = opts.budget_s if left is None else min(opts.budget_s, left)
        checked = schema.check_run(run(workspace, lab, impl, workdir / f"{lab}-hidden-{i}",
                                       RunOptions(**{**vars(opts), "seed": seed,
                                                     "only_randomized": True,
                                                     "budget_s": budget})), lab)
        hidden = checked.run
        reported += len(hidden.problems)
        unarmed += hidden.sandbox.get(sandbox.UNARMED, 0)
        kinds |= {f["kind"] for f in hidden.flags}
        failures += sum(t.nodeid in passed and t.outcome not in ("passed", "skipped")
                        for t in hidden.tests)
    if reported:
        problems.append(HIDDEN_PROBLEMS)
    flags = [{"kind": kind, "lab": lab, "detail": HIDDEN_FLAG_WORDING} for kind in sorted(kinds)]
    if failures:
        flags.insert(0, {"kind": "fails_hidden_seed", "lab": lab, "count": failures,
                         "detail": f"passes the visible seed but {HIDDEN_WORDING}"})
    return flags, problems, unarmed


def copy_log(run: LabRun, root: Path, dst: Path) -> list[str]:
    """Copy a run's console log (a file the sandbox could reach) into the reports: kept raw,
    read as ``grading.safe`` reads; problems of the submission when refused."""
    if not run.log:
        return []
    try:
        if safe.copy(Path(run.log), dst, LOG_COPY_LIMIT, root=root):
            return [f"the console log was cut at {LOG_COPY_LIMIT >> 20} MiB"]
    except safe.Unsafe as err:
        return [str(err)]
    except FileNotFoundError:
        return []
    return []


def grade_lab(job: Job, lab: str, impl: str, workspace: tree.Workspace, workdir: Path,
              logs: Path, deadline: float | None = None) -> tuple[dict, list[dict]]:
    cfg = job.weights[lab]
    box, root, where = None, workspace.root, impl
    if job.box is not None:  # the workspace, then the large files bound over its placeholders
        extra = job.lab_sandboxes.get(lab, LabSandbox())
        readonly = [*inside_binds(workspace, impl), *extra.readonly]
        box = job.box.for_lab(sandbox.Limits(cfg.memory_bytes, cfg.max_pids), readonly,
                              {**job.threads_env, **extra.env}, job.decoys)
        root, where = INSIDE_WORKSPACE, str(INSIDE_SUBMISSION)  # what the run sees
    budget = cfg.lab_budget_s
    if deadline is not None:
        budget = min(budget, max(deadline - time.monotonic(), 1.0))
    opts = RunOptions(**{**vars(job.opts), "timeout_s": cfg.timeout_s,
                         "budget_s": budget, "sandbox": box})
    before = tree.fingerprint(workspace.root)
    run = schema.check_run(job.run_lab(root, lab, where, workdir / lab, opts), lab).run
    edited = sorted(p for p, h in tree.fingerprint(workspace.root).items()
                    if before.get(p) != h)
    hidden, problems, unarmed = [], [], 0
    if not edited:
        hidden, problems, unarmed = hidden_seed_flags(root, lab, where, run, job.seeds, opts,
                                                      workdir, job.run_lab, deadline)
    if unarmed:
        run.sandbox[sandbox.UNARMED] = run.sandbox.get(sandbox.UNARMED, 0) + unarmed
    flags = [{**f, "lab": lab} for f in run.flags] + hidden
    if edited:
        flags.append({"kind": "tampers_tests", "lab": lab,
                      "detail": f"files of the test tree changed during the run: {edited}"})
    run.problems += problems + copy_log(run, workdir.parent, logs / f"{lab}.log")
    return score(run, cfg), flags


def empty_lab(lab: str, cfg: LabConfig, problem: str, status: str) -> dict:
    """The grade of a lab that did not run (``status``: ``timeout``, ``error``)."""
    return {"lab": lab, "points": 0.0, "max_points": cfg.points, "passed": 0, "graded": 0,
            "problems": [problem], "wall_s": 0.0, "sandbox": {}, "tests": [], "status": status}


def grade_submission(job: Job, submission: Path, out: Path) -> dict:
    """Grade one submission; every failure of the grader itself lands in ``errors``, and never
    takes away what was already computed: a grader error after some labs ran keeps their
    grades and flags (the labs not reached score 0 as ``error``), and removing the run's temp
    folder (whatever the submission left in it: ``safe.remove_tree``) cannot fail the grade."""
    labs, weights = job.labs, job.weights
    grade = {"submission": submission.name, "path": str(submission), "total": 0.0,
             "max_total": sum(weights[lab].points for lab in labs), "marker_expr":
             job.opts.marker_expr, "hidden_seeds": len(job.seeds), "sandbox":
             job.sandbox_report(), "environment": job.env, "flags": [], "errors": [],
             "labs": []}
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    budget = job.submission_budget_s
    deadline = None if budget is None else time.monotonic() + budget
    tmp = Path(tempfile.mkdtemp(prefix="phase11-grade-"))
    try:
        _grade_labs(job, submission, grade, tmp, logs, deadline)
    except Exception:  # noqa: BLE001 - the grader reports its own bugs and keeps what it has
        grade["errors"].append(f"grader error: {traceback.format_exc(limit=3)}")
        graded = {lab["lab"] for lab in grade["labs"]}
        grade["labs"] += [empty_lab(lab, weights[lab], "grader error", "error")
                          for lab in labs if lab not in graded]
    finally:
        try:
            safe.remove_tree(tmp)
        except Exception as err:  # noqa: BLE001 - the grade stands; the leftover is reported
            grade["errors"].append(f"grader error: the run's temp folder {tmp} could not be "
                                   f"removed ({type(err).__name__}: {err})")
    grade["total"] = sum(lab["points"] for lab in grade["labs"])
    withheld = [lab["lab"] for lab in grade["labs"] if lab.get("sandbox", {}).get(
        sandbox.UNARMED)]
    if withheld:
        grade["withheld"] = (f"the decoys' tripwire could not be armed in {', '.join(withheld)}"
                             f": what the submission opened there was not watched. Regrade it")
    if not job.seeds:
        grade["errors"].append("no hidden seeds configured: the hidden-seed check did not run")
    return grade


def _grade_labs(job: Job, submission: Path, grade: dict, tmp: Path, logs: Path,
                deadline: float | None) -> None:
    """Stage the submission in ``tmp`` and grade each lab into ``grade`` (in place, so that what
    ran is kept when something fails later)."""
    labs, weights, budget = job.labs, job.weights, job.submission_budget_s
    staged, grade["flags"] = stage(submission, job.staged or labs, tmp / "submission")
    for lab in labs:
        grade["flags"] += [{**f, "lab": lab} for f in honesty.scan_file(
            staged / lab / "starter.py") if (staged / lab / "starter.py").is_file()]
        if deadline is not None and time.monotonic() >= deadline:
            grade["labs"].append(empty_lab(lab, weights[lab], (
                f"not run: the submission's {budget:g} s budget (submission_budget_s) ran "
                f"out"), "timeout"))
            continue
        try:
            workspace = tree.make_workspace(job.repo, tmp / f"workspace-{lab}",
                                            sandboxed=job.box is not None)
            lab_grade, flags = grade_lab(job, lab, str(staged), workspace, tmp / "runs",
                                         logs, deadline)
        except Exception:  # noqa: BLE001 - the grader reports its own bugs, never dies
            grade["errors"].append(f"{lab}: grader error: {traceback.format_exc(limit=3)}")
            lab_grade, flags = empty_lab(lab, weights[lab], "grader error", "error"), []
        grade["labs"].append(lab_grade)
        grade["flags"] += flags


def failed_grade(job: Job, submission: Path, error: str) -> dict:
    """The grade of a submission the grader could not grade: 0, and why (never a crash of the
    batch)."""
    return {"submission": submission.name, "path": str(submission), "total": 0.0,
            "max_total": sum(job.weights[lab].points for lab in job.labs),
            "marker_expr": job.opts.marker_expr, "hidden_seeds": len(job.seeds),
            "sandbox": job.sandbox_report(), "environment": job.env, "flags": [],
            "errors": [error], "labs": [empty_lab(lab, job.weights[lab], "grader error", "error")
                                        for lab in job.labs]}


def grade_and_report(job: Job, submission: Path, folder: Path) -> dict:
    """Grade and write the reports; one submission never stops the batch. A grader error while
    writing keeps the computed grade and its flags, with the error added as a problem."""
    try:
        grade = grade_submission(job, submission, folder)
    except Exception:  # noqa: BLE001 - before anything was graded
        grade = failed_grade(job, submission, f"grader error: {traceback.format_exc(limit=3)}")
    try:
        report.write_reports(grade, folder)
    except Exception:  # noqa: BLE001 - the grade stands; the error is reported with it
        grade["errors"].append(f"grader error while writing the reports: "
                               f"{traceback.format_exc(limit=3)}")
        report.write_reports(grade, folder, json_only=True)
    return grade


def threads_per_job(jobs: int, environ: dict[str, str]) -> dict[str, str]:
    """With ``jobs`` > 1, each run's BLAS and OpenMP threads: the cores shared out, unless the
    environment says otherwise (numpy's thread pools, oversubscribed, spin against each other:
    two jobs on two cores were slower than one)."""
    if jobs <= 1:
        return {}
    share = str(max(1, len(os.sched_getaffinity(0)) // jobs))
    return {name: share for name in THREAD_VARS if name not in environ}


def _start_worker(threads_env: dict[str, str]) -> None:
    os.environ.update(threads_env)  # unsandboxed runs inherit the worker's environment


def grade_all(job: Job, targets: list[tuple[Path, Path]], jobs: int) -> list[dict]:
    """Grade ``(submission, report folder)`` pairs, ``jobs`` at a time; grades in input order."""
    grades: list[dict | None] = [None] * len(targets)

    def done(i: int, grade: dict) -> None:
        grades[i] = grade
        kinds = sorted({escape.terminal(f["kind"], 40) for f in grade["flags"]})
        print(f"{escape.terminal(grade['submission'], 100)}: {report.total_text(grade)}"
              f"{'  flags: ' + ', '.join(kinds) if kinds else ''}", flush=True)

    if jobs <= 1 or len(targets) <= 1:
        for i, (sub, folder) in enumerate(targets):
            print(f"grading {escape.terminal(sub.name, 100)} ...", flush=True)
            done(i, grade_and_report(job, sub, folder))
    else:
        spawn = multiprocessing.get_context("spawn")  # no forked copies of the grader's state
        with ProcessPoolExecutor(max_workers=jobs, mp_context=spawn, initializer=_start_worker,
                                 initargs=(job.threads_env,)) as pool:
            futures = {pool.submit(grade_and_report, job, sub, folder): i
                       for i, (sub, folder) in enumerate(targets)}
            for future in as_completed(futures):
                i = futures[future]
                try:
                    grade = future.result()
                except Exception as err:  # noqa: BLE001 - a worker that died: that one is 0
                    grade = failed_grade(job, targets[i][0], f"grader error: {err!r}")
                    report.write_reports(grade, targets[i][1])
                done(i, grade)
    return [g for g in grades if g is not None]


def check_out(out: Path, forbidden: list[Path]) -> None:
    for root in forbidden:
        if out.resolve().is_relative_to(root.resolve()):
            raise SystemExit(f"--out: must lie outside {root}, got {out}")


def make_sandbox(repo: Path, python: str, labs: list[str], weights: dict[str, LabConfig]
                 ) -> tuple[sandbox.Sandbox, list[str], dict[str, LabSandbox]]:
    """The probed sandbox, the decoy paths (every secret file of every course repository the
    run could find: ``--repo``, the grader's own, the one the venv lives in) and each lab's
    pass-through; raises ``SandboxUnavailable``/``ConfigError``."""
    found = tree.course_repos(sandbox.python_paths(python, []))  # a venv inside a repository
    hidden = list(dict.fromkeys([repo.resolve(), TOOLING_ROOT, *found]))
    box = sandbox.probe(python, hidden)
    decoys = [str(f) for r in hidden for f in tree.secret_files(r)]
    lab_sandboxes = {lab: lab_sandbox(weights[lab], hidden, dict(os.environ)) for lab in labs}
    return box, decoys, lab_sandboxes


def check_workers(repo: Path) -> None:
    """The grader's one mode: student code only in workers, which the graded repository's
    ``labkit`` starts (``LAB_ISOLATE=1``); a ``labkit`` without them is a ``ConfigError``."""
    missing = [f"labkit/{name}.py" for name in ("isolate", "worker")
               if not (repo / "labkit" / f"{name}.py").is_file()]
    if missing:
        raise ConfigError(f"--repo {repo}: its labkit cannot run student code in workers "
                          f"(missing {', '.join(missing)}); the grader has no other mode")


def write_shard(out: Path, index: int, count: int, graded: list[Path], everyone: list[Path],
                labs: list[str]) -> Path:
    path = out / f"shard-{index}-of-{count}.json"
    path.write_text(json.dumps({"shard": index, "shards": count, "labs": labs,
                                "submissions": [p.name for p in graded],
                                "all": sorted(p.name for p in everyone)}, indent=2) + "\n",
                    encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["merge"]:
        from grading import merge

        return merge.main(argv[1:])
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
                        help="points and limits (default: <repo>/grading/weights.toml)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="submissions graded at a time (default 1)")
    parser.add_argument("--shard", type=parse_shard,
                        help="I/N: grade only the I-th of N slices (I from 0)")
    parser.add_argument("--no-sandbox", action="store_true",
                        help="grade without the sandbox (reports say UNSANDBOXED)")
    args = parser.parse_args(argv)

    if not args.submission.is_dir():
        parser.error(f"SUBMISSION: expected a folder, got {args.submission}")
    if args.jobs < 1:
        parser.error(f"--jobs: expected a positive number, got {args.jobs}")
    shard = args.shard
    all_labs = lab_names(args.repo)
    labs = [lab for lab in all_labs if not args.labs
            or any(lab == x or lab.startswith(x + "-") for x in args.labs)]
    if not labs:
        parser.error(f"--labs: expected some of {all_labs}, got {args.labs}")
    try:
        check_workers(args.repo)
        weights = load_weights(all_labs, args.weights or args.repo / WEIGHTS_REL)
        budget = config.submission_budget(args.weights or args.repo / WEIGHTS_REL)
        seeds = hidden_seeds()
    except ConfigError as err:
        parser.error(str(err))
    out = args.out or Path(tempfile.mkdtemp(prefix="phase11-reports-"))
    check_out(out, [args.repo, args.submission])
    submissions, batch = find_submissions(args.submission.resolve(), labs)
    if not submissions:
        parser.error(f"SUBMISSION: no sub-folders to grade in {args.submission}")

    opts = RunOptions(marker_expr=args.marker_expr)
    box, decoys, lab_sandboxes = None, [], {}
    if args.no_sandbox:
        print("grading UNSANDBOXED (--no-sandbox): submissions run with your rights, files and "
              "network", flush=True)
    else:
        try:
            box, decoys, lab_sandboxes = make_sandbox(args.repo, opts.python, labs, weights)
        except sandbox.SandboxUnavailable as err:
            print(f"grade: {err}", file=sys.stderr)
            return 2
        except ConfigError as err:
            parser.error(str(err))
    job = Job(repo=args.repo, labs=labs, weights=weights, seeds=seeds, opts=opts,
              env=report.environment(opts.python), box=box, decoys=decoys,
              lab_sandboxes=lab_sandboxes, staged=staged_labs(labs, all_labs),
              threads_env=threads_per_job(args.jobs, dict(os.environ)),
              submission_budget_s=budget)
    chosen = shard_of(submissions, *shard) if shard else submissions
    targets = [(sub, out / slug(sub.name) if batch else out) for sub in chosen]
    grades = grade_all(job, targets, args.jobs)
    if shard:
        manifest = write_shard(out, *shard, chosen, submissions, labs)
        print(f"shard {shard[0]}/{shard[1]}: {len(chosen)} of {len(submissions)} submissions; "
              f"{manifest.name} written; summary: python -m grading.grade merge OUT SHARD_OUT...")
    elif batch:
        report.write_summary(grades, out)
    print(f"reports: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
