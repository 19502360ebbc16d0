"""``grading.parts``: a lab in parts lists, once per part in its README, exactly the functions its
starter leaves as TODOs below that part's marker."""

from __future__ import annotations

from pathlib import Path

import pytest

from grading import parts
from grading.runner import LABS_SUBDIR, TOOLING_ROOT

README = """# Lab

- **Part 1**, the first, specified by `test_one.py`: `alpha`,
  `beta`.
- **Part 2**, the second: `gamma`.

Not a part: `delta`.
"""

STARTER = '''"""Lab."""

# === part 1: the first ===


def alpha():
    raise NotImplementedError("TODO(lab-09)")


def beta():
    raise NotImplementedError("TODO(lab-09)")


def given():
    return 1

# === part 2: the second ===


def gamma():
    raise NotImplementedError("TODO(lab-09)")
'''


def lab(tmp_path: Path, readme: str = README, starter: str = STARTER) -> Path:
    (tmp_path / "README.md").write_text(readme, encoding="utf-8")
    (tmp_path / "starter.py").write_text(starter, encoding="utf-8")
    return tmp_path


def test_lists_that_agree_have_no_problem(tmp_path):
    assert parts.readme_parts(README) == {1: ["alpha", "beta"], 2: ["gamma"]}
    assert parts.starter_parts(STARTER) == {1: ["alpha", "beta"], 2: ["gamma"]}
    assert parts.part_problems(lab(tmp_path)) == []


def test_a_lab_without_part_lists_has_nothing_to_check(tmp_path):
    assert parts.part_problems(lab(tmp_path, readme="# Lab\n\n`alpha`\n")) is None
    (tmp_path / "README.md").unlink()
    assert parts.part_problems(tmp_path) is None  # a lab with no README (a fake course's)


@pytest.mark.parametrize(("readme", "starter", "problem"), [
    (README.replace("`beta`", "`bravo`"), STARTER,
     "part 1: starter.py's TODO functions ['beta'] are not in the README's part list"),
    (README, STARTER.replace("def given():\n    return 1", "def given():\n    raise "
                             "NotImplementedError('TODO(lab-09)')"),
     "part 1: starter.py's TODO functions ['given']"),
    (README.replace(": `gamma`.", ": `gamma`, `delta`."), STARTER,
     "part 2: the README lists ['delta'], which are not TODO functions"),
    (README, "def early():\n    raise NotImplementedError('TODO(lab-09)')\n\n" + STARTER,
     "above the first part marker: starter.py's TODO functions ['early']"),
], ids=["renamed", "given-became-todo", "listed-not-written", "before-any-marker"])
def test_each_disagreement_is_named(tmp_path, readme, starter, problem):
    problems = parts.part_problems(lab(tmp_path, readme, starter))
    assert any(p.startswith(problem) for p in problems), problems


def test_lab_02_lists_every_function_its_starter_leaves_to_the_student():
    lab_dir = TOOLING_ROOT / LABS_SUBDIR / "lab-02-serve-many-loras"
    assert parts.part_problems(lab_dir) == []
    assert sorted(parts.readme_parts((lab_dir / "README.md").read_text(encoding="utf-8"))) == [
        1, 2, 3]


def test_check_starters_counts_each_disagreement_as_a_defect(monkeypatch):
    from grading import spec_check

    monkeypatch.setattr(parts, "part_problems", lambda lab_dir: ["part 1: planted"])
    defects = spec_check.lab_defects(TOOLING_ROOT, "lab-02-serve-many-loras")
    assert "parts: part 1: planted" in defects, defects
