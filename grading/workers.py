"""The worker launcher: the runner starts, on the tests' request, the processes that import the
student's code, each in a sandbox of its own.

The trusted pytest (sandbox A: tests, ``labkit``, ``grading.plugin``) imports no student code.
With ``LAB_ISOLATE=1`` its ``lab`` fixture asks ``labkit.isolate``'s spawner for a worker; the
plugin's spawner (``WorkerClient``) asks the runner, over a control socket A inherits
(``GRADING_WORKERS_FD``), and the runner's ``WorkerService``:

- makes a fresh scratch folder (``mkdir``: it fails if the name exists) holding nothing of the
  grader's, under a runner-private folder A cannot see;
- starts ``python -m labkit.worker --fd N`` there, in its own bubblewrap sandbox B: its own
  cgroup with the lab's limits, its own decoys (watched), its own PID namespace, uid 1000, no
  nested user namespaces, the workspace and the staged submission read-only, an environment
  built from nothing (no ``GRADING_*``, no ``LAB_SEED``); B joins A's network namespace before
  exec (``setns``, as root) so tests and the worker's servers reach each other on loopback;
- hands A the worker's socket end with ``SCM_RIGHTS``.

A may ask to kill a worker or whether it still runs; when A's session ends, every worker still
running is killed. ``stats`` (one dict per worker: decoys opened, OOM kills, process-limit hits,
peaks) fold into the lab's run like A's own. Unsandboxed (``--no-sandbox``) workers are plain
subprocesses with the grader's rights.

Messages on the control socket (``SOCK_SEQPACKET``, one JSON object per message, at most
``MESSAGE_LIMIT`` bytes): ``{"op": "spawn", "env": {...}}`` -> ``{"id": K}`` with the socket
attached; ``{"op": "kill", "id": K}`` -> ``{"status": S}``; ``{"op": "poll", "id": K}`` ->
``{"status": S or null}``; anything else -> ``{"error": "..."}``.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import select
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # A imports this module too, from a workspace without sandbox.py
    from grading.sandbox import Sandbox

MESSAGE_LIMIT = 1 << 16
MAX_WORKERS = 256  # per pytest process: a runaway spawner is a problem, not a fork bomb
CLONE_NEWNET = 0x40000000
WORKER_MODULE = "labkit.worker"
# What a worker may take from the environment its tests asked for: the lab's own switches,
# never the grader's settings, the hidden seed, or where code is loaded from.
# (LAB_ISOLATE: the worker is the side that imports in-process)
REFUSED_FROM_TESTS = ("LAB_SEED", "LAB_IMPL", "LAB_ISOLATE", "PYTHONPATH")
KILL_WAIT_S = 5.0
# The folder of A's scratch that holds A's pytest temp folder (``--basetemp`` is
# ``<scratch>/shared/tmp``): the files a test writes with ``tmp_path`` and hands the worker by
# path. The runner makes it before the service (pytest remakes its temp folder inside, when
# first asked for one); the service opens it once, and each worker sees it read-only at the
# same path.
TESTS_SHARED = "shared"


def worker_env(requested: dict, workspace: Path, impl: str | None, scratch: Path,
               sandbox: Sandbox | None, base: dict[str, str]) -> dict[str, str]:
    """A worker's whole environment: built from nothing (sandboxed) or from ``base`` minus the
    grader's settings (unsandboxed), the tests' ``LAB_*`` switches, then where code comes from."""
    passed = {k: str(v) for k, v in requested.items() if isinstance(k, str)
              and k.startswith("LAB_") and k not in REFUSED_FROM_TESTS}
    settings = {**passed, "PYTHONPATH": str(workspace), "PYTHONDONTWRITEBYTECODE": "1",
                "MPLBACKEND": "Agg"}
    if impl is not None:
        settings["LAB_IMPL"] = impl
    if sandbox is not None:
        return sandbox.environment(settings, scratch)
    env = {k: v for k, v in base.items()
           if not k.startswith("GRADING_") and k not in REFUSED_FROM_TESTS}
    return {**env, **settings}


def _setns_net(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        os._exit(127)  # in the child before exec: never run in the wrong network


@dataclass
class _Worker:
    proc: subprocess.Popen
    stack: contextlib.ExitStack
    launch: object | None = None
    status: int | None = None
    done: bool = False


@dataclass
class WorkerService:
    """One pytest process's worker launcher (see the module's docstring)."""

    python: str
    workspace: Path
    impl: str | None
    scratch_root: Path  # runner-private; each worker gets a fresh folder under it
    sandbox: Sandbox | None = None
    base_env: dict[str, str] = field(default_factory=dict)
    log_fd: int | None = None  # workers' stdout and stderr (the lab's console log)
    name: str = "w"
    netns_pid: object = None  # () -> int | None: A's PID 1, whose network the workers join
    stats: list[dict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    current: object = None  # () -> str | None: the test running now (for flags)
    tests_shared: Path | None = None  # holds A's temp folder: read-only in each worker

    def __post_init__(self) -> None:
        self._ours, self._theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._workers: dict[int, _Worker] = {}
        self._count = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.shared_net: bool | None = None  # decided at the first spawn
        self._shared = self._open_tests_shared()

    # --- the life of the service ----------------------------------------------------------

    def child_fd(self) -> int:
        """The control descriptor for A (inheritable; close it here once A has started)."""
        self._theirs.set_inheritable(True)
        return self._theirs.fileno()

    def started(self) -> None:
        """A is running: drop our copy of its end, serve its requests."""
        self._theirs.close()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def close(self) -> None:
        """A's session is over: kill every worker still running, stop serving."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=KILL_WAIT_S * 2)
        for wid in list(self._workers):
            self._end(wid)
        self._ours.close()
        with contextlib.suppress(OSError):
            self._theirs.close()
        for fd, _ in self._shared:
            os.close(fd)
        self._shared = ()

    def _serve(self) -> None:
        try:
            while not self._stop.is_set():
                ready, _, _ = select.select([self._ours], [], [], 0.2)
                if not ready:
                    continue
                try:
                    data = self._ours.recv(MESSAGE_LIMIT)
                except OSError:
                    return
                if not data:
                    return  # A is gone
                reply, fds = self._handle(data)
                try:
                    socket.send_fds(self._ours, [json.dumps(reply).encode()], fds)
                except OSError:
                    return
                finally:
                    for fd in fds:
                        os.close(fd)
        finally:
            for wid in list(self._workers):
                self._end(wid)

    def _handle(self, data: bytes) -> tuple[dict, list[int]]:
        try:
            msg = json.loads(data)
            op = msg["op"]
        except (ValueError, KeyError, TypeError):
            return {"error": "malformed request"}, []
        try:
            if op == "spawn" and isinstance(msg.get("env", {}), dict):
                wid, fd = self._spawn(msg.get("env", {}))
                return {"id": wid}, [fd]
            if op in ("kill", "poll") and msg.get("id") in self._workers:
                if op == "kill":
                    self._end(msg["id"])
                return {"status": self._poll(msg["id"])}, []
        except (OSError, subprocess.SubprocessError, ValueError) as err:
            self.problems.append(f"a worker could not be started: {err}")
            return {"error": f"{type(err).__name__}: {err}"}, []
        return {"error": f"unknown request {op!r}"}, []

    # --- one worker -----------------------------------------------------------------------

    def _spawn(self, requested: dict) -> tuple[int, int]:
        if self._count >= MAX_WORKERS:
            raise ValueError(f"more than {MAX_WORKERS} workers in one session")
        self._count += 1
        wid = self._count
        scratch = self.scratch_root / f"worker-{wid}"
        scratch.mkdir()  # fresh: fails if anything planted the name
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        fd = theirs.fileno()
        cmd = [self.python, "-m", WORKER_MODULE, "--fd", str(fd)]
        env = worker_env(requested, self.workspace, self.impl, scratch, self.sandbox,
                         self.base_env)
        stack = contextlib.ExitStack()
        out = self.log_fd if self.log_fd is not None else subprocess.DEVNULL
        try:
            if self.sandbox is None:
                proc = subprocess.Popen(cmd, cwd=scratch, env=env, pass_fds=(fd,),
                                        stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                        start_new_session=True)
                launch = None
            else:
                launch = stack.enter_context(self.sandbox.launch(f"{self.name}-{wid}"))
                nsfd = self._netns_fd(stack)
                argv = launch.hide_args(self.sandbox.argv(
                    cmd, cwd=scratch, scratch=scratch, decoy_binds=launch.decoy_binds,
                    own_net=nsfd is None, shared_fds=self._shared))

                def preexec(launch=launch, nsfd=nsfd) -> None:
                    launch.preexec()
                    if nsfd is not None:
                        _setns_net(nsfd)

                proc = subprocess.Popen(argv, cwd=scratch, env=env,
                                        pass_fds=(fd, *launch.pass_fds,
                                                  *(f for f, _ in self._shared)),
                                        stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                        start_new_session=True, preexec_fn=preexec)
                launch.close()
        except BaseException:
            stack.close()
            ours.close()
            raise
        finally:
            theirs.close()
        self._workers[wid] = _Worker(proc, stack, launch)
        handed = os.dup(ours.fileno())
        ours.close()
        return wid, handed

    def _netns_fd(self, stack: contextlib.ExitStack) -> int | None:
        """A descriptor of A's network namespace (closed with the worker's stack), or None when
        the workers cannot join it (not root, or A's PID 1 unknown): then each has its own."""
        pid = self.netns_pid() if callable(self.netns_pid) else None
        fd = None
        if pid is not None and os.geteuid() == 0:
            with contextlib.suppress(OSError):
                fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        if fd is None:
            if self.shared_net is None:
                self.problems.append("the workers could not join the tests' network namespace "
                                     "(the grader is not root): tests that reach a server a "
                                     "worker starts cannot pass")
            self.shared_net = False
            return None
        self.shared_net = True
        stack.callback(os.close, fd)
        return fd

    def _open_tests_shared(self) -> tuple[tuple[int, str], ...]:
        """The folder holding A's temp folder, as a descriptor held until ``close`` and opened
        without following a link at either step: A can write its scratch, so a link planted
        there must not bind anything else into a worker. () unsandboxed (the workers share the
        tests' file system), and when it is missing or not a folder."""
        if self.tests_shared is None or self.sandbox is None:
            return ()
        flags = os.O_PATH | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC
        try:
            parent = os.open(self.tests_shared.parent, flags)
        except OSError:
            return ()
        try:
            fd = os.open(self.tests_shared.name, flags, dir_fd=parent)
        except OSError:
            self.problems.append(f"the tests' shared folder {self.tests_shared} is missing or "
                                 "not a folder: the workers cannot read the files tests hand "
                                 "them")
            return ()
        finally:
            os.close(parent)
        return ((fd, str(self.tests_shared)),)

    def _poll(self, wid: int) -> int | None:
        worker = self._workers.get(wid)
        if worker is None:
            return None
        if worker.done:
            return worker.status
        return worker.proc.poll()

    def _end(self, wid: int) -> None:
        """Kill worker ``wid`` (its whole sandbox), reap it, and keep what its sandbox saw."""
        worker = self._workers.get(wid)
        if worker is None or worker.done:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(worker.proc.pid, signal.SIGKILL)
        try:
            worker.status = worker.proc.wait(timeout=KILL_WAIT_S)
        except subprocess.TimeoutExpired:
            worker.status = None
        worker.done = True
        worker.stack.close()
        stats = dict(getattr(worker.launch, "stats", {}) or {})
        current = self.current() if callable(self.current) else None
        stats["nodeid"] = current
        self.stats.append(stats)


# --- A's side -----------------------------------------------------------------------------


class WorkerClient:
    """The plugin's spawner for ``labkit.isolate.set_spawner``: ``client(env)`` asks the runner
    for a worker and returns a ``RemoteWorker``."""

    def __init__(self, fd: int) -> None:
        self.sock = socket.socket(fileno=fd)
        self.lock = threading.Lock()

    def request(self, msg: dict, timeout_s: float = 120.0) -> tuple[dict, list[int]]:
        with self.lock:
            self.sock.sendall(json.dumps(msg).encode())
            ready, _, _ = select.select([self.sock], [], [], timeout_s)
            if not ready:
                raise TimeoutError(f"the grader did not answer {msg.get('op')!r} within "
                                   f"{timeout_s:g} s")
            data, fds, _, _ = socket.recv_fds(self.sock, MESSAGE_LIMIT, 4)
        if not data:
            raise ConnectionError("the grader closed the worker channel")
        return json.loads(data), fds

    def __call__(self, env: dict | None = None) -> RemoteWorker:
        reply, fds = self.request({"op": "spawn", "env": dict(env or {})})
        if "error" in reply or len(fds) != 1:
            for fd in fds:
                os.close(fd)
            raise RuntimeError(f"grading: no worker: {reply.get('error', 'no socket came')}")
        return RemoteWorker(self, reply["id"], socket.socket(fileno=fds[0]))


class RemoteWorker:
    """A worker the runner started: ``.sock`` (connected to it), ``.kill()``, ``.poll()``."""

    def __init__(self, client: WorkerClient, wid: int, sock: socket.socket) -> None:
        self.client, self.id, self.sock = client, wid, sock
        self.returncode: int | None = None

    def kill(self) -> None:
        reply, _ = self.client.request({"op": "kill", "id": self.id})
        self.returncode = reply.get("status", -signal.SIGKILL)

    def poll(self) -> int | None:
        if self.returncode is None:
            reply, _ = self.client.request({"op": "poll", "id": self.id})
            self.returncode = reply.get("status")
        return self.returncode

    def wait(self, timeout: float | None = None) -> int | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"worker {self.id} still running after {timeout} s")
            time.sleep(0.05)
        return self.returncode
