"""The worker of ``LAB_ISOLATE=1``: ``python -m labkit.worker --fd N``.

It imports lab implementations with the ordinary loader (under the ``LAB_IMPL`` it is given),
serves requests from the trusted side on the connected socket N, and sends back data only, in
the format ``labkit.rpc`` defines (its encoder is this worker's; see its docstring). It may serve several
labs: lab 02's tests reach labs 03 and 04 through the same worker.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import pathlib
import socket
import sys
import types

from labkit import loader, rpc

_PLAIN_OPS = {"__repr__": repr, "__str__": str, "__hash__": hash, "__len__": len,
              "__bool__": bool, "__iter__": list, "__enter__": lambda o: o.__enter__(),
              "__exit__": lambda o, *a: o.__exit__(*a)}


class Worker(rpc.Encoder):
    def __init__(self, sock: socket.socket):
        super().__init__()
        self.sock = sock
        self.test_modules: dict[str, types.ModuleType] = {}

    def send_value(self, value):
        blobs: list = []
        try:
            message = [rpc.OK, self.encode(value, blobs)]
        except rpc.BadValue as err:
            return self.send([rpc.BAD, f"returned {err}; only data (numbers, strings, containers, "
                                     "numeric numpy arrays, paths, the lab's given records) and "
                                     "the lab's own objects may cross to the tests"], [])
        self.send(message, blobs)

    def send(self, message, blobs):
        rpc.send_frame(self.sock, rpc.pack_data(message, blobs))

    def send_error(self, err: BaseException):
        info, blobs = self.error_info(err)
        self.send([rpc.ERR, info], blobs)

    # -- requests -------------------------------------------------------------------------

    def loads(self, payload):
        return rpc.loads(payload, self.objects, lambda cid: Callback(self, cid))

    def serve(self):
        while True:
            payload = rpc.recv_frame(self.sock)
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
            if kind == rpc.LOAD:
                _, lab, spec = op
                impl = None if spec is None else loader.Impl(
                    spec[0], None if spec[1] is None else pathlib.Path(spec[1]))
                module = loader.load_impl(lab, impl)
                self.modules[module.__name__] = module
                declared = getattr(module, "WORKER_HANDLE_TYPES", ())
                self.handle_types += tuple(t for t in declared if isinstance(t, type))
                return self.send([rpc.OK, self.handle(module, "module")], [])
            if kind == rpc.GETATTR:
                _, hid, name = op
                obj = self.objects[hid]
                value = getattr(obj, name)
                bound = inspect.ismethod(value) and (
                    value.__self__ is obj or isinstance(value.__self__, type))
                if bound or (isinstance(obj, types.ModuleType)
                             and isinstance(value, types.FunctionType)):
                    value = rpc.MethodMarker()
                return self.send_value(value)
            if kind == rpc.CALL:
                _, hid, name, args, kwargs = op
                obj = self.objects[hid]
                fn = obj if name is None else getattr(obj, name)
                return self.call(fn, args, kwargs)
            if kind == rpc.OP:
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
            if kind == rpc.ISINSTANCE:
                _, hid, cid = op
                return self.send_value(isinstance(self.objects[hid], self.objects[cid]))
            if kind == rpc.IN_WORKER:
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
            message = [rpc.CALLBACK, self._cid, self._attr, w.encode(list(args), blobs),
                       w.encode(dict(kwargs), blobs)]
        except rpc.BadValue as err:
            raise TypeError(f"a callback argument cannot be sent to the tests: {err}") from None
        w.send(message, blobs)
        payload = rpc.recv_frame(w.sock)
        if payload is None:
            raise SystemExit(0)
        status, value = w.loads(payload)
        if status == rpc.ERR:
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
