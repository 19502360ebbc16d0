"""Worker mode (``LAB_ISOLATE=1``): the student's module runs in a separate worker process.

The trusted process (pytest, the tests, labkit, the grading plugin) never imports an
implementation file. ``remote_lab(lab)`` returns a proxy of the lab's module; attribute reads,
calls, and methods of the handles it returns are requests to the worker.

The protocol (framing, the named messages, both codecs and the allow-list) is ``labkit.rpc``.

Spawner protocol (stable; the grader plugs in its sandboxed launcher here)
  ``set_spawner(fn)``; ``fn(labs_env: dict[str, str]) -> Worker`` where ``labs_env`` holds the
  variables the worker needs (``LAB_IMPL``, ``PHASE11_LABS_DIR`` when set, ``PYTHONPATH`` = the
  tree's root) and the returned object has ``.sock`` (a connected socket: the trusted end),
  ``.kill()`` and ``.poll()`` (exit status or None). The worker itself is
  ``python -m labkit.worker --fd N`` with N its end of the pair. ``DEFAULT_SPAWNER`` runs that
  argv with ``subprocess.Popen`` and the environment minus every ``GRADING_*`` and
  ``LAB_ISOLATE`` variable, plus ``labs_env``.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import subprocess
import sys
import types
import weakref

from labkit import loader, rpc
from labkit.loader import ISOLATE_ENV, isolate_mode  # noqa: F401 - LAB_ISOLATE, as the loader reads it
from labkit.rpc import (  # noqa: F401 - the protocol's names, re-exported for the tests' side
    ALLOWED_DTYPE_KINDS,
    MAX_DEPTH,
    MAX_FRAME,
    MAX_MESSAGE,
    STDLIB_EXCEPTIONS,
    Decoder,
    RemoteTraceback,
    WorkerError,
    WorkerValueError,
    build_exception,
    exception_class,
    given_class,
    pack_data,
    record_class,
    recv_frame,
    send_frame,
    support_class,
    unpack_data,
)

_MethodMarker = rpc.MethodMarker

class WorkerCrashed(RuntimeError):
    """The worker died (or was killed) during a call."""


# --- the trusted side: workers, proxies, calls -----------------------------------------------


class _Popened:
    def __init__(self, proc: subprocess.Popen, sock: socket.socket):
        self.proc, self.sock = proc, sock

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)

    def poll(self):
        return self.proc.poll()


def worker_env(labs_env: dict) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("GRADING_") and k != ISOLATE_ENV}
    env.update(labs_env)
    return env


def default_spawner(labs_env: dict):
    ours, theirs = socket.socketpair()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "labkit.worker", "--fd", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),), env=worker_env(labs_env), close_fds=True)
    finally:
        theirs.close()
    return _Popened(proc, ours)


DEFAULT_SPAWNER = default_spawner
_spawner = default_spawner


def set_spawner(fn) -> None:
    """Launch workers with ``fn(labs_env) -> Worker`` (see the module docstring)."""
    global _spawner
    _spawner = fn or default_spawner


def labs_env(impl: loader.Impl | None = None) -> dict:
    env = {"PYTHONPATH": str(loader.REPO_ROOT),
           "LAB_IMPL": os.environ.get("LAB_IMPL", "")}
    if loader.LABS_DIR_ENV in os.environ:
        env[loader.LABS_DIR_ENV] = os.environ[loader.LABS_DIR_ENV]
    return env


class Connection:
    """One worker, as seen from the trusted side."""

    def __init__(self, key: str):
        self.key = key
        self.worker = None
        self.generation = 0
        self.callbacks: dict[int, object] = {}  # kept for the worker's life: it may store them
        self.released: list[int] = []
        self.method_names: dict[tuple[str, str], bool] = {}
        self.handles: weakref.WeakValueDictionary = weakref.WeakValueDictionary()

    def ensure(self):
        if self.worker is None:
            self.worker = _spawner(labs_env())
            self.generation += 1
            self.method_names.clear()
            self.handles = weakref.WeakValueDictionary()
            self.callbacks = {}
            self.released = []
        return self.worker

    def register_callback(self, obj) -> int:
        cid = id(obj)
        self.callbacks[cid] = obj
        return cid

    def dumps(self, obj) -> bytes:
        buf = io.BytesIO()
        rpc.Pickler(buf, self._handle_id, self.register_callback).dump(obj)
        return buf.getvalue()

    def _handle_id(self, obj) -> int | None:
        return obj._conn_check(self) if isinstance(obj, Handle) else None

    def make_handle(self, hid, type_name, kind, fields=None):
        live = self.handles.get(hid)
        if live is not None:
            return live
        if hid in self.released:
            self.released.remove(hid)
        handle = (ClassHandle if kind == "class" else Handle)(self, hid, type_name, fields)
        self.handles[hid] = handle
        return handle

    def kill(self):
        worker, self.worker = self.worker, None
        if worker is not None:
            worker.kill()
            with contextlib.suppress(OSError):
                worker.sock.close()

    def request(self, what: str, op: tuple):
        """Send ``op``; serve callbacks until the reply; decode it. ``what`` names the call.
        Nothing but the reply comes back: the arguments the tests handed over are never
        written to (no lab function's contract changes its arguments in place)."""
        worker = self.ensure()
        released, self.released = self.released, []
        try:
            send_frame(worker.sock, self.dumps((op, released)))
            while True:
                payload = recv_frame(worker.sock)
                if payload is None:
                    status = self._reap(worker)
                    raise WorkerCrashed(f"the worker exited with status {status} during {what}")
                message, blobs = unpack_data(payload)
                decoder = Decoder(blobs, self.make_handle)
                if not isinstance(message, list) or not message:
                    raise WorkerError("the worker sent a malformed message")
                kind = message[0]
                if kind == rpc.OK and len(message) == 2:
                    result = (True, decoder.value(message[1]))
                    break
                if kind == rpc.ERR and len(message) == 2:
                    result = (False, build_exception(message[1], decoder))
                    break
                if kind == rpc.BAD and len(message) == 2:
                    result = (False, WorkerValueError(f"{what}: {str(message[1])[:MAX_MESSAGE]}"))
                    break
                if kind == rpc.CALLBACK and len(message) == 5:
                    self._serve_callback(worker, decoder, message)
                    continue
                raise WorkerError("the worker sent a malformed message")
        except BaseException:  # a broken frame, a timeout (TestTimeout), Ctrl-C: the worker is lost
            self.kill()
            raise
        ok, value = result
        if not ok:
            raise value
        return value

    def _reap(self, worker):
        self.worker = None
        with contextlib.suppress(OSError):
            worker.sock.close()
        status = worker.poll()
        if status is None:
            worker.kill()
            status = worker.poll()
        return status

    def _serve_callback(self, worker, decoder, message):
        _, cid, attr, args, kwargs = message
        target = self.callbacks.get(cid)
        if target is None:
            raise WorkerError("the worker called back an unknown callable")
        args, kwargs = decoder.value(args), decoder.value(kwargs)
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            raise WorkerError("bad callback arguments")
        try:
            fn = target if attr is None else getattr(target, str(attr))
            reply = (rpc.OK, fn(*args, **kwargs))
        except Exception as err:  # noqa: BLE001 - goes back to the student's code as raised
            reply = (rpc.ERR, err)
        try:
            data = self.dumps(reply)
        except Exception as err:  # noqa: BLE001
            data = self.dumps((rpc.ERR, TypeError(f"callback result cannot be sent: {err}")))
        send_frame(worker.sock, data)

    def call(self, what, op, args, kwargs):
        return self.request(what, op)


_MISSING = object()


class Handle:
    """A worker object: attribute reads, method calls and operators are requests."""

    __slots__ = ("_conn", "_hid", "_gen", "_type", "_fields", "__weakref__")

    def __init__(self, conn: Connection, hid: int, type_name: str, fields: dict | None = None):
        object.__setattr__(self, "_conn", conn)
        object.__setattr__(self, "_hid", hid)
        object.__setattr__(self, "_gen", conn.generation)
        object.__setattr__(self, "_type", type_name)
        object.__setattr__(self, "_fields", fields)  # a frozen record's fields, sent with it
        weakref.finalize(self, _release, conn, hid, conn.generation)

    def _conn_check(self, conn=None) -> int:
        c = self._conn
        if conn is not None and conn is not c:
            raise WorkerError(f"a {self._type} handle belongs to another worker")
        if c.generation != self._gen or c.worker is None:
            raise WorkerCrashed(f"this {self._type} belongs to a worker that is gone "
                                    "(it crashed or was killed earlier)")
        return self._hid

    def _op(self, name, *args, **kwargs):
        self._conn_check()
        return self._conn.call(f"{self._type}.{name}", (rpc.OP, self._hid, name, args, kwargs),
                               args, kwargs)

    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        fields = self._fields
        if fields is not None and name in fields:
            self._conn_check()
            return fields[name]
        key = (self._type, name)
        if self._conn.method_names.get(key):
            return BoundMethod(self, name)
        self._conn_check()
        value = self._conn.request(f"{self._type}.{name}", (rpc.GETATTR, self._hid, name))
        if isinstance(value, _MethodMarker):
            self._conn.method_names[key] = True
            return BoundMethod(self, name)
        return value

    def __setattr__(self, name, value):
        self._op("__setattr__", name, value)

    def __call__(self, *args, **kwargs):
        self._conn_check()
        return self._conn.call(f"{self._type}(...)", (rpc.CALL, self._hid, None, args, kwargs),
                               args, kwargs)

    def __repr__(self):
        return self._op("__repr__")

    def __str__(self):
        return self._op("__str__")

    def __eq__(self, other):
        return self._op("__eq__", other)

    def __ne__(self, other):
        return self._op("__ne__", other)

    def __lt__(self, other):
        return self._op("__lt__", other)

    def __le__(self, other):
        return self._op("__le__", other)

    def __gt__(self, other):
        return self._op("__gt__", other)

    def __ge__(self, other):
        return self._op("__ge__", other)

    def __hash__(self):
        return self._op("__hash__")

    def __len__(self):
        return self._op("__len__")

    def __bool__(self):
        return self._op("__bool__")

    def __iter__(self):
        return iter(self._op("__iter__"))

    def __getitem__(self, key):
        return self._op("__getitem__", key)

    def __setitem__(self, key, value):
        return self._op("__setitem__", key, value)

    def __contains__(self, item):
        return self._op("__contains__", item)

    def __enter__(self):
        return self._op("__enter__")

    def __exit__(self, *exc):
        return self._op("__exit__", None, None, None)

    def __reduce__(self):
        raise TypeError(f"a {self._type} handle lives in the worker and cannot be pickled")


class ClassHandle(Handle):
    """A class of the lab's module: calling it constructs remotely; ``isinstance`` asks."""

    __slots__ = ()

    def __instancecheck__(self, obj):
        if not isinstance(obj, Handle) or obj._conn is not self._conn:
            return False
        return self._conn.request("isinstance", (rpc.ISINSTANCE, obj._conn_check(), self._hid))


class BoundMethod:
    __slots__ = ("handle", "name")

    def __init__(self, handle, name):
        self.handle, self.name = handle, name

    def __call__(self, *args, **kwargs):
        h = self.handle
        h._conn_check()
        what = f"{h._type}.{self.name}(...)" if h._type != "module" else f"{self.name}(...)"
        return h._conn.call(what, (rpc.CALL, h._hid, self.name, args, kwargs), args, kwargs)


def _release(conn, hid, gen):
    if conn.generation == gen and conn.worker is not None:
        conn.released.append(hid)


class RemoteLab:
    """The lab's module in the worker: ``lab.shrink(...)`` is one request."""

    def __init__(self, conn: Connection, lab: str, handle: Handle):
        self._conn, self._lab, self._handle, self._hid = conn, lab, handle, handle._hid
        self._gen = conn.generation
        self._cache: dict[str, object] = {}

    def __repr__(self):
        return f"<remote lab {self._lab} in worker {self._conn.key}>"

    def _revive(self):
        if self._conn.generation != self._gen or self._conn.worker is None:
            self._conn.ensure()
            fresh = self._conn.request(f"loading {self._lab}", (rpc.LOAD, self._lab, self._impl))
            self._handle, self._hid, self._gen = fresh, fresh._hid, self._conn.generation
            self._cache.clear()

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        self._revive()
        hit = self._cache.get(name, _MISSING)
        if hit is not _MISSING:
            return hit
        value = self._conn.request(f"{self._lab}.{name}", (rpc.GETATTR, self._hid, name))
        if isinstance(value, _MethodMarker):
            value = ModuleFunction(self, name)
        if isinstance(value, (Handle, ModuleFunction, int, float, str, tuple, type(None))):
            self._cache[name] = value
        return value

    def in_worker(self, func, *args, **kwargs):
        """Run ``func`` (a module-level function of a trusted module, e.g. the test module) in
        the worker, imported there by path; its result comes back as data or a handle."""
        self._revive()
        # the function's own file, not sys.modules[func.__module__]: two conftests share the
        # name ``conftest``, and sys.modules holds only the last one imported
        path = func.__globals__.get("__file__") if isinstance(func, types.FunctionType) else None
        if path is None or func.__qualname__ != func.__name__:
            raise TypeError(f"in_worker: expected a module-level function of a file, got {func!r}")
        return self._conn.call(f"{func.__name__}(...) in the worker",
                               (rpc.IN_WORKER, str(path), func.__name__, args, kwargs), args, kwargs)


class ModuleFunction:
    __slots__ = ("lab", "name")

    def __init__(self, lab: RemoteLab, name: str):
        self.lab, self.name = lab, name

    def __call__(self, *args, **kwargs):
        lab = self.lab
        lab._revive()
        return lab._conn.call(f"{lab._lab[:6]} {self.name}(...)",
                              (rpc.CALL, lab._hid, self.name, args, kwargs), args, kwargs)

    def __repr__(self):
        return f"<remote function {self.lab._lab}.{self.name}>"


_CONNECTIONS: dict[str, Connection] = {}
_LABS: dict[tuple, RemoteLab] = {}


def remote_lab(lab: str, impl: loader.Impl | None = None, owner: str | None = None) -> RemoteLab:
    """``lab``'s module in the worker of ``owner`` (default: ``lab`` itself): one per session."""
    lab = loader.find_lab(lab)
    owner = owner or lab
    impl_spec = None if impl is None else (impl.kind, None if impl.submission is None
                                           else str(impl.submission))
    key = (owner, lab, impl_spec)
    remote = _LABS.get(key)
    if remote is not None:
        return remote
    conn = _CONNECTIONS.setdefault(owner, Connection(owner))
    conn.ensure()
    hid = conn.request(f"loading {lab}", (rpc.LOAD, lab, impl_spec))
    remote = RemoteLab(conn, lab, hid)
    remote._impl = impl_spec
    _LABS[key] = remote
    return remote


def shutdown() -> None:
    for conn in _CONNECTIONS.values():
        conn.kill()
    _CONNECTIONS.clear()
    _LABS.clear()


def in_worker(lab, func, *args, **kwargs):
    """Call ``func`` (a module-level function of a trusted file, e.g. the test module) where the
    lab's code runs: in the worker under ``LAB_ISOLATE=1`` (imported there by path), else here.
    Tests use it for fakes and measurements that belong in the student's process."""
    if isinstance(lab, RemoteLab):
        return lab.in_worker(func, *args, **kwargs)
    return func(*args, **kwargs)


loader.set_remote(remote_lab)  # LAB_ISOLATE=1: loader.load_impl hands out remote_lab's proxies
