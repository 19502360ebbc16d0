"""The worker protocol in one file: framing, the named messages, the worker's data encoder,
the trusted side's decoder and its allow-list, and the request pickler of each side.

Transport
  A connected ``socket.socketpair()``. Every message is one frame: an 8-byte big-endian length,
  then the payload; a frame over ``MAX_FRAME`` bytes is refused before it is read.

Trusted -> worker
  pickle (the worker is untrusted anyway). Handles travel as persistent ids (``HANDLE_ID``, id);
  callables and objects of the tests' own classes travel as callback references
  (``CALLBACK_ID``, id): the worker calls them back synchronously on the same socket.

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

Messages (named below)
  A request is a pickled ``(op, released handle ids)``; ``op`` is ``(LOAD, lab, impl)``,
  ``(GETATTR, id, name)``, ``(CALL, id, method or None, args, kwargs)``, ``(OP, id, dunder,
  args, kwargs)``, ``(ISINSTANCE, id, class id)`` or ``(IN_WORKER, path, name, args, kwargs)``.
  A reply is ``[OK, value]``, ``[ERR, exception info]`` or ``[BAD, why]``; while a call runs the
  worker may send ``[CALLBACK, id, method or None, args, kwargs]`` and read back a pickled
  ``(OK, value)`` or ``(ERR, exception)``.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import io
import json
import pathlib
import pickle
import socket
import struct
import sys
import traceback
import types
from pathlib import Path

import numpy as np

from labkit import loader

MAX_FRAME = 512 * 2**20
MAX_DEPTH = 64
MAX_MESSAGE = 4000  # characters of an exception message kept
ALLOWED_DTYPE_KINDS = "biufc"
# exceptions of the standard library a lab's contract names (a frozen record refuses assignment)
STDLIB_EXCEPTIONS = {"dataclasses.FrozenInstanceError": dataclasses.FrozenInstanceError}

# requests (trusted -> worker), the first item of ``op``
LOAD, GETATTR, CALL, OP, ISINSTANCE, IN_WORKER = (
    "load", "getattr", "call", "op", "isinstance", "in_worker")
# replies (worker -> trusted), the first item of the message; CALLBACK: a call back to the tests
OK, ERR, BAD, CALLBACK = "ok", "err", "bad", "cb"
# persistent ids in a request's pickle: a worker object, a callable of the tests
HANDLE_ID, CALLBACK_ID = "h", "cb"


class WorkerError(Exception):
    """The worker broke the protocol, or raised something the trusted side may not rebuild."""


class RemoteTraceback(Exception):
    """The worker's traceback text, attached as the ``__cause__`` of an exception it raised."""

    def __str__(self):
        return "in the worker:\n" + (self.args[0] if self.args else "")


class WorkerValueError(TypeError):
    """The student's code returned a value of a type that may not cross to the trusted side."""


class BadValue(Exception):
    """A value the trusted side may not receive."""


class MethodMarker:
    """A request's answer: the attribute is a method (the trusted side then calls it by name)."""


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


# --- worker -> trusted: the data encoder (worker side) ---------------------------------------


class Encoder:
    """The worker's side of the data format: values in, JSON and blobs out; objects of the lab
    (``modules``, ``handle_types``) stay in the worker as handles (``objects``, by id)."""

    def __init__(self):
        self.objects: dict[int, object] = {}
        self.ids: dict[int, int] = {}  # id(obj) -> handle id
        self.next_id = 1
        self.modules: dict[str, object] = {}  # implementation module names
        self.handle_types: tuple[type, ...] = ()
        self.snapshotting: set[int] = set()  # frozen records being encoded (a cycle stops)

    def handle(self, obj, kind: str, blobs: list | None = None, depth: int = 0):
        key = id(obj)
        hid = self.ids.get(key)
        if hid is None or self.objects.get(hid) is not obj:
            hid, self.next_id = self.next_id, self.next_id + 1
            self.objects[hid] = obj
            self.ids[key] = hid
        name = obj.__qualname__ if kind in ("class", "func") else type(obj).__qualname__
        fields = None if blobs is None else self.frozen_fields(obj, blobs, depth)
        return {"$h": [hid, name, kind] if fields is None else [hid, name, kind, fields]}

    def frozen_fields(self, obj, blobs: list, depth: int):
        """The fields of a frozen dataclass of the lab whose values are all immutable, encoded
        (the trusted side then reads them without a request), else None."""
        t = type(obj)
        params = getattr(t, "__dataclass_params__", None)
        if (params is None or not params.frozen or not dataclasses.is_dataclass(t)
                or id(obj) in self.snapshotting):
            return None
        mark = len(blobs)
        self.snapshotting.add(id(obj))
        try:
            fields = {f.name: getattr(obj, f.name) for f in dataclasses.fields(t)}
            if not all(self.immutable(v, depth) for v in fields.values()):
                return None
            return self.encode(fields, blobs, depth + 1)
        except Exception:  # noqa: BLE001 - a field that cannot be read or sent: ask each time
            del blobs[mark:]
            return None
        finally:
            self.snapshotting.discard(id(obj))

    def immutable(self, v, depth: int = 0) -> bool:
        """Data that cannot change behind a copy: scalars, and tuples/frozensets of them; an
        object of the lab counts as its (fixed) reference."""
        if depth > MAX_DEPTH:
            return False
        t = type(v)
        if v is None or t in (bool, int, float, complex, str, bytes):
            return True
        if t in (tuple, frozenset):
            return all(self.immutable(x, depth + 1) for x in v)
        return self.is_lab_thing(t) or isinstance(v, np.generic)

    def is_lab_thing(self, obj) -> bool:
        return getattr(obj, "__module__", None) in self.modules

    def encode(self, v, blobs: list, depth: int = 0):
        if depth > MAX_DEPTH - 2:
            raise BadValue(f"a value nested deeper than {MAX_DEPTH} levels")
        t = type(v)
        if v is None or t in (bool, int, float, str):
            return v
        if t is list:
            return [self.encode(x, blobs, depth + 1) for x in v]
        if t is tuple:
            return {"$t": [self.encode(x, blobs, depth + 1) for x in v]}
        if t is dict:
            return {"$d": [[self.encode(k, blobs, depth + 1), self.encode(x, blobs, depth + 1)]
                           for k, x in v.items()]}
        if t is set:
            return {"$s": [self.encode(x, blobs, depth + 1) for x in v]}
        if t is frozenset:
            return {"$fs": [self.encode(x, blobs, depth + 1) for x in v]}
        if t in (bytes, bytearray):
            blobs.append(bytes(v))
            return {"$b": len(blobs) - 1}
        if isinstance(v, np.ndarray) and t is np.ndarray:
            if v.dtype.kind not in ALLOWED_DTYPE_KINDS or v.dtype.fields is not None:
                raise BadValue(f"a numpy array of dtype {v.dtype}")
            blobs.append(np.ascontiguousarray(v).data.cast("B") if v.size else b"")
            return {"$nd": [v.dtype.str, list(v.shape), len(blobs) - 1]}
        if isinstance(v, np.generic) and v.dtype.kind in ALLOWED_DTYPE_KINDS:
            blobs.append(np.asarray(v).tobytes())
            return {"$ns": [v.dtype.str, len(blobs) - 1]}
        if t in (pathlib.PosixPath, pathlib.PurePosixPath):
            return {"$p": ["Path" if t is pathlib.PosixPath else "PurePosixPath", str(v)]}
        if isinstance(v, MethodMarker):
            return {"$m": None}
        if isinstance(v, type):
            if self.is_lab_thing(v):
                return self.handle(v, "class")
            if loader.support_module(v.__module__) is not None and (
                    dataclasses.is_dataclass(v) or issubclass(v, Exception)):
                return {"$c": [v.__module__, v.__qualname__]}  # lab.AdapterRequestError
            raise BadValue(f"the class {v.__qualname__}")
        if isinstance(v, types.FunctionType) and self.is_lab_thing(v):
            return self.handle(v, "func")
        if self.is_lab_thing(t) or (self.handle_types and isinstance(v, self.handle_types)):
            return self.handle(v, "obj", blobs, depth)
        if dataclasses.is_dataclass(v) and loader.support_module(t.__module__) is not None:
            fields = {f.name: getattr(v, f.name) for f in dataclasses.fields(v) if f.init}
            return {"$r": [t.__module__, t.__qualname__, self.encode(fields, blobs, depth + 1)]}
        raise BadValue(f"a value of type {t.__module__}.{t.__qualname__}")

    def error_info(self, err: BaseException) -> tuple[dict, list]:
        """An ``ERR`` reply's body for ``err``, and its blobs: MRO names, message, traceback
        text, the innermost lab frame, and a support module's exception's attributes."""
        tb = traceback.extract_tb(err.__traceback__)
        where = None
        for frame in reversed(tb):
            lab = loader.lab_of_path(pathlib.Path(frame.filename))
            if lab is not None and not pathlib.Path(frame.filename).name.startswith("test_"):
                where = f"{lab[:len('lab-01')]} {frame.name}()"
                break
        info = {"mro": [f"{c.__module__}.{c.__qualname__}" for c in type(err).__mro__],
                "message": str(err)[:MAX_MESSAGE],
                "traceback": "".join(traceback.format_exception(err))[-20000:],
                "where": where}
        blobs: list = []
        if loader.support_module(type(err).__module__) is not None:  # AdapterRequestError
            with contextlib.suppress(BadValue):
                info["fields"] = self.encode(
                    {k: v for k, v in vars(err).items() if not k.startswith("_")}, blobs)
        return info, blobs


# --- worker -> trusted: the decoder and its allow-list (trusted side) ------------------------


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
            return MethodMarker()
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


# --- trusted -> worker: requests (pickle; the worker is untrusted anyway) ---------------------


class Pickler(pickle.Pickler):
    """The trusted side's request encoder: a handle travels as ``(HANDLE_ID, id)``
    (``handle_id(obj)``: its id, or None for anything that is not one), a callable or object of
    the tests as ``(CALLBACK_ID, register(obj))``; data and library objects as themselves."""

    def __init__(self, file, handle_id, register):
        super().__init__(file, protocol=5)
        self.handle_id, self.register = handle_id, register

    def persistent_id(self, obj):
        t = type(obj)
        if t in _PLAIN:
            return None
        hid = self.handle_id(obj)
        if hid is not None:
            return (HANDLE_ID, hid)
        if isinstance(obj, (type, np.ndarray, np.generic, np.dtype, pathlib.PurePath, range,
                            slice)):
            return None
        module = getattr(obj, "__module__", None) if callable(obj) else None
        module = module or getattr(t, "__module__", "") or ""
        if dataclasses.is_dataclass(obj) and loader.support_module(module) is not None:
            return None
        if module.partition(".")[0] not in _LIBRARIES:  # the tests' own callables and objects
            return (CALLBACK_ID, self.register(obj))
        return None


# what pickles by reference (numpy's reconstructors, copyreg, builtins), never a callback;
# "types": a SimpleNamespace of the tests travels as itself (lab 02's tag without lora_int_id)
_LIBRARIES = frozenset({"builtins", "numpy", "copyreg", "_codecs", "collections", "pathlib",
                        "types", "fractions", "decimal", "enum", "datetime", "_operator", "operator",
                        "functools", "array", "math", "re", "_pickle", "pickle"})
_PLAIN = frozenset({int, float, str, bool, type(None), bytes, tuple, list, dict, set, frozenset,
                    bytearray, complex})


def loads(payload, objects: dict, callback):
    """The worker's request decoder: ``(HANDLE_ID, id)`` is ``objects[id]``, ``(CALLBACK_ID,
    id)`` is ``callback(id)``; a class of a lab's given support module is loaded on first use."""

    class Unpickler(pickle.Unpickler):
        def persistent_load(self, pid):
            kind, ident = pid
            if kind == HANDLE_ID:
                return objects[ident]
            if kind == CALLBACK_ID:
                return callback(ident)
            raise pickle.UnpicklingError(f"unknown persistent id {kind!r}")

        def find_class(self, module, name):
            if module.startswith("phase11_") and module not in sys.modules:
                loader.given_support(module)
            return super().find_class(module, name)

    return Unpickler(_Reader(payload)).load()


class _Reader:
    def __init__(self, payload):
        self.buf = io.BytesIO(payload)
        self.read, self.readline = self.buf.read, self.buf.readline

    def readinto(self, b):
        return self.buf.readinto(b)
