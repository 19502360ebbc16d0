"""The test of the tests: do the specs catch the classic wrong answers, and accept a different
correct one?

    python -m grading.check_suite [-m EXPR] [--labs lab-01 ...] [--no-write] [--fast]

0. every variant is built from the current solutions (``grading.mutate``): an edit that no
   longer applies stops the run at once, naming the lab, the variant and the function;
1. ``check_starters``: the solutions pass, the pristine starters fail every graded test cleanly;
2. every mutant of ``grading/mutants/<lab>.toml`` (one classic bug, as an edit of the solution)
   fails at least one test, and so does every forced-fail variant (a function the starter leaves
   as a TODO, its body replaced by a raise; run with ``-x``: one failing test is enough); the
   diffs and the tests that catch them are printed and written to ``docs/MUTANTS.md``;
3. every alternative (different but correct: an ``[[alternative]]`` edit, or a whole file in
   ``grading/alternatives/<lab>/*.py``) passes.

A variant runs as a submission: ``<tmp>/<lab>/starter.py`` is the file under test and every
other lab is its solution (lab 02 calls labs 01/03/04 through ``load_lab``).
``engine`` tests are included when vLLM imports here (so CI, which installs the engine, checks
lab 02's mutants too); ``-m`` overrides.
"""

from __future__ import annotations

import argparse
import ast
import re
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from grading import mutate
from grading.check_starters import check_all as check_starters
from grading.check_starters import common_args, load_setup, print_checks
from grading.config import ConfigError, LabConfig
from grading.report import table
from grading.runner import LABS_SUBDIR, RunOptions, lab_names, run_lab

TABLE_FILE = Path("docs/MUTANTS.md")
# From this line on, docs/MUTANTS.md is hand-maintained (the machine-made mutants of
# `make mutation`, grading/mutation.py, and their triage): the writer keeps it as it is.
HAND_MARKER = "<!-- hand-maintained below this line: kept by python -m grading.check_suite -->"


@dataclass
class Variant:
    lab: str
    kind: str  # mutate.MUTANT | mutate.FORCED_FAIL | mutate.ALTERNATIVE
    name: str
    summary: str  # the bug, the idea, or what is forced to fail
    source: str  # the text of its starter.py
    diffs: tuple[str, ...] = ()
    failing: list[str] = field(default_factory=list)  # the tests that fail against it
    problems: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.kind} {mutate.short(self.lab)}/{self.name}"

    @property
    def must_fail(self) -> bool:
        return self.kind != mutate.ALTERNATIVE


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


def first_doc_line(text: str) -> str:
    try:
        doc = ast.get_docstring(ast.parse(text)) or ""
    except SyntaxError as err:
        return f"<unparsable: {err}>"
    return doc.strip().splitlines()[0] if doc.strip() else ""


def from_built(built: mutate.Built) -> Variant:
    s = built.spec
    return Variant(s.lab, s.kind, s.name, s.summary, built.source, built.diffs)


def whole_file_alternatives(repo: Path, lab: str) -> list[Variant]:
    folder = repo / mutate.ALTERNATIVES / lab
    found = []
    for path in sorted(folder.glob("*.py")):
        text = path.read_text(encoding="utf-8")
        idea = re.sub(r"^Alternative[^:]*:\s*", "", first_doc_line(text)).rstrip(".")
        summary = f"{idea} (whole file)".strip()
        found.append(Variant(lab, mutate.ALTERNATIVE, path.stem, summary, text))
    return found


def as_submission(repo: Path, variant: Variant, dst: Path) -> Path:
    """A submission folder: the variant for its lab, every other lab's solution."""
    for lab in lab_names(repo):
        (dst / lab).mkdir(parents=True)
        if lab == variant.lab:
            (dst / lab / "starter.py").write_text(variant.source, encoding="utf-8")
        elif (src := repo / LABS_SUBDIR / lab / "solution.py").is_file():
            (dst / lab / "starter.py").write_text(src.read_text("utf-8"), encoding="utf-8")
    return dst


def catching(names: Iterable[str]) -> list[str]:
    """Test names with parametrized cases folded: ``test_x`` (3 cases)."""
    counts = Counter(name.split("[", 1)[0] for name in names)
    return [name if n == 1 else f"{name} ({n} cases)" for name, n in counts.items()]


def run_variant(repo: Path, variant: Variant, cfg: LabConfig, opts: RunOptions,
                tmp: Path, stages: list[str]) -> None:
    """Run the variant's lab through ``stages`` (marker expressions), stopping at the first
    stage that catches a mutant or forced fail; an alternative runs every stage."""
    folder = tmp / f"{variant.lab}-{variant.kind}-{variant.name}"
    submission = as_submission(repo, variant, folder / "submission")
    # under -x the tests after the first failure are never reached: they catch nothing
    outcomes = ("failed", "error") if opts.exitfirst else ("failed", "error", "not_run")
    ran = 0
    for i, expr in enumerate(stages):
        run = run_lab(repo, variant.lab, str(submission), folder / f"run-{i}",
                      RunOptions(**{**vars(opts), "marker_expr": expr,
                                    "timeout_s": cfg.timeout_s, "budget_s": cfg.lab_budget_s}))
        ran += len(run.tests)
        variant.failing += catching(t.name for t in run.tests if t.outcome in outcomes)
        variant.problems += [p for p in run.problems if p != "no tests collected"]
        if variant.failing and variant.must_fail:
            break
    if not ran:
        variant.problems.append("no tests ran")


def mutant_stages(marker_expr: str) -> list[str]:
    """CPU tests first, engine tests only for a mutant they miss: an engine pass costs minutes
    per mutant on a CPU, and most mutants break something a CPU test sees."""
    if "engine" in marker_expr:
        return [marker_expr]
    return [f"({marker_expr}) and not engine", f"({marker_expr}) and engine"]


INTRO = """\
# Mutants and the tests that catch them

Generated by `make check-suite` (`python -m grading.check_suite`); do not edit by hand.
Each mutant is one classic bug, stored as an edit of its lab's `solution.py` in
`grading/mutants/<lab>.toml` and applied at check time; it must fail at least one test.
Forced fail: every function the lab's `starter.py` leaves as a TODO, its body replaced by
`raise RuntimeError("forced fail: <name>")`, must fail a test too; those run with `-x`, so the
table names the first failing test only. Alternatives (different but correct) must pass every
test. A variant's `engine` tests run only when no other test catches it.

Marker expression: `{marker_expr}`.
"""


def _tests(v: Variant) -> str:
    return ", ".join(f"`{f}`" for f in v.failing) or "**NOT CAUGHT**"


def _count(variants: list, what: str) -> str:
    return f"{len(variants)} {what}{'' if len(variants) == 1 else 's'}"


def lab_section(lab: str, mutants: list[Variant], forced: list[Variant],
                exempt: dict[str, str], alternatives: list[Variant]) -> list[str]:
    caught = sum(bool(v.failing) for v in mutants + forced)
    lines = [f"## {lab}", "", f"{_count(mutants, 'mutant')} and {_count(forced, 'forced fail')}"
             f" ({len(exempt)} exempt): {caught} caught; {_count(alternatives, 'alternative')}.",
             ""]
    for m in mutants:
        lines += [f"### `{m.name}`", "", f"{m.summary}.", "", f"Caught by {_tests(m)}.", "",
                  "```diff", *"\n\n".join(m.diffs).splitlines(), "```", ""]
    rows = [[f"`{v.name}`", _tests(v)] for v in forced]
    rows += [[f"`{name}`", f"exempt: {why}"] for name, why in sorted(exempt.items())]
    if rows:
        lines += ["### Forced fail", "", table(["function", "caught by (first failing test)"],
                                               rows, limit=0), ""]
    rows = [[f"`{a.name}`", a.summary, "FAILS " + _tests(a) if a.failing or a.problems
             else "passes"] for a in alternatives]
    if rows:
        lines += ["### Alternatives", "", table(["alternative", "the idea", "result"], rows,
                                                limit=0), ""]
    return lines


def mutant_table(variants: list[Variant], exempt: dict[str, dict[str, str]],
                 marker_expr: str) -> str:
    lines = INTRO.format(marker_expr=marker_expr).splitlines() + [""]
    for lab in sorted({v.lab for v in variants} | set(exempt)):
        of = [v for v in variants if v.lab == lab]
        lines += lab_section(lab, [v for v in of if v.kind == mutate.MUTANT],
                             [v for v in of if v.kind == mutate.FORCED_FAIL],
                             exempt.get(lab, {}), [v for v in of if not v.must_fail])
    return "\n".join(lines)


def with_hand_section(generated: str, old: str | None) -> str:
    """``generated``, then the hand-maintained part of ``old`` (from ``HAND_MARKER`` on)."""
    if old is None or HAND_MARKER not in old:
        return generated
    return generated.rstrip("\n") + "\n\n" + old[old.index(HAND_MARKER):]


def suite_defects(variants: list[Variant]) -> list[str]:
    found = []
    for v in variants:
        if v.must_fail and not v.failing:
            hint = (f"no test fails when {v.name} raises: add one, or exempt it with the reason "
                    f"in {mutate.SPECS / v.lab}.toml [forced_fail_exempt]"
                    if v.kind == mutate.FORCED_FAIL else v.summary)
            found.append(f"{v.label} is not caught by any test: {hint}")
        if not v.must_fail:
            found += [f"{v.label} fails {f}" for f in v.failing]
        found += [f"{v.label}: {p}" for p in v.problems]
    return found


def build_variants(repo: Path, labs: list[str]) -> tuple[list[Variant], dict, list[str]]:
    """Every variant of ``labs`` (mutants, forced fails, alternatives), the forced-fail
    exemptions per lab, and the errors of those that cannot be built."""
    built, errors = mutate.build(repo, labs)
    variants, exempt = [], {}
    for b in built:
        variants += [from_built(x) for x in b.mutants + b.forced_fail + b.alternatives]
        variants += whole_file_alternatives(repo, b.lab)
        exempt[b.lab] = b.exempt
    return variants, exempt, errors


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
    variants, exempt, errors = build_variants(args.repo, labs)
    if errors:  # before any pytest run: a stale anchor is named in seconds, not minutes
        for e in errors:
            print(f"ERROR {e}")
        print(f"\nFAIL: {len(errors)} variant(s) no longer apply to the current solutions; "
              f"nothing was run (python -m grading.mutate --check to recheck)")
        return 1
    marker_expr, why = (args.marker_expr, "from -m") if args.marker_expr else default_markers()
    print(f"marker expression {marker_expr!r} ({why})", flush=True)

    checks = check_starters(args.repo, labs, weights, marker_expr, args.max_starter_s)
    with tempfile.TemporaryDirectory(prefix="phase11-suite-") as tmp:
        for v in variants:
            print(f"running {v.label} ...", flush=True)
            opts = RunOptions(marker_expr=marker_expr,
                              exitfirst=args.fast or v.kind == mutate.FORCED_FAIL)
            stages = mutant_stages(marker_expr) if v.must_fail else [marker_expr]
            run_variant(args.repo, v, weights[v.lab], opts, Path(tmp), stages)

    print_checks(checks, marker_expr)
    text = mutant_table(variants, exempt, marker_expr)
    print("\n" + text)
    if not args.no_write and not args.fast:
        (args.repo / TABLE_FILE).parent.mkdir(parents=True, exist_ok=True)
        path = args.repo / TABLE_FILE
        old = path.read_text(encoding="utf-8") if path.is_file() else None
        path.write_text(with_hand_section(text, old), encoding="utf-8")
        print(f"wrote {args.repo / TABLE_FILE}")
    defects = suite_defects(variants)
    defects += [f"{lab}: no mutants in {mutate.SPECS / lab}.toml" for lab in labs
                if not any(v.lab == lab and v.kind == mutate.MUTANT for v in variants)]
    for d in defects:
        print(f"DEFECT {d}")
    total = len(defects) + sum(len(c.defects) for c in checks)
    counts = Counter(v.kind for v in variants)
    print(f"\n{'FAIL' if total else 'OK'}: {counts[mutate.MUTANT]} mutants, "
          f"{counts[mutate.FORCED_FAIL]} forced-fail, {counts[mutate.ALTERNATIVE]} alternatives, "
          f"{total} defects (starters and solutions included)")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
