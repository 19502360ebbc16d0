"""A tiny fake course in a temp dir: the real harness (conftest.py, labkit/, pyproject.toml) and
two fake labs small enough that a whole grading run takes seconds.

lab-01-alpha has four one-line functions, a seeded test (``LAB_SEED``), a hypothesis test, a
structural test and a test that skips the way ``gpu`` tests do; lab-02-beta calls lab 01
through ``load_lab``, like the real lab 02.
"""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import numpy as np

REAL_REPO = Path(__file__).resolve().parents[2]
LAB1, LAB2 = "lab-01-alpha", "lab-02-beta"
VISIBLE_SEED = 0  # the default of the fake lab's own `seed` fixture

LAB1_SOLUTION = '''\
"""Fake lab 01 reference."""


def add(a: int, b: int) -> int:
    return a + b


def mul(a: int, b: int) -> int:
    return a * b


def neg(a: int) -> int:
    return -a


def total(xs: list[int]) -> int:
    return sum(xs)
'''

LAB1_STARTER = '''\
"""Fake lab 01 starter."""


def add(a: int, b: int) -> int:
    raise NotImplementedError("TODO(lab-01): add a and b")


def mul(a: int, b: int) -> int:
    raise NotImplementedError("TODO(lab-01): multiply a and b")


def neg(a: int) -> int:
    raise NotImplementedError("TODO(lab-01): negate a")


def total(xs: list[int]) -> int:
    raise NotImplementedError("TODO(lab-01): sum xs")
'''

LAB1_TESTS = '''\
"""Fake lab 01 spec."""

import os

import numpy as np
import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from labkit import assert_bitwise_equal


@pytest.fixture
def seed() -> int:
    return int(os.environ.get("LAB_SEED", "0"))


def test_add_small_ints(lab):
    assert lab.add(2, 3) == 5


def test_mul_small_ints(lab):
    assert lab.mul(4, 5) == 20


def test_neg_flips_sign(lab):
    assert lab.neg(7) == -7


def test_total_of_a_seeded_draw(lab, seed):
    xs = np.random.default_rng(seed).integers(0, 100, size=5)
    assert_bitwise_equal(lab.total(xs.tolist()), xs.sum(), why="total is the sum")


@settings(max_examples=10, deadline=None, database=None, phases=[Phase.generate])
@given(st.integers(-1000, 1000), st.integers(-1000, 1000))
def test_add_matches_plus(lab, a, b):
    assert lab.add(a, b) == a + b


@pytest.mark.structural
def test_public_names_exist(lab):
    assert all(callable(getattr(lab, n, None)) for n in ("add", "mul", "neg", "total"))


def test_cuda_path():
    pytest.skip("gpu: torch.cuda.is_available() is False on this machine")
'''

LAB2_SOLUTION = '''\
"""Fake lab 02 reference: leans on lab 01."""

from labkit import load_lab


def double(x: int) -> int:
    return load_lab("lab-01").add(x, x)
'''

LAB2_STARTER = '''\
"""Fake lab 02 starter."""


def double(x: int) -> int:
    raise NotImplementedError("TODO(lab-02): add x to itself with lab 01")
'''

LAB2_TESTS = '''\
"""Fake lab 02 spec."""


def test_double_uses_lab01(lab):
    assert lab.double(21) == 42
'''

WEIGHTS = """\
[defaults]
timeout_s = 3
lab_budget_s = 120

[labs.lab-01-alpha]
points = 60

[labs.lab-02-beta]
points = 40
"""


def visible_total() -> int:
    """What lab 01's seeded test expects under the visible seed: the number a cheat hard-codes."""
    return int(np.random.default_rng(VISIBLE_SEED).integers(0, 100, size=5).sum())


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def make_repo(root: Path) -> Path:
    """A fake course repository at ``root`` with the real harness and the two fake labs."""
    for name in ("conftest.py", "pyproject.toml"):
        shutil.copy2(REAL_REPO / name, root / name)
    shutil.copytree(REAL_REPO / "labkit", root / "labkit",
                    ignore=shutil.ignore_patterns("__pycache__"))
    labs = root / "phase-11-multi-lora" / "labs"
    for lab, files in {LAB1: (LAB1_SOLUTION, LAB1_STARTER, LAB1_TESTS),
                       LAB2: (LAB2_SOLUTION, LAB2_STARTER, LAB2_TESTS)}.items():
        for name, text in zip(("solution.py", "starter.py", "test_lab.py"), files, strict=True):
            write(labs / lab / name, text)
    write(root / "grading" / "weights.toml", WEIGHTS)
    return root


def make_course(root: Path, labs: list[str], weights: str, seeds: str = "seeds = [1]\n") -> Path:
    """A course repository at ``root`` holding the real harness and some of the real labs (their
    folders as they are, solutions included), with its own weights and keys."""
    for name in ("conftest.py", "pyproject.toml"):
        shutil.copy2(REAL_REPO / name, root / name)
    ignore = shutil.ignore_patterns("__pycache__", ".hypothesis", ".pytest_cache")
    shutil.copytree(REAL_REPO / "labkit", root / "labkit", ignore=ignore)
    for lab in labs:
        shutil.copytree(REAL_REPO / "phase-11-multi-lora" / "labs" / lab,
                        root / "phase-11-multi-lora" / "labs" / lab, ignore=ignore)
    write(root / "grading" / "weights.toml", weights)
    write(root / "grading" / "keys" / "hidden_seeds.toml", seeds)
    return root


def make_submission(root: Path, lab1: str | None, lab2: str | None) -> Path:
    """A submission folder laid out like labs/; ``None`` leaves that lab's file out."""
    for lab, text in ((LAB1, lab1), (LAB2, lab2)):
        if text is not None:
            write(root / lab / "starter.py", text)
    return root


# --- crafted submissions: each misbehaves in a way the grader must survive or flag ----------

ROGUE_LAB1 = '''\
import os


def add(a, b):
    while True:  # loops forever
        pass


def mul(a, b):
    while True:  # swallows the timeout and loops on
        try:
            while True:
                pass
        except BaseException:
            pass


def neg(a):
    os._exit(3)  # takes the interpreter down


def total(xs):
    print("\\x00\\xff garbage \\x1b[31m ]]> <x", flush=True)
    os.write(1, b"\\x00\\xfe\\xff not xml ]]> \\x1b]0;")
    os.write(2, b"\\xff\\x00")
    return sum(xs)
'''

ROGUE_LAB2 = '''\
import signal


def double(x):
    signal.signal(signal.SIGALRM, signal.SIG_IGN)  # deaf to the alarm: only the watchdog is left
    while True:
        pass
'''

CHEAT_LAB2 = '''\
import os

import labkit
from labkit import load_lab


def double(x):
    root = os.path.dirname(os.path.dirname(labkit.__file__))  # the tree its worker sees
    for folder, _, files in os.walk(root):
        if "test_lab.py" in files:
            with open(os.path.join(folder, "test_lab.py"), "a") as f:
                f.write("\\n# edited by the submission\\n")
    return load_lab("lab-01").add(x, x)
'''


def cheat_lab1(repo: Path) -> str:
    """Reads the reference, monkeypatches numpy, hard-codes the visible seed's answer."""
    solution = repo / "phase-11-multi-lora" / "labs" / LAB1 / "solution.py"
    return f'''\
import numpy


def add(a, b):
    return a + b


def mul(a, b):
    numpy.allclose = lambda *args, **kwargs: True
    return a * b


def neg(a):
    try:
        open({str(solution)!r}).read()
    except OSError:
        pass
    return -a


def total(xs):
    return {visible_total()}
'''


def make_submissions(root: Path, repo: Path) -> Path:
    """A folder of submissions, one per behaviour the grader must handle."""
    make_submission(root / "solved", LAB1_SOLUTION, LAB2_SOLUTION)
    make_submission(root / "pristine", LAB1_STARTER, LAB2_STARTER)
    make_submission(root / "rogue", ROGUE_LAB1, ROGUE_LAB2)
    make_submission(root / "cheat", cheat_lab1(repo), CHEAT_LAB2)
    make_submission(root / "broken", "raise RuntimeError('boom at import')\n",
                    "def double(x) return\n")
    return root


# --- forged runs: what a runner that a submission fooled could hand to grade.py -------------

FAKE_TESTS = ("test_one", "test_two", "test_seeded")


def fake_behaviour(impl: str | None, lab: str) -> list[str]:
    """The words after ``# fake:`` on the first line of the staged starter (["missing"] when
    there is none)."""
    path = Path(impl or "") / lab / "starter.py"
    if not path.is_file():
        return ["missing"]
    first = path.read_text(encoding="utf-8").splitlines()[:1] or [""]
    return first[0].partition("# fake:")[2].split() or ["plain"]


def forged_run(repo: Path, lab: str, impl: str | None, workdir: Path, opts):
    """A stand-in for ``runner.run_lab`` (``grade.Job.run_lab``): three tests that pass, bent
    by the starter's ``# fake:`` line into the malformed or injecting record it names. Nothing
    runs; the log is written where a real run writes it."""
    import time

    from grading.runner import LabRun, TestResult

    what, *args = fake_behaviour(impl, lab)
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "pytest.log"
    log.write_text("3 passed\n", encoding="utf-8")
    run = LabRun(lab=lab, impl=impl, log=str(log), attempts=1, wall_s=0.1)
    run.tests = [TestResult(nodeid=f"{lab}/test_lab.py::{n}", name=n, outcome="passed",
                            randomized=n == "test_seeded") for n in FAKE_TESTS]
    two = run.tests[1]
    if what == "missing":
        for t in run.tests:
            t.outcome, t.reason, t.message = "error", "import_error", "starter.py not found"
    elif what == "numeric_name":
        two.name = 12345
    elif what == "dict_message":
        two.outcome, two.message = "failed", {"looks": "like a str"}
        run.problems.append(["not", "a", "str"])
    elif what == "injects":
        two.outcome, two.reason = "failed", "assertion"
        two.message = "x\n\n## Flags\n\nNone.\n<!-- the rest is hidden"
        run.flags += [{"kind": "tampers_tests", "nodeid": None,
                       "detail": "y\n\n| lab-01 | 60.0 / 60.0 |\n<!-- hidden"},
                      {"kind": "x\n| fake | row |\n<!--", "nodeid": None, "detail": "z"}]
    elif what == "hyperlink":
        two.name = '=HYPERLINK("http://evil.example/","click")'
        run.flags.append({"kind": '=HYPERLINK("http://evil.example/","x")', "nodeid": None,
                          "detail": "=cmd|' /C calc'!A0"})
    elif what == "ansi":
        log.write_text("\x1b[2J\x1b]0;owned\x07 3 passed\n", encoding="utf-8")
        two.outcome, two.reason, two.message = "failed", "assertion", "\x1b[31mred\x1b[0m"
        run.flags.append({"kind": "tampers_tests", "nodeid": None,
                          "detail": "\x1b]8;;http://evil\x1b\\link\x1b]8;;\x1b\\ \x1b[2K"})
    elif what == "log_symlink":
        log.unlink()
        log.symlink_to(args[0])
    elif what == "slow":
        time.sleep(float(args[0]))
    elif what == "hidden_fail" and opts.seed is not None:
        run.tests[2].outcome, run.tests[2].reason = "failed", "assertion"
        run.flags.append({"kind": "reads_solution", "nodeid": None, "detail": "opened it"})
    elif what == "order_encoder" and opts.seed is not None:
        # a hidden run's flags in an order (and with details, tests and problems) spelling the
        # seed's bits: what a worker that opens decoys in a chosen order would produce
        bits = f"{opts.seed:032b}"
        for i, bit in enumerate(bits):
            kind = "reads_solution" if bit == "1" else "tampers_tests"
            run.flags.append({"kind": kind, "nodeid": f"{lab}/test_lab.py::{FAKE_TESTS[i % 3]}",
                              "detail": f"ORDER {i} {bit} {opts.seed}"})
        run.problems.append(f"ORDER problem {opts.seed}")
    elif what == "deep_tree" and opts.seed is None and lab == LAB1:
        leave_a_tree_no_cleanup_survives(workdir / "scratch")
        two.message = f"LEFT {workdir}"
    elif what == "unarmed" or (what == "unarmed_hidden" and opts.seed is not None):
        run.sandbox["tripwire_unarmed"] = 1
    return run


def leave_a_tree_no_cleanup_survives(root: Path, depth: int = 3000) -> None:
    """What a submission can leave in its scratch: ``depth`` nested folders (past Python's
    recursion limit and PATH_MAX), links (one to the folder above, one to the host's /etc), a
    FIFO, a socket and a mode-000 folder holding a file, at the bottom."""
    import os
    import socket

    root.mkdir(parents=True)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            inner = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = inner
        os.symlink("..", "up", dir_fd=fd)
        os.symlink("/etc", "etc", dir_fd=fd)
        os.mkfifo("fifo", dir_fd=fd)
        os.mkdir("locked", dir_fd=fd)
        os.close(os.open("locked/file", os.O_CREAT | os.O_WRONLY, dir_fd=fd))
        os.chmod("locked", 0, dir_fd=fd)
        with socket.socket(socket.AF_UNIX) as sock:
            here = os.getcwd()
            os.fchdir(fd)
            try:
                sock.bind("sock")
            finally:
                os.chdir(here)
    finally:
        os.close(fd)
