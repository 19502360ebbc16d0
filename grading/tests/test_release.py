"""``grading.release``: no solution code and no grading tooling leave, the READMEs and the
Makefile read right for a student, LAB_IMPL defaults to starter, and the release's own tests
run with every graded test failing cleanly."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from grading import release
from grading.runner import LABS_SUBDIR, TOOLING_ROOT, RunOptions, lab_names, run_lab
from grading.tests import fakes
from grading.tree import walk

MARKED_README = """\
# Fake course

<!-- instructor-only -->
Each lab has `solution.py`, the reference; `LAB_IMPL` is `solution` (the default).
<!-- /instructor-only -->
<!-- release-only
Each lab has your `starter.py`.
release-only -->

## Running
"""
MARKED_MAKEFILE = """\
# instructor-only
check-suite: ## test the tests
\tpython -m grading.check_suite
# /instructor-only
# release-only
# test: ## your starters
# \tpython -m pytest labs
# /release-only
lint: ## ruff
\truff check .
install: ## the real Makefile's target that the copied labkit and pyproject name
\tpip install -e .
"""
TOOLING = (".ci/run", "grading/honesty.py", "grading/plugin.py", "grading/grade.py",
           "tests/test_harness.py", "GRADING.md")
TOOLING_TARGETS = re.compile(r"^(check-starters|check-suite|grade|student-release|test-starter):",
                             re.MULTILINE)
CPU_LABS = ("lab-01", "lab-03", "lab-04")  # lab 02's README awaits its owner's markers (below)
LAB02_README = "phase-11-multi-lora/labs/lab-02-serve-many-loras/README.md"


@pytest.fixture(scope="module")
def fake_release(fake_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    fakes.write(fake_repo / "README.md", MARKED_README)
    fakes.write(fake_repo / "Makefile", MARKED_MAKEFILE)
    for rel in TOOLING:
        fakes.write(fake_repo / rel, "# instructor tooling\n")
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


def test_release_drops_the_instructors_tooling(fake_release):
    files = {p.as_posix() for p in walk(fake_release)}
    assert not [f for f in files if f.startswith(("grading/", ".ci/", "tests/"))
                or f == "GRADING.md"], sorted(files)


def test_release_applies_the_markers(fake_release):
    readme = (fake_release / "README.md").read_text()
    assert "Each lab has your `starter.py`." in readme and "solution" not in readme.split(
        "\n\n", 1)[1], readme  # the banner aside
    assert "only" not in readme.replace("only a", ""), readme
    makefile = (fake_release / "Makefile").read_text()
    assert makefile == "test: ## your starters\n\tpython -m pytest labs\nlint: ## ruff\n" \
                       "\truff check .\n" + MARKED_MAKEFILE.partition("\truff check .\n")[2], \
        makefile


@pytest.mark.parametrize("text", [
    "<!-- instructor-only -->\nnever closed\n",
    "<!-- /instructor-only -->\n",
    "<!-- release-only -->\nclosed on its own line\nrelease-only -->\n",
    "# instructor-only\n<!-- release-only\nnested\nrelease-only -->\n# /instructor-only\n",
])
def test_misplaced_markers_stop_the_build(text):
    with pytest.raises(SystemExit, match="README.md:"):
        release.apply_markers(text, "README.md")


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


def test_verify_finds_a_missing_make_target_and_a_build_machine_path(fake_repo, fake_release):
    """The release names only what it has: a planted `make nonexistent` and a planted absolute
    path of the checkout are both reported, the shipped `make test` and `make lint` are not."""
    planted = {"notes/README.md": "Run `make nonexistent`, then `make test` and `make lint`.\n",
               "notes/run.log": f"loading {fake_repo.resolve()}/model\n"}
    for rel, text in planted.items():
        fakes.write(fake_release / rel, text)
    try:
        problems = release.verify_release(fake_release, fake_repo)
    finally:
        for rel in planted:
            (fake_release / rel).unlink()
    assert [p for p in problems if p.startswith("notes/README.md")] == [
        "notes/README.md:1: `make nonexistent` is not a target of the release's Makefile"], problems
    assert [p.partition(" (")[0] for p in problems if p.startswith("notes/run.log")] == [
        "notes/run.log:1: an absolute path of the build machine"], problems
    assert release.verify_release(fake_release, fake_repo) == []


def test_release_refuses_a_folder_inside_the_repository(fake_repo):
    with pytest.raises(SystemExit, match="outside the repository"):
        release.build_release(fake_repo, fake_repo / "release")


@pytest.fixture(scope="module")
def real_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("real") / "release"
    release.build_release(TOOLING_ROOT, out)
    return out


def test_the_release_holds_no_solution_no_grader_no_ci(real_release):
    files = {p.as_posix() for p in walk(real_release)}
    assert not [f for f in files if f.endswith("solution.py")], "a solution.py leaked"
    assert not [f for f in files if f.startswith(("grading/", ".ci/", "tests/"))
                or f in ("GRADING.md", "docs/MUTANTS.md")], "instructor tooling leaked"
    assert {"README.md", "Makefile", "conftest.py", "pyproject.toml", "labkit/loader.py"} <= files
    makefile = (real_release / "Makefile").read_text()
    assert not TOOLING_TARGETS.search(makefile) and "grading" not in makefile, makefile
    assert re.search(r"^test: install", makefile, re.MULTILINE), "students keep `make test`"
    loader = (real_release / release.LOADER).read_text()
    assert 'DEFAULT_IMPL = "starter"' in loader and 'DEFAULT_IMPL = "solution"' not in loader
    pyproject = (real_release / "pyproject.toml").read_text()
    assert 'testpaths = ["phase-11-multi-lora/labs"]' in pyproject, pyproject
    assert not re.search(r"grading/|\btests\b", pyproject), "pyproject names tooling it lacks"


def test_the_release_names_only_what_it_has(real_release):
    """Every `make X` a shipped file names is a target of the shipped Makefile, no shipped file
    holds an absolute path of this machine (build_release refuses both; checked here too)."""
    assert release.dangling(real_release, TOOLING_ROOT) == []


def test_the_release_says_starter_everywhere(real_release):
    """No README (lab 02's aside: see the next test) and not the loader's docstring tells a
    student that solution.py exists or that LAB_IMPL defaults to solution."""
    found = [c for c in release.claims(real_release) if not c.startswith(LAB02_README)]
    assert found == [], "\n".join(found)
    assert "LAB_IMPL=starter pytest" in (real_release / "README.md").read_text()


def test_lab02_readme_says_starter_too(real_release):
    found = [c for c in release.claims(real_release) if c.startswith(LAB02_README)]
    assert found == [], "\n".join(found)


def test_pytest_in_the_release_fails_every_cpu_test_cleanly(real_release, tmp_path):
    """Plain pytest in the release, as a student runs it (no LAB_IMPL, no grader plugin): the
    CPU tests of labs 01, 03 and 04 are collected without error and every graded one fails on
    its TODO, in one line."""
    labs = [str(real_release / LABS_SUBDIR / lab) for lab in lab_names(real_release)
            if lab.startswith(CPU_LABS)]
    junit = tmp_path / "junit.xml"
    env = {k: v for k, v in os.environ.items()
           if k not in ("LAB_IMPL", "LAB_SEED", "PYTHONPATH") and not k.startswith("GRADING_")}
    out = subprocess.run(
        [sys.executable, "-m", "pytest", *labs, "-m", "not gpu and not engine and not structural",
         "-q", "--tb=no", "-p", "no:cacheprovider", f"--junitxml={junit}"],
        cwd=real_release, env={**env, "PYTHONDONTWRITEBYTECODE": "1"}, capture_output=True,
        text=True, timeout=300)
    assert out.returncode == 1, f"pytest exited {out.returncode} (1 = tests failed):\n" \
                                f"{(out.stdout + out.stderr)[-3000:]}"
    cases = list(ET.parse(junit).getroot().iter("testcase"))
    assert len(cases) > 100, f"only {len(cases)} tests ran"
    unclean = [(c.get("name"), [child.tag for child in c],
                (c.find("failure").get("message") or "")[:120] if c.find("failure") is not None
                else "") for c in cases
               if c.find("failure") is None
               or not (c.find("failure").get("message") or "").startswith("NotImplementedError in lab-0")]
    assert unclean == [], unclean[:5]


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
