"""``grading.release``: no solution code leaves, LAB_IMPL defaults to starter, and the release's
own tests run with every graded test failing cleanly."""

from __future__ import annotations

from pathlib import Path

import pytest

from grading import release
from grading.runner import TOOLING_ROOT, RunOptions, lab_names, run_lab
from grading.tests import fakes
from grading.tree import walk


@pytest.fixture(scope="module")
def fake_release(fake_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    fakes.write(fake_repo / "README.md", "# Fake course\n")
    fakes.write(fake_repo / "grading" / "keys" / "hidden_seeds.toml", "seeds = [1]\n")
    fakes.write(fake_repo / "grading" / "mutants" / f"{fakes.LAB1}.toml",
                '[[mutant]]\nname = "x"\nbug = "x"\nfunction = "add"\nold = "a"\nnew = "b"\n')
    fakes.write(fake_repo / "docs" / "MUTANTS.md", "# Mutants\n")
    out = tmp_path_factory.mktemp("release")
    release.build_release(fake_repo, out)
    return out


def test_release_drops_solutions_mutants_and_keys(fake_release):
    files = {p.as_posix() for p in walk(fake_release)}
    assert not [f for f in files if f.endswith("solution.py") or f.startswith("grading/keys")
                or f.startswith("grading/mutants") or f == "docs/MUTANTS.md"], files
    assert f"phase-11-multi-lora/labs/{fakes.LAB1}/starter.py" in files


def test_release_defaults_lab_impl_to_starter_and_says_so(fake_release):
    loader = (fake_release / "labkit" / "loader.py").read_text()
    assert 'DEFAULT_IMPL = "starter"' in loader and 'DEFAULT_IMPL = "solution"' not in loader
    assert "`LAB_IMPL` defaults to `starter`" in (fake_release / "README.md").read_text()


def test_verify_finds_a_copied_solution_and_a_pasted_line(fake_repo, fake_release, tmp_path):
    assert release.verify_release(fake_release, fake_repo) == []
    sol = fake_repo / "phase-11-multi-lora" / "labs" / fakes.LAB1 / "solution.py"
    planted = fake_release / "notes" / "copy.py"
    fakes.write(planted, sol.read_text())
    pasted = 'x = 1\nreturn load_lab("lab-01").add(x, x)\n'  # lab-02-beta's one line of code
    fakes.write(fake_release / "notes" / "pasted.py", pasted)
    try:
        problems = release.verify_release(fake_release, fake_repo)
    finally:
        planted.unlink()
        (fake_release / "notes" / "pasted.py").unlink()
    assert any("copy.py: identical to" in p for p in problems), problems
    assert any("pasted.py: holds solution code of lab-02-beta" in p for p in problems), problems


def test_release_refuses_a_folder_inside_the_repository(fake_repo):
    with pytest.raises(SystemExit, match="outside the repository"):
        release.build_release(fake_repo, fake_repo / "release")


@pytest.mark.slow
def test_release_of_this_repository_fails_every_graded_test_cleanly(tmp_path):
    """End to end on the real labs (CPU tests, about a minute): the release's pytest runs with
    its default LAB_IMPL, and every graded test fails; none errors, none passes."""
    out = tmp_path / "release"
    release.build_release(TOOLING_ROOT, out)
    opts = RunOptions(marker_expr="not gpu and not engine", timeout_s=120, budget_s=600)
    for lab in lab_names(out):
        run = run_lab(out, lab, None, tmp_path / "runs" / lab, opts)
        assert run.problems in ([], ["no tests collected"]), (lab, run.problems)
        wrong = [(t.name, t.outcome, t.reason) for t in run.tests
                 if t.outcome in ("error", "not_run")
                 or (t.outcome == "passed" and not t.structural)]
        assert wrong == [], lab
