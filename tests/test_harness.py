"""The LAB_IMPL harness, tested on a fake labs/ tree in a temp dir.

Each test runs pytest in a subprocess against two tiny fake labs, with the repository's own
root conftest.py copied beside them and ``PHASE11_LABS_DIR`` pointing the loader at the fake tree.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from labkit import loader
from labkit.loader import Impl, LabImplError, resolve_impl

REPO = Path(__file__).resolve().parent.parent

SOLUTION = '''
WHO = "solution"
def double(x: int) -> int:
    return 2 * x
'''
STARTER = '''
WHO = "starter"
def double(x: int) -> int:
    raise NotImplementedError("TODO(lab-0N): return twice x")
'''
TEST = '''
import pytest

def test_double_doubles(lab):
    assert lab.double(21) == 42

def test_reports_who(lab):
    print("WHO=" + lab.WHO + " MODULE=" + lab.__name__)

@pytest.mark.engine
def test_engine_path(lab):
    pytest.skip("pretend the engine is unusable")
'''
INI = '''
[pytest]
addopts = --import-mode=importlib --strict-markers -rs -p no:cacheprovider
markers =
    gpu: needs CUDA
    engine: needs vLLM
    structural: shape checks
'''


@pytest.fixture
def fake_tree(tmp_path: Path) -> Path:
    """tmp/labs/lab-01-alpha and lab-02-beta, each with solution, starter and a test file."""
    for lab in ("lab-01-alpha", "lab-02-beta"):
        folder = tmp_path / "labs" / lab
        folder.mkdir(parents=True)
        (folder / "solution.py").write_text(SOLUTION)
        (folder / "starter.py").write_text(STARTER.replace("lab-0N", lab[:6]))
        (folder / "test_lab.py").write_text(TEST)
    shutil.copy(REPO / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "pytest.ini").write_text(INI)
    return tmp_path


def run_pytest(tree: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": str(REPO), loader.LABS_DIR_ENV: str(tree / "labs"),
                "CI": "", **env}
    full_env.pop("LAB_IMPL", None)
    full_env.update({k: v for k, v in env.items() if k == "LAB_IMPL"})
    return subprocess.run([sys.executable, "-m", "pytest", "-s", "labs", *args], cwd=tree,
                          env=full_env, capture_output=True, text=True, timeout=120)


def test_solution_is_the_default(fake_tree):
    out = run_pytest(fake_tree, "-k", "double")
    assert out.returncode == 0, out.stdout[-2000:]
    assert "2 passed" in out.stdout


def test_starter_todo_fails_with_one_line(fake_tree):
    out = run_pytest(fake_tree, "-k", "double", LAB_IMPL="starter")
    assert out.returncode == 1
    line = "NotImplementedError in lab-01 double(): TODO(lab-01): return twice x"
    assert line in out.stdout, out.stdout[-2000:]
    assert "Traceback" not in out.stdout and "raise NotImplementedError" not in out.stdout


def test_submission_folder_is_graded(fake_tree, tmp_path_factory):
    sub = tmp_path_factory.mktemp("submission")
    for lab in ("lab-01-alpha", "lab-02-beta"):
        (sub / lab).mkdir()
        (sub / lab / "starter.py").write_text(SOLUTION.replace('"solution"', '"student"'))
    out = run_pytest(fake_tree, "-k", "who", LAB_IMPL=str(sub))
    assert out.returncode == 0, out.stdout[-2000:]
    assert out.stdout.count("WHO=student") == 2


def test_each_lab_gets_its_own_module(fake_tree):
    out = run_pytest(fake_tree, "-k", "who")
    modules = {line.split("MODULE=")[1].split()[0] for line in out.stdout.splitlines()
               if "MODULE=" in line}
    assert modules == {"phase11_lab01_solution", "phase11_lab02_solution"}, out.stdout[-2000:]


def test_unknown_lab_impl_is_one_usage_line(fake_tree):
    out = run_pytest(fake_tree, LAB_IMPL="bogus")
    assert out.returncode == 4  # pytest's usage-error exit code
    assert "LAB_IMPL: expected 'solution', 'starter' or a path" in out.stderr
    assert "Traceback" not in out.stderr


def test_missing_submission_file_fails_its_lab_only(fake_tree, tmp_path_factory):
    sub = tmp_path_factory.mktemp("partial")
    (sub / "lab-02-beta").mkdir()
    (sub / "lab-02-beta" / "starter.py").write_text(SOLUTION)
    (sub / "lab-01-alpha").mkdir()
    out = run_pytest(fake_tree, "-k", "double", LAB_IMPL=str(sub))
    assert "1 passed" in out.stdout, out.stdout[-2000:]
    assert "lab-01-alpha: " in out.stdout and "starter.py not found" in out.stdout


def test_syntax_error_is_named_in_one_line(fake_tree, tmp_path_factory):
    sub = tmp_path_factory.mktemp("broken")
    for lab, body in (("lab-01-alpha", "def double(x:\n"), ("lab-02-beta", SOLUTION)):
        (sub / lab).mkdir()
        (sub / lab / "starter.py").write_text(body)
    out = run_pytest(fake_tree, "-k", "double", LAB_IMPL=str(sub))
    assert "1 passed" in out.stdout, out.stdout[-2000:]
    assert "lab-01-alpha: syntax error in" in out.stdout and "starter.py:1" in out.stdout


def test_ci_turns_an_engine_skip_into_a_failure(fake_tree):
    quiet = run_pytest(fake_tree, "-k", "engine")
    assert quiet.returncode == 0 and "2 skipped" in quiet.stdout, quiet.stdout[-2000:]
    ci = run_pytest(fake_tree, "-k", "engine", CI="true")
    assert ci.returncode == 1 and "CI=true: an engine test may not skip" in ci.stdout


def test_resolve_impl_accepts_names_and_folders(tmp_path):
    assert resolve_impl("solution") == Impl("solution")
    assert resolve_impl("starter") == Impl("starter")
    assert resolve_impl(str(tmp_path)) == Impl("submission", tmp_path.resolve())
    with pytest.raises(LabImplError, match="got 'nope'"):
        resolve_impl("nope")


def test_skip_reasons_name_the_fix(monkeypatch):
    from labkit import skips

    monkeypatch.setattr(skips.importlib.util, "find_spec", lambda name: None)
    assert "make install" in skips.engine_skip_reason.__wrapped__()
    assert "pip install -e '.[gpu]'" in skips.cuda_skip_reason.__wrapped__()


def test_real_labs_are_all_present():
    assert loader.lab_names() == [
        "lab-01-batched-lora-matmul",
        "lab-02-serve-many-loras",
        "lab-03-lora-economics",
        "lab-04-adapter-slot-cache",
    ]
    for lab in loader.lab_names():
        for name in ("README.md", "starter.py", "solution.py", "test_lab.py"):
            assert (loader.LABS_DIR / lab / name).is_file(), f"{lab}/{name} is missing"


def test_doc_commands_name_real_paths():
    readme = (REPO / "phase-11-multi-lora" / "README.md").read_text()
    for command in ('pytest phase-11-multi-lora/labs -m "not gpu"',
                    "LAB_IMPL=starter pytest phase-11-multi-lora/labs/lab-01-batched-lora-matmul -q"):
        assert command in readme, f"phase README lost the command: {command}"
    assert "make test" in (REPO / "README.md").read_text()


@pytest.mark.parametrize("script, args, expect", [
    ("lab-03-lora-economics/tables.py", [],
     "tables from phase-11-multi-lora/labs/lab-03-lora-economics/solution.py"),
    ("lab-01-batched-lora-matmul/bench.py", ["--help"], "usage:"),
], ids=["lab-03-tables", "lab-01-bench"])
def test_lab_scripts_import_this_checkouts_labkit(tmp_path, script, args, expect):
    """Run from another folder with a decoy ``labkit`` ahead on the path (as another installed
    checkout would be): a script run from a lab folder must put its own repository first."""
    decoy = tmp_path / "decoy" / "labkit"
    decoy.mkdir(parents=True)
    (decoy / "__init__.py").write_text("raise ImportError('the decoy labkit was imported')\n")
    env = {**os.environ, "PYTHONPATH": str(decoy.parent)}
    env.pop("LAB_IMPL", None)
    out = subprocess.run([sys.executable, str(REPO / "phase-11-multi-lora" / "labs" / script),
                          *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and expect in out.stdout, (out.stdout + out.stderr)[-2000:]


def test_one_hypothesis_profile_for_every_test_file():
    """The root conftest registers and loads the profile; no test file carries its own copy."""
    from hypothesis import settings

    import conftest

    assert settings.get_profile(conftest.HYPOTHESIS_PROFILE) == settings.default, (
        "the root conftest's hypothesis profile must be the one in effect")
    own = [f"{p.relative_to(REPO)}:{node.lineno}"
           for p in sorted(loader.LABS_DIR.glob("*/test_*.py"))
           for node in ast.walk(ast.parse(p.read_text(encoding="utf-8")))
           if isinstance(node, ast.Call) and "settings" in (getattr(node.func, "id", None),
                                                             getattr(node.func, "attr", None))]
    assert not own, f"hypothesis settings of a test file's own: {own}"


PROGRESS_TEST = '''
import time

import pytest
from labkit import progress

@pytest.fixture(scope="module")
def engine():
    with progress.slow_step("a pretend engine", every_s=0.2):
        time.sleep(0.5)
        return object()

def test_fast():
    pass

@pytest.mark.engine
def test_slow(engine):
    pass
'''


def test_engine_tests_say_what_runs_also_under_q(fake_tree):
    """labkit/progress.py, through the root conftest: under -q an engine test's start and its
    fixture's slow step are each a line of their own, in order, with a heartbeat line while the
    step runs and the elapsed time, never a promise; a run without engine tests prints none."""
    (fake_tree / "labs" / "lab-01-alpha" / "test_progress.py").write_text(PROGRESS_TEST)
    slow = run_pytest(fake_tree, "-q", "-k", "progress")
    lines = slow.stdout.splitlines()
    expected = [r"\[engine 1/1\] test_progress.py::test_slow",
                r"\[engine\] starting: a pretend engine",
                r"\[engine\] still running after \d+ s: a pretend engine",
                r"\[engine\] done after \d+ s: a pretend engine"]
    matched = [next((p for p in expected if re.fullmatch(p, line)), None) for line in lines]
    seen = list(dict.fromkeys(p for p in matched if p))  # heartbeats repeat
    assert slow.returncode == 0 and seen == expected, slow.stdout[-2000:]
    assert not any("about" in line for line in lines if line.startswith("[engine]")), (
        "progress lines report elapsed time, never a promise of how long")
    fast = run_pytest(fake_tree, "-q", "-k", "progress and fast")
    assert fast.returncode == 0 and "[engine" not in fast.stdout, fast.stdout[-2000:]
