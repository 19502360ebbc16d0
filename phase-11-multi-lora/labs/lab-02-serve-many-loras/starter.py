"""Lab 02: many LoRA adapters served by one vLLM engine."""

from __future__ import annotations

import os
import re
from collections.abc import Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from labkit import load_support

# === part 1: the offline engine (build_llm, generate_mixed, parse_capture, reconcile, eval_diff) ===
#
# Production counterparts (vLLM 0.32): the knobs are LoRAConfig in vllm/config/lora.py; the
# slots are the `lora_a_stacked` / `lora_b_stacked` buffers of vllm/lora/layers/; the CPU build
# runs them through vllm/lora/punica_wrapper/punica_cpu.py and vllm/lora/ops/torch_ops/lora_ops.py.

CPU_KV_CACHE_BYTES = 2**30  # 23,301 tokens of SmolLM2-135M in fp32; unset, the CPU build takes GiBs
CPU_MAX_MODEL_LEN = 256  # a lab prompt (at most 85 tokens) plus its answer, with room to spare
CPU_DTYPE = "float32"  # the base is dequantized to fp32 and the adapters trained on it
INPROC_ENV = "VLLM_ENABLE_V1_MULTIPROCESSING"  # "0": the engine core runs in this process
VLLM_LORA_DEFAULTS = {"max_loras": 1, "max_lora_rank": 16}  # LoRAConfig defaults, vLLM 0.32
GIB_DECIMALS = 2  # vLLM prints GiB with at most two decimals ("%.2f" or round(x, 2))
DTYPE_BYTES = {"float32": 4, "F32": 4, "float16": 2, "F16": 2, "bfloat16": 2, "BF16": 2,
               "half": 2, "float": 4}
RATIO_RTOL = 1e-12  # both sides of the delta-cost check are exact integer ratios
CPU_KV_BLOCK_TOKENS = 128  # vllm/platforms/cpu.py: the CPU build's block_size when none is set


def engine_kwargs(model: str | os.PathLike, *, max_loras: int, max_lora_rank: int,
                  max_cpu_loras: int, cuda: bool, **engine_kw) -> dict:
    """The keyword arguments ``build_llm`` hands to ``vllm.LLM``.

    LoRA on, with the three knobs: ``max_loras`` slots in the running batch, ranks up to
    ``max_lora_rank`` (every slot is allocated at this rank), ``max_cpu_loras`` adapters cached
    in host memory (>= ``max_loras``, else ``ValueError``; non-positive knobs too). Without
    CUDA: ``kv_cache_memory_bytes`` bounded to ``CPU_KV_CACHE_BYTES``, ``dtype`` ``CPU_DTYPE``
    and ``max_model_len`` ``CPU_MAX_MODEL_LEN``; with CUDA, vLLM's defaults. ``engine_kw`` wins
    over every default.
    """
    raise NotImplementedError("TODO(lab-02): validate the knobs and assemble vllm.LLM's kwargs")


def build_llm(model: str | os.PathLike, *, max_loras: int, max_lora_rank: int,
              max_cpu_loras: int, **engine_kw):
    """A ``vllm.LLM`` with LoRA enabled, on the CPU build or on CUDA (see ``engine_kwargs``).

    Import vLLM inside the function, so this module imports without it. On CPU, run the engine
    core in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0`` unless the environment sets it).
    """
    raise NotImplementedError("TODO(lab-02): detect CUDA, build the kwargs, return vllm.LLM(...)")


def generate_mixed(llm, prompts: Sequence[str], adapters: Sequence, sampling) -> list[str]:
    """One ``llm.generate`` call for a batch whose rows carry different tags.

    ``prompts[i]`` runs on the base model when ``adapters[i]`` is None, and through that
    adapter when it is a ``LoRARequest``. Returns the generated texts in prompt order. A
    length mismatch (``ValueError``), a tag that is not a LoRARequest (``TypeError``) or a
    missing local adapter folder (``FileNotFoundError``) raises before the engine sees the
    batch; an adapter the engine rejects (rank above ``max_lora_rank``) raises ``ValueError``
    carrying vLLM's own message.
    """
    raise NotImplementedError("TODO(lab-02): check the tags, then ONE llm.generate(..., "
                              "lora_request=adapters) call")


# --- reading an engine log ----------------------------------------------------------------------


@dataclass(frozen=True)
class Logged:
    """One figure as the engine printed it: ``value`` parsed from ``text``."""

    value: float
    text: str

    @property
    def half_unit(self) -> float:
        """Half the last printed digit, at least vLLM's two decimals: the rounding slack.

        "0.00" -> 0.005; "12.55" -> 0.005; "0.1" (vLLM's round() drops zeros) -> 0.005.
        """
        raise NotImplementedError("TODO(lab-02): the rounding slack of the printed figure")


@dataclass(frozen=True)
class Capture:
    """What one engine log says, figure by figure; None where the log does not say it.

    weights: the weight figure, ``weights_kind`` "checkpoint" (CPU build: ``Checkpoint size:
    0.00 GiB``, the safetensors files on disk) or "model_loading" (GPU: ``Model loading took
    12.55 GiB``, device memory after loading, LoRA slots included). lora: the resolved knobs
    (``max_loras``, ``max_lora_rank``, ``max_cpu_loras``), vLLM's defaults filled in for those
    the log's ``non-default args`` omit. outputs: ``(tag, text)`` per demo row, in order.
    slot_buffer_bytes: the engine's LoRA slot buffers as the demo measured them (its
    ``LoRA slot buffers (...): N B`` line), None when the log has no such line.
    """

    vllm_version: str | None
    device: str | None
    dtype: str | None
    max_model_len: int | None
    weights: Logged | None
    weights_kind: str | None
    kv_cache: Logged | None
    kv_cache_bytes: int | None
    kv_cache_tokens: int | None
    lora_enabled: bool
    lora: dict[str, int]
    punica_wrapper: str | None
    outputs: list[tuple[str, str]]
    slot_buffer_bytes: int | None = None


def parse_capture(text: str) -> Capture:
    """Read the figures a student checks from a vLLM log (CPU build or CUDA) and the demo rows.

    Sources: ``non-default args: {...}`` (the knobs as passed), ``Initializing a V1 LLM engine
    (vX) with config: ...`` (version, dtype, device, max length), ``Checkpoint size: X GiB`` or
    ``Model loading took X GiB``, ``Explicitly set (X/Y) GiB for KV cache``, ``KV cache size:
    N tokens``, ``Using PunicaWrapper...``, the demo's ``row i  tag=T  -> 'text'`` lines and
    its ``LoRA slot buffers (...): N B in the engine's ...`` line. A figure the log does not
    print is None. ``text`` that is not a str raises ``TypeError``.
    """
    raise NotImplementedError("TODO(lab-02): pull each figure out of the log with a regex")


# --- reconciling a capture with labs 01/03/04 ---------------------------------------------------


@dataclass(frozen=True)
class Tensor:
    """One tensor of a safetensors file, from its header: dtype code, shape, bytes."""

    dtype: str
    shape: tuple[int, ...]
    nbytes: int


def read_safetensors_header(path: str | os.PathLike) -> dict[str, Tensor]:
    """The tensor table of a ``.safetensors`` file, read from its JSON header only.

    Layout: 8 bytes little-endian header length N, then N bytes of JSON mapping each tensor
    name to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (plus ``__metadata__``).
    """
    raise NotImplementedError("TODO(lab-02): read the 8-byte length, then the JSON header")


@dataclass(frozen=True)
class Check:
    """One figure: what a source says beside what labs 01/03/04 derive, and whether they agree.

    source: where ``observed`` comes from ("engine log", "safetensors header", ...);
    how: the derivation of ``derived``, with the lab function it calls.
    """

    figure: str
    source: str
    observed: float
    derived: float
    agrees: bool
    how: str


@dataclass(frozen=True)
class Reconciliation:
    """Every check of ``reconcile``; ``ok`` when all agree."""

    checks: list[Check]

    @property
    def ok(self) -> bool:
        return all(check.agrees for check in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [check for check in self.checks if not check.agrees]

    def summary(self) -> str:
        def show(x: float) -> str:
            return f"{x:,}" if isinstance(x, int) else f"{x:.6g}"

        lines = [f"{'figure':<32} {'source':<20} {'observed':>12} {'derived':>12}  ok   how"]
        for c in self.checks:
            lines.append(f"{c.figure:<32} {c.source:<20} {show(c.observed):>12} "
                         f"{show(c.derived):>12}  {'yes' if c.agrees else 'NO '}  {c.how}")
        return "\n".join(lines)


def lora_slot_bytes(shape, max_loras: int, max_lora_rank: int, dtype_bytes: int) -> int:
    """Bytes vLLM allocates for its LoRA slots on a Llama model (measured on vLLM 0.32 CPU).

    Lab 03's ``slot_reservation_bytes`` over every LoRA-capable linear (vLLM wraps them all,
    whatever the adapter targets), plus the vocabulary slots of the embedding and the logits
    layer: per slot ``A: (vocab, r)``, ``B: (hidden, r)`` each, ``2 * r * (vocab + hidden)``.
    """
    raise NotImplementedError("TODO(lab-02): lab 03's slot reservation plus the vocab slots")


def kv_bytes_per_token(shape, dtype_bytes: int) -> int:
    """K and V of one token across all layers: ``2 * layers * kv_heads * head_dim * dtype``."""
    raise NotImplementedError("TODO(lab-02): bytes of K and V for one token, all layers")


def reconcile(capture: Capture, shape, adapter: str | os.PathLike, *,
              checkpoint: str | os.PathLike | None = None) -> Reconciliation:
    """Each figure of ``capture`` beside the value labs 01/03/04 derive, and whether they agree.

    shape: lab 03's ``ModelShape`` of the served model (``ModelShape.from_hf_config``).
    adapter: the PEFT folder served (``adapter_config.json`` gives r and targets; its
    safetensors header the exact bytes). checkpoint: the model folder, for an exact-bytes check
    of its safetensors against lab 03 (the engine only prints GiB to two decimals).
    Engine-logged figures agree at the precision printed; file figures agree exactly. Checks:
    weights (GiB, lab 03 ``base_bytes``; plus ``lora_slot_bytes`` for the GPU line), KV cache
    (GiB as passed, and tokens: whole ``CPU_KV_BLOCK_TOKENS``-token blocks of
    ``kv_bytes_per_token``), checkpoint bytes, adapter bytes (lab 03 ``adapter_bytes``), delta
    FLOPs / base FLOPs (lab 01 ``lora_overhead``), the LoRA slot buffers the demo measured
    (``lora_slot_bytes``), the adapter's rank in a slot (lab 04 ``SlotCache.acquire``: it fails
    when r > the capture's ``max_lora_rank``) and the demo batch in one scheduler step (lab 04
    ``schedule_step``). Use ``load_lab("lab-03")``. A ``capture`` that is not a ``Capture``
    raises ``TypeError``; an adapter folder without ``adapter_config.json``,
    ``FileNotFoundError``.
    """
    raise NotImplementedError("TODO(lab-02): one Check per figure, derived with labs 01/03/04")


# --- eval diff: due diligence before moving a tenant ---------------------------------------------


@dataclass(frozen=True)
class RowDiff:
    """One eval row whose outputs differ between deployments a and b."""

    index: int
    row_id: object
    output_a: str
    output_b: str
    executes_a: bool
    executes_b: bool


@dataclass(frozen=True)
class EvalDiff:
    """``eval_diff``'s verdict: how many rows match exactly, which differ, what executes.

    executable_a / executable_b: rows whose output runs in sqlite3 against the row's table.
    """

    rows: int
    identical: int
    differing: list[RowDiff]
    executable_a: int
    executable_b: int

    @property
    def clean(self) -> bool:
        return not self.differing

    def summary(self) -> str:
        head = (f"{self.identical}/{self.rows} rows identical; {len(self.differing)} differ; "
                f"SQL executes: a {self.executable_a}/{self.rows}, b {self.executable_b}/{self.rows}")
        lines = [head]
        for d in self.differing[:5]:
            lines.append(f"  row {d.index} (id {d.row_id}): a={d.output_a!r} "
                         f"[{'runs' if d.executes_a else 'fails'}] b={d.output_b!r} "
                         f"[{'runs' if d.executes_b else 'fails'}]")
        if len(self.differing) > 5:
            lines.append(f"  ... and {len(self.differing) - 5} more")
        return "\n".join(lines)


def sql_executes(schema: str, sql: str, inserts: Sequence[str] = ()) -> bool:
    """True when ``sql`` is a query that runs in a fresh in-memory sqlite3 database holding
    ``schema`` (and ``inserts``). Empty text, a statement that returns no rows (DDL, DML) and
    any ``sqlite3.Error`` or ``sqlite3.Warning`` (two statements at once) mean False.
    """
    raise NotImplementedError("TODO(lab-02): build the table in :memory: and run the SQL")


def eval_diff(rows_a: Sequence[Mapping], rows_b: Sequence[Mapping]) -> EvalDiff:
    """Compare two deployments' outputs on the same eval rows: the tenant-migration check.

    Each row is a dict with ``schema`` (a ``CREATE TABLE``), ``output`` (the generated text)
    and optionally ``id`` and ``inserts``; ``rows_a[i]`` and ``rows_b[i]`` must be the same
    eval row (else ``ValueError``, as for a length mismatch). Outputs are compared exactly
    (greedy decoding is deterministic, so any difference is the deployment's); every output is
    also run in sqlite3 against its schema.
    """
    raise NotImplementedError("TODO(lab-02): pair the rows, diff the outputs, run each in sqlite3")


# === part 2: the serving surface (serve_argv, server, load/unload_adapter, cold_slot_signature) ===
#
# Production counterparts (vLLM 0.32): the routes live in
# vllm/entrypoints/openai/models/serving.py (OpenAIServingModels: /v1/models with each adapter's
# `parent`, load_lora_adapter, unload_lora_adapter) and vllm/entrypoints/serve/lora/api_router.py
# (the two POST routes, attached only when VLLM_ALLOW_RUNTIME_LORA_UPDATING is set). The slot and
# CPU caches a request can miss are in vllm/lora/worker_manager.py (LRUCacheWorkerLoRAManager).

SERVER_MODULE = "vllm.entrypoints.openai.api_server"  # the `vllm` console script fails on CPU
VLLM_MAX_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vllm/config/lora.py MaxLoRARanks
ADAPTER_TIMEOUT_S = 120.0  # a runtime load reads the adapter from disk inside the engine
_ADAPTER_NAME = re.compile(r"[^\s=]+")  # `--lora-modules name=path`: no blank, no `=`
# Given (server.py): the process machinery behind `serve`, and a proxy-free HTTP opener.
server = load_support("lab-02", "server")
LOOPBACK, Server, ServerError, free_port = (server.LOOPBACK, server.Server, server.ServerError,
                                            server.free_port)


def serve_argv(model: str | os.PathLike, adapters: Mapping[str, str | os.PathLike], *,
               max_loras: int, max_lora_rank: int, max_cpu_loras: int, port: int,
               host: str = LOOPBACK, served_model_name: str | None = None,
               kv_cache_bytes: int | None = CPU_KV_CACHE_BYTES, dtype: str | None = None,
               max_model_len: int | None = None, extra_args: Sequence[str] = ()) -> list[str]:
    """The command line that starts vLLM's OpenAI server with LoRA on and adapters named.

    Returns ``[sys.executable, "-m", SERVER_MODULE, "--model", model, "--served-model-name",
    name, "--enable-lora", "--lora-modules", "name=path", ..., "--max-loras", ...,
    "--max-lora-rank", ..., "--max-cpu-loras", ..., "--host", host, "--port", port]`` plus
    ``--kv-cache-memory-bytes`` / ``--dtype`` / ``--max-model-len`` when given, then
    ``extra_args``. ``served_model_name`` defaults to the model folder's name. A client picks
    an adapter with ``model="<name>"``. Bad settings raise ValueError naming the argument: a
    port outside [1, 65535], ``max_cpu_loras < max_loras``, a rank vLLM does not allow
    (``VLLM_MAX_LORA_RANKS``), an adapter name that is empty or holds a blank or ``=``.
    """
    raise NotImplementedError("TODO(lab-02): validate the settings and build the server argv")


@contextmanager
def serve(model: str | os.PathLike, adapters: Mapping[str, str | os.PathLike], *,
          max_loras: int, max_lora_rank: int, max_cpu_loras: int, log_path: str | os.PathLike,
          served_model_name: str | None = None, dtype: str | None = CPU_DTYPE,
          startup_timeout_s: float = server.STARTUP_TIMEOUT_S, **argv_kw) -> Iterator[Server]:
    """Given: run vLLM's OpenAI server for the ``with`` block; yield a ``Server``.

    Binds a free port on 127.0.0.1 and starts ``serve_argv(...)`` through the given
    ``server.run`` (``server.py``: its own session, ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``
    so ``load_adapter``/``unload_adapter`` work, the log in ``log_path``, a bounded wait for
    ``/v1/models``, and a stop of the whole process group on exit). ``dtype`` defaults to
    part 1's ``CPU_DTYPE``, as ``build_llm`` runs; ``argv_kw`` goes to ``serve_argv``
    (``kv_cache_bytes``, ``max_model_len``, ``extra_args``).
    """
    port = free_port()
    argv = serve_argv(model, adapters, max_loras=max_loras, max_lora_rank=max_lora_rank,
                      max_cpu_loras=max_cpu_loras, port=port, host=LOOPBACK,
                      served_model_name=served_model_name, dtype=dtype, **argv_kw)
    with server.run(argv, port=port, model=argv[argv.index("--served-model-name") + 1],
                    adapters=list(adapters), log_path=log_path,
                    startup_timeout_s=startup_timeout_s) as running:
        yield running


class AdapterRequestError(RuntimeError):
    """A non-2xx answer from a LoRA route: ``status`` and the server's own ``message``."""

    def __init__(self, url: str, status: int, message: str) -> None:
        super().__init__(f"POST {url} -> HTTP {status}: {message}")
        self.url = url
        self.status = status
        self.message = message


def load_adapter(base_url: str, name: str, path: str | os.PathLike, *,
                 timeout_s: float = ADAPTER_TIMEOUT_S) -> str:
    """Register the PEFT adapter at ``path`` under ``name`` on a running server.

    POST ``{base_url}/load_lora_adapter`` with JSON ``{"lora_name", "lora_path"}``. Returns the
    server's success text; a non-2xx answer raises ``AdapterRequestError`` with the HTTP status
    and the ``message`` of vLLM's error JSON (``{"error": {"message": ...}}``).
    """
    raise NotImplementedError("TODO(lab-02): POST the load request; surface non-2xx answers")


def unload_adapter(base_url: str, name: str, *, timeout_s: float = ADAPTER_TIMEOUT_S) -> str:
    """Remove ``name`` from a running server (POST ``{base_url}/unload_lora_adapter``).

    Returns the server's success text; a non-2xx answer raises ``AdapterRequestError``.
    """
    raise NotImplementedError("TODO(lab-02): POST the unload request; surface non-2xx answers")


@dataclass(frozen=True)
class LatencySummary:
    """Latency of one group of requests, in milliseconds; p50/p99 are NaN for an empty group."""

    count: int
    p50_ms: float
    p99_ms: float


@dataclass(frozen=True)
class ColdSlotSignature:
    """Hot vs cold latency of a trace, and how much of its tail the cold requests make up.

    ``labels[i]`` is "hot" or "cold" for request i. ``tail_count`` requests have a latency at
    or above the overall p99; ``tail_cold_share`` is the fraction of them that are cold.
    """

    labels: tuple[str, ...]
    hot: LatencySummary
    cold: LatencySummary
    overall: LatencySummary
    tail_count: int
    tail_cold_share: float


def percentile_ms(latencies_ms: np.ndarray, q: float) -> float:
    """Nearest-rank percentile: the smallest observed latency with >= q% of samples at or below.

    The ceil(q/100 * n)-th smallest value, never an interpolation; NaN for no samples.
    """
    raise NotImplementedError("TODO(lab-02): the nearest-rank percentile of the samples")


def cold_slot_signature(trace: Sequence[Hashable | None], latencies_ms: Sequence[float],
                        num_slots: int) -> ColdSlotSignature:
    """Trace tail latency to slot thrash: label each request with lab 04's cache model.

    ``trace[i]``: the adapter request i used (None: the base model), in the order served;
    ``latencies_ms[i]``: its latency in ms. Cold = a miss of a ``num_slots`` LRU replaying the
    trace (``load_lab("lab-04").replay``); base requests are hot. Returns count, p50 and p99 per
    label and overall, and the share of the requests at or above the overall p99 that are cold.
    ValueError for mismatched lengths, an empty trace, negative or non-finite latencies, or
    ``num_slots < 1``.
    """
    raise NotImplementedError("TODO(lab-02): replay the trace through lab 04's cache, then "
                              "summarize hot and cold latencies and the p99 tail")
