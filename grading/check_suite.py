"""The test of the tests: do the specs catch the classic wrong answers, and accept a different
correct one?

    python -m grading.check_suite [-m EXPR] [--labs lab-01 ...] [--no-write] [--fast]

1. ``check_starters``: the solutions pass, the pristine starters fail every graded test cleanly;
2. every mutant in ``grading/mutants/<lab>/*.py`` (a full implementation whose docstring starts
   ``Mutant: <the bug>.``) fails at least one test; the table mutant → catching tests is printed
   and written to ``docs/MUTANTS.md``;
3. every alternative in ``grading/alternatives/<lab>/*.py`` (different but correct) passes.

A mutant or alternative runs as a submission: ``<tmp>/<lab>/starter.py`` is the file under test
and every other lab is its solution (lab 02 calls labs 01/03/04 through ``load_lab``).
``engine`` tests are included when vLLM imports here (so CI, which installs the engine, checks
lab 02's mutants too); ``-m`` overrides.
"""

from __future__ import annotations

import argparse
import ast
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from grading.check_starters import check_all as check_starters
from grading.check_starters import common_args, load_setup, print_checks
from grading.config import ConfigError, LabConfig
from grading.report import table
from grading.runner import LABS_SUBDIR, RunOptions, lab_names, run_lab

MUTANTS, ALTERNATIVES = Path("grading/mutants"), Path("grading/alternatives")
TABLE_FILE = Path("docs/MUTANTS.md")
MUTANT_PREFIX = "Mutant:"


@dataclass
class Variant:
    lab: str
    path: Path
    summary: str  # the docstring's first line
    failing: list[str] = field(default_factory=list)  # the tests that fail against it
    problems: list[str] = field(default_factory=list)


def engine_available(python: str = sys.executable) -> bool:
    """Whether ``import vllm`` works in the test interpreter (checked in a subprocess: slow)."""
    try:
        return subprocess.run([python, "-c", "import vllm"], capture_output=True,
                              timeout=600).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def default_markers() -> tuple[str, str]:
    if engine_available():
        return "not gpu", "vLLM imports here: engine tests included"
    return "not gpu and not engine", "vLLM does not import here: engine tests left out"


def first_doc_line(path: Path) -> str:
    try:
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    except (OSError, SyntaxError) as err:
        return f"<unreadable: {err}>"
    return doc.strip().splitlines()[0] if doc.strip() else ""


def variants(repo: Path, kind: Path, labs: list[str]) -> list[Variant]:
    found = []
    for lab in labs:
        folder = repo / kind / lab
        if folder.is_dir():
            found += [Variant(lab, p, first_doc_line(p)) for p in sorted(folder.glob("*.py"))]
    return found


def as_submission(repo: Path, variant: Variant, dst: Path) -> Path:
    """A submission folder: the variant for its lab, every other lab's solution."""
    for lab in lab_names(repo):
        (dst / lab).mkdir(parents=True)
        src = variant.path if lab == variant.lab else repo / LABS_SUBDIR / lab / "solution.py"
        if src.is_file():
            shutil.copyfile(src, dst / lab / "starter.py")
    return dst


def catching(names: Iterable[str]) -> list[str]:
    """Test names with parametrized cases folded: ``test_x`` (3 cases)."""
    counts = Counter(name.split("[", 1)[0] for name in names)
    return [name if n == 1 else f"{name} ({n} cases)" for name, n in counts.items()]


def run_variant(repo: Path, variant: Variant, cfg: LabConfig, opts: RunOptions,
                tmp: Path, stages: list[str]) -> None:
    """Run the variant's lab through ``stages`` (marker expressions), stopping at the first
    stage that catches a mutant; an alternative runs every stage."""
    name = f"{variant.lab}-{variant.path.stem}"
    submission = as_submission(repo, variant, tmp / name / "submission")
    ran = 0
    for i, expr in enumerate(stages):
        run = run_lab(repo, variant.lab, str(submission), tmp / name / f"run-{i}",
                      RunOptions(**{**vars(opts), "marker_expr": expr,
                                    "timeout_s": cfg.timeout_s, "budget_s": cfg.lab_budget_s}))
        ran += len(run.tests)
        variant.failing += catching(t.name for t in run.tests
                                    if t.outcome in ("failed", "error", "not_run"))
        variant.problems += [p for p in run.problems if p != "no tests collected"]
        if variant.failing and variant.summary.startswith(MUTANT_PREFIX):
            break
    if not ran:
        variant.problems.append("no tests ran")


def mutant_stages(marker_expr: str) -> list[str]:
    """CPU tests first, engine tests only for a mutant they miss: an engine pass costs minutes
    per mutant on a CPU, and most mutants break something a CPU test sees."""
    if "engine" in marker_expr:
        return [marker_expr]
    return [f"({marker_expr}) and not engine", f"({marker_expr}) and engine"]


def mutant_table(mutants: list[Variant], marker_expr: str) -> str:
    lines = ["# Mutants and the tests that catch them", "",
             "Generated by `make check-suite` (`python -m grading.check_suite`); do not edit by "
             "hand.", "Each mutant is a full implementation with one classic bug "
             "(`grading/mutants/<lab>/<name>.py`);", "it must fail at least one test. Marker "
             f"expression: `{marker_expr}`; a mutant's `engine` tests run only when no other "
             "test catches it.", ""]
    for lab in sorted({m.lab for m in mutants}):
        rows = [[f"`{m.path.stem}`", m.summary.removeprefix(MUTANT_PREFIX).strip(),
                 ", ".join(f"`{f}`" for f in m.failing) or "**NOT CAUGHT**"]
                for m in mutants if m.lab == lab]
        lines += [f"## {lab}", "", table(["mutant", "the bug", "caught by"], rows, limit=0), ""]
    return "\n".join(lines)


def suite_defects(mutants: list[Variant], alternatives: list[Variant]) -> list[str]:
    found = []
    for m in mutants:
        where = f"{m.lab}/{m.path.name}"
        if not m.summary.startswith(MUTANT_PREFIX):
            found.append(f"mutant {where}: docstring must start '{MUTANT_PREFIX} <the bug>.'")
        if not m.failing:
            found.append(f"mutant {where} is not caught by any test: {m.summary}")
        found += [f"mutant {where}: {p}" for p in m.problems]
    for a in alternatives:
        where = f"{a.lab}/{a.path.name}"
        found += [f"alternative {where} fails {f}" for f in a.failing]
        found += [f"alternative {where}: {p}" for p in a.problems]
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grading.check_suite", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    common_args(parser, None)
    parser.add_argument("--no-write", action="store_true",
                        help=f"print the mutant table, do not write {TABLE_FILE}")
    parser.add_argument("--fast", action="store_true",
                        help="stop each mutant at its first failing test (partial table)")
    args = parser.parse_args(argv)
    try:
        labs, weights = load_setup(args)
    except ConfigError as err:
        parser.error(str(err))
    marker_expr, why = (args.marker_expr, "from -m") if args.marker_expr else default_markers()
    print(f"marker expression {marker_expr!r} ({why})", flush=True)

    checks = check_starters(args.repo, labs, weights, marker_expr, args.max_starter_s)
    mutants = variants(args.repo, MUTANTS, labs)
    alternatives = variants(args.repo, ALTERNATIVES, labs)
    opts = RunOptions(marker_expr=marker_expr, exitfirst=args.fast)
    with tempfile.TemporaryDirectory(prefix="phase11-suite-") as tmp:
        for v in mutants:
            print(f"running {v.path.relative_to(args.repo)} ...", flush=True)
            run_variant(args.repo, v, weights[v.lab], opts, Path(tmp), mutant_stages(marker_expr))
        for v in alternatives:
            print(f"running {v.path.relative_to(args.repo)} ...", flush=True)
            run_variant(args.repo, v, weights[v.lab], opts, Path(tmp), [marker_expr])

    print_checks(checks, marker_expr)
    text = mutant_table(mutants, marker_expr)
    print("\n" + text)
    if not args.no_write and not args.fast:
        (args.repo / TABLE_FILE).parent.mkdir(parents=True, exist_ok=True)
        (args.repo / TABLE_FILE).write_text(text, encoding="utf-8")
        print(f"wrote {args.repo / TABLE_FILE}")
    print("alternatives: " + (", ".join(f"{a.lab}/{a.path.name} "
                                        f"{'FAILS' if a.failing or a.problems else 'passes'}"
                                        for a in alternatives) or "none"))
    lacking = [lab for lab in labs if not any(m.lab == lab for m in mutants)]
    defects = suite_defects(mutants, alternatives)
    defects += [f"{lab}: no mutants in {MUTANTS / lab}" for lab in lacking]
    for d in defects:
        print(f"DEFECT {d}")
    total = len(defects) + sum(len(c.defects) for c in checks)
    print(f"\n{'FAIL' if total else 'OK'}: {len(mutants)} mutants, {len(alternatives)} "
          f"alternatives, {total} defects (starters and solutions included)")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
