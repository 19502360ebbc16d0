"""``grading.mutate``: every stored edit applies to the current solutions, and an edit that no
longer applies is an error that names the lab, the variant and the function (no pytest run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from grading import mutate
from grading.runner import TOOLING_ROOT, lab_names
from grading.tests import fakes

SOURCE = '''\
"""A module."""

import math

LIMIT = 3  # the module-level constant


def area(r: float) -> float:
    """The area of a disc."""
    return math.pi * r * r  # pi r squared


class Box:
    def __init__(self, w: int) -> None:
        self.w = w

    @property
    def double(self) -> int:
        """Twice the width."""
        if self.w > LIMIT:
            return 2 * self.w
        return self.w + self.w
'''


def edit(function: str, old: str, new: str) -> mutate.Spec:
    return mutate.Spec("lab-09-demo", mutate.MUTANT, "m", "a bug",
                       (mutate.Edit(function, old, new),))


def test_every_edit_applies_to_the_current_solutions():
    """`python -m grading.mutate --check` in-process: the fast anchor check of `make test`."""
    built, errors = mutate.build(TOOLING_ROOT, lab_names(TOOLING_ROOT))
    assert errors == [], "\n".join(errors)
    assert all(b.mutants and b.forced_fail for b in built), [b.lab for b in built]


def test_check_command_reports_ok(capsys):
    assert mutate.main(["--check"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("OK: 0 broken variant(s)")


def test_edit_lands_in_the_named_method_only():
    built = mutate.apply(SOURCE, edit("Box.double", "2 * self.w", "3 * self.w"))
    assert "return 3 * self.w" in built.source
    assert built.diffs == ("@@ Box.double @@\n"
                           "         \"\"\"Twice the width.\"\"\"\n"
                           "         if self.w > LIMIT:\n"
                           "-            return 2 * self.w\n"
                           "+            return 3 * self.w\n"
                           "         return self.w + self.w",)


def test_module_level_edit_and_several_edits_apply_in_order():
    spec = mutate.Spec("lab-09-demo", mutate.MUTANT, "m", "a bug", (
        mutate.Edit(mutate.MODULE, "LIMIT = 3", "LIMIT = 4"),
        mutate.Edit("area", "r * r", "r")))
    source = mutate.apply(SOURCE, spec).source
    assert "LIMIT = 4  #" in source and "math.pi * r  #" in source


@pytest.mark.parametrize("function, old, new, message", [
    ("area", "r ** 2", "r", "mutant lab-09/m: its old text is not in area (solution.py lines "
                            "8-10): 'r ** 2'"),
    ("area", "return math.pi * r * r  # pi r²", "return 0",
     "the closest line there is 'return math.pi * r * r  # pi r squared'"),
    ("area", "self.w", "0", "its old text is not in area (solution.py lines 8-10): 'self.w'; "
                            "it occurs in Box.__init__, Box.double (the code moved?)"),
    ("Box.double", "self.w", "1", "its old text occurs 4 times in Box.double (solution.py lines "
                                  "17-22), expected exactly once: 'self.w'; lengthen it"),
    ("Box.triple", "x", "y", "function Box.triple is not defined in solution.py (renamed or "
                             "moved?); did you mean Box.double?"),
    ("area", "  # pi r squared", "  # the area", "leaves the AST unchanged"),
    ("area", "r * r", "r *", "the edited solution does not parse: invalid syntax at line 10"),
    (mutate.MODULE, "math.pi", "3.0", "its old text lies inside area, not at module level"),
])
def test_an_edit_that_does_not_apply_is_an_error_naming_it(function, old, new, message):
    with pytest.raises(mutate.SpecError) as err:
        mutate.apply(SOURCE, edit(function, old, new))
    assert message in str(err.value), str(err.value)
    assert str(err.value).startswith("mutant lab-09/m: ")


def test_forced_fail_keeps_the_docstring_and_replaces_the_body():
    built = mutate.force_fail("lab-09-demo", SOURCE, "Box.double")
    assert built.spec.label == "forced-fail lab-09/Box.double"
    assert built.source.endswith('        """Twice the width."""\n'
                                 '        raise RuntimeError("forced fail: Box.double")\n')
    init = mutate.force_fail("lab-09-demo", SOURCE, "Box.__init__").source
    assert '        raise RuntimeError("forced fail: Box.__init__")\n\n    @property' in init


def test_graded_callables_are_the_starters_todos():
    assert mutate.graded_callables(fakes.LAB1_STARTER) == ["add", "mul", "neg", "total"]
    starter = ('class C:\n    def given(self):\n        return 1\n\n'
               '    def todo(self):\n        """Doc."""\n'
               '        raise NotImplementedError("TODO(lab-09): todo")\n')
    assert mutate.graded_callables(starter) == ["C.todo"]


def write_specs(repo: Path, text: str) -> None:
    fakes.write(repo / "grading" / "mutants" / f"{fakes.LAB1}.toml", text)


@pytest.mark.parametrize("text, message", [
    ('[[mutant]]\nname = "m"\nfunction = "add"\nold = "a"\nnew = "b"\n',
     "mutant lab-01/m: needs bug = '...'"),
    ('[[mutant]]\nname = "m"\nbug = "x"\nfuncion = "add"\nold = "a"\nnew = "b"\n',
     "mutant lab-01/m: unknown keys ['funcion']"),
    ('[[mutant]]\nname = "m"\nbug = "x"\nfunction = "add"\nold = "a"\nnew = "b"\n'
     '[[mutant.edit]]\nfunction = "add"\nold = "a"\nnew = "b"\n',
     "give either function/old/new or [[...edit]] tables, not both"),
    ('[[mutant]]\nname = "m"\nbug = "x"\nfunction = "add"\nold = "a + b"\nnew = "a - b"\n'
     '[[alternative]]\nname = "m"\nidea = "y"\nfunction = "add"\nold = "a + b"\nnew = "b + a"\n',
     "variant names must be unique in the lab, repeated: ['m']"),
    ('[forced_fail_exempt]\nsub = "never written"\n',
     "[forced_fail_exempt] names sub, which is not a TODO of lab-01's starter.py"),
])
def test_a_malformed_spec_file_is_named(tmp_path, text, message):
    repo = fakes.make_repo(tmp_path)
    write_specs(repo, text)
    errors = mutate.build_lab(repo, fakes.LAB1).errors
    assert len(errors) == 1 and message in errors[0], errors


def test_a_whole_file_mutant_is_an_error(tmp_path):
    repo = fakes.make_repo(tmp_path)
    fakes.write(repo / "grading" / "mutants" / fakes.LAB1 / "old_style.py", fakes.LAB1_SOLUTION)
    _, errors = mutate.build(repo, [fakes.LAB1])
    assert errors == [f"grading/mutants/{fakes.LAB1}/old_style.py: a whole-file mutant; mutants "
                      f"are edits now: add it as a [[mutant]] to grading/mutants/{fakes.LAB1}.toml "
                      f"(name, bug, function, old, new) and delete the file"]


def test_exempt_callables_get_no_forced_fail(tmp_path):
    repo = fakes.make_repo(tmp_path)
    write_specs(repo, '[forced_fail_exempt]\nneg = "given code in this fake"\n')
    lab = mutate.build_lab(repo, fakes.LAB1)
    assert lab.errors == [] and lab.exempt == {"neg": "given code in this fake"}
    assert [b.spec.name for b in lab.forced_fail] == ["add", "mul", "total"]
