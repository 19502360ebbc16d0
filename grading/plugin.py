"""pytest plugin for the grading tools: an event channel that survives a dying interpreter, a
per-test timeout and the worker spawner. It runs in the tests' process, which imports no student
code (``LAB_ISOLATE=1``: the submission runs in workers), so it holds no runtime honesty check:
those are the sandboxes' decoys and the static scan (``grading.honesty``).

Loaded with ``-p grading.plugin`` by ``grading.runner``; inert unless ``GRADING_EVENTS_FD``
names the event channel. Settings come from the environment (popped at configure time, so code
in this process cannot find them) and inherited descriptors, never from files a sandbox writes:

- ``GRADING_EVENTS_FD``: the write end of a pipe the runner reads; one JSON line per event,
  flushed as written. pytest's JUnit XML is written at session end and is lost when the process
  dies; this channel keeps every finished test and names the one that was running. faulthandler's
  watchdog writes its dump there too (a line starting ``Timeout (``).
- ``GRADING_TIMEOUT_S``: per-test budget (setup + call + teardown). Three layers: SIGALRM raises
  ``TestTimeout`` in the test; if the code swallows it, a second alarm ends the process; if the
  interpreter is stuck in C, faulthandler's watchdog thread ends it. The alarm fires in this
  trusted process, and ``labkit.isolate`` kills the worker of the hung call.
- ``GRADING_EXCLUDE_FD``: a memfd holding the node ids already recorded (a resumed run skips them).
- ``GRADING_WORKERS_FD``: the runner's worker launcher (``grading.workers``): the plugin hands
  ``labkit.isolate.set_spawner`` a spawner that asks the runner for each worker, and at session
  end records the ``phase11_lab*`` modules this process holds (event ``modules``).
- ``GRADING_ONLY_RANDOMIZED=1``: keep only tests that take ``LAB_SEED`` (hidden-seed pass).
- ``GRADING_FRESH_AFTER_TIMEOUT=1`` (sandboxed runs): after a test that timed out, end the
  process (status ``RESTART_EXIT``) so the lab resumes in a fresh sandbox and nothing the test
  started (a fork bomb, a spinning thread) outlives it.

This module must not import ``labkit`` at import time: the tree under test brings its own.
"""

from __future__ import annotations

import faulthandler
import json
import os
import signal
import sys

import pytest

KILLED_EXIT = 86  # the exit status when the plugin ends a test that would not stop
RESTART_EXIT = 87  # the plugin ended the session after a timed-out test: resume in a fresh one
WATCHDOG_MARK = "Timeout ("  # how faulthandler's dump starts when its watchdog ends a test
STUDENT_MODULE_PREFIX = "phase11_lab"  # labkit.loader names the modules it loads so
RANDOMIZED_FIXTURE = "seed"  # the conftest fixture that hands out LAB_SEED


class TestTimeout(BaseException):  # noqa: N818 - reads as the event it is
    """Raised in a test that ran past ``GRADING_TIMEOUT_S``; a BaseException so that a bare
    ``except Exception`` in student code does not swallow it."""

    __test__ = False  # not a test class, whatever its name says


def is_randomized(item: pytest.Item) -> bool:
    """Takes its inputs from ``LAB_SEED``: the ``seed`` fixture or a hypothesis ``@given``."""
    fixtures = getattr(item, "fixturenames", ())
    return RANDOMIZED_FIXTURE in fixtures or getattr(getattr(item, "obj", None),
                                                     "is_hypothesis_test", False)


class EventLog:
    def __init__(self, fd: int) -> None:
        # Lives as long as the session; faulthandler's watchdog writes to it too.
        self._file = os.fdopen(fd, "w", encoding="utf-8", buffering=1)
        self.watchdog = self._file

    def write(self, event: str, **fields: object) -> None:
        self._file.write(json.dumps({"event": event, **fields}, default=str) + "\n")
        self._file.flush()


def _message(excinfo: pytest.ExceptionInfo | None, limit: int = 600) -> str:
    if excinfo is None:
        return ""
    text = excinfo.exconly().strip()
    return text if len(text) <= limit else text[:limit] + " ..."


def _skip_message(report: pytest.TestReport) -> str:
    if isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    return str(report.longrepr or "")


class GradingPlugin:
    def __init__(self, log: EventLog, timeout_s: float, exclude: set[str],
                 only_randomized: bool, fresh_after_timeout: bool = False) -> None:
        self.log = log
        self.timeout_s = timeout_s
        self.exclude = exclude
        self.only_randomized = only_randomized
        self.fresh_after_timeout = fresh_after_timeout
        self.current: str | None = None
        self.phases: dict[str, dict] = {}
        self.alarms = 0
        self.grace_s = min(5.0, max(1.0, self.timeout_s / 2))  # time to unwind after TestTimeout

    # --- collection --------------------------------------------------------------------------

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config: pytest.Config,
                                      items: list[pytest.Item]) -> None:
        keep = [it for it in items if it.nodeid not in self.exclude
                and (not self.only_randomized or is_randomized(it))]
        dropped = [it for it in items if it not in keep]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
            items[:] = keep

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.log.write("collect_error", nodeid=report.nodeid,
                           message=str(report.longrepr)[-2000:])

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.log.write("collected", tests=[
            {"nodeid": it.nodeid, "name": it.name,
             "structural": it.get_closest_marker("structural") is not None,
             "markers": sorted({m.name for m in it.iter_markers()}),
             "randomized": is_randomized(it)}
            for it in session.items
        ])

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        self.log.write("modules", names=sorted(
            n for n in sys.modules if n.startswith(STUDENT_MODULE_PREFIX)))

    # --- one test ----------------------------------------------------------------------------

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: pytest.Item | None):
        self.current = item.nodeid
        self.log.write("start", nodeid=item.nodeid)
        self._arm()
        try:
            yield
        finally:
            self._disarm()
            self.current = None
        if self.alarms and self.fresh_after_timeout:
            self.log.write("restart", nodeid=item.nodeid)
            os._exit(RESTART_EXIT)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo):
        report = yield
        excinfo = call.excinfo
        report.grading_exc = type(excinfo.value).__name__ if excinfo is not None else ""
        report.grading_message = _message(excinfo)
        if self.alarms and report.failed:  # whatever the code under test made of TestTimeout
            report.grading_exc = "TestTimeout"
            report.grading_message = f"ran past the {self.timeout_s:g} s per-test timeout"
        return report

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        phase = {"outcome": report.outcome, "duration": report.duration,
                 "exc": getattr(report, "grading_exc", ""),
                 "message": getattr(report, "grading_message", ""),
                 "wasxfail": hasattr(report, "wasxfail")}
        if report.skipped:
            phase["message"] = _skip_message(report)
        elif report.failed and not phase["message"]:
            phase["message"] = str(report.longrepr)[-600:]
        phases = self.phases.setdefault(report.nodeid, {})
        phases[report.when] = phase
        if report.when == "teardown":
            self.log.write("end", nodeid=report.nodeid, phases=self.phases.pop(report.nodeid))

    # --- the per-test timeout ----------------------------------------------------------------

    def _arm(self) -> None:
        if self.timeout_s <= 0:
            return
        self.alarms = 0
        faulthandler.dump_traceback_later(self.timeout_s + 2 * self.grace_s, exit=True,
                                          file=self.log.watchdog)
        if hasattr(signal, "setitimer"):
            signal.signal(signal.SIGALRM, self._on_alarm)
            signal.setitimer(signal.ITIMER_REAL, self.timeout_s)

    def _disarm(self) -> None:
        if self.timeout_s <= 0:
            return
        faulthandler.cancel_dump_traceback_later()
        if hasattr(signal, "setitimer"):
            signal.setitimer(signal.ITIMER_REAL, 0)

    def _on_alarm(self, signum: int, frame: object) -> None:
        self.alarms += 1
        if self.alarms == 1:
            self.log.write("timeout", nodeid=self.current, seconds=self.timeout_s)
            signal.setitimer(signal.ITIMER_REAL, self.grace_s)
            raise TestTimeout(f"test ran past the {self.timeout_s:g} s per-test timeout")
        self.log.write("killed", nodeid=self.current,
                       message="the test swallowed TestTimeout; the process was ended")
        os._exit(KILLED_EXIT)


def _read_exclude(fd: str | None) -> set[str]:
    """The node ids in the runner's memfd ``fd`` (read from its start, then closed)."""
    if not fd:
        return set()
    chunks = []
    with os.fdopen(int(fd), "rb") as f:
        f.seek(0)
        chunks.append(f.read())
    return {line for line in b"".join(chunks).decode("utf-8").splitlines() if line}


def _install_spawner(fd: str | None) -> None:
    """Point ``labkit.isolate`` at the runner's worker launcher (``grading.workers``)."""
    if not fd:
        return
    from grading.workers import WorkerClient
    from labkit import isolate  # the tree's own labkit

    isolate.set_spawner(WorkerClient(int(fd)))


def pytest_configure(config: pytest.Config) -> None:
    settings = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("GRADING_")}
    events = settings.get("GRADING_EVENTS_FD")  # popped: nothing here can name the channel
    if not events or config.pluginmanager.has_plugin("grading-plugin"):
        return
    _install_spawner(settings.get("GRADING_WORKERS_FD"))
    plugin = GradingPlugin(
        EventLog(int(events)),
        timeout_s=float(settings.get("GRADING_TIMEOUT_S", "0")),
        exclude=_read_exclude(settings.get("GRADING_EXCLUDE_FD")),
        only_randomized=settings.get("GRADING_ONLY_RANDOMIZED") == "1",
        fresh_after_timeout=settings.get("GRADING_FRESH_AFTER_TIMEOUT") == "1",
    )
    config.pluginmanager.register(plugin, "grading-plugin")
