"""``grading.ledger``: every starter docstring sentence is tied to a test, checked both ways.
Static and fast: a fake lab in a temp dir, then this repository's labs."""

from __future__ import annotations

from pathlib import Path

import pytest

from grading import ledger
from grading.runner import LABS_SUBDIR, TOOLING_ROOT, lab_names

LAB = "lab-01-alpha"
STARTER = '''"""Lab 01: a title.

Bad input raises ValueError. Read the README first.
"""


def f(xs):
    """Sum of xs.

    Returns 0 for no xs.
    """
    raise NotImplementedError("TODO(lab-01): sum")
'''
TESTS = '''
def test_sum(lab):
    assert lab.f([1, 2]) == 3


def test_empty(lab):
    assert lab.f([]) == 0


class TestMachine:
    pass
'''
LEDGER = '''
["<module>"]
"a title" = "context: the title"
"Bad input raises ValueError." = ["test_sum"]
"Read the README first." = "context: how to read"

[f]
"Sum of xs." = ["test_sum", "test_lab.py::TestMachine"]
"Returns 0 for no xs." = ["test_empty"]

["README.md"]
"sums" = ["test_sum"]
'''


def fake_repo(tmp: Path, ledger_text: str = LEDGER, starter: str = STARTER,
              readme: str = "This lab sums; see `test_sum` and `test_e*`.\n") -> Path:
    folder = tmp / LABS_SUBDIR / LAB
    folder.mkdir(parents=True)
    (folder / "starter.py").write_text(starter)
    (folder / "README.md").write_text(readme)
    (folder / "test_lab.py").write_text(TESTS)
    (tmp / ledger.LEDGERS).mkdir(parents=True)
    (tmp / ledger.LEDGERS / f"{LAB}.toml").write_text(ledger_text)
    return tmp


def test_a_complete_ledger_has_no_problems(tmp_path):
    cov = ledger.check(fake_repo(tmp_path), LAB)
    assert cov.problems == []
    assert (cov.promises, cov.with_test, cov.context, cov.sentences) == (4, 4, 2, 5)


@pytest.mark.parametrize("broken, problem", [
    (LEDGER.replace('"Returns 0 for no xs." = ["test_empty"]\n', ""),
     "a docstring sentence with no phrase"),
    (LEDGER.replace('"Sum of xs."', '"Product of xs."'), "not in f's docstring"),
    (LEDGER.replace('["test_empty"]', '["test_gone"]'), "no such test"),
    (LEDGER.replace('["test_empty"]', "[]"), "a promise with no test"),
    (LEDGER.replace('"context: how to read"', '"  "'), "must say why"),
    (LEDGER + '\n[g]\n"x" = ["test_sum"]\n', "no public docstring"),
    (LEDGER.replace('"sums"', '"multiplies"'), "not in README.md's text"),
], ids=["sentence-missing", "phrase-stale", "test-missing", "no-test", "empty-why", "no-owner",
        "readme-phrase"])
def test_each_way_a_ledger_can_break_is_reported(tmp_path, broken, problem):
    cov = ledger.check(fake_repo(tmp_path, broken), LAB)
    assert any(problem in p for p in cov.problems), cov.problems


def test_a_readme_citing_a_missing_test_is_reported(tmp_path):
    cov = ledger.check(fake_repo(tmp_path, readme="This lab sums; see `test_nothing`.\n"), LAB)
    assert any("`test_nothing`" in p for p in cov.problems), cov.problems


def test_a_lab_without_a_ledger_is_none(tmp_path):
    repo = fake_repo(tmp_path)
    (repo / ledger.LEDGERS / f"{LAB}.toml").unlink()
    assert ledger.check(repo, LAB) is None


def test_sentences_split_at_ends_and_bullets():
    doc = "One thing. Two ``x``; three.\n- a bullet: yes\n- another. Last"
    assert ledger.sentences(doc) == ["One thing.", "Two ``x``; three.", "a bullet: yes",
                                     "another.", "Last"]


@pytest.mark.parametrize("lab", [lab for lab in lab_names(TOOLING_ROOT)
                                 if ledger.ledger_path(TOOLING_ROOT, lab).is_file()])
def test_this_repositorys_ledgers_are_complete(lab):
    cov = ledger.check(TOOLING_ROOT, lab)
    assert cov.problems == [] and cov.promises == cov.with_test > 0, cov.problems
