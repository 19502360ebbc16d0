"""Machine-made mutants: cosmic-ray over each lab's ``solution.py`` against its CPU tests.

``make mutation`` (``python -m grading.mutation``) is the tool-side complement of the
hand-written mutants in ``grading/mutants/*.toml``: cosmic-ray generates every operator,
comparison, constant and boolean mutant of a lab's solution and runs the lab's CPU tests
(``-m "not gpu and not engine"``) against each one. A mutant that passes them all *survives*;
each survivor is triaged in ``docs/MUTANTS.md`` (section "Machine-made mutants").

- **A copy, never the repository.** Each lab gets its own copy of the tree under
  ``build/mutation/<lab>/tree`` (lab 02's git-ignored base model is symlinked, not copied);
  cosmic-ray rewrites ``solution.py`` *there*, one mutant at a time. Nothing under version
  control is touched and no mutant is ever stored as a file.
- **Resumable.** The cosmic-ray session (``build/mutation/<lab>/session.sqlite``) records each
  result as it lands; an interrupted run picks up where it stopped. A changed ``solution.py``
  starts a new session (the mutants' positions moved); changed tests only re-run the
  survivors (a test added since cannot un-kill a mutant), once the session has finished: an
  interrupted one goes on with the copy (and tests) it started with. ``--fresh`` starts over.
- **Bounded.** Each test run has ``TIMEOUT_S`` and ``MEMORY_CAP`` (``prlimit --as``): a
  mutant that loops or allocates without end is killed by the limit, and counts as killed.
- **Two cores, niced.** Labs run side by side, ``--jobs`` at a time (2), under ``nice -n 15``.
- **Operators.** Every cosmic-ray core operator except the replacements of ``+ - * / //`` by
  bitwise, shift, power and modulo operators and the other way round (they either crash at
  once or rewrite a ``X | None`` annotation, which ``from __future__ import annotations``
  makes inert): see ``EXCLUDE_OPERATORS``.
- **Excluded code.** Lab 02's engine side (functions that need a vLLM engine or a live server
  to run; their promises are engine tests) is skipped by function name: ``EXCLUDED``.

The per-lab survival rate and the survivors (with their diffs) are written to
``build/mutation/<lab>/report.md`` and summarized on stdout; ``--labs`` picks labs.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import textwrap
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from labkit.loader import LABS_SUBDIR, find_lab, lab_names

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "build" / "mutation"
NICE = 15
TIMEOUT_S = 45.0  # one mutant's test run; a mutant that loops forever counts as killed
MEMORY_CAP = 6 * 2**30  # address space of one test run: a mutant that grows forever dies early
BIG_ASSETS = {"lab-02-serve-many-loras": ["assets/SmolLM2-135M-Instruct"]}

# operator-name regexes (cosmic-ray's `operators-filter`): see the module docstring
_ARITH = "(Add|Sub|Mul|Div|FloorDiv)"
_NOISE = "(BitOr|BitAnd|BitXor|LShift|RShift|Pow|Mod)"
EXCLUDE_OPERATORS = [
    rf"core/ReplaceBinaryOperator_{_ARITH}_{_NOISE}$",
    rf"core/ReplaceBinaryOperator_{_NOISE}_.*",
]

# function names (cosmic-ray's `definition_name`) that the CPU tests cannot reach by design
EXCLUDED: dict[str, dict[str, str]] = {
    "lab-02-serve-many-loras": {
        "_cuda_available": "asks torch for CUDA: the CPU and the GPU engine paths",
        "build_llm": "builds a vLLM engine (engine tests); its knob checks are _check_knobs",
        "_check_engine_accepts": "asks a live engine's LoRA config (engine tests)",
        "serve": "starts a vLLM server process (engine tests); its argv is serve_argv",
        "_post_lora_route": "HTTP to a live server (engine tests)",
        "load_adapter": "HTTP to a live server (engine tests)",
        "unload_adapter": "HTTP to a live server (engine tests)",
    },
}


def _pytest_cmd(lab: str) -> list[str]:
    # autoload off: the venv's third-party plugins (anyio, ...) cost a second per mutant;
    # hypothesis is the one the labs use
    return ["prlimit", f"--as={MEMORY_CAP}", "--",
            "env", "PYTEST_DISABLE_PLUGIN_AUTOLOAD=1", "LAB_IMPL=solution",
            sys.executable, "-m", "pytest", str(LABS_SUBDIR / lab), "-m",
            "not gpu and not engine", "-x", "-q", "--no-header", "-p", "no:cacheprovider",
            "-p", "hypothesis.extra.pytestplugin"]


def _digest(paths: list[Path], extra: str = "") -> str:
    h = hashlib.sha256(extra.encode())
    for p in sorted(paths):
        h.update(str(p.relative_to(ROOT)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def _test_side(lab: str) -> list[Path]:
    """Everything but the mutated file that decides a mutant's fate."""
    files = [ROOT / "conftest.py", ROOT / "pyproject.toml", *sorted((ROOT / "labkit").glob("*.py"))]
    for p in sorted((ROOT / LABS_SUBDIR).rglob("*.py")):
        if p != ROOT / LABS_SUBDIR / lab / "solution.py" and "assets" not in p.parts:
            files.append(p)
    return files


def _copy_tree(lab: str, tree: Path) -> None:
    """A fresh copy of what the lab's tests import, the big assets symlinked."""
    if tree.exists():
        shutil.rmtree(tree)
    tree.mkdir(parents=True)
    for name in ("conftest.py", "pyproject.toml"):
        shutil.copy2(ROOT / name, tree / name)
    shutil.copytree(ROOT / "labkit", tree / "labkit",
                    ignore=shutil.ignore_patterns("__pycache__"))
    big = {(LABS_SUBDIR / la / rel) for la, rels in BIG_ASSETS.items() for rel in rels}

    def ignore(d: str, names: list[str]) -> list[str]:
        rel = Path(d).resolve().relative_to(ROOT)
        return [n for n in names if n in ("__pycache__", ".hypothesis") or rel / n in big]

    shutil.copytree(ROOT / LABS_SUBDIR, tree / LABS_SUBDIR, ignore=ignore)
    for rel in big:
        if (ROOT / rel).exists():
            (tree / rel).symlink_to(ROOT / rel)


def _config(lab: str, tree: Path) -> str:
    cmd = shlex.join(_pytest_cmd(lab))  # cosmic-ray runs shlex.split(test-command)
    ops = ", ".join(f'"{o}"' for o in EXCLUDE_OPERATORS)
    return textwrap.dedent(f"""\
        [cosmic-ray]
        module-path = "{tree / LABS_SUBDIR / lab / 'solution.py'}"
        timeout = {TIMEOUT_S}
        excluded-modules = []
        test-command = "{cmd}"

        [cosmic-ray.distributor]
        name = "local"

        [cosmic-ray.filters.operators-filter]
        exclude-operators = [{ops}]
        """)


def _cr(args: list[str], cwd: Path, log) -> None:
    env = dict(os.environ, PYTHONPATH=str(cwd))
    exe = Path(sys.executable).with_name(args[0])
    subprocess.run(["nice", "-n", str(NICE), str(exe), *args[1:]], cwd=cwd, env=env,
                   check=True, stdout=log, stderr=subprocess.STDOUT)


def _skip_excluded(lab: str, session: Path) -> None:
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import WorkerOutcome, WorkResult

    excluded = EXCLUDED.get(lab, {})
    with use_db(str(session), WorkDB.Mode.open) as db:
        for item in list(db.pending_work_items):
            names = {m.definition_name for m in item.mutations}
            if names & excluded.keys():
                db.set_result(item.job_id, WorkResult(
                    output="excluded: engine side", worker_outcome=WorkerOutcome.SKIPPED))


def _rerun_survivors(session: Path) -> int:
    import sqlite3

    con = sqlite3.connect(session)
    with con:
        n = con.execute("DELETE FROM work_results WHERE upper(worker_outcome) = 'NORMAL' "
                        "AND upper(test_outcome) = 'SURVIVED'").rowcount
    con.close()
    return n


def run_lab(lab: str, *, fresh: bool) -> Path:
    """Run (or resume) one lab's session; returns its report path."""
    out = OUT / lab
    out.mkdir(parents=True, exist_ok=True)
    tree, session, stamp = out / "tree", out / "session.sqlite", out / "stamp"
    solution = ROOT / LABS_SUBDIR / lab / "solution.py"
    mutated = _digest([solution], extra=repr((EXCLUDE_OPERATORS, EXCLUDED.get(lab))))
    tests = _digest(_test_side(lab))
    old = stamp.read_text().split() if stamp.exists() else ["", ""]
    if fresh or old[0] != mutated:
        session.unlink(missing_ok=True)
    unfinished = session.exists() and tally(session)["pending"] > 0 and tree.exists()
    if unfinished:  # an interrupted session goes on with the tests it started with
        shutil.copy2(solution, tree / LABS_SUBDIR / lab / "solution.py")  # undo a live mutant
        tests = old[1]
    else:
        _copy_tree(lab, tree)
    (out / "cosmic-ray.toml").write_text(_config(lab, tree))
    with open(out / "log.txt", "a") as log:
        env = dict(os.environ, PYTHONPATH=str(tree))
        # the baseline, run exactly as cosmic-ray will: the command split from the config
        cmd = shlex.split(tomllib.loads((out / "cosmic-ray.toml").read_text())
                          ["cosmic-ray"]["test-command"])
        base = subprocess.run(["nice", "-n", str(NICE), *cmd], cwd=tree, env=env,
                              capture_output=True, text=True)
        if base.returncode != 0 or " passed" not in base.stdout:
            raise SystemExit(f"{lab}: the unmutated solution fails its CPU tests in the copy:\n"
                             f"{base.stdout[-2000:]}{base.stderr[-2000:]}")
        if not session.exists():
            _cr(["cosmic-ray", "init", str(out / "cosmic-ray.toml"), str(session)], tree, log)
            _cr(["cr-filter-operators", str(session), str(out / "cosmic-ray.toml")], tree, log)
            _skip_excluded(lab, session)
        elif old[1] != tests:
            n = _rerun_survivors(session)
            print(f"{lab}: tests changed, re-running {n} survivors", flush=True)
        stamp.write_text(f"{mutated} {tests}\n")
        _cr(["cosmic-ray", "exec", str(out / "cosmic-ray.toml"), str(session)], tree, log)
    return write_report(lab, session, out / "report.md")


def tally(session: Path) -> dict:
    import sqlite3

    con = sqlite3.connect(session)
    rows = con.execute(
        "SELECT w.job_id, r.worker_outcome, r.test_outcome FROM work_items w "
        "LEFT JOIN work_results r ON r.job_id = w.job_id").fetchall()
    con.close()
    t = {"total": len(rows), "pending": 0, "skipped": 0, "killed": 0, "survived": 0,
         "other": 0}
    for _, worker, test in rows:
        worker, test = (worker or "").lower() or None, (test or "").lower()
        if worker is None:
            t["pending"] += 1
        elif worker == "skipped":
            t["skipped"] += 1
        elif worker == "normal" and test == "survived":
            t["survived"] += 1
        elif worker == "normal" and test == "killed":
            t["killed"] += 1
        else:
            t["other"] += 1
    return t


def survivors(session: Path) -> list[dict]:
    """Each surviving mutant: function, line, operator, diff."""
    import sqlite3

    con = sqlite3.connect(session)
    rows = con.execute(
        "SELECT s.job_id, s.definition_name, s.start_pos_row, s.operator_name, s.occurrence, "
        "r.diff FROM mutation_specs s JOIN work_results r ON r.job_id = s.job_id "
        "WHERE upper(r.worker_outcome) = 'NORMAL' AND upper(r.test_outcome) = 'SURVIVED' "
        "ORDER BY s.start_pos_row, s.operator_name").fetchall()
    con.close()
    return [dict(job=j, function=f, line=ln, operator=o.removeprefix("core/"), occurrence=oc,
                 diff=d) for j, f, ln, o, oc, d in rows]


def write_report(lab: str, session: Path, path: Path) -> Path:
    t = tally(session)
    run = t["killed"] + t["survived"]
    rate = 100.0 * t["survived"] / run if run else 0.0
    lines = [f"# {lab}: {t['survived']} of {run} mutants survive ({rate:.1f}%)", "",
             f"total {t['total']}, skipped {t['skipped']} (filtered operators, excluded code), "
             f"pending {t['pending']}, other {t['other']}", ""]
    for s in survivors(session):
        lines += [f"## line {s['line']} `{s['function']}` {s['operator']} #{s['occurrence']}",
                  "", "```diff", (s["diff"] or "").strip(), "```", ""]
    path.write_text("\n".join(lines))
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--labs", nargs="*", help="lab names or prefixes (default: every lab)")
    ap.add_argument("--jobs", type=int, default=2, help="labs run side by side (default 2)")
    ap.add_argument("--fresh", action="store_true", help="discard the sessions, start over")
    ap.add_argument("--report", action="store_true", help="only print the reports")
    args = ap.parse_args(argv)
    labs = [find_lab(n) for n in args.labs] if args.labs else lab_names()
    if args.report:
        paths = [write_report(la, OUT / la / "session.sqlite", OUT / la / "report.md")
                 for la in labs if (OUT / la / "session.sqlite").exists()]
    else:
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            paths = list(pool.map(lambda la: run_lab(la, fresh=args.fresh), labs))
    for p in paths:
        print(p.read_text().splitlines()[0].removeprefix("# "), f"  ({p.relative_to(ROOT)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
