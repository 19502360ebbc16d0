"""``grading.spec_check``: every error-message fragment a test matches is stated in the starter
or the README. Static and fast: a fake lab folder in a temp dir, then this repository's labs."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from grading import spec_check
from grading.runner import LABS_SUBDIR, TOOLING_ROOT
from grading.tests import fakes

LAB = "lab-01-alpha"

TESTS = r'''
import re

import pytest

LIMIT = 4
BAD = {
    "empty": (lambda lab: lab.f([]), "xs"),
    "huge": (lambda lab: lab.f([10**9]), "values"),
}


def names(err, pattern):
    assert re.search(rf"\b({pattern})\b", str(err.value))


def test_literal(lab):
    with pytest.raises(ValueError, match="documented wording"):
        lab.f(None)


def test_undocumented_literal(lab):
    with pytest.raises(RuntimeError, match="secret handshake"):
        lab.f(None)


def test_fstring_with_values(lab):
    with pytest.raises(ValueError, match=rf"^rank {LIMIT + 1} exceeds {LIMIT}\.$"):
        lab.f(None)


@pytest.mark.parametrize("arg, word", [(1, "alpha"), pytest.param(2, "omega", id="o")])
def test_parametrized(lab, arg, word):
    with pytest.raises(TypeError) as err:
        lab.f(arg)
    assert re.search(word, str(err.value))


@pytest.mark.parametrize("case", list(BAD))
def test_table(lab, case):
    call, argument = BAD[case]
    with pytest.raises(ValueError) as err:
        call(lab)
    names(err, argument)


def test_message_variable_and_excinfo_match(lab):
    with pytest.raises(KeyError) as err:
        lab.f(3)
    message = str(err.value)
    assert re.search(r"\bat item 3\b", message)
    err.match("missing key")


def test_values_only_and_not_a_message(lab):
    with pytest.raises(ValueError, match="9"):
        lab.f(9)
    assert re.search(r"Checkpoint size", lab.log())  # parsing output, not an error message
'''

STARTER = '''\
"""Fake starter.

f(xs) raises ValueError with the documented wording; rank R exceeds M. is the rank message.
A missing key is reported at item N. Errors name xs and omega.
"""


def f(xs):
    raise NotImplementedError("TODO(lab-01): f")
'''

README = "# Fake lab\n\nWrong types raise a TypeError naming alpha.\n"


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("spec")
    lab = root / LABS_SUBDIR / LAB
    fakes.write(lab / "test_lab.py", TESTS)
    fakes.write(lab / "starter.py", STARTER)
    fakes.write(lab / "README.md", README)
    return root


def test_resolves_every_kind_of_pattern(repo):
    patterns = {f.pattern for f in spec_check.lab_fragments(repo, LAB)}
    assert patterns == {
        "documented wording", "secret handshake",
        r"rank \S+ exceeds \S+\.",  # f-string values and anchors
        "alpha", "omega",  # both parametrize cases, pytest.param included
        r"\b(xs)\b", r"\b(values)\b",  # a table unpacked in the test, through a helper
        r"\bat item \S+\b", "missing key",  # message = str(...); excinfo.match
        None,  # match="9": the test's own value
    }, patterns


def test_reports_exactly_the_undocumented_fragments(repo):
    _, problems = spec_check.lab_problems(repo, LAB)
    assert len(problems) == 2, problems
    assert any("'secret handshake'" in p and "test_lab.py:" in p for p in problems), problems
    assert any(r"\b(values)\b" in p for p in problems), problems
    assert spec_check.main(["--repo", str(repo)]) == 1


@pytest.mark.parametrize(("pattern", "expected"), [
    (r"^load\(0\)", r"load\(\S+\)"),
    (r"\brow 3\b", r"\brow \S+\b"),
    (r"x{2,3}\d", r"x{2,3}\d"),  # quantifiers and escapes are not values
    (r"(?<![\d-])7(?!\d)", None),
    ("12", None),
])
def test_doc_pattern(pattern, expected):
    assert spec_check.doc_pattern(pattern) == expected


def test_this_repositorys_labs_state_their_message_fragments():
    """Labs 01, 03 and 04 (lab 02 is checked by check_starters like the others)."""
    for lab in ("lab-01-batched-lora-matmul", "lab-03-lora-economics",
                "lab-04-adapter-slot-cache"):
        fragments, problems = spec_check.lab_problems(TOOLING_ROOT, lab)
        assert fragments and not problems, (lab, problems)


FIELD_LAB = "lab-02-beta"
FIELD_TESTS = r'''
def test_fields(lab):
    cap = lab.parse("log")
    assert cap.dtype == "float16"
    assert (cap.device, cap.version) == ("cuda", "0.32.0")
    assert cap.kind != "secret_kind"
    failed = [c.figure for c in lab.checks()]
    assert "Rank" in failed[0].lower()
    figures = " | ".join(c.figure.lower() for c in lab.checks())
    for topic in ("kv cache", "hidden topic"):
        assert topic in figures
    text = lab.render()
    assert "SELECT" in text.upper()  # a method's result, not a field: not looked up
    assert cap.note == ""  # no letter or digit: nothing to state
'''
FIELD_STARTER = '''"""parse(log): dtype as float16, device cuda, version 0.32.0 (no v); a figure
per check: the slot check's names its RANK, the cache's its KV cache."""
'''


@pytest.fixture(scope="module")
def field_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fields")
    lab = root / LABS_SUBDIR / FIELD_LAB
    fakes.write(lab / "test_lab.py", FIELD_TESTS)
    fakes.write(lab / "starter.py", FIELD_STARTER)
    return root


def test_finds_the_literals_a_returned_field_is_compared_with(field_repo):
    fields = {f.pattern for f in spec_check.lab_fragments(field_repo, FIELD_LAB)
              if f.kind == "field"}
    assert fields == {"float16", "cuda", r"0\.32\.0", "secret_kind", "Rank", r"kv\ cache",
                      r"hidden\ topic", None}, fields


def test_reports_the_undocumented_literals_in_any_case(field_repo):
    _, problems = spec_check.lab_problems(field_repo, FIELD_LAB)
    assert len(problems) == 2, problems  # "Rank" matches RANK: a lower-cased field
    assert any("'secret_kind'" in p and "returned field" in p for p in problems), problems
    assert any("'hidden topic'" in p for p in problems), problems


def test_an_echo_of_the_tests_own_input_and_an_absent_text_need_no_docs():
    func = ast.parse(
        "def test_x(lab):\n"
        "    err = lab.pin('ghost')\n"
        "    assert 'ghost' in err.value\n"
        "    assert 'None' not in err.value\n"
        "    assert 'stated' in err.value\n").body[0]
    assert [lit.value for _, lit in spec_check.field_literals(func, {})] == ["stated"]
