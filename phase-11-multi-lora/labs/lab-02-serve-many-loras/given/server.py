"""Given machinery for lab 02's server tests: start vLLM's OpenAI server, wait, stop it.

Not graded: a support module (``labkit.load_support("lab-02", "given.server")``). The lab's
``serve`` passes its ``serve_argv`` (the student's) to ``serve``, which runs that command line.
What this module does is process management, not the lesson: a new session for the server so
its whole process group (API server, engine core, workers) can be signalled, a bounded
readiness poll of ``/v1/models``, and a stop that sends SIGTERM, waits, then SIGKILLs what is
left, so nothing outlives the ``with`` block.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

LOOPBACK = "127.0.0.1"
RUNTIME_LORA_ENV = "VLLM_ALLOW_RUNTIME_LORA_UPDATING"
STARTUP_TIMEOUT_S = 300.0  # two processes import vLLM and torch and load the model, on 2 cores
STOP_TIMEOUT_S = 20.0  # per signal: SIGTERM gets this long to drain, then SIGKILL
POLL_INTERVAL_S = 0.5
LOG_TAIL_LINES = 40

# Loopback calls must never be routed through an HTTP proxy from the environment.
HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ServerError(RuntimeError):
    """The server died or never became ready; the message ends with its log's last lines."""


@dataclass(frozen=True)
class Server:
    """A running server: what a client needs, and what a test checks after it is gone."""

    base_url: str  # "http://127.0.0.1:<port>/v1", what openai.OpenAI(base_url=...) takes
    model: str  # the base model's served name
    adapters: tuple[str, ...]  # adapter names registered at start
    port: int
    pid: int  # the server's process id, also its process group id (a new session)
    log_path: Path


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port on ``host`` that nothing listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _log_tail(log_path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = log_path.read_text(errors="replace")
    except OSError as err:
        return f"(log unreadable: {err})"
    return "\n".join(text.splitlines()[-lines:])


def _wait_until_ready(proc: subprocess.Popen, server: Server, timeout_s: float) -> None:
    """Poll ``/v1/models`` until it answers 200; fail if the process exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise ServerError(f"vLLM server exited with code {proc.returncode} before serving; "
                              f"last lines of {server.log_path}:\n{_log_tail(server.log_path)}")
        try:
            with HTTP.open(f"{server.base_url}/models", timeout=5) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass  # not listening yet
        if time.monotonic() > deadline:
            raise ServerError(f"vLLM server not ready after {timeout_s:.0f} s; last lines of "
                              f"{server.log_path}:\n{_log_tail(server.log_path)}")
        time.sleep(POLL_INTERVAL_S)


def _live_group_members(pgid: int) -> list[int]:
    """Pids in process group ``pgid`` that still run (zombies excluded: they hold nothing)."""
    proc_root = Path("/proc")
    if not proc_root.is_dir():  # no procfs: ask the kernel whether the group exists at all
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        return [pgid]
    members = []
    for stat in proc_root.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()  # state ppid pgrp ...
        except OSError:
            continue  # exited while we looked
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def _group_ended(proc: subprocess.Popen, timeout_s: float) -> bool:
    """Wait up to ``timeout_s`` for every member of ``proc``'s group to exit."""
    deadline = time.monotonic() + timeout_s
    while True:
        proc.poll()  # reap the leader as soon as it exits
        if not _live_group_members(proc.pid):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_INTERVAL_S / 5)


def _stop_process_group(proc: subprocess.Popen, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM the whole group, wait up to ``timeout_s``, then SIGKILL what is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)  # the leader's pid is the group id (new session)
        except ProcessLookupError:
            break  # nothing left in the group
        if _group_ended(proc, timeout_s):
            break
    proc.wait(timeout=timeout_s)


def serve(serve_argv: Callable[..., list[str]], model: str | os.PathLike,
          adapters: Mapping[str, str | os.PathLike], *, max_loras: int, max_lora_rank: int,
          max_cpu_loras: int, log_path: str | os.PathLike, served_model_name: str | None = None,
          dtype: str | None = None, startup_timeout_s: float = STARTUP_TIMEOUT_S,
          **argv_kw) -> AbstractContextManager[Server]:
    """vLLM's OpenAI server for a ``with`` block, on a free port of ``LOOPBACK``: the command
    line is ``serve_argv(model, adapters, ..., port=..., host=LOOPBACK, ...)`` (``argv_kw``:
    ``kv_cache_bytes``, ``max_model_len``, ``extra_args``), then ``run`` starts it."""
    port = free_port()
    argv = serve_argv(model, adapters, max_loras=max_loras, max_lora_rank=max_lora_rank,
                      max_cpu_loras=max_cpu_loras, port=port, host=LOOPBACK,
                      served_model_name=served_model_name, dtype=dtype, **argv_kw)
    return run(argv, port=port, model=argv[argv.index("--served-model-name") + 1],
               adapters=list(adapters), log_path=log_path, startup_timeout_s=startup_timeout_s)


@contextmanager
def run(argv: Sequence[str], *, port: int, model: str, adapters: Sequence[str],
        log_path: str | os.PathLike,
        startup_timeout_s: float = STARTUP_TIMEOUT_S) -> Iterator[Server]:
    """Run ``argv`` (a server listening on ``LOOPBACK:port``) for the ``with`` block.

    Sets ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`` (the load/unload routes), streams stdout
    and stderr to ``log_path``, waits up to ``startup_timeout_s`` for ``/v1/models``, and on
    exit, normal or not, stops the server's whole process group.
    """
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, RUNTIME_LORA_ENV: "True"}
    with log_path.open("wb") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        server = Server(base_url=f"http://{LOOPBACK}:{port}/v1", model=model,
                        adapters=tuple(adapters), port=port, pid=proc.pid, log_path=log_path)
        _wait_until_ready(proc, server, startup_timeout_s)
        yield server
    finally:
        _stop_process_group(proc)


def server_message(body: bytes) -> str:
    """The ``message`` of vLLM's error JSON (``{"error": {"message": ...}}``), else the body."""
    text = body.decode(errors="replace")
    try:
        payload = json.loads(text)
    except ValueError:
        return text
    if isinstance(payload, dict):
        inner = payload.get("error", payload)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return inner["message"]
    return text


def post_json(url: str, payload: dict, timeout_s: float) -> tuple[int, str]:
    """POST ``payload`` as JSON to ``url``; return the HTTP status and the answer's text: the
    body of a 2xx answer, else vLLM's error ``message`` (``server_message``). Raises only for
    a server that cannot be reached (``urllib.error.URLError``)."""
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with HTTP.open(request, timeout=timeout_s) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as err:
        return err.code, server_message(err.read())
