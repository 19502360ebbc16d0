"""The worker of ``LAB_ISOLATE=1``: ``python -m labkit.worker --fd N``.

It imports lab implementations with the ordinary loader (under the ``LAB_IMPL`` it is given),
serves requests from the trusted side on the connected socket N, and sends back data only, in
the format ``labkit.isolate`` decodes (see its docstring for the rules). It may serve several
labs: lab 02's tests reach labs 03 and 04 through the same worker.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import inspect
import pathlib
import pickle
import socket
import sys
import traceback
import types

import numpy as np

from labkit import isolate, loader

_PLAIN_OPS = {"__repr__": repr, "__str__": str, "__hash__": hash, "__len__": len,
              "__bool__": bool, "__iter__": list, "__enter__": lambda o: o.__enter__(),
              "__exit__": lambda o, *a: o.__exit__(*a)}


class BadValue(Exception):
    """A value the trusted side may not receive."""


class Worker:
    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.objects: dict[int, object] = {}
        self.ids: dict[int, int] = {}  # id(obj) -> handle id
        self.next_id = 1
        self.modules: dict[str, types.ModuleType] = {}  # implementation module names
        self.handle_types: tuple[type, ...] = ()
        self.test_modules: dict[str, types.ModuleType] = {}
        self.snapshotting: set[int] = set()  # frozen records being encoded (a cycle stops)

    # -- the data encoder ----------------------------------------------------------------

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
        if depth > isolate.MAX_DEPTH:
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
        if depth > isolate.MAX_DEPTH - 2:
            raise BadValue(f"a value nested deeper than {isolate.MAX_DEPTH} levels")
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
            if v.dtype.kind not in isolate.ALLOWED_DTYPE_KINDS or v.dtype.fields is not None:
                raise BadValue(f"a numpy array of dtype {v.dtype}")
            blobs.append(np.ascontiguousarray(v).data.cast("B") if v.size else b"")
            return {"$nd": [v.dtype.str, list(v.shape), len(blobs) - 1]}
        if isinstance(v, np.generic) and v.dtype.kind in isolate.ALLOWED_DTYPE_KINDS:
            blobs.append(np.asarray(v).tobytes())
            return {"$ns": [v.dtype.str, len(blobs) - 1]}
        if t in (pathlib.PosixPath, pathlib.PurePosixPath):
            return {"$p": ["Path" if t is pathlib.PosixPath else "PurePosixPath", str(v)]}
        if isinstance(v, isolate._MethodMarker):
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

    def send_value(self, value):
        blobs: list = []
        try:
            message = ["ok", self.encode(value, blobs)]
        except BadValue as err:
            return self.send(["bad", f"returned {err}; only data (numbers, strings, containers, "
                                     "numeric numpy arrays, paths, the lab's given records) and "
                                     "the lab's own objects may cross to the tests"], [])
        self.send(message, blobs)

    def send(self, message, blobs):
        isolate.send_frame(self.sock, isolate.pack_data(message, blobs))

    def send_error(self, err: BaseException):
        tb = traceback.extract_tb(err.__traceback__)
        where = None
        for frame in reversed(tb):
            lab = loader.lab_of_path(pathlib.Path(frame.filename))
            if lab is not None and not pathlib.Path(frame.filename).name.startswith("test_"):
                where = f"{lab[:len('lab-01')]} {frame.name}()"
                break
        info = {"mro": [f"{c.__module__}.{c.__qualname__}" for c in type(err).__mro__],
                "message": str(err)[:isolate.MAX_MESSAGE],
                "traceback": "".join(traceback.format_exception(err))[-20000:],
                "where": where}
        blobs: list = []
        if loader.support_module(type(err).__module__) is not None:  # AdapterRequestError
            with contextlib.suppress(BadValue):
                info["fields"] = self.encode(
                    {k: v for k, v in vars(err).items() if not k.startswith("_")}, blobs)
        self.send(["err", info], blobs)

    # -- requests -------------------------------------------------------------------------

    def loads(self, payload):
        worker = self

        class Unpickler(pickle.Unpickler):
            def persistent_load(self, pid):
                kind, ident = pid
                if kind == "h":
                    return worker.objects[ident]
                if kind == "cb":
                    return Callback(worker, ident)
                raise pickle.UnpicklingError(f"unknown persistent id {kind!r}")

            def find_class(self, module, name):
                if module.startswith("phase11_") and module not in sys.modules:
                    loader.given_support(module)
                return super().find_class(module, name)

        return Unpickler(_Reader(payload)).load()

    def serve(self):
        while True:
            payload = isolate.recv_frame(self.sock)
            if payload is None:
                return
            self.handle_request(payload)

    def handle_request(self, payload):
        (op, released) = self.loads(payload)
        for hid in released:
            obj = self.objects.pop(hid, None)
            if obj is not None and self.ids.get(id(obj)) == hid:
                del self.ids[id(obj)]
        try:
            kind = op[0]
            if kind == "load":
                _, lab, spec = op
                impl = None if spec is None else loader.Impl(
                    spec[0], None if spec[1] is None else pathlib.Path(spec[1]))
                module = loader.load_impl(lab, impl)
                self.modules[module.__name__] = module
                declared = getattr(module, "WORKER_HANDLE_TYPES", ())
                self.handle_types += tuple(t for t in declared if isinstance(t, type))
                return self.send(["ok", self.handle(module, "module")], [])
            if kind == "getattr":
                _, hid, name = op
                obj = self.objects[hid]
                value = getattr(obj, name)
                bound = inspect.ismethod(value) and (
                    value.__self__ is obj or isinstance(value.__self__, type))
                if bound or (isinstance(obj, types.ModuleType)
                             and isinstance(value, types.FunctionType)):
                    value = isolate._MethodMarker()
                return self.send_value(value)
            if kind == "call":
                _, hid, name, args, kwargs = op
                obj = self.objects[hid]
                fn = obj if name is None else getattr(obj, name)
                return self.call(fn, args, kwargs)
            if kind == "op":
                _, hid, name, args, kwargs = op
                obj = self.objects[hid]
                if name in _PLAIN_OPS:
                    return self.call(lambda *a: _PLAIN_OPS[name](obj, *a), args, kwargs)
                if name == "__setattr__":
                    return self.call(lambda k, v: setattr(obj, k, v), args, kwargs)
                if name in ("__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__",
                            "__getitem__", "__setitem__", "__contains__"):
                    import operator

                    fn = getattr(operator, name)
                    if name == "__contains__":
                        return self.call(lambda x: x in obj, args, kwargs)
                    return self.call(lambda *a: fn(obj, *a), args, kwargs)
                raise TypeError(f"operation {name!r} is not supported on a worker handle")
            if kind == "isinstance":
                _, hid, cid = op
                return self.send_value(isinstance(self.objects[hid], self.objects[cid]))
            if kind == "in_worker":
                _, path, name, args, kwargs = op
                module = self.test_module(path)
                return self.call(getattr(module, name), args, kwargs)
            raise ValueError(f"unknown request {kind!r}")
        except Exception as err:  # noqa: BLE001 - every failure goes back as data
            self.send_error(err)

    def call(self, fn, args, kwargs):
        """Call and send the result. The arguments are this process's copies: what the code does
        to them stays here (nothing is written back to the tests' objects)."""
        try:
            value = fn(*args, **kwargs)
        except Exception as err:  # noqa: BLE001
            return self.send_error(err)
        self.send_value(value)

    def test_module(self, path: str):
        module = self.test_modules.get(path)
        if module is None:
            name = f"phase11_worker_trusted_{len(self.test_modules)}"
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
            self.test_modules[path] = module
        return module


class _Reader:
    def __init__(self, payload):
        import io

        self.buf = io.BytesIO(payload)
        self.read, self.readline = self.buf.read, self.buf.readline

    def readinto(self, b):
        return self.buf.readinto(b)


class Callback:
    """A callable (or object) of the tests: calling it, or one of its methods, calls back."""

    def __init__(self, worker: Worker, cid: int, attr: str | None = None):
        self._worker, self._cid, self._attr = worker, cid, attr

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return Callback(self._worker, self._cid, name)

    def __call__(self, *args, **kwargs):
        w = self._worker
        blobs: list = []
        try:
            message = ["cb", self._cid, self._attr, w.encode(list(args), blobs),
                       w.encode(dict(kwargs), blobs)]
        except BadValue as err:
            raise TypeError(f"a callback argument cannot be sent to the tests: {err}") from None
        w.send(message, blobs)
        payload = isolate.recv_frame(w.sock)
        if payload is None:
            raise SystemExit(0)
        status, value = w.loads(payload)
        if status == "err":
            raise value
        return value


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labkit.worker")
    parser.add_argument("--fd", type=int, required=True)
    args = parser.parse_args(argv)
    loader.IN_WORKER = True
    sock = socket.socket(fileno=args.fd)
    Worker(sock).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
