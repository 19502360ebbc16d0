"""Phase 11 test harness: which implementation the tests run against, and how failures read.

- ``lab`` fixture: the implementation selected by ``LAB_IMPL`` for the test's own lab folder
  (see ``labkit/loader.py``). Tests never import ``solution`` directly.
- ``gpu`` tests skip without CUDA; ``engine`` tests skip without an importable vLLM, with the
  install command in the reason. Under ``CI=true`` a skipped ``engine`` test counts as a failure:
  CI exists to prove the engine path.
- ``NotImplementedError`` from student code fails with one line: the function and its TODO.
- hypothesis: one profile, ``phase11``, registered and loaded here for every test file (a test
  file sets no ``@settings`` of its own); its seed is ``LAB_SEED`` (default 1101) through
  ``--hypothesis-seed``, so the grader's hidden-seed re-run draws new examples.
- the cyclic garbage collector is off while pytest collects, and what collection built is frozen
  (``gc.freeze``) before the first test: see ``pytest_collection_finish``.
"""

from __future__ import annotations

import gc
import os
from pathlib import Path

import pytest
from hypothesis import Phase, settings

from labkit.isolate import isolate_mode
from labkit.loader import LabImplError, lab_of_path, labs_dir, load_impl, resolve_impl
from labkit.skips import cuda_skip_reason, engine_skip_reason

pytest_plugins = ["labkit.progress"]  # engine tests say what runs, also under -q

DEFAULT_SEED = 1101  # randomized tests and hypothesis use LAB_SEED when the grader sets one

HYPOTHESIS_PROFILE = "phase11"
settings.register_profile(
    HYPOTHESIS_PROFILE,
    # chosen for the fast suite's 5 s budget (issue 28), measured interleaved on the idle 2-core
    # machine (AMD EPYC, AVX2): 30 examples 4.51-4.91 s wall, 40 examples 4.84-5.45 s
    max_examples=30,
    stateful_step_count=8,  # a state machine's steps per example: 30 x 8
    deadline=None,  # shared 2-core machines: a slow example is not a wrong one
    # no example database: the seed alone decides what is drawn. A database replays whatever
    # earlier runs saved (a mutant's failures, a submission's planted files) before drawing, so
    # the same code at the same seed ran different examples depending on what ran before it
    # (make check-suite's table changed between two clean runs)
    database=None,
    # no "explain" phase: it costs seconds per failure and adds nothing a student reads;
    # not derandomized: the seed comes from LAB_SEED (pytest_configure below), so a hidden seed
    # draws different examples
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
)
settings.load_profile(HYPOTHESIS_PROFILE)  # --hypothesis-profile=<name> still wins


@pytest.hookimpl(tryfirst=True)  # before hypothesis reads --hypothesis-seed
def pytest_configure(config: pytest.Config) -> None:
    try:
        resolve_impl()
        isolate_mode()
    except LabImplError as err:
        raise pytest.UsageError(str(err)) from None
    if getattr(config.option, "hypothesis_seed", None) is None:  # an explicit flag wins
        config.option.hypothesis_seed = os.environ.get("LAB_SEED", str(DEFAULT_SEED))
    if gc.isenabled():  # collection: the assertion rewriter's ASTs set off full collections
        gc.disable()
        config.stash[_GC_PAUSED] = True


# --- garbage collection: none while collecting; the collected tree frozen --------------------
#
# The fast suite spent about 0.5 s of its 6.3 s in the cyclic collector (gc.callbacks, shared
# 2-core machine): three full collections while the assertion rewriter parsed the test files,
# and every later full collection (automatic ones, an explicit gc.collect in lab 01's peak-memory
# test, pytest's own at exit) walked the ~75,000 objects of the imported modules and the
# collected tree, which live until the session ends anyway. Frozen objects are still freed by
# reference counting; the collector just no longer walks them. Each test's own garbage is
# collected as before.

_GC_PAUSED = pytest.StashKey[bool]()


@pytest.hookimpl(trylast=True)  # after every other plugin has reordered and deselected
def pytest_collection_finish(session: pytest.Session) -> None:
    if session.config.stash.get(_GC_PAUSED, False):
        session.config.stash[_GC_PAUSED] = False
        gc.freeze()
        gc.enable()


def pytest_unconfigure(config: pytest.Config) -> None:
    if config.stash.get(_GC_PAUSED, False):  # stopped before collection finished
        config.stash[_GC_PAUSED] = False
        gc.enable()


def lab_folder(path: Path) -> str | None:
    """The ``labs/<lab>`` folder a test file belongs to, or None outside the labs."""
    try:
        rel = path.resolve().relative_to(labs_dir())
    except ValueError:
        return None
    return rel.parts[0] if rel.parts else None


@pytest.fixture(scope="module")
def lab(request: pytest.FixtureRequest):
    """The implementation of this test's lab selected by ``LAB_IMPL``.

    With ``LAB_ISOLATE=1`` it is a proxy of the module, which runs in a worker process (one per
    lab per session; see ``labkit/isolate.py``): the way the grader runs a submission.
    """
    folder = lab_folder(Path(request.node.path))
    if folder is None:
        pytest.fail("the `lab` fixture is only for tests under phase-11-multi-lora/labs/",
                    pytrace=False)
    try:
        return load_impl(folder)
    except LabImplError as err:
        pytest.fail(str(err), pytrace=False)


@pytest.fixture
def seed() -> int:
    """The seed of a randomized test: ``LAB_SEED`` when the grader re-runs with a hidden seed."""
    return int(os.environ.get("LAB_SEED", DEFAULT_SEED))


# --- skips: gpu and engine -------------------------------------------------------------------


@pytest.hookimpl(trylast=True)  # after -m/-k deselection: import torch/vllm only when needed
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        reason = None
        if item.get_closest_marker("gpu"):
            reason = cuda_skip_reason()
        elif item.get_closest_marker("engine"):
            reason = engine_skip_reason()
        if reason:
            item.add_marker(pytest.mark.skip(reason=reason))


# --- reports: one-line TODOs, and no silent engine skips in CI ---------------------------------


def _todo_line(excinfo: pytest.ExceptionInfo) -> str:
    """``NotImplementedError in lab-01 shrink(): TODO(lab-01): ...`` from the deepest lab frame."""
    where = getattr(excinfo.value, "lab_where", None) or "student code"  # worker mode
    for entry in reversed(excinfo.traceback if where == "student code" else []):
        folder = lab_of_path(Path(str(entry.path)))
        if folder is not None and not Path(str(entry.path)).name.startswith("test_"):
            where = f"{folder[:len('lab-01')]} {entry.name}()"
            break
    return f"NotImplementedError in {where}: {excinfo.value}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    excinfo = call.excinfo
    if report.failed and excinfo is not None and excinfo.errisinstance(NotImplementedError):
        report.longrepr = _todo_line(excinfo)
    if (report.skipped and os.environ.get("CI") == "true"
            and item.get_closest_marker("engine") and not item.get_closest_marker("gpu")):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"CI=true: an engine test may not skip ({reason})"
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Worker mode: stop the session's workers."""
    from labkit import isolate

    isolate.shutdown()
