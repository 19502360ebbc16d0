"""The worker-mode decoder against hostile worker frames: each is a clean error, never code."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import socket
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from labkit import isolate, loader
from labkit.isolate import Decoder, WorkerError, pack_data, unpack_data


def decode(message, blobs=()):
    payload = bytearray(pack_data(message, list(blobs)))
    msg, raw = unpack_data(payload)
    return Decoder(raw, lambda *a: ("handle", *a)).value(msg)


def test_round_trip_of_the_allowed_data():
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    got = decode({"$t": [1, 2.5, "s", None, {"$nd": ["<f4", [2, 3], 0]}]}, [arr.tobytes()])
    assert got[:4] == (1, 2.5, "s", None)
    assert np.array_equal(got[4], arr) and got[4].dtype == np.float32


def test_pickle_bytes_are_a_malformed_frame():
    with pytest.raises(WorkerError, match="malformed"):
        unpack_data(bytearray(pickle.dumps(object())))


@pytest.mark.parametrize("message", [
    {"$pickle": "x"}, {"a": 1}, {"$t": 1, "$s": 2},
    {"$nd": ["|O8", [1], 0]}, {"$nd": ["(O)", [1], 0]},
    {"$r": ["os", "system", {"$d": []}]}, {"$r": ["builtins", "eval", {"$d": []}]},
])
def test_hostile_values_are_refused(message):
    with pytest.raises(WorkerError):
        decode(message, [b"\0" * 8])


def test_deep_nesting_is_refused():
    deep = [1]
    for _ in range(200):
        deep = [deep]
    with pytest.raises(WorkerError, match="nests|malformed"):
        decode(deep)
    text = ("[" * 100000 + "]" * 100000).encode()
    with pytest.raises(WorkerError):
        unpack_data(bytearray(struct.pack(">I", len(text)) + text))


def test_a_huge_length_prefix_is_refused_before_reading():
    a, b = socket.socketpair()
    with a, b:
        b.sendall(struct.pack(">Q", 2**40))
        with pytest.raises(WorkerError, match="cap"):
            isolate.recv_frame(a)


def test_an_exception_naming_nothing_allowed_is_a_worker_error():
    exc = isolate.build_exception({"mro": ["evil.Thing", "os.system"], "message": "hi"})
    assert isinstance(exc, WorkerError) and "not an allowed" in str(exc)
    ok = isolate.build_exception({"mro": ["builtins.ValueError"], "message": "bad x"})
    assert type(ok) is ValueError and str(ok) == "bad x"


def test_a_frozen_record_refusing_assignment_keeps_its_class():
    # labs 03 and 04 promise FrozenInstanceError; its builtin base alone would not match raises()
    mro = ["dataclasses.FrozenInstanceError", "builtins.AttributeError", "builtins.Exception"]
    exc = isolate.build_exception({"mro": mro, "message": "cannot assign to field 'hidden'"})
    assert type(exc) is dataclasses.FrozenInstanceError and "'hidden'" in str(exc)


def test_garbage_json_is_a_malformed_frame():
    text = json.dumps({"$t": [1]}).encode()[:-2]
    with pytest.raises(WorkerError, match="malformed"):
        unpack_data(bytearray(struct.pack(">I", len(text)) + text))


# --- lab 02's given records and exception, and its suite in worker mode ----------------------

RECORDS = "phase11_lab_02_serve_many_loras_given__records"
LAB02 = "lab-02-serve-many-loras"


@pytest.mark.parametrize("module", [
    "starter", "solution", "test_lab", "conftest", "no_such_file", "records.x", "",
    # dotted names (<folder>__<module>): only a given file in one of SUPPORT_FOLDERS
    "records", "given__starter", "given__solution", "given__test_lab", "given__conftest",
    "given__no_such_file", "assets__records", "capture__records", "given__records__x",
    "given__records.x", "given__", "__records", "tools__given__records"])
def test_only_a_given_file_loads_as_a_support_module(module):
    assert loader.given_support(f"phase11_lab_02_serve_many_loras_{module}") is None
    assert isolate.support_class(f"phase11_lab_02_serve_many_loras_{module}", "Capture") is None


@pytest.mark.parametrize("dotted, file", [("given.records", "given/records.py"),
                                          ("tools.sqldata", "tools/sqldata.py")])
def test_a_dotted_name_is_a_file_in_a_support_folder(dotted, file):
    name = loader.support_name("lab-02-serve-many-loras", dotted)
    assert name == "phase11_lab_02_serve_many_loras_" + dotted.replace(".", "__")
    module = loader.given_support(name)
    assert module is not None and Path(module.__file__) == loader.labs_dir() / LAB02 / file
    assert module is loader.load_support("lab-02", dotted)


@pytest.mark.parametrize("dotted", ["starter", "given.starter", "tools.test_lab", "given.conftest",
                                    "assets.records", "given.records.x", "given.", ".records"])
def test_load_support_refuses_what_is_not_a_support_module(dotted):
    with pytest.raises(loader.LabImplError, match="support module"):
        loader.load_support("lab-02", dotted)


def test_a_record_class_loads_its_support_module_on_first_use():
    cls = isolate.record_class(RECORDS, "ColdSlotSignature")
    assert cls is loader.given_support(RECORDS).ColdSlotSignature
    with pytest.raises(WorkerError, match="allowed record class"):
        isolate.record_class(RECORDS, "AdapterRequestError")  # an exception, not a record
    assert decode({"$c": [RECORDS, "ColdSlotSignature"]}) is cls


def test_a_support_exception_comes_back_as_itself_with_its_fields():
    mro = [f"{RECORDS}.AdapterRequestError", "builtins.RuntimeError", "builtins.Exception"]
    fields = {"$d": [["url", "http://x/v1/load_lora_adapter"], ["status", 400],
                     ["message", "already loaded"]]}
    exc = isolate.build_exception({"mro": mro, "message": "POST ...", "fields": fields},
                                  Decoder([], lambda *a: None))
    cls = decode({"$c": [RECORDS, "AdapterRequestError"]})
    assert type(exc) is cls and (exc.status, exc.message) == (400, "already loaded")
    assert "HTTP 400: already loaded" in str(exc)
    for hostile in ([RECORDS, "os"], ["os", "system"], [RECORDS.replace("records", "starter"),
                                                        "AdapterRequestError"]):
        with pytest.raises(WorkerError, match="not an allowed class"):
            decode({"$c": hostile})


def test_lab_02_in_worker_mode_leaves_no_implementation_in_the_tests_process():
    """After lab 02's CPU tests pass in worker mode (records, AdapterRequestError and the vLLM
    stand-ins across the boundary), the trusted process holds no implementation module."""
    code = (
        "import re, sys, pytest\n"
        "rc = pytest.main(['-q', '-p', 'no:cacheprovider', '-m', 'not gpu and not engine',\n"
        "                  'phase-11-multi-lora/labs/lab-02-serve-many-loras'])\n"
        "print('IMPLEMENTATIONS', sorted(n for n in sys.modules\n"
        "                                if re.match(r'phase11_lab\\d\\d_', n)))\n"
        f"print('RECORDS', {RECORDS!r} in sys.modules)\n"
        "sys.exit(rc)\n")
    env = {**os.environ, "LAB_ISOLATE": "1", "LAB_IMPL": "solution",
           "PYTHONPATH": str(loader.REPO_ROOT)}
    out = subprocess.run([sys.executable, "-c", code], cwd=loader.REPO_ROOT, env=env,
                         capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "IMPLEMENTATIONS []" in out.stdout and "RECORDS True" in out.stdout, out.stdout[-500:]


@dataclasses.dataclass(frozen=True)
class _Step:
    batch: tuple
    finished: object


def _lab_worker():
    from labkit.worker import Worker

    worker = Worker(None)
    worker.modules[__name__] = None  # _Step counts as a class of the lab
    return worker


def test_a_frozen_record_of_the_lab_travels_with_its_immutable_fields():
    worker, blobs = _lab_worker(), []
    frozen = worker.encode(_Step(((1, "a", 0),), (7,)), blobs)
    mutable = worker.encode(_Step(((1, "a", 0),), [7]), blobs)
    made = []
    decoder = Decoder(blobs, lambda *a: made.append(a) or a)
    hid, name, kind, fields = decoder.value(frozen)
    assert (name, kind) == ("_Step", "obj")
    assert fields == {"batch": ((1, "a", 0),), "finished": (7,)}
    assert len(mutable["$h"]) == 3, "a list field may change in the worker: read it each time"


@pytest.mark.parametrize("fields", [{"$d": [[1, 2]]}, [1, 2], {"$d": [["not a name", 1]]}])
def test_a_handle_with_malformed_fields_is_refused(fields):
    with pytest.raises(WorkerError, match="fields"):
        decode({"$h": [1, "Step", "obj", fields]})


def test_a_handle_reads_its_fields_without_asking_the_worker():
    conn = isolate.Connection("k")
    conn.worker = object()  # any request would fail on it
    handle = conn.make_handle(3, "Step", "obj", {"rid": 5})
    assert handle.rid == 5


ZEROES_ITS_INPUTS = '''\
import numpy as np


def shrink(x, A):
    x[...] = 0
    A[...] = 0
    return np.zeros((x.shape[0], A.shape[0]), dtype=x.dtype)


def group_by_adapter(idx):
    idx[...] = -1
    return (np.zeros(0, dtype=np.int64),) * 3


def total(xs, table):
    xs[:] = []
    table.clear()
    return 0
'''


def test_nothing_the_worker_does_to_its_arguments_reaches_the_tests(tmp_path):
    """The worker's in-place edits stay in the worker: an expectation computed from the
    inputs after the call still sees the inputs the test drew."""
    lab = "lab-01-batched-lora-matmul"
    (tmp_path / lab).mkdir()
    (tmp_path / lab / "starter.py").write_text(ZEROES_ITS_INPUTS)
    remote = isolate.remote_lab("lab-01", loader.Impl("submission", tmp_path),
                                owner="zeroes-its-inputs")
    try:
        x, A = np.arange(6.0).reshape(2, 3), np.ones((4, 3))
        idx, xs, table = np.array([0, 1, -1]), [1, 2], {"a": 1}
        assert not remote.shrink(x, A).any()
        remote.group_by_adapter(idx)
        assert remote.total(xs, table) == 0
        assert np.array_equal(x, np.arange(6.0).reshape(2, 3)) and np.array_equal(A, np.ones((4, 3)))
        assert np.array_equal(idx, [0, 1, -1]) and xs == [1, 2] and table == {"a": 1}
    finally:
        isolate.shutdown()


def test_a_reply_that_carries_edits_of_the_arguments_is_malformed():
    """The old write-back form (``["ok", value, [[arg, value], ...]]``) is refused outright."""
    ours, theirs = socket.socketpair()

    class Forger:
        sock = ours

        def kill(self):
            pass

        def poll(self):
            return None

    conn = isolate.Connection("forged-write-back")
    conn.worker = Forger()
    isolate.send_frame(theirs, pack_data(["ok", None, [[0, {"$nd": ["<f8", [3], 0]}]]],
                                         [np.zeros(3).tobytes()]))
    x = np.ones(3)
    try:
        with pytest.raises(WorkerError, match="malformed message"):
            conn.call("shrink(...)", ("call", 1, "shrink", (x,), {}), (x,), {})
    finally:
        theirs.close()
    assert np.array_equal(x, np.ones(3))


def test_the_protocol_is_one_module_and_the_loader_imports_no_worker_mode():
    """``labkit.rpc`` holds the framing, both codecs and the allow-list; ``labkit.loader``
    imports nothing of ``labkit.isolate`` (worker mode registers itself: no import cycle)."""
    import ast
    import pathlib

    from labkit import rpc, worker

    tree = ast.parse(pathlib.Path(loader.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
        a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {m for m in imported if m and m.startswith("labkit")}, imported
    assert loader._REMOTE_LAB is isolate.remote_lab
    for name in ("send_frame", "recv_frame", "pack_data", "unpack_data", "Encoder", "Decoder",
                 "build_exception", "Pickler", "loads"):
        assert getattr(rpc, name).__module__ == "labkit.rpc", name
    assert issubclass(worker.Worker, rpc.Encoder) and isolate.Decoder is rpc.Decoder
    assert {rpc.OK, rpc.ERR, rpc.BAD, rpc.CALLBACK} == {"ok", "err", "bad", "cb"}
