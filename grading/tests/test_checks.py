"""``check_starters`` and ``check_suite`` on fake courses: a sound one passes, planted defects
(a vacuous test, a fixture error, an uncaught mutant, a failing alternative) are each named."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from grading import check_starters, check_suite
from grading.tests import fakes

VACUOUS_TESTS = '''

def test_returns_something(lab):
    assert lab is not None


@pytest.fixture(scope="module")
def precomputed(lab):
    return lab.add(1, 1)


def test_uses_a_module_fixture(precomputed):
    assert precomputed == 2
'''


@pytest.mark.slow
def test_check_starters_passes_a_sound_course(fake_repo, capsys):
    assert check_starters.main(["--repo", str(fake_repo)]) == 0
    out = capsys.readouterr().out
    assert "| lab-01-alpha | 7 | 1 | 6 | 5 | 1 |" in out, out


@pytest.fixture(scope="module")
def flawed_repo(fake_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("flawed")
    shutil.copytree(fake_repo, repo, dirs_exist_ok=True)
    tests = repo / "phase-11-multi-lora" / "labs" / fakes.LAB1 / "test_lab.py"
    tests.write_text(tests.read_text() + VACUOUS_TESTS)
    mutants = repo / "grading" / "mutants" / fakes.LAB1
    fakes.write(mutants / "add_subtracts.py", fakes.LAB1_SOLUTION.replace(
        '"""Fake lab 01 reference."""', '"""Mutant: add subtracts."""').replace(
        "return a + b", "return a - b"))
    fakes.write(mutants / "harmless.py", fakes.LAB1_SOLUTION.replace(
        '"""Fake lab 01 reference."""', '"""Mutant: changes nothing."""'))
    alternatives = repo / "grading" / "alternatives" / fakes.LAB2
    fakes.write(alternatives / "times_two.py", "def double(x):\n    return 2 * x\n")
    fakes.write(alternatives / "off_by_one.py", "def double(x):\n    return 2 * x + 1\n")
    return repo


@pytest.mark.slow
def test_check_starters_names_vacuous_and_erroring_tests(flawed_repo, capsys):
    assert check_starters.main(["--repo", str(flawed_repo), "--labs", "lab-01"]) == 1
    out = capsys.readouterr().out
    assert "test_returns_something passes against the pristine starter" in out
    assert "test_uses_a_module_fixture errors against the starter" in out


@pytest.fixture(scope="module")
def suite(flawed_repo: Path) -> dict:
    rc = check_suite.main(["--repo", str(flawed_repo), "-m", "not gpu"])
    return {"rc": rc, "table": (flawed_repo / check_suite.TABLE_FILE).read_text()}


@pytest.mark.slow
def test_check_suite_fails_on_the_planted_defects(suite):
    assert suite["rc"] == 1


@pytest.mark.slow
def test_mutant_table_lists_catching_tests_and_uncaught_mutants(suite):
    table = suite["table"]
    assert "| `add_subtracts` | add subtracts. | `test_add_small_ints`, `test_add_matches_plus`" \
           in table, table
    assert "| `harmless` | changes nothing. | **NOT CAUGHT** |" in table, table


def test_suite_defects_name_uncaught_mutants_and_failing_alternatives(tmp_path):
    caught = check_suite.Variant("lab-01", tmp_path / "a.py", "Mutant: a.", ["test_x"])
    uncaught = check_suite.Variant("lab-01", tmp_path / "b.py", "Mutant: b.")
    unlabelled = check_suite.Variant("lab-01", tmp_path / "c.py", "A bug.", ["test_x"])
    good = check_suite.Variant("lab-02", tmp_path / "d.py", "")
    bad = check_suite.Variant("lab-02", tmp_path / "e.py", "", ["test_y"])
    defects = check_suite.suite_defects([caught, uncaught, unlabelled], [good, bad])
    assert defects == [
        "mutant lab-01/b.py is not caught by any test: Mutant: b.",
        "mutant lab-01/c.py: docstring must start 'Mutant: <the bug>.'",
        "alternative lab-02/e.py fails test_y",
    ]


def test_parametrized_cases_fold_into_one_entry():
    assert check_suite.catching(["test_a[1]", "test_a[2]", "test_b"]) == [
        "test_a (2 cases)", "test_b"]
