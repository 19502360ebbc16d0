"""A stand-in for ``labkit.isolate`` and ``labkit.worker`` in the fake course (``fakes``), so the
grader's side of the trust boundary is tested on its own: the runner's worker launcher, the
plugin's spawner, the channels. The stand-in speaks JSON lines: the test side sends
``{"lab": folder}`` then ``{"fn": name, "args": [...]}``; the worker answers ``{"ok": value}`` or
``{"exc": type, "msg": text}``. A call that does not return (the per-test alarm) kills its worker.
"""

from __future__ import annotations

from pathlib import Path

from grading.tests import fakes

ISOLATE = '''\
"""Stand-in: the lab fixture's side of the worker boundary."""

import json

_spawner = None


def set_spawner(fn):
    global _spawner
    _spawner = fn


def isolate_mode(value=None):  # the root conftest asks (the loader reads LAB_ISOLATE itself)
    import os

    return (os.environ.get("LAB_ISOLATE", "") if value is None else value) == "1"


def in_worker(lab, func, *args):  # labkit exports it; the stand-in runs it where it is
    return func(*args)


class Remote:
    def __init__(self, lab):
        self._lab = lab
        self._worker = None

    def _start(self):
        self._worker = _spawner({"LAB_ISOLATE": "1", "LAB_SEED": "leaked?"})
        self._file = self._worker.sock.makefile("rwb")
        self._send({"lab": self._lab})

    def _send(self, msg):
        self._file.write(json.dumps(msg).encode() + b"\\n")
        self._file.flush()

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda *args: self._call(name, list(args))

    def _call(self, name, args):
        if self._worker is None:
            self._start()
        try:
            self._send({"fn": name, "args": args})
            line = self._file.readline()
        except BaseException:
            self._worker.kill()
            self._worker = None
            raise
        if not line:
            self._worker.kill()
            self._worker = None
            raise RuntimeError("the worker died")
        reply = json.loads(line)
        if not isinstance(reply, dict) or not ({"ok", "exc"} & set(reply)):
            raise RuntimeError(f"a malformed reply: {line[:80]!r}")
        if "exc" in reply:
            kind = {"NotImplementedError": NotImplementedError}.get(reply["exc"], RuntimeError)
            raise kind(reply.get("msg", ""))
        return reply["ok"]
'''

WORKER = '''\
"""Stand-in: the worker process, importing the student's code."""

import argparse
import json
import socket

from labkit.loader import load_impl

parser = argparse.ArgumentParser()
parser.add_argument("--fd", type=int, required=True)
fd = parser.parse_args().fd
f = socket.socket(fileno=fd).makefile("rwb")
module = None
for line in f:
    msg = json.loads(line)
    if "lab" in msg:
        try:
            module = load_impl(msg["lab"])
        except BaseException as err:
            module = err
        continue
    try:
        if isinstance(module, BaseException):
            raise module
        reply = {"ok": getattr(module, msg["fn"])(*msg["args"])}
    except Exception as err:
        reply = {"exc": type(err).__name__, "msg": str(err)}
    f.write(json.dumps(reply, default=str).encode() + b"\\n")
    f.flush()
'''

LABS_CONFTEST = '''\
"""Stand-in: with LAB_ISOLATE=1 the lab fixture is a handle on a worker."""

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def lab(request):
    if os.environ.get("LAB_ISOLATE") != "1":
        return request.getfixturevalue("lab_in_process")
    from labkit import isolate

    return isolate.Remote(Path(request.node.path).parent.name)


@pytest.fixture(scope="module")
def lab_in_process(request):
    from labkit.loader import load_impl

    return load_impl(Path(request.node.path).parent.name)
'''


def make_repo(root: Path) -> Path:
    """``fakes.make_repo`` plus the stand-in isolate and worker."""
    fakes.make_repo(root)
    fakes.write(root / "labkit" / "isolate.py", ISOLATE)
    fakes.write(root / "labkit" / "worker.py", WORKER)
    fakes.write(root / "phase-11-multi-lora" / "labs" / "conftest.py", LABS_CONFTEST)
    return root
