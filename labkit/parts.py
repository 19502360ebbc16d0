"""A lab in parts: its README lists, once per part, every function the student writes.

    - **Part 1**, what it is, specified by `test_x.py`: `f`, `g`,
      `h`.

``readme_parts`` reads those bullets; ``part_marks`` gives a test of function ``f`` its part's
pytest marker (``part1``, ...), so ``pytest -m part1`` runs part 1 alone even in a file, such as
the input table, that covers every part. ``grading/parts.py`` holds the list to the starter.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import pytest

BULLET = re.compile(r"^- \*\*Part (\d+)\*\*")
NAME = re.compile(r"`([A-Za-z_]\w*)`")  # a backticked identifier; `test_x.py` is not one


def readme_parts(readme: str) -> dict[int, list[str]]:
    """Part number -> the functions its bullet names (continuation lines indented)."""
    parts: dict[int, list[str]] = {}
    current: int | None = None
    for line in readme.splitlines():
        start = BULLET.match(line)
        if start:
            current = int(start.group(1))
            parts[current] = []
        elif current is not None and not line.startswith("  "):
            current = None
        if current is not None:
            parts[current] += NAME.findall(line)
    return parts


@cache
def _parts_of(lab_dir: Path) -> dict[int, list[str]]:
    return readme_parts((lab_dir / "README.md").read_text(encoding="utf-8"))


def part_marks(lab_dir: Path, fn: str) -> list[pytest.MarkDecorator]:
    """The marker of the part whose README bullet lists ``fn`` (none for a given function)."""
    return [getattr(pytest.mark, f"part{n}") for n, names in _parts_of(lab_dir).items()
            if fn in names]
