"""Each lab is written once: ``starter.py`` is generated from the markers in ``solution.py``.

    python -m grading.starters            # write every lab's starter.py
    python -m grading.starters --check    # fail if a committed starter differs (make test, CI)

Markers, as comment lines in ``solution.py`` (the otter-grader idea, for plain Python files):

- ``# BEGIN SOLUTION: TODO(lab-NN): <what to do>`` ... ``# END SOLUTION``: the lines between
  become ``raise NotImplementedError("TODO(lab-NN): <what to do>")`` at the marker's indentation:
  the body of a function the student writes, after its docstring;
- ``# BEGIN SOLUTION`` ... ``# END SOLUTION``: the lines between are dropped: imports, constants
  and private helpers that only the reference uses.

Everything outside the markers (module docstring, given code, signatures, docstrings) is copied
as it is, so a starter and its solution cannot drift. Runs of blank lines left by a dropped
block are folded to what the style allows (two at the top level, one inside a block). A marker
that is unclosed, nested, or leaves the starter unparsable is an error naming the line.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import re
import sys
from pathlib import Path

from grading.runner import LABS_SUBDIR, TOOLING_ROOT, lab_names

BEGIN = re.compile(r"^(?P<indent>\s*)# BEGIN SOLUTION(?::\s*(?P<todo>TODO\(lab-\d\d\):.+?))?\s*$")
END = re.compile(r"^\s*# END SOLUTION\s*$")
LINE_LENGTH = 100  # ruff's line-length in pyproject.toml


class MarkerError(ValueError):
    """A marker problem in a solution file: ``path:line: what``."""


def raise_todo(indent: str, todo: str) -> list[str]:
    """``raise NotImplementedError("<todo>")``, wrapped in adjacent literals to fit the line."""
    head = f'{indent}raise NotImplementedError('
    room = LINE_LENGTH - len(head) - 3  # the quotes and a closing parenthesis or a space
    words, parts, current = todo.split(" "), [], ""
    for word in words:
        candidate = f"{current} {word}" if current else word
        if len(candidate) + 1 > room and current:
            parts.append(current + " ")
            current = word
        else:
            current = candidate
    parts.append(current)
    pad = " " * len(head)
    lines = [f'{head if i == 0 else pad}"{part}"' for i, part in enumerate(parts)]
    return [line + "\n" for line in lines[:-1]] + [lines[-1] + ")\n"]


def fold_blank_lines(lines: list[str]) -> list[str]:
    """At most two blank lines in a row at the top level, one inside an indented block, none at
    the end of the file."""
    out: list[str] = []
    for i, line in enumerate(lines):
        if line.strip():
            out.append(line)
            continue
        following = next((ln for ln in lines[i + 1:] if ln.strip()), "")
        limit = 2 if following and not following[0].isspace() else 1
        run = 0
        for previous in reversed(out):
            if previous.strip():
                break
            run += 1
        if following and run < limit:
            out.append(line)
    return out


def starter_text(solution: str, where: str = "solution.py") -> str:
    """The starter for a solution's text."""
    out: list[str] = []
    block: tuple[int, str, str | None] | None = None  # (line, indent, todo) of an open BEGIN
    for number, line in enumerate(solution.splitlines(keepends=True), start=1):
        begin, end = BEGIN.match(line), END.match(line)
        if begin:
            if block is not None:
                raise MarkerError(f"{where}:{number}: BEGIN SOLUTION inside the block opened "
                                  f"at line {block[0]}")
            block = (number, begin["indent"], begin["todo"])
        elif end:
            if block is None:
                raise MarkerError(f"{where}:{number}: END SOLUTION without a BEGIN")
            if block[2] is not None:
                out += raise_todo(block[1], block[2].strip())
            block = None
        elif "SOLUTION" in line and line.lstrip().startswith("# BEGIN"):
            raise MarkerError(f"{where}:{number}: malformed marker: {line.strip()}")
        elif block is None:
            out.append(line)
    if block is not None:
        raise MarkerError(f"{where}:{block[0]}: BEGIN SOLUTION never closed")
    text = "".join(fold_blank_lines(out))
    try:
        ast.parse(text)
    except SyntaxError as err:
        raise MarkerError(f"{where}: the generated starter does not parse: line {err.lineno}: "
                          f"{err.msg}") from None
    return text


def paths(repo: Path, lab: str) -> tuple[Path, Path]:
    folder = repo / LABS_SUBDIR / lab
    return folder / "solution.py", folder / "starter.py"


def stale(repo: Path, labs: list[str]) -> list[str]:
    """One line per starter that differs from what its solution generates, with the first
    differing lines."""
    found = []
    for lab in labs:
        solution, starter = paths(repo, lab)
        want = starter_text(solution.read_text(encoding="utf-8"), str(solution.relative_to(repo)))
        have = starter.read_text(encoding="utf-8") if starter.is_file() else ""
        if want != have:
            diff = list(difflib.unified_diff(have.splitlines(), want.splitlines(),
                                             "starter.py (committed)", "starter.py (generated)",
                                             lineterm="", n=1))
            found.append(f"{lab}: starter.py is not what solution.py generates; run `python -m "
                         f"grading.starters` (or `make starters`):\n  " + "\n  ".join(diff[:12]))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grading.starters", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare, write nothing")
    parser.add_argument("--repo", type=Path, default=TOOLING_ROOT)
    args = parser.parse_args(argv)
    labs = lab_names(args.repo)
    try:
        if args.check:
            problems = stale(args.repo, labs)
            for p in problems:
                print(p)
            print(f"{'FAIL' if problems else 'OK'}: {len(labs) - len(problems)}/{len(labs)} "
                  "starters are what their solutions generate")
            return 1 if problems else 0
        for lab in labs:
            solution, starter = paths(args.repo, lab)
            starter.write_text(starter_text(solution.read_text(encoding="utf-8"),
                                            str(solution.relative_to(args.repo))),
                               encoding="utf-8")
            print(f"wrote {starter.relative_to(args.repo)}")
    except MarkerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
