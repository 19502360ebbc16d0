"""A lab in parts lists every function the student writes, once per part, in its README.

    - **Part 1**, what it is, specified by `test_x.py`: `f`, `g`,
      `h`.

The starter marks where each part starts with a ``# === part N: ... ===`` line, and each function
the student writes with a ``TODO(lab-0N)`` in its body. For each part, the README's names must be
exactly the starter's TODO functions below that marker: a function moved, renamed, added or
dropped in one place and not the other is named. A lab whose README has no part bullets has
nothing to check. The README's reader is ``labkit.parts`` (the tests mark each part with it);
``python -m grading.spec_check`` and ``check_starters`` run this check.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from labkit.parts import readme_parts

MARKER = re.compile(r"^# === part (\d+)\b")


def starter_parts(starter: str) -> dict[int, list[str]]:
    """Part number -> the top-level functions with a TODO below that part's marker."""
    markers = [(i + 1, int(m.group(1))) for i, line in enumerate(starter.splitlines())
               if (m := MARKER.match(line))]
    parts: dict[int, list[str]] = {part: [] for _, part in markers}
    for node in ast.parse(starter).body:
        if isinstance(node, ast.FunctionDef) and "TODO(lab-" in ast.get_source_segment(starter,
                                                                                     node):
            above = [part for line, part in markers if line < node.lineno]
            parts.setdefault(above[-1] if above else 0, []).append(node.name)
    return parts


def part_problems(lab_dir: Path) -> list[str] | None:
    """Each disagreement between the README's part lists and the starter's TODO functions;
    None for a lab whose README lists no parts, or that has no README."""
    readme = lab_dir / "README.md"
    if not readme.is_file():
        return None
    listed = readme_parts(readme.read_text(encoding="utf-8"))
    if not listed:
        return None
    todo = starter_parts((lab_dir / "starter.py").read_text(encoding="utf-8"))
    problems = []
    for part in sorted(set(listed) | set(todo)):
        docs, code = listed.get(part, []), todo.get(part, [])
        where = f"part {part}" if part else "above the first part marker"
        if missing := [f for f in code if f not in docs]:
            problems.append(f"{where}: starter.py's TODO functions {missing} are not in the "
                            f"README's part list")
        if extra := [f for f in docs if f not in code]:
            problems.append(f"{where}: the README lists {extra}, which are not TODO functions "
                            f"below the starter's part marker")
    return problems
