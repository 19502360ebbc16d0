"""``check_starters`` and ``check_suite`` on fake courses: a sound one passes, planted defects
(a vacuous test, a fixture error, an uncaught mutant or forced fail, a failing alternative, an
edit that no longer applies) are each named."""

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
    fakes.write(repo / "grading" / "mutants" / f"{fakes.LAB1}.toml", MUTANTS)
    alternatives = repo / "grading" / "alternatives" / fakes.LAB2
    fakes.write(alternatives / "times_two.py", "def double(x):\n    return 2 * x\n")
    fakes.write(alternatives / "off_by_one.py", "def double(x):\n    return 2 * x + 1\n")
    return repo


MUTANTS = """\
[[mutant]]
name = "add_subtracts"
bug = "add subtracts"
function = "add"
old = 'a + b'
new = 'a - b'

[[mutant]]
name = "empty_total_is_one"
bug = "the total of an empty list is 1, which no test asks for"
function = "total"
old = 'return sum(xs)'
new = 'return sum(xs) if xs else 1'

[[alternative]]
name = "mul_by_addition"
idea = "mul adds a to itself b times"
function = "mul"
old = 'return a * b'
new = 'return sum(a for _ in range(b)) if b >= 0 else -sum(a for _ in range(-b))'
"""


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
def test_mutant_table_shows_each_diff_beside_its_catching_tests(suite):
    table = suite["table"]
    assert ("### `add_subtracts`\n\nadd subtracts.\n\nCaught by `test_add_small_ints`, "
            "`test_add_matches_plus`, `test_uses_a_module_fixture`.\n\n```diff\n@@ add @@\n"
            " def add(a: int, b: int) -> int:\n-    return a + b\n+    return a - b\n```") \
        in table, table
    assert "Caught by **NOT CAUGHT**." in table.split("### `empty_total_is_one`")[1], table


@pytest.mark.slow
def test_every_todo_is_forced_to_fail_and_caught_under_exitfirst(suite):
    table = suite["table"]
    for row in ("| `add` | `test_add_small_ints` |", "| `mul` | `test_mul_small_ints` |",
                "| `neg` | `test_neg_flips_sign` |", "| `total` | `test_total_of_a_seeded_draw` |",
                "| `double` | `test_double_uses_lab01` |"):
        assert row in table, table
    assert "| `mul_by_addition` | mul adds a to itself b times | passes |" in table, table
    assert "| `off_by_one` | (whole file) | FAILS `test_double_uses_lab01` |" in table, table


@pytest.mark.slow
def test_a_stale_anchor_stops_the_suite_before_any_test_runs(flawed_repo, tmp_path, capsys):
    repo = tmp_path / "stale"
    shutil.copytree(flawed_repo, repo)
    solution = repo / "phase-11-multi-lora" / "labs" / fakes.LAB1 / "solution.py"
    solution.write_text(solution.read_text().replace("return a + b", "return b + a"))
    assert check_suite.main(["--repo", str(repo), "-m", "not gpu"]) == 1
    out = capsys.readouterr().out
    assert ("ERROR mutant lab-01/add_subtracts: its old text is not in add (solution.py lines "
            "4-5): 'a + b'") in out, out
    assert "nothing was run" in out and "checking lab-01" not in out, out


def test_suite_defects_name_uncaught_variants_and_failing_alternatives():
    def variant(kind: str, name: str, failing: list[str] | None = None):
        return check_suite.Variant("lab-01-alpha", kind, name, f"bug {name}", "", (),
                                   failing or [])
    defects = check_suite.suite_defects([
        variant("mutant", "a", ["test_x"]), variant("mutant", "b"),
        variant("forced-fail", "Cache.get", ["test_y"]), variant("forced-fail", "total"),
        variant("alternative", "d"), variant("alternative", "e", ["test_y"])])
    assert defects == [
        "mutant lab-01/b is not caught by any test: bug b",
        "forced-fail lab-01/total is not caught by any test: no test fails when total raises: "
        "add one, or exempt it with the reason in grading/mutants/lab-01-alpha.toml "
        "[forced_fail_exempt]",
        "alternative lab-01/e fails test_y",
    ]


def test_parametrized_cases_fold_into_one_entry():
    assert check_suite.catching(["test_a[1]", "test_a[2]", "test_b"]) == [
        "test_a (2 cases)", "test_b"]
