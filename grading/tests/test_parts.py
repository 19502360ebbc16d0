"""``grading.parts``: a lab in parts lists, once per part in its README, exactly the functions its
starter leaves as TODOs below that part's marker, and the files a student opens for each part:
at most eight, each one there, none missing that the part's code uses."""

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

| part | the files you open |
| :--- | :--- |
| part 1 | `README.md`, `starter.py`, `test_one.py` |
| part 2 | `README.md`, `starter.py` |
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
    folder = tmp_path / "lab-09-parts"  # beside an earlier lab, as in labs/
    (tmp_path / "lab-03-earlier").mkdir(exist_ok=True)
    (tmp_path / "lab-03-earlier" / "starter.py").write_text("", encoding="utf-8")
    folder.mkdir(exist_ok=True)
    (folder / "README.md").write_text(readme, encoding="utf-8")
    (folder / "starter.py").write_text(starter, encoding="utf-8")
    (folder / "test_one.py").write_text("", encoding="utf-8")
    return folder


def test_lists_that_agree_have_no_problem(tmp_path):
    assert parts.readme_parts(README) == {1: ["alpha", "beta"], 2: ["gamma"]}
    assert parts.starter_parts(STARTER) == {1: ["alpha", "beta"], 2: ["gamma"]}
    assert parts.part_problems(lab(tmp_path)) == []


def test_a_lab_without_part_lists_has_nothing_to_check(tmp_path):
    folder = lab(tmp_path, readme="# Lab\n\n`alpha`\n")
    assert parts.part_problems(folder) is None
    (folder / "README.md").unlink()
    assert parts.part_problems(folder) is None  # a lab with no README (a fake course's)


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


GIVEN = '''records, = (load_support("lab-09", m) for m in ("given.records",))
Capture = records.Capture

'''
ROW1 = "| part 1 | `README.md`, `starter.py`, `test_one.py` |"


@pytest.mark.parametrize(("readme", "starter", "problem"), [
    (README.replace(ROW1, ROW1.replace("`test_one.py`", ", ".join(f"`t{i}.py`" for i in range(6))
                                       + ", `test_one.py`")), STARTER,
     "part 1: the README lists 9 files to open, expected at most 8"),
    (README.replace("`test_one.py`", "`test_two.py`"), STARTER,
     "part 1: the README lists ['test_two.py'], which do not exist"),
    (README, STARTER.replace("# === part 1: the first ===",
                             "# === part 1: the first (test_one.py) ===\n# part 2's spec"
                             ).replace("# === part 2: the second ===",
                                       "# === part 2: the second (test_one.py) ==="),
     "part 2: the part needs ['test_one.py']"),
    (README, GIVEN + STARTER.replace("def beta():", "def beta(c: Capture):"),
     "part 1: the part needs ['given/records.py']"),
    (README, STARTER.replace("def gamma():", "def gamma():\n    load_lab(\"lab-03\")"),
     "part 2: the part needs ['../lab-03-earlier/starter.py']"),
    (README.replace("| part 2 | `README.md`, `starter.py` |\n", ""), STARTER,
     "part 2: no row `| part 2 | ... |`"),
], ids=["nine-files", "absent-file", "its-spec", "a-given-module", "an-earlier-lab", "no-row"])
def test_each_problem_of_the_files_table_is_named(tmp_path, readme, starter, problem):
    folder = lab(tmp_path, readme, starter)
    for i in range(6):
        (folder / f"t{i}.py").write_text("", encoding="utf-8")
    problems = parts.part_problems(folder)
    assert any(p.startswith(problem) for p in problems), problems
    assert parts.part_problems(lab(tmp_path)) == []  # the same lab, the table put right


def test_lab_02_lists_at_most_eight_files_a_part_each_one_there():
    lab_dir = TOOLING_ROOT / LABS_SUBDIR / "lab-02-serve-many-loras"
    files = parts.readme_part_files((lab_dir / "README.md").read_text(encoding="utf-8"))
    assert sorted(files) == [1, 2, 3] and all(len(f) <= parts.MAX_FILES for f in files.values())
    assert parts.part_file_problems(lab_dir) == []
