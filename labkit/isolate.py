"""Worker mode (``LAB_ISOLATE=1``): the student's module runs in a separate worker process.

The trusted process (pytest, the tests, labkit, the grading plugin) never imports an
implementation file. ``remote_lab(lab)`` returns a proxy of the lab's module; attribute reads,
calls, and methods of the handles it returns are requests to the worker.

Transport
  A connected ``socket.socketpair()``. Every message is one frame: an 8-byte big-endian length,
  then the payload; a frame over ``MAX_FRAME`` bytes is refused before it is read.

Trusted -> worker
  pickle (the worker is untrusted anyway). Handles travel as persistent ids ("h", id); callables
  and objects of the tests' own classes travel as callback references ("cb", id): the worker calls
  them back synchronously on the same socket.

Worker -> trusted: DATA only, decoded by an allow-list that never runs worker-chosen code; the
  reply is the call's result and nothing else: what the worker does to its copies of the
  arguments is never written back to the tests' objects (no lab function's contract changes its
  arguments in place; each lab's docstring says its inputs are left unchanged)
  payload = 4-byte JSON length, JSON text, then binary blobs (each 8-byte length + bytes).
  JSON values: null/true/false/int/float (NaN, Infinity)/str and lists (= Python lists); every
  object is one tag: ``$t`` tuple, ``$d`` dict (pairs), ``$s`` set, ``$fs`` frozenset, ``$b``
  bytes (blob index), ``$nd`` numpy array [dtype, shape, blob] of a bool/int/uint/float/complex
  dtype (never object), ``$ns`` numpy scalar [dtype, blob], ``$p`` path, ``$r`` record (a
  dataclass of a trusted support module, rebuilt from the trusted side's own class), ``$c`` a
  record or exception class of such a module (the trusted one), ``$h`` handle [id, type name,
  kind] or [id, type name, kind, fields]: a frozen dataclass of the lab whose fields are all
  immutable comes with them (a ``$d`` of identifier keys), and reading one of those fields asks
  the worker nothing. Anything else fails the call with ``WorkerValueError``. Exceptions come
  back as MRO names + message + traceback text + the innermost lab frame (+ ``fields``, the
  attributes of a support module's exception); the first allow-listed class in the MRO is
  raised (builtin exceptions, ``dataclasses.FrozenInstanceError``, ``labkit.LabImplError``,
  exception classes of trusted support modules, built from ``fields`` when they fit), with the
  remote traceback as a note. A support module is looked up by the name ``load_support`` gives
  it, and loaded on first use if it is one of a lab's given files (``loader.given_support``),
  never an implementation or a test file.

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

import builtins
import contextlib
import dataclasses
import io
import json
import os
import pathlib
import pickle
import socket
import struct
import subprocess
import sys
import weakref
from pathlib import Path

import numpy as np

from labkit import loader

ISOLATE_ENV = "LAB_ISOLATE"
MAX_FRAME = 512 * 2**20
MAX_DEPTH = 64
MAX_MESSAGE = 4000  # characters of an exception message kept
ALLOWED_DTYPE_KINDS = "biufc"
# exceptions of the standard library a lab's contract names (a frozen record refuses assignment)
STDLIB_EXCEPTIONS = {"dataclasses.FrozenInstanceError": dataclasses.FrozenInstanceError}


class WorkerError(Exception):
    """The worker broke the protocol, or raised something the trusted side may not rebuild."""


class RemoteTraceback(Exception):
    """The worker's traceback text, attached as the ``__cause__`` of an exception it raised."""

    def __str__(self):
        return "in the worker:\n" + (self.args[0] if self.args else "")


class WorkerValueError(TypeError):
    """The student's code returned a value of a type that may not cross to the trusted side."""


class WorkerCrashed(RuntimeError):
    """The worker died (or was killed) during a call."""


def isolate_mode(value: str | None = None) -> bool:
    """``LAB_ISOLATE``: "1" is worker mode; unset, "" or "0" is in-process; anything else errs."""
    raw = os.environ.get(ISOLATE_ENV, "") if value is None else value
    raw = raw.strip()
    if raw in ("", "0"):
        return False
    if raw == "1":
        return True
    raise loader.LabImplError(f"{ISOLATE_ENV}: expected 1 (worker mode) or 0/unset, got {raw!r}")


# --- framing ---------------------------------------------------------------------------------


def send_frame(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(struct.pack(">Q", len(payload)) + payload if len(payload) < 1 << 16 else
                 struct.pack(">Q", len(payload)))
    if len(payload) >= 1 << 16:
        sock.sendall(payload)


def _recv_exact(sock: socket.socket, n: int) -> bytearray | None:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            return None
        got += k
    return buf


def recv_frame(sock: socket.socket) -> bytearray | None:
    """One frame's payload, or None at end of stream. Raises WorkerError past ``MAX_FRAME``."""
    head = _recv_exact(sock, 8)
    if head is None:
        return None
    (n,) = struct.unpack(">Q", head)
    if n > MAX_FRAME:
        raise WorkerError(f"the worker sent a frame of {n:,} bytes (the cap is {MAX_FRAME:,})")
    body = _recv_exact(sock, n)
    if body is None:
        return None
    return body


# --- the data codec (worker side encodes, trusted side decodes) ------------------------------


def pack_data(message, blobs: list) -> bytes:
    text = json.dumps(message, allow_nan=True, separators=(",", ":")).encode()
    parts = [struct.pack(">I", len(text)), text]
    for blob in blobs:
        mv = memoryview(blob).cast("B")
        parts.append(struct.pack(">Q", mv.nbytes))
        parts.append(mv)
    return b"".join(parts)


def unpack_data(payload: bytearray):
    """(JSON message, blobs) of a worker frame; WorkerError for anything malformed."""
    try:
        mv = memoryview(payload)
        (n,) = struct.unpack(">I", mv[:4])
        if 4 + n > len(payload):
            raise ValueError("JSON length past the frame")
        message = json.loads(bytes(mv[4:4 + n]).decode("utf-8"))
        blobs, at = [], 4 + n
        while at < len(payload):
            (k,) = struct.unpack(">Q", mv[at:at + 8])
            at += 8
            if at + k > len(payload):
                raise ValueError("blob length past the frame")
            blobs.append(mv[at:at + k])
            at += k
    except (ValueError, struct.error, UnicodeDecodeError, RecursionError) as err:
        raise WorkerError(f"the worker sent a malformed frame ({type(err).__name__}: "
                          f"{str(err)[:200]})") from None
    return message, blobs


def _dtype(text) -> np.dtype:
    if not isinstance(text, str) or len(text) > 8:
        raise WorkerError(f"bad dtype {text!r:.80}")
    if text[:1] not in "<>|=" or text[1:2] not in ALLOWED_DTYPE_KINDS or not text[2:].isdigit():
        raise WorkerError(f"dtype {text!r} is not a bool/int/uint/float/complex dtype")
    dtype = np.dtype(text)
    if dtype.kind not in ALLOWED_DTYPE_KINDS or dtype.fields is not None:
        raise WorkerError(f"dtype {text!r} is not allowed")
    return dtype


class Decoder:
    """Turns a worker's data tree into Python values, building handles with ``make_handle``."""

    def __init__(self, blobs, make_handle):
        self.blobs = blobs
        self.make_handle = make_handle

    def blob(self, i):
        if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < len(self.blobs):
            raise WorkerError(f"bad blob index {i!r:.40}")
        return self.blobs[i]

    def value(self, v, depth: int = 0):
        if depth > MAX_DEPTH:
            raise WorkerError(f"the worker's value nests deeper than {MAX_DEPTH} levels")
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        if isinstance(v, list):
            return [self.value(x, depth + 1) for x in v]
        if not isinstance(v, dict) or len(v) != 1:
            raise WorkerError(f"the worker sent an untagged object {str(v)[:80]}")
        (tag, body), = v.items()
        if tag == "$t":
            return tuple(self.items(body, depth))
        if tag == "$s":
            return set(self.items(body, depth))
        if tag == "$fs":
            return frozenset(self.items(body, depth))
        if tag == "$d":
            if not isinstance(body, list) or not all(
                    isinstance(p, list) and len(p) == 2 for p in body):
                raise WorkerError("a dict must be a list of [key, value] pairs")
            try:
                return {self.value(k, depth + 1): self.value(val, depth + 1) for k, val in body}
            except TypeError as err:
                raise WorkerError(f"a dict key is not hashable: {err}") from None
        if tag == "$m" and body is None:
            return _MethodMarker()
        if tag == "$b":
            return bytes(self.blob(body))
        if tag == "$nd":
            dtype_text, shape, i = self.fields(body, 3)
            dtype = _dtype(dtype_text)
            if (not isinstance(shape, list) or len(shape) > 32
                    or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                               for s in shape)):
                raise WorkerError(f"bad array shape {str(shape)[:80]}")
            raw = self.blob(i)
            if raw.nbytes != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
                raise WorkerError(f"array data of {raw.nbytes} bytes does not fit {shape} {dtype}")
            return np.frombuffer(raw, dtype=dtype).reshape(shape)
        if tag == "$ns":
            dtype_text, i = self.fields(body, 2)
            dtype = _dtype(dtype_text)
            raw = self.blob(i)
            if raw.nbytes != dtype.itemsize:
                raise WorkerError("bad numpy scalar")
            return np.frombuffer(raw, dtype=dtype)[0]
        if tag == "$p":
            kind, text = self.fields(body, 2)
            cls = {"Path": Path, "PurePosixPath": pathlib.PurePosixPath}.get(kind)
            if cls is None or not isinstance(text, str):
                raise WorkerError(f"bad path {str(body)[:80]}")
            return cls(text)
        if tag == "$c":
            module, qualname = self.fields(body, 2)
            return given_class(module, qualname)
        if tag == "$r":
            module, qualname, fields = self.fields(body, 3)
            cls = record_class(module, qualname)
            values = self.value(fields, depth + 1)
            if not isinstance(values, dict):
                raise WorkerError("a record's fields must be a dict")
            try:
                return cls(**values)
            except Exception as err:  # noqa: BLE001 - a malformed record is the worker's fault
                raise WorkerError(f"record {qualname}: {type(err).__name__}: {err}") from None
        if tag == "$h":
            n = 4 if isinstance(body, list) and len(body) == 4 else 3
            hid, type_name, kind, *snapshot = self.fields(body, n)
            if not isinstance(hid, int) or not isinstance(type_name, str) or kind not in (
                    "obj", "class", "func", "module"):
                raise WorkerError(f"bad handle {str(body)[:80]}")
            fields = self.value(snapshot[0], depth + 1) if snapshot else None
            if fields is not None and not (isinstance(fields, dict) and kind == "obj" and all(
                    isinstance(k, str) and k.isidentifier() for k in fields)):
                raise WorkerError(f"bad fields of a {type_name[:80]} handle")
            return self.make_handle(hid, type_name[:200], kind, fields)
        raise WorkerError(f"the worker sent an unknown type tag {tag[:40]!r}")

    def items(self, body, depth):
        if not isinstance(body, list):
            raise WorkerError("a container's body must be a list")
        return [self.value(x, depth + 1) for x in body]

    @staticmethod
    def fields(body, n):
        if not isinstance(body, list) or len(body) != n:
            raise WorkerError(f"a tagged value needs {n} fields, got {str(body)[:80]}")
        return body


def support_class(module: str, qualname: str) -> type | None:
    """The trusted copy of a class of a lab's given support module, by lookup only (loaded on
    first use: ``loader.given_support``); None for anything else."""
    mod = loader.given_support(module) if isinstance(module, str) else None
    cls = getattr(mod, qualname, None) if isinstance(qualname, str) and qualname.isidentifier() \
        else None
    return cls if isinstance(cls, type) and cls.__module__ == module else None


def record_class(module: str, qualname: str) -> type:
    """The trusted copy of a record class, by lookup only: a dataclass of a support module."""
    cls = support_class(module, qualname)
    if cls is None or not dataclasses.is_dataclass(cls):
        raise WorkerError(f"{module!r:.80}.{qualname!r:.80} is not an allowed record class")
    return cls


def given_class(module: str, qualname: str) -> type:
    """A class the worker names (``$c``): a record class or an exception class of a support
    module, e.g. ``lab.AdapterRequestError`` for ``pytest.raises``."""
    cls = support_class(module, qualname)
    if cls is None or not (dataclasses.is_dataclass(cls) or issubclass(cls, Exception)):
        raise WorkerError(f"{module!r:.80}.{qualname!r:.80} is not an allowed class")
    return cls


def exception_class(names) -> type[BaseException] | None:
    """The first allow-listed exception class among ``names`` ("module.qualname", MRO order)."""
    for name in names if isinstance(names, list) else []:
        if not isinstance(name, str) or "." not in name:
            continue
        module, _, qualname = name.rpartition(".")
        cls = None
        if module == "builtins":
            cls = getattr(builtins, qualname, None)
        elif name in STDLIB_EXCEPTIONS:
            cls = STDLIB_EXCEPTIONS[name]
        elif module == "labkit.loader" and qualname == "LabImplError":
            cls = loader.LabImplError
        else:
            cls = support_class(module, qualname)
        if isinstance(cls, type) and issubclass(cls, Exception):
            return cls
    return None


def build_exception(info, decoder: Decoder | None = None) -> BaseException:
    """The trusted exception for a worker's error: its allow-listed class, built from
    ``fields`` (a support module's exception: its attributes, as keyword arguments) or the
    message."""
    if not isinstance(info, dict):
        return WorkerError("the worker sent a malformed exception")
    mro, message = info.get("mro"), str(info.get("message", ""))[:MAX_MESSAGE]
    tb, where = str(info.get("traceback", ""))[-20000:], info.get("where")
    cls = exception_class(mro)
    fields = decoder.value(info["fields"]) if decoder is not None and "fields" in info else None
    exc = None
    if cls is not None and isinstance(fields, dict) and fields:
        try:
            exc = cls(**fields)  # AdapterRequestError(url, status, message)
        except Exception:  # noqa: BLE001 - fields that do not fit: the message alone
            exc = None
    if cls is not None and exc is None:
        try:
            exc = cls(message)
        except Exception:  # noqa: BLE001 - a class that needs other arguments
            exc = None
    if exc is None:
        first = mro[0] if isinstance(mro, list) and mro else "?"
        exc = WorkerError(f"the worker raised {str(first)[:100]}, not an allowed exception "
                          f"type: {message}")
    exc.__cause__ = RemoteTraceback(tb)  # shown by pytest; not part of str(exc), so match= works
    if isinstance(where, str):
        exc.lab_where = where[:200]  # conftest's one-line TODO failure reads it
    return exc


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


class _Pickler(pickle.Pickler):
    def __init__(self, file, conn: Connection):
        super().__init__(file, protocol=5)
        self.conn = conn

    def persistent_id(self, obj):
        t = type(obj)
        if t in _PLAIN:
            return None
        if isinstance(obj, Handle):
            return ("h", obj._conn_check(self.conn))
        if isinstance(obj, (type, np.ndarray, np.generic, np.dtype, pathlib.PurePath, range,
                            slice)):
            return None
        module = getattr(obj, "__module__", None) if callable(obj) else None
        module = module or getattr(t, "__module__", "") or ""
        if dataclasses.is_dataclass(obj) and loader.support_module(module) is not None:
            return None
        if module.partition(".")[0] not in _LIBRARIES:  # the tests' own callables and objects
            return ("cb", self.conn.register_callback(obj))
        return None


# what pickles by reference (numpy's reconstructors, copyreg, builtins), never a callback;
# "types": a SimpleNamespace of the tests travels as itself (lab 02's tag without lora_int_id)
_LIBRARIES = frozenset({"builtins", "numpy", "copyreg", "_codecs", "collections", "pathlib",
                        "types", "fractions", "decimal", "enum", "datetime", "_operator", "operator",
                        "functools", "array", "math", "re", "_pickle", "pickle"})
_PLAIN = frozenset({int, float, str, bool, type(None), bytes, tuple, list, dict, set, frozenset,
                    bytearray, complex})


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
        _Pickler(buf, self).dump(obj)
        return buf.getvalue()

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
                if kind == "ok" and len(message) == 2:
                    result = (True, decoder.value(message[1]))
                    break
                if kind == "err" and len(message) == 2:
                    result = (False, build_exception(message[1], decoder))
                    break
                if kind == "bad" and len(message) == 2:
                    result = (False, WorkerValueError(f"{what}: {str(message[1])[:MAX_MESSAGE]}"))
                    break
                if kind == "cb" and len(message) == 5:
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
            reply = ("ok", fn(*args, **kwargs))
        except Exception as err:  # noqa: BLE001 - goes back to the student's code as raised
            reply = ("err", err)
        try:
            data = self.dumps(reply)
        except Exception as err:  # noqa: BLE001
            data = self.dumps(("err", TypeError(f"callback result cannot be sent: {err}")))
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
        return self._conn.call(f"{self._type}.{name}", ("op", self._hid, name, args, kwargs),
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
        value = self._conn.request(f"{self._type}.{name}", ("getattr", self._hid, name))
        if isinstance(value, _MethodMarker):
            self._conn.method_names[key] = True
            return BoundMethod(self, name)
        return value

    def __setattr__(self, name, value):
        self._op("__setattr__", name, value)

    def __call__(self, *args, **kwargs):
        self._conn_check()
        return self._conn.call(f"{self._type}(...)", ("call", self._hid, None, args, kwargs),
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
        return self._conn.request("isinstance", ("isinstance", obj._conn_check(), self._hid))


class BoundMethod:
    __slots__ = ("handle", "name")

    def __init__(self, handle, name):
        self.handle, self.name = handle, name

    def __call__(self, *args, **kwargs):
        h = self.handle
        h._conn_check()
        what = f"{h._type}.{self.name}(...)" if h._type != "module" else f"{self.name}(...)"
        return h._conn.call(what, ("call", h._hid, self.name, args, kwargs), args, kwargs)


class _MethodMarker:
    pass


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
            fresh = self._conn.request(f"loading {self._lab}", ("load", self._lab, self._impl))
            self._handle, self._hid, self._gen = fresh, fresh._hid, self._conn.generation
            self._cache.clear()

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        self._revive()
        hit = self._cache.get(name, _MISSING)
        if hit is not _MISSING:
            return hit
        value = self._conn.request(f"{self._lab}.{name}", ("getattr", self._hid, name))
        if isinstance(value, _MethodMarker):
            value = ModuleFunction(self, name)
        if isinstance(value, (Handle, ModuleFunction, int, float, str, tuple, type(None))):
            self._cache[name] = value
        return value

    def in_worker(self, func, *args, **kwargs):
        """Run ``func`` (a module-level function of a trusted module, e.g. the test module) in
        the worker, imported there by path; its result comes back as data or a handle."""
        self._revive()
        module = sys.modules.get(func.__module__)
        path = getattr(module, "__file__", None)
        if path is None or func.__qualname__ != func.__name__:
            raise TypeError(f"in_worker: expected a module-level function of a file, got {func!r}")
        return self._conn.call(f"{func.__name__}(...) in the worker",
                               ("in_worker", str(path), func.__name__, args, kwargs), args, kwargs)


class ModuleFunction:
    __slots__ = ("lab", "name")

    def __init__(self, lab: RemoteLab, name: str):
        self.lab, self.name = lab, name

    def __call__(self, *args, **kwargs):
        lab = self.lab
        lab._revive()
        return lab._conn.call(f"{lab._lab[:6]} {self.name}(...)",
                              ("call", lab._hid, self.name, args, kwargs), args, kwargs)

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
    hid = conn.request(f"loading {lab}", ("load", lab, impl_spec))
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
