"""Lab 02 part 2 spec: adapters as model names behind vLLM's OpenAI server, and the cold-slot
signature that traces a tenant's p99 to slot thrash.

Two kinds of test:
- unmarked, no server: ``serve_argv``, error surfacing of the adapter routes (against a stub
  HTTP server on loopback), and ``cold_slot_signature`` on synthetic traces with known
  answers and on the recorded trace in ``capture/latency_trace.jsonl``;
- ``engine``: ONE real server for the whole module (fixture ``served``) on SmolLM2-135M, one
  slot (``max_loras=1``), a one-entry CPU cache, the SQL adapter plus real tenants (the two
  trained adapters under several names) that thrash it.
  The last test stops it and checks that no process and no port is left behind.
"""

from __future__ import annotations

import http.server
import json
import math
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

from labkit import in_worker, load_lab, load_support, progress

pytestmark = pytest.mark.part2

LAB = Path(__file__).resolve().parent.name

bench = load_support("lab-02", "tools.record_latency")
sqldata = load_support("lab-02", "tools.sqldata")
base_model = load_support("lab-02", "tools.base_model")

SERVER_MODULE = "vllm.entrypoints.openai.api_server"
NUM_SLOTS = 1  # max_loras: every switch between adapters is a miss
NUM_TENANTS = 4  # tenant-0 stays hot; tenant-1..3 take turns and thrash the slot
BLOCKS = 10  # interleaved hot and thrash blocks, so load drift on the machine hits both alike
BLOCK_LEN = 4
SQL_ROWS = 4  # eval rows sent through the API to each of the adapter and the base model
SQL_MAX_TOKENS = 32  # the longest gold query in eval.jsonl is 20 tokens of SmolLM2
RUNTIME_NAME = "sql-runtime"
LOG_LEVEL_ENV = "VLLM_LOGGING_LEVEL"  # DEBUG: the server's log records each slot load
STUB_POLL_S = 0.02  # a stub server checks for shutdown this often (the default 0.5 s is wait)


def flag_values(argv: list[str], flag: str) -> list[str]:
    """The arguments after ``flag`` up to the next ``--flag``."""
    assert flag in argv, f"serve_argv must pass {flag}; got {argv}"
    rest = argv[argv.index(flag) + 1:]
    end = next((i for i, arg in enumerate(rest) if arg.startswith("--")), len(rest))
    return rest[:end]


# --- serve_argv (no server) --------------------------------------------------------------------

ARGV_KW = dict(max_loras=2, max_lora_rank=16, max_cpu_loras=4, port=8123)
VLLM_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vllm/config/lora.py MaxLoRARanks


def test_serve_argv_starts_the_openai_module_with_lora_on(lab):
    argv = lab.serve_argv("assets/SmolLM2-135M-Instruct", {"sql": "assets/sql-lora"}, **ARGV_KW)
    assert argv[:3] == [sys.executable, "-m", SERVER_MODULE], (
        f"start the server as `python -m {SERVER_MODULE}` (the `vllm` script fails on the CPU "
        f"build); got {argv[:3]}")
    assert "--enable-lora" in argv, f"LoRA must be enabled; got {argv}"
    assert flag_values(argv, "--model") == ["assets/SmolLM2-135M-Instruct"]


def test_serve_argv_registers_each_adapter_under_its_name(lab):
    adapters = {"sql": "assets/sql-lora", "tenant-1": "/srv/adapters/t1"}
    argv = lab.serve_argv("assets/SmolLM2-135M-Instruct", adapters, **ARGV_KW)
    assert sorted(flag_values(argv, "--lora-modules")) == ["sql=assets/sql-lora",
                                                           "tenant-1=/srv/adapters/t1"]


def test_serve_argv_passes_the_slot_settings(lab):
    argv = lab.serve_argv("m", {"a": "p"}, **ARGV_KW)
    for flag, value in [("--max-loras", 2), ("--max-lora-rank", 16), ("--max-cpu-loras", 4),
                        ("--port", 8123)]:
        assert flag_values(argv, flag) == [str(value)], f"{flag} must be {value}; got {argv}"


def test_serve_argv_names_the_base_and_ends_with_the_extra_args(lab):
    argv = lab.serve_argv("assets/SmolLM2-135M-Instruct", {"sql": "assets/sql-lora"},
                          **ARGV_KW | {"extra_args": ["--seed", "7"]})
    assert flag_values(argv, "--served-model-name") == ["SmolLM2-135M-Instruct"], (
        f"served_model_name defaults to the model folder's name, the base's model=; got {argv}")
    assert argv[-2:] == ["--seed", "7"], f"extra_args come last, as given; got {argv}"
    named = lab.serve_argv("m", {"a": "p"}, **ARGV_KW | {"served_model_name": "base"})
    assert flag_values(named, "--served-model-name") == ["base"], (
        f"a served_model_name given is the base's model=; got {named}")


def test_serve_argv_binds_loopback_unless_told_otherwise(lab):
    argv = lab.serve_argv("m", {"a": "p"}, **ARGV_KW)
    assert flag_values(argv, "--host") == ["127.0.0.1"], (
        "runtime loading lets any client make the server read files: bind to loopback by "
        f"default; got {argv}")
    wide = lab.serve_argv("m", {"a": "p"}, **ARGV_KW | {"host": "0.0.0.0"})
    assert flag_values(wide, "--host") == ["0.0.0.0"]


@pytest.mark.parametrize("bad, argument", [
    ({"port": 0}, "port"),
    ({"port": 70000}, "port"),
    ({"max_loras": 0}, "max_loras"),
    ({"max_cpu_loras": 1}, "max_cpu_loras"),  # fewer CPU entries than slots
    ({"max_lora_rank": 12}, "max_lora_rank"),  # not one of vLLM's allowed ranks
])
def test_serve_argv_refuses_bad_settings(valid_calls, bad, argument):
    ((arg, value),) = bad.items()
    valid_calls.refused("serve_argv", arg, value, ValueError, what=f"serve_argv: {arg}={value!r}")


@pytest.mark.parametrize("bad, argument", [
    ({"port": "8000"}, "port"),
    ({"max_loras": 1.0}, "max_loras"),
    ({"max_cpu_loras": True}, "max_cpu_loras"),  # a bool is not a count
])
def test_serve_argv_refuses_settings_of_the_wrong_type(valid_calls, bad, argument):
    ((arg, value),) = bad.items()
    valid_calls.refused("serve_argv", arg, value, TypeError, what=f"serve_argv: {arg}={value!r}")


@pytest.mark.parametrize("name", ["", "has space", "a=b"])
def test_serve_argv_refuses_adapter_names_the_cli_cannot_carry(valid_calls, name):
    valid_calls.refused("serve_argv", "adapters", {name: "p"}, ValueError,
                        what=f"serve_argv: an adapter named {name!r}", shows=(repr(name),))


# --- adapter routes: errors carry the status and the server's message (stub server) -----------


class _VllmErrorStub(http.server.BaseHTTPRequestHandler):
    """Answers every POST as vLLM 0.32 does for a duplicate load: 400 with its error JSON."""

    MESSAGE = "The lora adapter 'sql' has already been loaded."

    def do_POST(self):  # noqa: N802 - the http.server hook name
        self.rfile.read(int(self.headers["Content-Length"]))
        body = json.dumps({"error": {"message": self.MESSAGE, "type": "BadRequestError",
                                     "param": None, "code": 400}}).encode()
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def error_stub():
    stub = http.server.HTTPServer(("127.0.0.1", 0), _VllmErrorStub)
    thread = threading.Thread(target=stub.serve_forever, args=(STUB_POLL_S,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{stub.server_address[1]}/v1"
    stub.shutdown()
    stub.server_close()


@pytest.mark.parametrize("call", ["load", "unload"])
def test_adapter_route_errors_carry_status_and_server_message(lab, error_stub, call):
    with pytest.raises(lab.AdapterRequestError) as caught:
        if call == "load":
            lab.load_adapter(error_stub, "sql", "assets/sql-lora")
        else:
            lab.unload_adapter(error_stub, "sql")
    assert caught.value.status == 400, f"status must be the server's, got {caught.value.status}"
    assert _VllmErrorStub.MESSAGE in str(caught.value), (
        f"the exception must carry the server's message; got {caught.value}")


class _RecordingStub(http.server.BaseHTTPRequestHandler):
    """Answers every POST 200 with ``SUCCESS``, after ``DELAY_S`` seconds; records each
    request's path and JSON body in ``SEEN``."""

    SUCCESS = "Success: LoRA adapter 'sql' added successfully."
    SEEN: list[tuple[str, dict]] = []
    DELAY_S = 0.0
    CLOSING = threading.Event()  # set when the stub closes: a delayed answer stops waiting

    def do_POST(self):  # noqa: N802 - the http.server hook name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.SEEN.append((self.path, body))
        if self.CLOSING.wait(self.DELAY_S):
            return  # the client gave up (timeout_s) and the stub is closing: nobody to answer
        raw = self.SUCCESS.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args):
        pass


@contextmanager
def recording_stub(delay_s: float = 0.0):
    _RecordingStub.SEEN.clear()
    _RecordingStub.DELAY_S = delay_s
    _RecordingStub.CLOSING.clear()
    stub = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RecordingStub)
    stub.daemon_threads = False  # server_close joins every answer: none outlives its test
    thread = threading.Thread(target=stub.serve_forever, args=(STUB_POLL_S,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{stub.server_address[1]}/v1"
    finally:
        _RecordingStub.CLOSING.set()
        stub.shutdown()
        stub.server_close()


def test_adapter_routes_post_their_json_and_return_the_success_text(lab):
    with recording_stub() as url:
        loaded = lab.load_adapter(url, "sql", "assets/sql-lora")
        unloaded = lab.unload_adapter(url, "sql")
    assert (loaded, unloaded) == (_RecordingStub.SUCCESS,) * 2, (
        f"both routes return the server's success text; got {loaded!r}, {unloaded!r}")
    assert _RecordingStub.SEEN == [
        ("/v1/load_lora_adapter", {"lora_name": "sql", "lora_path": "assets/sql-lora"}),
        ("/v1/unload_lora_adapter", {"lora_name": "sql"})], (
        "load POSTs {lora_name, lora_path} to {base_url}/load_lora_adapter, unload POSTs "
        f"{{lora_name}} to {{base_url}}/unload_lora_adapter; the server saw {_RecordingStub.SEEN}")


def test_an_adapter_load_gives_up_after_timeout_s(lab):
    with recording_stub(delay_s=3.0) as url:
        start = time.monotonic()
        with pytest.raises(OSError):  # urllib's URLError or a socket timeout: no answer in time
            lab.load_adapter(url, "sql", "assets/sql-lora", timeout_s=0.1)
        waited = time.monotonic() - start
    assert waited < 2.5, (
        f"load_adapter waits up to timeout_s=0.1 s for the answer, not longer; it waited "
        f"{waited:.1f} s")


# --- cold_slot_signature on synthetic traces (no server) ---------------------------------------


def nearest_rank(values: list[float], q: float) -> float:
    """The test's own percentile: the ceil(q/100 * n)-th smallest value."""
    ordered = sorted(values)
    return ordered[math.ceil(q / 100 * len(ordered)) - 1]


def test_percentile_ms_is_a_real_sample_at_the_nearest_rank(lab, seed):
    rng = np.random.default_rng(seed)
    latencies = rng.exponential(50.0, size=37).round(3)
    before = latencies.copy()
    for q in (1, 10, 25, 50, 90, 99, 100):
        want = nearest_rank(before.tolist(), q)
        got = lab.percentile_ms(latencies, q)
        assert got == want, (
            f"p{q} of 37 latencies: the ceil(q/100 * n)-th smallest, {want} (a real sample, "
            f"never an interpolation); got {got}")
    four = np.array([40.0, 10.0, 30.0, 20.0])
    assert (lab.percentile_ms(four, 50), lab.percentile_ms(four, 26)) == (20.0, 20.0), (
        "of 10, 20, 30, 40: p50 is the 2nd smallest (20, not 25) and p26 the ceil(1.04) = 2nd "
        "(20, not 17.8)")
    empty = lab.percentile_ms(np.array([]), 99)
    assert math.isnan(empty), f"no samples: NaN, got {empty}"


def test_signature_labels_each_request_by_lru_replay(lab):
    trace = ["A", "A", "B", "A", None, "A"]
    sig = lab.cold_slot_signature(trace, [100, 10, 110, 120, 11, 12], num_slots=1)
    assert sig.labels == ("cold", "hot", "cold", "cold", "hot", "hot"), (
        "one slot: a request is cold when its adapter is not the resident one; a base request "
        f"(None) needs no slot and is hot; got {sig.labels}")
    assert (sig.hot.count, sig.hot.p50_ms, sig.hot.p99_ms) == (3, 11, 12)
    assert (sig.cold.count, sig.cold.p50_ms, sig.cold.p99_ms) == (3, 110, 120)
    assert (sig.tail_count, sig.tail_cold_share) == (1, 1.0)


def test_signature_sees_eviction_not_just_first_touch(lab):
    trace = ["A", "B"] * 4
    one_slot = lab.cold_slot_signature(trace, [1.0] * 8, num_slots=1)
    two_slots = lab.cold_slot_signature(trace, [1.0] * 8, num_slots=2)
    assert one_slot.labels == ("cold",) * 8, (
        f"with one slot, A and B evict each other on every request; got {one_slot.labels}")
    assert two_slots.labels == ("cold", "cold") + ("hot",) * 6, (
        f"two slots hold both: only the first touches miss; got {two_slots.labels}")


def test_signature_agrees_with_lab04_cache_model(lab):
    slots = load_lab("lab-04")
    trace = [None if k == 7 else f"tenant-{k}" for k in slots.zipf_80_20_trace(16, 500, seed=4)]
    sig = lab.cold_slot_signature(trace, [float(i % 37) for i in range(500)], num_slots=4)
    misses = slots.simulate(trace, 4).misses
    assert sig.cold.count == misses, (
        f"cold requests must be exactly lab 04's misses: {sig.cold.count} cold vs {misses}")
    assert sig.hot.count + sig.cold.count == len(trace)


def test_signature_tail_share_counts_only_the_p99_tail(lab):
    # 200 requests: the p99 (nearest rank) is the 198th smallest, so the tail is the top 3.
    trace = ["A"] * 100 + ["B", "A"] * 50
    latencies = [10.0] * 100 + [50.0, 10.0] * 50
    latencies[:3] = [1000.0, 900.0, 800.0]  # the cold first request and two hot outliers
    sig = lab.cold_slot_signature(trace, latencies, num_slots=1)
    assert sig.overall.p99_ms == nearest_rank(latencies, 99) == 800.0
    assert sig.tail_count == 3
    assert sig.tail_cold_share == pytest.approx(1 / 3), (
        "the share is over the requests at or above the overall p99, not over all cold ones; "
        f"got {sig.tail_cold_share}")


def test_signature_of_an_all_hot_trace_has_an_empty_cold_group(lab):
    sig = lab.cold_slot_signature([None, None, None], [5.0, 6.0, 7.0], num_slots=1)
    assert sig.cold.count == 0 and math.isnan(sig.cold.p50_ms) and math.isnan(sig.cold.p99_ms)
    assert (sig.hot.count, sig.hot.p50_ms, sig.tail_cold_share) == (3, 6.0, 0.0)


@pytest.mark.parametrize("trace, latencies, num_slots, argument", [
    (["A", "B"], [1.0], 1, "latencies_ms"),
    (["A"], [-1.0], 1, "latencies_ms"),
    (["A"], [float("nan")], 1, "latencies_ms"),
    ([], [], 1, "trace"),
    (["A"], [1.0], 0, "num_slots"),
])
def test_signature_refuses_bad_input(lab, valid_calls, trace, latencies, num_slots, argument):
    valid_calls.checked("cold_slot_signature")  # a right valid call first: no lookup table
    with pytest.raises(ValueError, match=argument):
        lab.cold_slot_signature(trace, latencies, num_slots)


def serve_called_with() -> tuple[bool, dict]:
    """``lab.serve("m", {"a": "p"})`` with ``server.serve`` recorded, not run: whether it was
    handed this module's ``serve_argv``, and the keywords it got."""
    lab = load_lab(LAB)
    seen = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(lab.server, "serve", lambda argv_fn, *args, **kw: seen.append((argv_fn, kw)))
        lab.serve("m", {"a": "p"})
    ((argv_fn, kw),) = seen
    return argv_fn is lab.serve_argv, kw


@pytest.mark.structural  # the given serve, not the student's code
def test_serve_starts_from_serve_argv_in_cpu_dtype(lab):
    from_argv, kw = in_worker(lab, serve_called_with)
    assert from_argv, "serve must start the server from this module's serve_argv"
    assert kw.get("dtype") == lab.CPU_DTYPE, (
        f"serve's dtype defaults to CPU_DTYPE ({lab.CPU_DTYPE}), as build_llm runs; got {kw}")


# --- the recorded trace: a real run, replayed deterministically --------------------------------


def test_recorded_trace_shows_the_cold_slot_signature(lab, valid_calls):
    meta, trace, latencies = bench.read_latency_trace(bench.CAPTURE)
    assert meta["num_slots"] == meta["max_loras"] == meta["max_cpu_loras"] == 1, (
        "the capture's labels below assume one slot and one CPU entry")
    sig = lab.cold_slot_signature(trace, latencies, meta["num_slots"])
    expected_cold = [label == "cold" for label in valid_calls.one_slot_labels(trace)]
    assert [label == "cold" for label in sig.labels] == expected_cold, (
        "one slot: cold exactly when the adapter differs from the previous adapter request")
    cold = [ms for ms, c in zip(latencies, expected_cold, strict=True) if c]
    hot = [ms for ms, c in zip(latencies, expected_cold, strict=True) if not c]
    assert (sig.cold.p50_ms, sig.cold.p99_ms) == (nearest_rank(cold, 50), nearest_rank(cold, 99))
    assert (sig.hot.p50_ms, sig.hot.p99_ms) == (nearest_rank(hot, 50), nearest_rank(hot, 99))
    assert sig.cold.p50_ms > sig.hot.p50_ms, (
        f"the recorded run must show slow cold requests: cold p50 {sig.cold.p50_ms:.1f} ms vs "
        f"hot p50 {sig.hot.p50_ms:.1f} ms")


# --- one real server for the module ------------------------------------------------------------


# The server is the lab's: it starts, with its tenants' folders and its log, where the lab's code
# runs (its worker under LAB_ISOLATE=1, whose folders and processes the tests do not see), and
# stops there. The tests reach it over loopback; what they ask of its files and processes, they
# ask with `in_worker`.
SERVING = ExitStack()  # the running server and its folder, where the lab's code runs


def start_server() -> tuple:
    """``lab.serve`` with the SQL adapter and the tenants, logging slot loads (DEBUG), in a
    temp folder of its own: (the Server record, the tenants' names, the folder)."""
    work = Path(SERVING.enter_context(tempfile.TemporaryDirectory(prefix="lab02-serving-")))
    tenants = bench.tenant_adapters(work / "tenants", NUM_TENANTS)
    with mock.patch.dict(os.environ, {LOG_LEVEL_ENV: "DEBUG"}):  # its slot loads
        server = SERVING.enter_context(load_lab(LAB).serve(
            base_model.base_model(), {"sql": bench.SQL_ADAPTER, **tenants},
            max_loras=NUM_SLOTS, max_lora_rank=bench.SERVE_RANK, max_cpu_loras=NUM_SLOTS,
            served_model_name=base_model.NAME, log_path=work / "vllm.log"))
    return server, list(tenants), work


def stop_server() -> None:
    SERVING.close()


def widened_there(work: Path, name: str, rank: int) -> Path:
    """``bench.widen_adapter`` of the SQL adapter into the server's folder."""
    return bench.widen_adapter(bench.SQL_ADAPTER, work / name, rank)


class Served:
    """The module's server, or the exception that kept it from starting (raised in each test,
    so a broken ``serve`` fails every engine test instead of erroring the module)."""

    def __init__(self) -> None:
        self.stack = ExitStack()
        self.server = None
        self.error: BaseException | None = None
        self.tenants: list[str] = []
        self.work: Path | None = None

    def get(self):
        if self.error is not None:
            raise self.error
        assert self.server is not None, "the module's server was already stopped"
        return self.server


@pytest.fixture(scope="module")
def served(lab):
    handle = Served()
    try:
        with progress.slow_step(f"vLLM's OpenAI server ({NUM_SLOTS} slot, "
                                f"{1 + NUM_TENANTS} adapters)"):
            handle.stack.callback(in_worker, lab, stop_server)
            handle.server, handle.tenants, handle.work = in_worker(lab, start_server)
    except Exception as err:  # noqa: BLE001 - reported by each test through handle.get()
        handle.error = err
    yield handle
    handle.stack.close()


@pytest.fixture(scope="module")
def client(served):
    import openai

    if served.error is not None:
        return None
    return openai.OpenAI(base_url=served.server.base_url, api_key="unused", max_retries=0)


def complete_all(client, model: str, prompts: list[str], max_tokens: int) -> list[str]:
    """One completions request for several prompts (the engine batches them), texts in order."""
    reply = client.completions.create(model=model, prompt=prompts, max_tokens=max_tokens,
                                      temperature=0.0)
    return [choice.text.strip() for choice in sorted(reply.choices, key=lambda c: c.index)]


def complete(client, model: str, prompt: str, max_tokens: int = 1) -> str:
    return complete_all(client, model, [prompt], max_tokens)[0]


def listed(client) -> dict[str, object]:
    return {card.id: getattr(card, "parent", None) for card in client.models.list().data}


@pytest.mark.engine
def test_v1_models_lists_the_base_and_each_adapter_with_its_parent(served, client):
    server = served.get()
    models = listed(client)
    assert server.model in models, f"the base model's name must be listed; got {list(models)}"
    for name in server.adapters:
        assert name in models, f"adapter {name!r} must be listed; got {list(models)}"
        assert models[name] == server.model, (
            f"adapter {name!r} must name the base as its parent; got {models[name]!r}")


@pytest.mark.engine
def test_the_model_name_selects_the_adapter_through_the_api(served, client):
    server = served.get()
    rows = sqldata.load_eval()[:SQL_ROWS]
    prompts = [sqldata.sql_prompt(row["schema"], row["question"]) for row in rows]
    as_sql = complete_all(client, "sql", prompts, SQL_MAX_TOKENS)
    as_base = complete_all(client, server.model, prompts, SQL_MAX_TOKENS)
    assert all(map(sqldata.is_sql, as_sql)), (
        f"model='sql' must answer in SQL; got {[t for t in as_sql if not sqldata.is_sql(t)]}")
    assert not any(map(sqldata.is_sql, as_base)), (
        f"model={server.model!r} (the base) must not; got {[t for t in as_base if sqldata.is_sql(t)]}")


@pytest.mark.engine
def test_an_unknown_model_is_404_and_the_server_keeps_serving(served, client):
    import openai

    server = served.get()
    with pytest.raises(openai.NotFoundError):
        complete(client, "no-such-tenant", "SELECT")
    assert isinstance(complete(client, server.model, "SELECT"), str)


@pytest.mark.engine
def test_runtime_load_use_reload_unload(lab, served, client):
    server = served.get()
    prompt = sqldata.sql_prompt(**{k: sqldata.load_eval()[0][k] for k in ("schema", "question")})
    lab.load_adapter(server.base_url, RUNTIME_NAME, bench.SQL_ADAPTER)
    assert listed(client).get(RUNTIME_NAME) == server.model, (
        f"a runtime-loaded adapter must be listed with the base as parent: {listed(client)}")
    assert complete(client, RUNTIME_NAME, prompt, SQL_MAX_TOKENS) == \
        complete(client, "sql", prompt, SQL_MAX_TOKENS), (
        "the same weights under a new name must answer exactly as the original")
    with pytest.raises(lab.AdapterRequestError) as again:
        lab.load_adapter(server.base_url, RUNTIME_NAME, bench.SQL_ADAPTER)
    assert again.value.status == 400 and "already been loaded" in again.value.message
    lab.unload_adapter(server.base_url, RUNTIME_NAME)
    assert RUNTIME_NAME not in listed(client)
    with pytest.raises(lab.AdapterRequestError) as gone:
        lab.unload_adapter(server.base_url, RUNTIME_NAME)
    assert gone.value.status == 404, f"unloading twice must be 404; got {gone.value}"


@pytest.mark.engine
def test_loading_a_missing_path_is_surfaced_and_harmless(lab, served, client):
    server = served.get()
    missing = bench.ASSETS / "no-such-adapter"
    with pytest.raises(lab.AdapterRequestError) as caught:
        lab.load_adapter(server.base_url, "ghost", missing)
    # vLLM strips paths under /tmp, /home, /root, ... from error messages (sanitize_message in
    # vllm/entrypoints/serve/exception_handling/utils.py), so the path may read "<path>".
    named = str(missing) in caught.value.message or "<path>" in caught.value.message
    assert caught.value.status == 404 and "No adapter found" in caught.value.message and named, (
        f"vLLM answers 404 naming the (possibly redacted) path; got {caught.value}")
    assert "ghost" not in listed(client)
    assert isinstance(complete(client, "sql", "SELECT"), str)


@pytest.mark.engine
def test_an_adapter_above_max_lora_rank_is_refused_with_vllms_message(lab, served, client):
    server = served.get()
    too_wide = in_worker(lab, widened_there, served.work, "too-wide", 2 * bench.SERVE_RANK)
    with pytest.raises(lab.AdapterRequestError) as caught:
        lab.load_adapter(server.base_url, "too-wide", too_wide)
    assert f"greater than max_lora_rank {bench.SERVE_RANK}" in caught.value.message, (
        f"the refusal must carry vLLM's reason; got {caught.value}")
    assert "too-wide" not in listed(client)
    assert isinstance(complete(client, "sql", "SELECT"), str)


# vLLM's own record of a slot load: LoRAModelManager.activate_adapter logs this at DEBUG
# (vllm/lora/model_manager.py) each time it copies an adapter into a slot, and only then.
ACTIVATED = re.compile(r"Activating LoRA\. int id: \d+, slot index: \d+")


def activations(log_path) -> int:
    """How many slot loads the server's log records so far."""
    return len(ACTIVATED.findall(log_path.read_text(errors="replace")))


@pytest.mark.engine
def test_cold_requests_are_slower_than_hot_ones(lab, served):
    """A cold request is one for which the engine loads an adapter into its slot: the labels
    of ``cold_slot_signature`` must be exactly the requests the engine's own log records a
    slot load for (``Activating LoRA``, one request in flight at a time). That load is what
    makes a cold request slower; how much slower is the benchmark's to measure
    (``tools/record_latency.py``, the README's table): wall-clock latencies on a shared machine are
    reported here, not asserted."""
    server = served.get()
    hot, *thrash = served.tenants
    trace: list[str | None] = []
    for _ in range(BLOCKS):
        trace += [hot] * BLOCK_LEN
        trace += [thrash[i % len(thrash)] for i in range(BLOCK_LEN)]
    latencies, loaded = [], []
    for adapter in trace:
        before = in_worker(lab, activations, server.log_path)
        latencies += bench.time_requests(server.base_url, server.model, [adapter])
        loaded.append(in_worker(lab, activations, server.log_path) > before)
    sig = lab.cold_slot_signature(trace, latencies, NUM_SLOTS)
    assert sig.cold.count == BLOCKS * (BLOCK_LEN + 1), (
        f"each thrash request and each hot block's first request are cold: {sig.cold}")
    cold = [label == "cold" for label in sig.labels]
    assert loaded == cold, (
        f"the engine loaded an adapter into its slot for requests {[i for i, x in enumerate(loaded) if x]}; "
        f"cold_slot_signature labels {[i for i, x in enumerate(cold) if x]} cold "
        f"(latencies, not asserted: cold {sig.cold}, hot {sig.hot})")


def _live_pids_in_group(pgid: int) -> list[str]:
    table = subprocess.run(["ps", "-e", "-o", "pid=,pgid=,stat="], capture_output=True,
                           text=True, check=True).stdout
    return [pid for pid, group, stat in map(str.split, table.splitlines())
            if int(group) == pgid and not stat.startswith("Z")]


@pytest.mark.engine
def test_stopping_the_server_leaves_no_process_and_no_port(lab, served):
    server = served.get()
    assert in_worker(lab, _live_pids_in_group, server.pid), (
        "the server's process group should be running")
    served.stack.close()
    served.server = None
    assert not in_worker(lab, _live_pids_in_group, server.pid), (
        f"processes of the server's group {server.pid} outlived the context manager")
    with socket.socket() as sock:
        # SO_REUSEADDR: closed connections may linger in TIME_WAIT (kernel state, no process);
        # bind still fails if any socket listens on the port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", server.port))


# --- serve_argv at its edges: exactly vLLM's ranks, both port ends, optional settings ------------


@pytest.mark.parametrize("rank", VLLM_RANKS)
def test_serve_argv_accepts_every_rank_vllm_accepts(lab, rank):
    argv = lab.serve_argv("m", {"a": "p"}, **ARGV_KW | {"max_lora_rank": rank})
    assert argv[argv.index("--max-lora-rank") + 1] == str(rank)


@pytest.mark.parametrize("rank", [2, 4, 7, 9, 15, 17, 24, 48, 100, 384, 511, 513, 1024])
def test_serve_argv_refuses_every_rank_vllm_refuses(valid_calls, rank):
    valid_calls.refused("serve_argv", "max_lora_rank", rank, ValueError,
                        what=f"serve_argv: max_lora_rank={rank}")


@pytest.mark.parametrize("flag, key, value", [
    ("--kv-cache-memory-bytes", "kv_cache_bytes", 2**29), ("--dtype", "dtype", "float32"),
    ("--max-model-len", "max_model_len", 512)])
def test_serve_argv_passes_an_optional_setting_only_when_given(lab, flag, key, value):
    given = lab.serve_argv("m", {"a": "p"}, **ARGV_KW | {key: value})
    assert given[given.index(flag) + 1] == str(value), f"{key}={value!r} must pass {flag}"
    unset = lab.serve_argv("m", {"a": "p"}, **ARGV_KW | {key: None})
    assert flag not in unset, f"{key}=None leaves vLLM's default: no {flag}"


@pytest.mark.parametrize("port", [1, 65535])
def test_serve_argv_accepts_the_ports_at_both_ends(lab, port):
    argv = lab.serve_argv("m", {"a": "p"}, **ARGV_KW | {"port": port})
    assert argv[argv.index("--port") + 1] == str(port)


def test_serve_argv_compares_an_adapter_name_with_the_base_name_by_value(valid_calls):
    name = "".join(["my", "-model"])  # equal to the served name, not the same object
    valid_calls.refused("serve_argv", "adapters", {name: "p"}, ValueError,
                        what="serve_argv: an adapter named as the base", shows=("'my-model'",),
                        served_model_name="my-model")


def test_cold_slot_signature_reports_the_first_bad_latency(lab):
    with pytest.raises(ValueError, match=r"-2\.0 at position 1\b"):
        lab.cold_slot_signature(["x", "y", "z"], [1.0, -2.0, -3.0], 1)


@pytest.mark.structural
def test_an_adapter_load_waits_up_to_120_s(lab):
    # given code, pinned to load_adapter's docstring: the engine reads the adapter from disk
    # before it answers
    assert lab.ADAPTER_TIMEOUT_S == 120.0
