"""Run one lab's tests in a subprocess and read back, for every test, what happened and why.

``run_lab`` starts pytest with ``grading.plugin`` on one lab folder, ``LAB_ISOLATE=1``: the
submission runs only in worker processes (``grading.workers`` starts them; the tests' process
imports none of it). When a test takes the
interpreter down (``os._exit``, a segfault, a hang that the plugin ends), the run resumes with the
tests not yet recorded, so one bad function costs only its own tests. An overall budget per lab
bounds the whole thing; tests it never reached are ``not_run`` with reason ``timeout``.

Nothing is written to the repository or the submission: the working directory, the event logs,
hypothesis' database and the output log all live in ``workdir``; bytecode is not written and
pytest's cache provider is off. The output log keeps the first ``LOG_LIMIT_BYTES``.

With ``RunOptions.sandbox`` (``grading.sandbox``) each pytest process runs inside bubblewrap,
``workdir`` its only writable directory, under the lab's memory and process limits; a test that
times out ends its sandbox and the lab resumes in a fresh one, so nothing it started survives.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import grading
from grading.plugin import RESTART_EXIT, WATCHDOG_MARK
from grading.sandbox import UNARMED, Sandbox
from grading.workers import TESTS_SHARED, WorkerService
from labkit import loader
from labkit.loader import LABS_SUBDIR

TOOLING_ROOT = Path(grading.__file__).resolve().parent.parent

# Outcomes: passed | failed (the test's assertion or student code raised) | error (setup or
# teardown broke: a fixture, an import) | skipped | not_run (the lab's budget ran out first).
IMPORT_ERROR = re.compile(r"^(Failed: )?lab-\d\d\S*: (syntax error in |importing |.* not found)")
LOG_LIMIT_BYTES = 4 << 20  # pytest's console output kept per lab; the rest is dropped
EVENTS_LIMIT_BYTES = 16 << 20  # what one attempt's event channel may carry; the rest is dropped
MAX_ATTEMPTS = 20  # pytest processes per lab run: a submission that kills each cannot loop


@dataclass
class TestResult:
    nodeid: str
    name: str
    outcome: str = "not_run"
    reason: str = ""
    message: str = ""
    duration_s: float = 0.0
    structural: bool = False
    randomized: bool = False
    markers: list[str] = field(default_factory=list)

    @property
    def graded(self) -> bool:
        """Counts toward the score: ran, and checks the student's work, not the lab's shape."""
        return not self.structural and self.outcome != "skipped"


@dataclass
class LabRun:
    lab: str
    impl: str | None
    tests: list[TestResult] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # collection errors, a pytest that died
    flags: list[dict] = field(default_factory=list)  # raised in the sandbox: decoys opened
    attempts: int = 0
    wall_s: float = 0.0
    log: str = ""  # path of pytest's console output
    sandbox: dict = field(default_factory=dict)  # peaks and limit hits over every attempt
    modules: list[str] = field(default_factory=list)  # phase11_lab* modules the tests' process held

    def count(self, outcome: str) -> int:
        return sum(t.outcome == outcome for t in self.tests)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class RunOptions:
    marker_expr: str = "not gpu"
    timeout_s: float = 60.0  # per test
    budget_s: float = 900.0  # per lab, every attempt together
    seed: int | None = None  # LAB_SEED and --hypothesis-seed for this run
    only_randomized: bool = False
    exitfirst: bool = False
    python: str = sys.executable
    sandbox: Sandbox | None = None  # None: pytest runs with the grader's rights
    max_attempts: int = MAX_ATTEMPTS


def lab_names(repo: Path) -> list[str]:
    """The lab folders of ``repo``, in directory order (``labkit.loader.lab_names``)."""
    return loader.lab_names(repo / LABS_SUBDIR)


def classify(phases: dict) -> tuple[str, str, str, float]:
    """(outcome, reason, message, seconds) from a test's setup/call/teardown reports."""
    duration = sum(p.get("duration", 0.0) for p in phases.values())
    for when in ("setup", "call", "teardown"):
        phase = phases.get(when)
        if phase is None or phase["outcome"] == "passed":
            continue
        message = phase.get("message", "")
        if phase["outcome"] == "skipped":
            if phase.get("wasxfail"):
                return "skipped", "xfail", message, duration
            return "skipped", skip_reason(message), message, duration
        outcome = "failed" if when == "call" else "error"
        return outcome, failure_reason(phase.get("exc", ""), message), message, duration
    return "passed", "", "", duration


def skip_reason(message: str) -> str:
    if message.startswith("gpu:"):
        return "no_gpu"
    if message.startswith("engine:"):
        return "no_engine"
    return "skipped"


def failure_reason(exc: str, message: str) -> str:
    if exc == "TestTimeout":
        return "timeout"
    if exc == "NotImplementedError" or message.startswith("NotImplementedError"):
        return "not_implemented"
    if exc == "WorkerCrashed":  # the submission's worker died during the call
        return "crashed"
    if exc == "SystemExit":
        return "exited"
    if IMPORT_ERROR.match(message):
        return "import_error"
    if "an engine test may not skip" in message:
        return "no_engine"
    return "assertion" if exc == "AssertionError" else "error"


def parse_events(data: bytes) -> tuple[list[dict], bool]:
    """The events in what the channel carried (complete JSON-object lines only: a line cut short
    by a dying process or by the cap is dropped), and whether faulthandler's watchdog dumped."""
    events, watchdog = [], False
    for line in data.decode("utf-8", errors="replace").splitlines(keepends=True):
        if not line.endswith("\n"):
            break  # cut short
        if line.startswith(WATCHDOG_MARK):
            watchdog = True
            continue
        try:
            ev = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(ev, dict) and isinstance(ev.get("event"), str):
            events.append(ev)
    return events, watchdog


class PipeReader:
    """Drains a pipe on a thread, keeping the first ``limit`` bytes (non-blocking reads: a
    writer that never closes cannot hang the grader once ``stop`` is called)."""

    def __init__(self, fd: int, limit: int = EVENTS_LIMIT_BYTES) -> None:
        self.fd, self.limit = fd, limit
        self.data = bytearray()
        self.cut = False
        self._stop = threading.Event()
        os.set_blocking(fd, False)
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while True:
            ready, _, _ = select.select([self.fd], [], [], 0.2)
            if not ready:
                if self._stop.is_set():
                    return
                continue
            try:
                chunk = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                continue
            if not chunk:
                return
            room = self.limit - len(self.data)
            if room > 0:
                self.data += chunk[:room]
            self.cut = self.cut or len(chunk) > room

    def finish(self) -> bytes:
        self._stop.set()
        self._thread.join()
        os.close(self.fd)
        return bytes(self.data)


def _exclude_fd(names: list[str]) -> int:
    """A memfd holding ``names``, one a line: the resumed run's exclude list, in no file."""
    fd = os.memfd_create("grading-exclude", 0)
    os.write(fd, "\n".join(names).encode("utf-8"))
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _env(repo: Path, impl: str | None, fds: dict[str, int], workdir: Path,
         opts: RunOptions) -> dict:
    settings = {
        **{f"GRADING_{name}_FD": str(fd) for name, fd in fds.items()},
        "GRADING_TIMEOUT_S": str(opts.timeout_s),
        "GRADING_ONLY_RANDOMIZED": "1" if opts.only_randomized else "0",
        "GRADING_FRESH_AFTER_TIMEOUT": "1" if opts.sandbox is not None else "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "HYPOTHESIS_STORAGE_DIRECTORY": str(workdir / "hypothesis"),
        "MPLBACKEND": "Agg",
        "LAB_ISOLATE": "1",  # student code only in workers (grading.workers), never in pytest's
    }
    if impl is not None:  # None: the tree's own default (a student release: starter)
        settings["LAB_IMPL"] = impl
    if opts.seed is not None:
        settings["LAB_SEED"] = str(opts.seed)
    if opts.sandbox is not None:  # a clean environment; the plugin comes with the workspace
        return opts.sandbox.environment({**settings, "PYTHONPATH": str(repo)}, workdir)
    env = {k: v for k, v in os.environ.items()
           if k not in ("LAB_IMPL", "LAB_SEED", "LAB_ISOLATE") and not k.startswith("GRADING_")}
    env.update(settings, PYTHONPATH=os.pathsep.join(
        filter(None, [str(TOOLING_ROOT), env.get("PYTHONPATH")])))
    return env


def _command(repo: Path, lab: str, basetemp: Path, opts: RunOptions) -> list[str]:
    cmd = [opts.python, "-m", "pytest", str(repo / LABS_SUBDIR / lab), "--rootdir", str(repo),
           "-p", "grading.plugin", "-p", "no:cacheprovider", "-q", "-rN", "--no-header",
           "--basetemp", str(basetemp), "-m", opts.marker_expr]
    if opts.seed is not None:
        cmd.append(f"--hypothesis-seed={opts.seed}")
    if opts.exitfirst:
        cmd.append("-x")
    return cmd


@dataclass
class Attempt:
    """One pytest process: its exit status (None when the budget ran out and it was killed),
    what its event channel carried, and, sandboxed, what the sandbox saw (``Launch.stats``),
    its own and each worker's."""

    status: int | None
    events: list[dict] = field(default_factory=list)
    watchdog: bool = False
    stats: dict = field(default_factory=dict)
    worker_stats: list[dict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _run_attempt(repo: Path, lab: str, impl: str | None, scratch: Path, private: Path,
                 log: Path, timeout: float, done: list[str], opts: RunOptions,
                 name: str) -> Attempt:
    """One pytest process in ``scratch`` (fresh, A's own), its workers' folders under
    ``private`` (which A never sees), its channels inherited descriptors."""
    shared = scratch / TESTS_SHARED  # read-only in the workers; A's pytest temp folder inside
    shared.mkdir()
    events_r, events_w = os.pipe()
    exclude = _exclude_fd(done)
    fds = {"EVENTS": events_w, "EXCLUDE": exclude}
    out_r, out_w = os.pipe()
    info_r, info_w = os.pipe() if opts.sandbox is not None else (None, None)
    service = WorkerService(
        python=opts.python, workspace=repo, impl=impl, scratch_root=private,
        sandbox=opts.sandbox, base_env=dict(os.environ), log_fd=out_w, name=name,
        netns_pid=_child_pid(info_r) if info_r is not None else None, tests_shared=shared)
    fds["WORKERS"] = service.child_fd()
    env = _env(repo, impl, fds, scratch, opts)
    cmd = _command(repo, lab, shared / "tmp", opts)
    reader = PipeReader(events_r)
    inherited = sorted({*fds.values(), *([info_w] if info_w is not None else [])})
    try:
        if opts.sandbox is None:
            status = _wait(cmd, env, scratch, log, timeout, out_r, out_w, inherited, service)
            stats = {}
        else:
            with opts.sandbox.launch(name) as launch:
                argv = launch.hide_args(opts.sandbox.argv(
                    cmd, cwd=scratch, scratch=scratch, decoy_binds=launch.decoy_binds,
                    info_fd=info_w))
                status = _wait(argv, env, scratch, log, timeout, out_r, out_w,
                               [*inherited, *launch.pass_fds], service, launch.preexec)
            stats = launch.stats
    finally:
        for fd in {events_w, exclude, info_w, *fds.values()} - {None}:
            with contextlib.suppress(OSError):
                os.close(fd)
        service.close()
        if info_r is not None:
            os.close(info_r)
    events, watchdog = parse_events(reader.finish())
    return Attempt(status, events, watchdog, stats, service.stats, service.problems)


def _child_pid(info_r: int):
    """A reader of bwrap's ``--info-fd`` JSON: the sandbox's PID 1, asked once, then kept."""
    found: dict[str, int | None] = {}

    def pid() -> int | None:
        if "pid" not in found:
            data = b""
            deadline = time.monotonic() + 30
            while b"}" not in data and time.monotonic() < deadline:
                ready, _, _ = select.select([info_r], [], [], 0.5)
                if ready:
                    chunk = os.read(info_r, 4096)
                    if not chunk:
                        break
                    data += chunk
            try:
                found["pid"] = int(json.loads(data)["child-pid"])
            except (ValueError, KeyError, TypeError):
                found["pid"] = None
        return found["pid"]

    return pid


def _wait(cmd: list[str], env: dict, workdir: Path, log: Path, timeout: float, out_r: int,
          out_w: int, inherited: list[int], service: WorkerService,
          preexec=None) -> int | None:
    """Run ``cmd`` to its end or the timeout, its output (and its workers') appended to ``log``
    up to ``LOG_LIMIT_BYTES``. The exit status, or None when the process group was killed."""
    with open(log, "ab") as out:
        try:
            proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=out_w,
                                    stderr=out_w, stdin=subprocess.DEVNULL,
                                    start_new_session=True, preexec_fn=preexec,
                                    pass_fds=tuple(inherited))
        except BaseException:
            os.close(out_r)
            os.close(out_w)
            raise
        service.started()
        stop = threading.Event()
        copier = threading.Thread(target=_copy_capped, args=(out_r, out, stop), daemon=True)
        copier.start()
        try:
            status = proc.wait(timeout=max(timeout, 1.0))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            status = None
        service.close()  # A's session is over: so is every worker it left
        os.close(out_w)
        stop.set()  # a daemon left outside a sandbox may hold the pipe open: stop reading
        copier.join()
        os.close(out_r)
        return status


def _copy_capped(fd: int, out, stop: threading.Event) -> None:
    while True:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if not ready:
            if stop.is_set():
                return
            continue
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return
        room = LOG_LIMIT_BYTES - out.tell()
        if room > 0:
            out.write(chunk[:room])
            if len(chunk) > room:
                out.write(f"\n[grading: output cut at {LOG_LIMIT_BYTES >> 20} MiB]\n".encode())
            out.flush()


def run_lab(repo: Path, lab: str, impl: str | None, workdir: Path,
            opts: RunOptions | None = None) -> LabRun:
    """Run ``lab``'s tests against ``impl`` (a LAB_IMPL value, or None for the tree's default);
    never raises for trouble in the code under test. ``workdir`` must not exist: it is made
    fresh, holds the log, and each attempt's own scratch folder (the only one the pytest
    process sees) and its workers' folders are made fresh under it."""
    opts = opts or RunOptions()
    workdir.parent.mkdir(parents=True, exist_ok=True)
    workdir.mkdir()  # fresh: a name planted before the run fails here, never gets used
    run = LabRun(lab=lab, impl=impl, log=str(workdir / "pytest.log"))
    results: dict[str, TestResult] = {}
    done: list[str] = []
    start = time.monotonic()
    while True:
        run.attempts += 1
        scratch, private = workdir / f"attempt-{run.attempts}", workdir / f"workers-{run.attempts}"
        scratch.mkdir()
        private.mkdir()
        remaining = opts.budget_s - (time.monotonic() - start)
        attempt = _run_attempt(repo, lab, impl, scratch, private, Path(run.log), remaining,
                               done, opts, f"{os.getpid()}-{id(run):x}-{run.attempts}")
        status, events = attempt.status, attempt.events
        unfinished = _absorb(events, results, run)
        _absorb_sandbox(attempt.stats, run, unfinished, opts.sandbox)
        for stats in attempt.worker_stats:
            _absorb_sandbox(stats, run, stats.get("nodeid") or unfinished, opts.sandbox)
        run.problems += [p for p in attempt.problems if p not in run.problems]
        run.modules += [n for ev in events if ev.get("event") == "modules"
                        for n in ev.get("names", []) if isinstance(n, str)]
        if unfinished is not None:
            died = _death_reason(events, unfinished, status, attempt.watchdog, attempt.stats)
            results[unfinished].outcome = "failed"
            results[unfinished].reason, results[unfinished].message = died
        if status is None:
            _mark_not_run(results, "timeout", f"the lab's {opts.budget_s:g} s budget ran out")
            run.problems.append(f"stopped after the lab's {opts.budget_s:g} s budget")
            break
        if unfinished is None and status != RESTART_EXIT:  # the session ended on its own
            if status == 5 and not results:
                run.problems.append("no tests collected")
            elif status not in (0, 1, 5):
                _session_problem(run, status)
            break
        if not _pending(results):
            break
        if run.attempts >= opts.max_attempts:
            run.problems.append(f"stopped after {opts.max_attempts} attempts: every one died")
            _mark_not_run(results, "crashed", f"not reached: the lab stopped after "
                                              f"{opts.max_attempts} attempts")
            break
        done = [n for n, t in results.items() if t.outcome != "not_run"]
    _mark_not_run(results, "crashed", "not reached: the session ended before this test")
    run.tests = list(results.values())
    run.wall_s = time.monotonic() - start
    return run


def _absorb(events: list[dict], results: dict[str, TestResult], run: LabRun) -> str | None:
    """Fold one attempt's events into ``results``; the test that was running at death, if any."""
    running: str | None = None
    for ev in events:
        kind = ev.get("event")
        if kind == "collected":
            for t in ev["tests"]:
                results.setdefault(t["nodeid"], TestResult(
                    nodeid=t["nodeid"], name=t["name"], structural=t["structural"],
                    randomized=t["randomized"], markers=t["markers"]))
        elif kind == "collect_error":
            last = ev["message"].strip().splitlines()[-1:] or [""]
            run.problems.append(f"collection error in {ev['nodeid'] or 'the session'}: {last[0]}")
        elif kind == "start":
            running = ev["nodeid"]
        elif kind == "end":
            test = results.setdefault(ev["nodeid"], TestResult(
                nodeid=ev["nodeid"], name=ev["nodeid"].rpartition("::")[2]))
            test.outcome, test.reason, test.message, test.duration_s = classify(ev["phases"])
            running = None
    return running


def _absorb_sandbox(stats: dict, run: LabRun, nodeid: str | None,
                    sandbox: Sandbox | None) -> None:
    """What the sandbox saw in one attempt: decoys opened (a flag), limits hit (problems)."""
    if not stats or sandbox is None:
        return
    if stats.get(UNARMED):
        run.sandbox[UNARMED] = run.sandbox.get(UNARMED, 0) + 1
        run.problems.append(f"the decoys' tripwire of a sandbox could not be armed "
                            f"({stats[UNARMED]}): what it opened was not watched, so the grade "
                            f"is withheld; regrade this submission")
    for target in stats.get("decoys_opened", []):
        run.flags.append({"kind": "reads_solution", "nodeid": nodeid, "detail": (
            f"a process in the sandbox opened {target}: the reference is not there, only a "
            f"decoy, which is watched")})
    limits = sandbox.limits
    if stats.get("pid_limit_hits") and limits is not None:
        run.problems.append(f"the sandbox's process limit ({limits.max_pids}) refused "
                            f"{stats['pid_limit_hits']} forks")
    if stats.get("oom_kills") and limits is not None:
        run.problems.append(f"the sandbox's memory limit ({limits.memory_bytes >> 20} MiB) "
                            f"ended {stats['oom_kills']} process(es)")
    for key in ("peak_memory_bytes", "peak_pids"):
        if key in stats:
            run.sandbox[key] = max(run.sandbox.get(key, 0), stats[key])
    for key in ("oom_kills", "pid_limit_hits", "leftover_processes"):
        if key in stats:
            run.sandbox[key] = run.sandbox.get(key, 0) + stats[key]


def _death_reason(events: list[dict], nodeid: str, status: int | None, watchdog: bool,
                  stats: dict | None = None) -> tuple[str, str]:
    if any(ev["event"] in ("timeout", "killed") and ev.get("nodeid") == nodeid for ev in events):
        return "timeout", "ran past the per-test timeout and would not stop; the process was ended"
    if status is None:
        return "timeout", "still running when the lab's budget ran out"
    if stats and stats.get("oom_kills"):  # the kernel ended the biggest process: this one
        return "out_of_memory", "the sandbox's memory limit ended the interpreter during this test"
    if watchdog:
        # faulthandler's watchdog: the test ignored SIGALRM or was stuck in native code
        return "timeout", ("ran past the per-test timeout, deaf to the alarm (blocked or in native "
                           "code); the process was ended")
    return "crashed", f"the interpreter exited with status {status} during this test"


def _pending(results: dict[str, TestResult]) -> bool:
    return any(t.outcome == "not_run" for t in results.values())


def _mark_not_run(results: dict[str, TestResult], reason: str, message: str) -> None:
    for test in results.values():
        if test.outcome == "not_run" and not test.reason:
            test.reason, test.message = reason, message


def _session_problem(run: LabRun, status: int) -> None:
    tail = Path(run.log).read_text(encoding="utf-8", errors="replace").strip().splitlines()[-5:]
    run.problems.append(f"pytest exited with status {status}: " + " | ".join(tail))
