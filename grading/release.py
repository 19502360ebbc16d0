"""Build the student release: the repository without reference code or grading keys.

    python -m grading.release OUT

OUT (new or empty, outside the repository) receives the repository's files as git sees them,
minus every ``solution.py``, ``grading/mutants/`` (edits that quote solution code),
``grading/alternatives/``, ``grading/keys/`` (hidden seeds), the tooling's own tests and
``docs/MUTANTS.md``.
In the copy, ``LAB_IMPL`` defaults to ``starter`` (``labkit/loader.py``) and ``README.md`` opens
with a note saying so.
The release is then verified: no file may equal a reference file byte for byte, and no line
unique to a solution (code that no other file of its lab folder has) may appear anywhere in it.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path, PurePosixPath

from grading.honesty import docstring_nodes
from grading.runner import LABS_SUBDIR, TOOLING_ROOT
from grading.tree import copy_files, repo_files, sha256, walk

EXCLUDED_DIRS = ("grading/mutants", "grading/alternatives", "grading/keys", "grading/tests")
# the mutant table shows diffs of the solutions
EXCLUDED_FILES = ("docs/MUTANTS.md",)
LOADER = Path("labkit") / "loader.py"
DEFAULT_LINE = re.compile(r'^DEFAULT_IMPL = "solution"$', re.MULTILINE)
MIN_MARKER_CHARS = 24  # shorter lines ("return out", "import numpy as np") are not evidence
README_NOTE = """\
> **Student release.** This copy has no reference solutions: `LAB_IMPL` defaults to `starter`,
> so `pytest phase-11-multi-lora/labs -m "not gpu"` runs the tests against your `starter.py`
> files, and every test fails with its TODO until you implement it.

"""


def excluded(rel: Path) -> bool:
    posix = PurePosixPath(rel.as_posix())
    return (posix.name == "solution.py" or str(posix) in EXCLUDED_FILES
            or any(posix.is_relative_to(d) for d in EXCLUDED_DIRS))


def release_files(repo: Path) -> list[Path]:
    return [p for p in repo_files(repo) if not excluded(p)]


def reference_files(repo: Path) -> list[Path]:
    """Every file the release must not contain: solutions, mutants, alternatives, keys."""
    labs = repo / LABS_SUBDIR
    refs = sorted(labs.glob("*/solution.py")) if labs.is_dir() else []
    for d in EXCLUDED_DIRS[:3]:
        if (repo / d).is_dir():
            refs += [repo / d / p for p in walk(repo / d)]
    return refs


def docstring_lines(text: str) -> set[int]:
    """1-based line numbers taken by docstrings (prose the starter shares with the solution)."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return set()
    return {line for node in docstring_nodes(tree)
            for line in range(node.lineno, (node.end_lineno or node.lineno) + 1)}


def code_lines(text: str) -> set[str]:
    """Stripped lines of code, long enough to identify their source; no docstrings, comments,
    signatures or imports (a starter shares those with its solution)."""
    skip = docstring_lines(text)
    lines = set()
    for number, line in enumerate(text.splitlines(), start=1):
        s = line.strip()
        if (number not in skip and len(s) >= MIN_MARKER_CHARS
                and not s.startswith(("#", "def ", "class ", "import ", "from ", "@",
                                      "raise NotImplementedError"))):
            lines.add(s)
    return lines


def solution_markers(repo: Path) -> dict[str, str]:
    """Lines of each solution that no other file of its lab folder has: marker line -> lab."""
    markers = {}
    for sol in sorted((repo / LABS_SUBDIR).glob("*/solution.py")):
        shared = set()
        for other in sol.parent.rglob("*.py"):
            if other != sol:
                shared |= code_lines(other.read_text(encoding="utf-8", errors="replace"))
        for line in code_lines(sol.read_text(encoding="utf-8")) - shared:
            markers[line] = sol.parent.name
    return markers


def verify_release(out: Path, repo: Path) -> list[str]:
    """Problems found in the release at ``out``; empty means it holds no reference code."""
    problems = []
    ref_hashes = {sha256(p): p.relative_to(repo) for p in reference_files(repo)}
    markers = solution_markers(repo)
    for rel in walk(out):
        path = out / rel
        if excluded(rel):
            problems.append(f"{rel}: an excluded path is present")
        if (digest := sha256(path)) in ref_hashes:
            problems.append(f"{rel}: identical to {ref_hashes[digest]}")
        if path.suffix in (".py", ".md", ".txt", ".ipynb"):
            text = path.read_text(encoding="utf-8", errors="replace")
            leaked = sorted({lab for line, lab in markers.items() if line in text})
            if leaked:
                problems.append(f"{rel}: holds solution code of {', '.join(leaked)}")
    loader = out / LOADER
    if loader.is_file() and 'DEFAULT_IMPL = "starter"' not in loader.read_text(encoding="utf-8"):
        problems.append(f"{LOADER}: DEFAULT_IMPL is not 'starter'")
    return problems


def build_release(repo: Path, out: Path) -> list[Path]:
    """Write the release to ``out`` and return its files; raises ``SystemExit`` on a problem."""
    if out.resolve().is_relative_to(repo.resolve()):
        raise SystemExit(f"OUT: must lie outside the repository {repo}, got {out}")
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"OUT: must be new or empty, got {out}")
    files = release_files(repo)
    copy_files(files, repo, out)
    loader = out / LOADER
    if loader.is_file():
        text, n = DEFAULT_LINE.subn('DEFAULT_IMPL = "starter"', loader.read_text("utf-8"))
        if n != 1:
            raise SystemExit(f"{LOADER}: expected one line `DEFAULT_IMPL = \"solution\"`, "
                             f"found {n}")
        loader.write_text(text, encoding="utf-8")
    readme = out / "README.md"
    if readme.is_file():
        readme.write_text(README_NOTE + readme.read_text(encoding="utf-8"), encoding="utf-8")
    problems = verify_release(out, repo)
    if problems:
        raise SystemExit("the release is not clean:\n  " + "\n  ".join(problems))
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grading.release", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="the release folder (new or empty)")
    parser.add_argument("--repo", type=Path, default=TOOLING_ROOT,
                        help="the course repository (default: this one)")
    args = parser.parse_args(argv)
    files = build_release(args.repo, args.out)
    print(f"student release: {len(files)} files in {args.out} (LAB_IMPL defaults to starter; "
          f"verified: no solution code)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
