"""Progress lines for the slow tests: which engine is starting, how long it has run, and
which ``engine`` test is running, also under ``pytest -q``.

A pytest plugin, registered by the root ``conftest.py`` (``pytest_plugins``). Nothing is printed
for a run without ``engine`` tests, so the fast suite stays as quiet as pytest makes it. Lines go
to the terminal as they happen, not to the captured output, through pytest's own terminal
reporter (the way live logging writes):

- at the start of each ``engine`` test (not under ``-v``, where pytest already names it):
  ``[engine 2/9] test_lab.py::test_one_batch_three_behaviours``;
- around a slow step, from the fixture that takes it (``with slow_step(what):``):
  ``[engine] starting: one vLLM engine (3 slots)`` before, ``[engine] still running after 30 s:
  one vLLM engine (3 slots)`` every ``HEARTBEAT_S`` seconds while it runs, and ``[engine] done
  after 41 s: one vLLM engine (3 slots)`` after: elapsed time, never a promise of how long.

Outside a pytest run (a script importing a test's helper) ``slow_step`` prints nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

ENGINE_MARK = "engine"
PREFIX = "[engine]"

_config: pytest.Config | None = None
_engine_items: list[str] = []
_LOCK = threading.Lock()  # one writer at a time: the main thread or a heartbeat  # node ids of the engine tests that will run, in run order


def _runs(item: pytest.Item) -> bool:
    """An ``engine`` test that is not skipped by a mark (the conftest skips without vLLM)."""
    return (item.get_closest_marker(ENGINE_MARK) is not None
            and item.get_closest_marker("skip") is None)


def say(line: str) -> None:
    """Write ``line`` to the terminal now, past pytest's output capture; no-op outside pytest."""
    config = _config
    reporter = config.pluginmanager.get_plugin("terminalreporter") if config else None
    if reporter is None:
        return
    capman = config.pluginmanager.get_plugin("capturemanager")
    with _LOCK, capman.global_and_fixture_disabled() if capman else _nothing():
        if reporter._tw.width_of_current_line:  # -q: the line of dots so far
            reporter._tw.line()
        reporter.write_line(line)
        reporter._tw.flush()


@contextmanager
def _nothing() -> Iterator[None]:
    yield


HEARTBEAT_S = 30.0  # a line at least this often while a slow step runs


@contextmanager
def slow_step(what: str, every_s: float = HEARTBEAT_S) -> Iterator[None]:
    """Say that ``what`` starts, that it is still running every ``every_s`` seconds (from a
    background thread: the step itself may be inside vLLM), then how long it took (also when it
    fails)."""
    say(f"{PREFIX} starting: {what}")
    start, stop = time.monotonic(), threading.Event()

    def heartbeat() -> None:
        while not stop.wait(every_s):
            say(f"{PREFIX} still running after {time.monotonic() - start:.0f} s: {what}")

    beat = threading.Thread(target=heartbeat, name="progress-heartbeat", daemon=True)
    beat.start()
    try:
        yield
    finally:
        stop.set()
        beat.join()
        say(f"{PREFIX} done after {time.monotonic() - start:.0f} s: {what}")


# --- hooks ----------------------------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    global _config
    _config = config


def pytest_unconfigure(config: pytest.Config) -> None:
    global _config
    if _config is config:
        _config = None


def pytest_collection_finish(session: pytest.Session) -> None:
    """After every reordering, deselection and skip mark: the engine tests, in run order."""
    _engine_items[:] = [item.nodeid for item in session.items if _runs(item)]


@pytest.hookimpl(tryfirst=True)  # before fixtures: the line comes before the engine starts
def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.config.get_verbosity() > 0 or item.nodeid not in _engine_items:
        return
    number = _engine_items.index(item.nodeid) + 1
    say(f"[engine {number}/{len(_engine_items)}] {item.nodeid.rpartition('/')[2]}")
