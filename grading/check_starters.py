"""Do the specs discriminate? Every test passes with the solutions; against the pristine
starters every graded test fails cleanly and fast.

    python -m grading.check_starters [-m EXPR] [--labs lab-01 ...] [--max-starter-s S]

Prints one row per lab and exits 1 on any defect:

- a solution test that fails, errors or never ran, a collection error, a lab with no tests;
- a test that passes against a starter without the ``structural`` marker (it checks nothing the
  student writes);
- a test that errors against a starter (a fixture or collection error is not a clean failure:
  the student sees a wall of setup trouble instead of the TODO), crashes or times out;
- a starter failure slower than ``--max-starter-s`` (an engine test must reach the student's
  TODO before it builds an engine);
- an error-message fragment a test matches (``pytest.raises(match=...)``, ``re.search`` on
  ``str(err)``) that neither the lab's ``starter.py`` nor its ``README.md`` states
  (``grading.spec_check``, static: it runs no test).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from grading import spec_check
from grading.config import WEIGHTS_REL, ConfigError, LabConfig, load_weights
from grading.report import table
from grading.runner import TOOLING_ROOT, LabRun, RunOptions, lab_names, run_lab
from labkit.loader import names_lab

DEFAULT_MARKERS = "not gpu"
MAX_STARTER_S = 10.0  # a starter test reaches its TODO in well under this, even on 2 busy cores


@dataclass
class LabCheck:
    lab: str
    solution: LabRun
    starter: LabRun
    defects: list[str] = field(default_factory=list)

    def row(self) -> list:
        tests = self.solution.tests
        slowest = max((t.duration_s for t in self.starter.tests), default=0.0)
        return [self.lab, len(tests), sum(t.structural for t in tests),
                self.solution.count("passed"), self.starter.count("failed"),
                self.solution.count("skipped"), f"{slowest:.2f} s",
                "ok" if not self.defects else f"{len(self.defects)} defect(s)"]


HEADER = ["lab", "tests", "structural", "passed with solution", "failed with starter",
          "skipped", "slowest starter test", "status"]


def _describe(t) -> str:
    return f"{t.name} ({t.reason or t.outcome}: {' '.join(t.message.split())[:200]})"


def solution_defects(run: LabRun) -> list[str]:
    found = [f"solution: {p}" for p in run.problems]
    if not run.tests and not run.problems:
        found.append("no tests collected")
    found += [f"solution fails {_describe(t)}" for t in run.tests
              if t.outcome in ("failed", "error", "not_run")]
    return found


def starter_defects(run: LabRun, max_starter_s: float) -> list[str]:
    found = [f"starter: {p}" for p in run.problems]
    for t in run.tests:
        if t.outcome == "passed" and not t.structural:
            found.append(f"{t.name} passes against the pristine starter: it checks nothing the "
                         f"student writes (fix the test, or mark it structural)")
        elif t.outcome in ("error", "not_run"):
            found.append(f"{t.name} errors against the starter instead of failing cleanly: "
                         f"{_describe(t)}")
        elif t.outcome == "failed" and t.reason in ("timeout", "crashed"):
            found.append(f"{t.name} does not fail cleanly against the starter: {_describe(t)}")
        elif t.outcome == "failed" and t.duration_s > max_starter_s:
            found.append(f"{t.name} takes {t.duration_s:.1f} s to fail against the starter "
                         f"(limit {max_starter_s:g} s): reach the TODO before any heavy setup")
    return found


def check_lab(repo: Path, lab: str, cfg: LabConfig, marker_expr: str, max_starter_s: float,
              workdir: Path) -> LabCheck:
    opts = RunOptions(marker_expr=marker_expr, timeout_s=cfg.timeout_s, budget_s=cfg.lab_budget_s)
    solution = run_lab(repo, lab, "solution", workdir / lab / "solution", opts)
    starter = run_lab(repo, lab, "starter", workdir / lab / "starter", opts)
    check = LabCheck(lab, solution, starter)
    check.defects = (solution_defects(solution) + starter_defects(starter, max_starter_s)
                     + spec_check.lab_defects(repo, lab))
    return check


def check_all(repo: Path, labs: list[str], weights: dict[str, LabConfig], marker_expr: str,
              max_starter_s: float = MAX_STARTER_S) -> list[LabCheck]:
    with tempfile.TemporaryDirectory(prefix="phase11-check-") as tmp:
        checks = []
        for lab in labs:
            print(f"checking {lab} (solution, starter) ...", flush=True)
            checks.append(check_lab(repo, lab, weights[lab], marker_expr, max_starter_s,
                                    Path(tmp)))
        return checks


def print_checks(checks: list[LabCheck], marker_expr: str) -> None:
    print(f"\nstarters and solutions, marker expression {marker_expr!r}\n")
    print(table(HEADER, [c.row() for c in checks]))
    for c in checks:
        for d in c.defects:
            print(f"DEFECT {c.lab}: {d}")


def select_labs(repo: Path, wanted: list[str] | None) -> list[str]:
    labs = lab_names(repo)
    chosen = [lab for lab in labs
              if not wanted or any(names_lab(w, lab) for w in wanted)]
    if not chosen:
        raise ConfigError(f"--labs: expected some of {labs}, got {wanted}")
    return chosen


def common_args(parser: argparse.ArgumentParser, default_markers: str | None) -> None:
    parser.add_argument("-m", dest="marker_expr", default=default_markers,
                        help=f"pytest marker expression (default: {default_markers!r})")
    parser.add_argument("--labs", nargs="*", help="only these labs (folder names or lab-0N)")
    parser.add_argument("--repo", type=Path, default=TOOLING_ROOT,
                        help="the course repository (default: this one)")
    parser.add_argument("--max-starter-s", type=float, default=MAX_STARTER_S,
                        help=f"slowest allowed starter failure (default {MAX_STARTER_S:g} s)")


def load_setup(args: argparse.Namespace) -> tuple[list[str], dict[str, LabConfig]]:
    labs = select_labs(args.repo, args.labs)
    return labs, load_weights(lab_names(args.repo), args.repo / WEIGHTS_REL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grading.check_starters", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    common_args(parser, DEFAULT_MARKERS)
    args = parser.parse_args(argv)
    try:
        labs, weights = load_setup(args)
    except ConfigError as err:
        parser.error(str(err))
    checks = check_all(args.repo, labs, weights, args.marker_expr, args.max_starter_s)
    print_checks(checks, args.marker_expr)
    failed = sum(bool(c.defects) for c in checks)
    print(f"\n{'FAIL' if failed else 'OK'}: {failed} of {len(checks)} labs with defects")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
