"""Build the student release: what a student needs to run and read their tests, nothing more.

    python -m grading.release OUT

OUT (new or empty, outside the repository) receives the repository's files as git sees them,
minus the reference code and the instructor's tooling: every ``solution.py``, the whole of
``grading/`` (grader, honesty rules, runtime plugin, mutants, alternatives, hidden seeds, its
tests), ``.ci/``, the harness's own ``tests/``, ``GRADING.md`` and ``docs/MUTANTS.md``.

Text that reads differently in the release is marked in the source, on lines of their own:

- ``<!-- instructor-only -->`` ... ``<!-- /instructor-only -->`` in Markdown, ``# instructor-only``
  ... ``# /instructor-only`` in the Makefile and ``pyproject.toml``: dropped from the release;
- ``<!-- release-only`` ... ``release-only -->`` in Markdown (an HTML comment, so invisible in
  the course repository) and ``# release-only`` ... ``# /release-only`` in the Makefile and
  ``pyproject.toml`` (each line commented out with ``# ``): kept in the release, uncommented.

In the copy, ``LAB_IMPL`` defaults to ``starter`` (``labkit/loader.py``) and ``README.md`` opens
with a note saying so. The release is then verified: no excluded path, no marker left over, no
file equal to a reference file byte for byte, no line unique to a solution (code that no
other file of its lab folder has) anywhere in it, and nothing named that the release lacks
(``dangling``): every ``make X`` in a shipped file is a target of the shipped Makefile, no file
holds an absolute path of the build machine (the checkout, its top folder, the home folder,
the Python installation), and ``pyproject.toml``'s ``testpaths`` exist. ``claims`` lists what would still tell a
student that ``solution.py`` exists or that ``LAB_IMPL`` defaults to ``solution``.
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

REFERENCE_DIRS = ("grading/mutants", "grading/alternatives", "grading/keys")  # solution code
# the instructor's tooling: grader, honesty rules and plugin, checks, CI, the harness's tests
EXCLUDED_DIRS = ("grading", ".ci", "tests")
EXCLUDED_FILES = ("docs/MUTANTS.md", "GRADING.md")
MARKED = (".md", "Makefile", "pyproject.toml")  # files whose marked blocks are applied
MARKER = re.compile(r"^\s*(?:<!--\s*(?P<md>/?)(?P<md_kind>instructor-only|release-only)\s*(?:-->)?"
                    r"|#\s*(?P<mk>/?)(?P<mk_kind>instructor-only|release-only)"
                    r"|(?P<md_end>release-only)\s*-->)\s*$")
LEFTOVER = re.compile(r"instructor-only|release-only")
# what tells a student that solution.py is there or that LAB_IMPL defaults to it
CLAIM = re.compile(r"solution\.py|solution`? \(the default\)|defaults? (?:to|is) `?solution\b"
                   r"|solution by default|# the reference\b|(?:on|against) the reference solution")
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
    for d in REFERENCE_DIRS:
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
    """Lines of each solution that no other file of its lab folder has, and no starter of any
    lab gives away (a generic check such as a type test is no evidence): marker line -> lab."""
    labs = repo / LABS_SUBDIR
    given = set()
    for starter in labs.glob("*/starter.py"):
        given |= code_lines(starter.read_text(encoding="utf-8", errors="replace"))
    markers = {}
    for sol in sorted(labs.glob("*/solution.py")):
        shared = set(given)
        for other in sol.parent.rglob("*.py"):
            if other != sol:
                shared |= code_lines(other.read_text(encoding="utf-8", errors="replace"))
        for line in code_lines(sol.read_text(encoding="utf-8")) - shared:
            markers[line] = sol.parent.name
    return markers


def apply_markers(text: str, where: str) -> str:
    """The release's version of a marked file (see the module docstring); ``SystemExit`` on a
    marker out of place, naming ``where`` and the line."""
    out: list[str] = []
    block: tuple[str, str, int] | None = None  # (kind, syntax "md" | "mk", line number)
    after_drop = False  # just closed an instructor-only block: no second blank line
    for number, line in enumerate(text.splitlines(keepends=True), start=1):
        m = MARKER.match(line)
        if m is None:
            if after_drop and not line.strip() and (not out or not out[-1].strip()):
                continue
            after_drop = False
            if block is None or block[0] == "release-only":
                uncomment = block is not None and block[1] == "mk"
                out.append(re.sub(r"^# ?", "", line) if uncomment else line)
            continue
        after_drop = block is not None and block[0] == "instructor-only"
        syntax = "mk" if m["mk_kind"] else "md"
        kind = m["md_kind"] or m["mk_kind"] or "release-only"
        closing = bool(m["md"] or m["mk"] or m["md_end"])
        if syntax == "md" and kind == "release-only" and not m["md_end"] and (m["md"] or
                                                                              "-->" in line):
            raise SystemExit(f"{where}:{number}: a Markdown release-only block opens with "
                             f"'<!-- release-only' and closes with 'release-only -->'")
        if not closing and block is None:
            block = (kind, syntax, number)
        elif closing and block is not None and block[:2] == (kind, syntax):
            block = None
        else:
            raise SystemExit(f"{where}:{number}: unexpected {line.strip()!r}"
                             + (f" inside the {block[0]} block of line {block[2]}" if block
                                else ""))
    if block is not None:
        raise SystemExit(f"{where}:{block[2]}: {block[0]} block never closed")
    return "".join(out)


def claims(out: Path) -> list[str]:
    """Lines of the release's Markdown and of the loader that still say ``solution.py`` exists
    or that ``LAB_IMPL`` defaults to ``solution``: ``path:line: text``."""
    found = []
    for rel in walk(out):
        if rel.suffix == ".md" or rel == LOADER:
            for number, line in enumerate((out / rel).read_text(encoding="utf-8").splitlines(),
                                          start=1):
                if CLAIM.search(line):
                    found.append(f"{rel.as_posix()}:{number}: {line.strip()}")
    return found


# `make X` as a command, not prose: at a line's start (a code block, a comment), after a
# backtick or quote, after "or: ", or after an environment assignment (`LAB02_X=y make demo`)
MAKE_REF = re.compile(r"(?:^[ \t#>]*|[`'\"]|\bor: |\b[A-Z][A-Z0-9_]*=\S+ )make ([a-z][a-z0-9-]*)",
                      re.MULTILINE)
MAKE_TARGET = re.compile(r"^([a-zA-Z0-9][a-zA-Z0-9_.-]*)\s*:(?!=)", re.MULTILINE)
TEMP_ROOTS = ("/tmp", "/var", "/private", "/usr")  # a checkout there: only its own path counts
TEXT_SUFFIXES = (".py", ".md", ".txt", ".toml", ".cfg", ".json", ".jsonl", ".log", ".sh", ".yml",
                 ".yaml", ".ipynb")


def build_machine_paths(repo: Path) -> list[str]:
    """Path prefixes that exist only on the machine that built the release: the checkout, its
    top folder (unless a temporary one), the home folder and the Python installation."""
    root = repo.resolve()
    found = {f"{root}/", f"{Path.home()}/", f"{Path(sys.prefix).resolve()}/",
             f"{Path(sys.base_prefix).resolve()}/"}
    top = f"/{root.parts[1]}" if len(root.parts) > 1 else None
    if top and top not in TEMP_ROOTS:
        found.add(f"{top}/")
    return sorted((p for p in found if p != "//"), key=len, reverse=True)  # longest first


def dangling(out: Path, repo: Path) -> list[str]:
    """What a shipped file names that the release lacks: ``path:line: ...`` per problem."""
    makefile = out / "Makefile"
    targets = set(MAKE_TARGET.findall(makefile.read_text(encoding="utf-8"))) \
        if makefile.is_file() else set()
    prefixes = build_machine_paths(repo)
    problems = []
    for rel in walk(out):
        path = out / rel
        if path.suffix not in TEXT_SUFFIXES and path.name != "Makefile":
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), start=1):
            for m in MAKE_REF.finditer(line):
                if m.group(1) not in targets:
                    problems.append(f"{rel.as_posix()}:{number}: `make {m.group(1)}` is not a "
                                    f"target of the release's Makefile")
            prefix = next((p for p in prefixes if p in line), None)
            if prefix is not None:
                problems.append(f"{rel.as_posix()}:{number}: an absolute path of the build "
                                f"machine ({prefix}...)")
    pyproject = out / "pyproject.toml"
    if pyproject.is_file():
        import tomllib

        options = tomllib.loads(pyproject.read_text(encoding="utf-8"))
        paths = options.get("tool", {}).get("pytest", {}).get("ini_options", {}).get(
            "testpaths", [])
        problems += [f"pyproject.toml: testpaths names {p}, which the release lacks"
                     for p in paths if not (out / p).exists()]
    return problems


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
        if path.suffix in (".py", ".md", ".txt", ".ipynb") or path.name == "Makefile":
            text = path.read_text(encoding="utf-8", errors="replace")
            if path.name in MARKED or path.suffix in MARKED:
                problems += [f"{rel}: marker left over: {line.strip()!r}"
                             for line in text.splitlines() if LEFTOVER.search(line)]
            leaked = sorted({lab for line, lab in markers.items() if line in text})
            if leaked:
                problems.append(f"{rel}: holds solution code of {', '.join(leaked)}")
    loader = out / LOADER
    if loader.is_file() and 'DEFAULT_IMPL = "starter"' not in loader.read_text(encoding="utf-8"):
        problems.append(f"{LOADER}: DEFAULT_IMPL is not 'starter'")
    return problems + dangling(out, repo)


def build_release(repo: Path, out: Path) -> list[Path]:
    """Write the release to ``out`` and return its files; raises ``SystemExit`` on a problem."""
    if out.resolve().is_relative_to(repo.resolve()):
        raise SystemExit(f"OUT: must lie outside the repository {repo}, got {out}")
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"OUT: must be new or empty, got {out}")
    files = release_files(repo)
    copy_files(files, repo, out)
    for rel in files:
        if rel.suffix in MARKED or rel.name in MARKED:
            path = out / rel
            path.write_text(apply_markers(path.read_text(encoding="utf-8"), rel.as_posix()),
                            encoding="utf-8")
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
          f"verified: no solution code, no grading tooling)")
    for line in claims(args.out):
        print(f"WARNING: the release still points at a solution: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
