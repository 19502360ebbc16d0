"""The starters are generated from the solutions' markers (grading/starters.py), and stay so."""

from __future__ import annotations

import ast
import shutil

import pytest

from grading import starters
from grading.runner import LABS_SUBDIR, TOOLING_ROOT, lab_names

SOLUTION = '''"""A lab."""

# BEGIN SOLUTION
import math

# END SOLUTION
GIVEN = 3


def area(r: float) -> float:
    """The area of a circle of radius r."""
    # BEGIN SOLUTION: TODO(lab-09): pi r squared
    return math.pi * r * r
    # END SOLUTION
'''


def test_a_todo_region_becomes_its_raise_and_a_plain_region_is_dropped():
    text = starters.starter_text(SOLUTION)
    assert "import math" not in text and "GIVEN = 3" in text
    assert 'raise NotImplementedError("TODO(lab-09): pi r squared")' in text
    assert '"""The area of a circle of radius r."""' in text, "docstrings are copied as written"


def test_a_long_todo_is_wrapped_within_the_line_length():
    long = SOLUTION.replace("pi r squared", "pi r squared, " * 12)
    lines = starters.starter_text(long).splitlines()
    assert max(map(len, lines)) <= starters.LINE_LENGTH, max(lines, key=len)


@pytest.mark.parametrize("broken, says", [
    (SOLUTION.replace("    # END SOLUTION\n", ""), "never closed"),
    (SOLUTION.replace("# BEGIN SOLUTION\nimport math", "import math"), "without a BEGIN"),
    (SOLUTION.replace("# BEGIN SOLUTION: TODO", "# BEGIN SOLUTION TODO"), "malformed"),
])
def test_a_broken_marker_is_an_error_naming_the_line(broken, says):
    with pytest.raises(starters.MarkerError, match=says):
        starters.starter_text(broken, "lab-09/solution.py")


def test_every_committed_starter_is_what_its_solution_generates():
    assert starters.stale(TOOLING_ROOT, lab_names(TOOLING_ROOT)) == []


def test_a_docstring_edited_only_in_the_solution_fails_the_check(tmp_path):
    repo = tmp_path / "repo"
    lab = lab_names(TOOLING_ROOT)[0]
    shutil.copytree(TOOLING_ROOT / LABS_SUBDIR / lab, repo / LABS_SUBDIR / lab)
    solution = repo / LABS_SUBDIR / lab / "solution.py"
    starter_fn = ast.parse((solution.parent / "starter.py").read_text()).body
    doc = next(ast.get_docstring(n) for n in starter_fn if isinstance(n, ast.FunctionDef))
    first_line = doc.splitlines()[0]  # a docstring the starter shares with its solution
    solution.write_text(solution.read_text().replace(first_line, "Edited. " + first_line, 1))
    (problem,) = starters.stale(repo, [lab])
    assert problem.startswith(f"{lab}: starter.py is not what solution.py generates")
    assert "+" in problem and "Edited. " in problem, problem


