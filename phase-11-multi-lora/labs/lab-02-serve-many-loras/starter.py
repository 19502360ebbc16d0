"""Lab 02: many LoRA adapters served by one vLLM engine.

No function changes its inputs, except part 3's ops, which write into ``output_tensor`` as vLLM's
own ops do.
"""

from __future__ import annotations

import ast
import json
import math
import os
import re
import sqlite3
import sys
from collections.abc import Hashable, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np

from labkit import load_lab, load_support

# Given: the records the functions return (given/records.py), safetensors headers (given/safetensors_header.py),
# the server's process management behind `serve` (given/server.py). Re-exported: `lab.Capture`, ...
records, headers, server = (load_support("lab-02", m)
                            for m in ("given.records", "given.safetensors_header", "given.server"))
Logged, Capture, Check = records.Logged, records.Capture, records.Check
Reconciliation, RowDiff, EvalDiff = records.Reconciliation, records.RowDiff, records.EvalDiff
AdapterRequestError, LatencySummary = records.AdapterRequestError, records.LatencySummary
ColdSlotSignature = records.ColdSlotSignature
Tensor, read_safetensors_header = headers.Tensor, headers.read_safetensors_header

# === part 1: the offline engine (test_lab.py) ===
#
# Production counterparts (vLLM 0.32): the knobs are LoRAConfig in vllm/config/lora.py; the
# slots are the `lora_a_stacked` / `lora_b_stacked` buffers of vllm/lora/layers/; the CPU build
# runs them through vllm/lora/punica_wrapper/punica_cpu.py and vllm/lora/ops/torch_ops/lora_ops.py
# (the gather `lora_b_weights[lora_indices_tensor]`, where a base row's index is -1).

# 1 GiB: 23,296 tokens of SmolLM2-135M in fp32 (2**30 / 46,080 B = 23,301, in whole blocks of
# CPU_KV_BLOCK_TOKENS = 128 tokens: 182 blocks); unset, the CPU build takes GiBs
CPU_KV_CACHE_BYTES = 2**30
CPU_MAX_MODEL_LEN = 256  # a lab prompt (at most 98 tokens) plus its answer (48), with room to spare
CPU_DTYPE = "float32"  # the base is dequantized to fp32 and the adapters trained on it
INPROC_ENV = "VLLM_ENABLE_V1_MULTIPROCESSING"  # "0": the engine core runs in this process
VLLM_LORA_DEFAULTS = {"max_loras": 1, "max_lora_rank": 16}  # LoRAConfig defaults, vLLM 0.32
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

    Import vLLM inside the function, so this module imports without it. On CPU the engine core
    runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0`` unless the environment sets it):
    one log stream, no second interpreter importing torch again.
    """
    raise NotImplementedError("TODO(lab-02): detect CUDA, build the kwargs, return vllm.LLM(...)")


def generate_mixed(llm, prompts: Sequence[str], adapters: Sequence, sampling) -> list[str]:
    """One ``llm.generate`` call for a batch whose rows carry different tags, without vLLM's
    progress bar (``use_tqdm=False``).

    ``prompts[i]`` runs on the base model when ``adapters[i]`` is None, and through that
    adapter when it is a ``LoRARequest``. Returns the generated texts in prompt order. A
    length mismatch (``ValueError``, naming ``adapters``), a prompt that is not a ``str``
    (``TypeError`` naming ``prompts[i]``), a tag that is not a LoRARequest (``TypeError``) or a
    missing local adapter folder (``FileNotFoundError``, its message naming the path) raises
    before the engine sees the batch; an adapter the engine rejects (rank above
    ``max_lora_rank``) raises ``ValueError`` carrying vLLM's own message (``LoRA rank R is
    greater than max_lora_rank M``), whether you refuse it before the batch (vLLM's
    ``PEFTHelper.validate_legal``) or let the engine reject it. Mind that on vLLM 0.32's CPU
    build an engine whose step raised does not finish another batch.
    """
    raise NotImplementedError("TODO(lab-02): check the tags, then ONE llm.generate(..., "
                              "lora_request=adapters) call")


# --- reading an engine log ----------------------------------------------------------------------


def parse_capture(text: str) -> Capture:
    """Read the figures a student checks from a vLLM log (CPU build or CUDA) and the demo rows.

    Sources: ``non-default args: {...}`` (the knobs as passed), ``Initializing a V1 LLM engine
    (vX) with config: ...`` (version, dtype, device, max length), ``Checkpoint size: X GiB`` or
    ``Model loading took X GiB``, ``Explicitly set (X/Y) GiB for KV cache``, ``KV cache size:
    N tokens``, ``Using PunicaWrapper...``, the demo's ``row i  tag=T  -> 'text'`` lines and
    its ``LoRA slot buffers (...): N B in the engine's ...`` line. A figure the log does not
    print is None. ``weights_kind`` is "checkpoint" for the CPU build's ``Checkpoint size``
    line, "model_loading" for the GPU's ``Model loading took`` line. Formats: ``vllm_version``
    as ``0.32.0`` (no ``v``), ``dtype`` as
    ``float16`` (no ``torch.``), ``device`` as ``cpu`` or ``cuda``. ``text`` that is not a str
    raises ``TypeError``.
    """
    raise NotImplementedError("TODO(lab-02): pull each figure out of the log with a regex")


# --- reconciling a capture with labs 01/03/04 ---------------------------------------------------


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
    weights (GiB, lab 03 ``base_bytes``; plus ``lora_slot_bytes`` for the GPU line when the log
    has LoRA on, nothing when it is off: Llama-2-7B in fp16 with LoRA off is 12.55 GiB), KV cache
    (GiB as passed, and tokens: whole ``CPU_KV_BLOCK_TOKENS``-token blocks of
    ``kv_bytes_per_token``), checkpoint bytes, adapter bytes (lab 03 ``adapter_bytes``), delta
    FLOPs / base FLOPs (lab 01 ``lora_overhead``), the LoRA slot buffers the demo measured
    (``lora_slot_bytes``; only when the capture has that figure and LoRA on), the adapter's rank in
    a slot (lab 04 ``SlotCache.acquire``: it fails when r > the capture's ``max_lora_rank``) and
    the demo batch in one scheduler step (lab 04 ``schedule_step``). Each ``Check.figure`` names
    its figure with the word a reader (and the tests, case-insensitively) look for: "weight",
    "KV cache", "checkpoint", "adapter" (bytes), "FLOPs", "step" and "rank" (the slot check), e.g.
    ``adapter rank <= max_lora_rank``; only one figure contains "checkpoint". The GPU weight
    check's ``how`` gives its two terms, base and LoRA slots, in GiB to three decimals
    (``12.550 + 0.306``), summing to ``derived``; the step check's ``how`` names the demo rows'
    distinct adapters and ``max_loras`` (``2 adapter(s), max_loras=3``). Use
    ``load_lab("lab-03")``. A ``capture`` that is not a ``Capture`` raises ``TypeError``; an
    adapter folder without ``adapter_config.json``, ``FileNotFoundError``; an adapter module whose
    tensors are not one ``lora_A`` and one ``lora_B`` (a half pair, ``lora_embedding_*``),
    ``ValueError`` naming the module.
    """
    raise NotImplementedError("TODO(lab-02): one Check per figure, derived with labs 01/03/04")


# --- eval diff: due diligence before moving a tenant ---------------------------------------------


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
    eval row (same ``schema`` and ``id``, else ``ValueError`` naming ``rows_b``, as for a
    length mismatch). A row that is not a dict is a ``TypeError``; a missing or non-str
    ``schema`` or ``output``, a ``ValueError``. Outputs are compared exactly (greedy decoding is
    deterministic, so any difference is the deployment's), never by length; every output is
    also run in sqlite3 against its own table (``sql_executes``).
    """
    raise NotImplementedError("TODO(lab-02): pair the rows, diff the outputs, run each in sqlite3")


# === part 2: the serving surface (test_serving.py) ===
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
    ``extra_args``. ``adapters`` maps a served name to a PEFT folder, so a client picks an
    adapter with ``model="<name>"``; ``served_model_name`` (default: the model folder's name)
    is the base's ``model=``. ``kv_cache_bytes`` bounds the KV cache (None: vLLM's default,
    most of the RAM on the CPU build). Binds ``host``: loopback unless the caller says
    otherwise. Bad settings raise naming the argument: ``TypeError`` for a non-int count or
    port (a bool included); ``ValueError`` for a port outside [1, 65535], a count below 1,
    ``max_cpu_loras < max_loras``, a rank vLLM does not allow (``VLLM_MAX_LORA_RANKS``), and
    (naming ``adapters``) no adapters or a name that is empty, holds a blank or ``=``, or is
    the base's own served name.
    """
    raise NotImplementedError("TODO(lab-02): validate the settings and build the server argv")


def serve(model: str | os.PathLike, adapters: Mapping[str, str | os.PathLike], *,
          dtype: str | None = CPU_DTYPE, **kw) -> AbstractContextManager[Server]:
    """Given: vLLM's OpenAI server for a ``with`` block, started from this module's
    ``serve_argv`` on a free loopback port (``server.serve`` in ``given/server.py``). ``dtype``
    defaults to ``CPU_DTYPE``, as ``build_llm`` runs."""
    return server.serve(serve_argv, model, adapters, dtype=dtype, **kw)


def load_adapter(base_url: str, name: str, path: str | os.PathLike, *,
                 timeout_s: float = ADAPTER_TIMEOUT_S) -> str:
    """Register the PEFT adapter at ``path`` under ``name`` on a running server.

    POST ``{base_url}/load_lora_adapter`` with JSON ``{"lora_name", "lora_path"}`` (through the
    given ``server.post_json``); the server must run with VLLM_ALLOW_RUNTIME_LORA_UPDATING, and
    reads ``path`` itself (absolute, or relative to its working directory). Returns the
    server's success text; a non-2xx answer raises ``AdapterRequestError`` with the HTTP status
    and vLLM's message (400 already loaded, 404 no adapter at path, ...). Waits up to
    ``timeout_s`` seconds for the answer (``ADAPTER_TIMEOUT_S``, 120 s: the engine reads the
    adapter from disk before it answers).
    """
    raise NotImplementedError("TODO(lab-02): POST the load request; surface non-2xx answers")


def unload_adapter(base_url: str, name: str, *, timeout_s: float = ADAPTER_TIMEOUT_S) -> str:
    """Remove ``name`` from a running server (POST ``{base_url}/unload_lora_adapter``).

    Returns the server's success text; a non-2xx answer raises ``AdapterRequestError`` (404
    for a name the server does not know).
    """
    raise NotImplementedError("TODO(lab-02): POST the unload request; surface non-2xx answers")


def percentile_ms(latencies_ms: np.ndarray, q: float) -> float:
    """Nearest-rank percentile: the ceil(q/100 * n)-th smallest latency, never an
    interpolation, so "the p99 tail" is a set of real requests. NaN for no samples.
    """
    raise NotImplementedError("TODO(lab-02): the nearest-rank percentile of the samples")


def cold_slot_signature(trace: Sequence[Hashable | None], latencies_ms: Sequence[float],
                        num_slots: int) -> ColdSlotSignature:
    """Trace tail latency to slot thrash: label each request with lab 04's cache model.

    ``trace[i]``: the adapter request i used (None: the base model), in the order served;
    ``latencies_ms[i]``: its latency in ms. Cold = a miss of a ``num_slots`` LRU replaying the
    trace (``load_lab("lab-04").replay``); base requests never wait for a load and are hot.
    Returns count, p50 and p99 (nearest rank) per label and overall, and the share of the requests
    at or above the overall p99 that are cold. ``ValueError`` naming the argument for mismatched
    lengths or a latency array that is not 1-D (``latencies_ms``), an empty trace (``trace``),
    negative or non-finite latencies (``latencies_ms``; the message gives the first bad value and
    its position, ``-2.0 at position 1``) or ``num_slots < 1``; ``TypeError`` for a non-int
    ``num_slots``.
    """
    raise NotImplementedError("TODO(lab-02): replay the trace through lab 04's cache, then "
                              "summarize hot and cold latencies and the p99 tail")


# === part 3: lab 01 inside the engine, vLLM's six CPU punica ops (test_punica_ops.py) ===
#
# vLLM's CPU build computes every LoRA delta with six ops from vllm/lora/ops/torch_ops/lora_ops.py,
# which vllm/lora/punica_wrapper/punica_cpu.py imports by name. Stock, `sgmv_*` throws away the
# segments it is handed (`repeat_interleave`) and `bgmv_*` gathers one copy of the adapter per
# token, `lora_b_weights[lora_indices_tensor]`, where a base row's -1 is the last slot. Here the
# same six signatures run lab 01's grouping, shrink and expand instead (`load_lab("lab-01")`).
# Every tensor argument is a CPU torch tensor (from the engine) or a numpy array (from the fast
# tests); `as_array` views either as numpy without a copy, so lab 01's numpy writes land in the
# engine's own buffers.

PUNICA_CPU = "vllm.lora.punica_wrapper.punica_cpu"  # the module whose names the engine calls
OP_NAMES = ("sgmv_shrink", "sgmv_expand", "sgmv_expand_slice",
            "bgmv_shrink", "bgmv_expand", "bgmv_expand_slice")
OPS_ENV = "LAB02_PUNICA_OPS"  # "lab": vLLM's plugin hook installs these ops in every process


def as_array(t) -> np.ndarray:
    """A CPU torch tensor, as vLLM passes it, viewed as a numpy array without a copy (so writes
    land in the tensor); a numpy array, as the fast tests pass it, as it is (given)."""
    return t if isinstance(t, np.ndarray) else t.numpy()


def prefill_groups(b_seq_start_loc, seq_len_tensor, lora_indices_tensor
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group vLLM's prefill segments by slot: lab 01's ``(order, adapter_ids, offsets)`` over tokens.

    Segment s covers tokens ``[b_seq_start_loc[s], b_seq_start_loc[s] + seq_len_tensor[s])``,
    all using slot ``lora_indices_tensor[s]`` (-1: no adapter). vLLM merges only *consecutive*
    tokens of one slot, so a slot can own several segments. Returns ``order``, the token rows of
    every non-base segment grouped by slot (lab 01's ``group_by_adapter`` over the segments,
    so stable: segments, and tokens inside a segment, keep their order); ``adapter_ids``, the
    distinct slots present; ``offsets``, so that tokens ``order[offsets[g]:offsets[g+1]]`` all use
    slot ``adapter_ids[g]``. Base segments form no group. Inputs are 1-D integer tensors or arrays
    of one length; their contents are left unchanged. vLLM calls the ops hundreds of times per
    step on the same segments, in buffers it refills in place for the next step: a result may be
    reused only for the same *contents*, never for the same tensor object.
    """
    raise NotImplementedError("TODO(lab-02): group the segments with lab 01's group_by_adapter, "
                              "then list each group's token rows")


def decode_groups(lora_indices_tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group per-token slot indices (the decode path: one index per row, -1 for base rows).

    Exactly lab 01's ``group_by_adapter`` on the indices as a numpy array; base rows form no
    group. The tensor is left unchanged; as for ``prefill_groups``, a result may be reused only
    for the same contents.
    """
    raise NotImplementedError("TODO(lab-02): lab 01's group_by_adapter on the indices")


def shrink_groups(inputs, lora_a_weights, output_tensor, groups, scaling: float) -> None:
    """``output_tensor[rows, :r] = scaling * lab01.shrink(inputs[rows], A[slot])`` per group.

    ``inputs``: (T, d_in); ``lora_a_weights``: the slots, (max_loras, 1, r, d_in) (or without
    the 1); ``output_tensor``: (T, >= r), written in place; ``groups``: ``(order, slot_ids,
    offsets)`` from ``prefill_groups`` or ``decode_groups``. Inputs and weights are computed in
    the output's dtype, as vLLM's ops do. Rows in no group (base rows) are left untouched: no
    slot, the last one included, is ever read for them.
    """
    raise NotImplementedError("TODO(lab-02): for each group, lab 01's shrink of its rows through "
                              "its slot's A, scaled, written to its rows")


def expand_groups(inputs, lora_b_weights, output_tensor, groups, slice_offset: int,
                  slice_size: int, add_inputs: bool) -> None:
    """``output_tensor[rows, slice] (+)= lab01.expand(inputs[rows], B[slot])`` per group.

    ``inputs``: (T, r); ``lora_b_weights``: the slots, (max_loras, 1, d_out, r) (or without the
    1); ``output_tensor``: (T, >= slice_offset + slice_size), changed in place in columns
    ``[slice_offset, slice_offset + slice_size)`` only; the delta's first ``slice_size`` columns
    are added there when ``add_inputs``, else written over them. Rows in no group are left
    untouched.
    """
    raise NotImplementedError("TODO(lab-02): for each group, lab 01's expand of its rows through "
                              "its slot's B, added to (or written over) its rows' slice")


def sgmv_shrink(inputs, lora_a_weights, output_tensor, b_seq_start_loc, seq_len_tensor,
                lora_indices_tensor, batches: int, max_seq_length: int, token_nums: int,
                scaling: float) -> None:
    """vLLM's ``sgmv_shrink``: the prefill shrink, one group per slot from the segments."""
    raise NotImplementedError("TODO(lab-02): shrink_groups over prefill_groups")


def sgmv_expand(inputs, lora_b_weights, output_tensor, b_seq_start_loc, seq_len_tensor,
                lora_indices_tensor, batches: int, max_seq_length: int, token_nums: int,
                add_inputs: bool = False) -> None:
    """vLLM's ``sgmv_expand``: the prefill expand into the output's first columns, as many as
    both the slot's ``d_out`` and the output have (vLLM's ``common_len``: padding may differ)."""
    raise NotImplementedError("TODO(lab-02): expand_groups over prefill_groups, into the first "
                              "min(d_out, output width) columns")


def sgmv_expand_slice(inputs, lora_b_weights, output_tensor, b_seq_start_loc, seq_len_tensor,
                      lora_indices_tensor, batches: int, max_seq_length: int, token_nums: int,
                      slice_offset: int, slice_size: int, add_inputs: bool = False) -> None:
    """vLLM's ``sgmv_expand_slice``: the prefill expand into columns
    ``[slice_offset, slice_offset + slice_size)`` (one of q/k/v, or gate/up)."""
    raise NotImplementedError("TODO(lab-02): expand_groups over prefill_groups, into the slice")


def bgmv_shrink(inputs, lora_b_weights, output_tensor, lora_indices_tensor,
                scaling: float = 1.0) -> None:
    """vLLM's ``bgmv_shrink`` (its A weights are named ``lora_b_weights`` there too): the
    per-token shrink, grouped by ``decode_groups``."""
    raise NotImplementedError("TODO(lab-02): shrink_groups over decode_groups")


def bgmv_expand(inputs, lora_b_weights, output_tensor, lora_indices_tensor,
                add_inputs: bool = True) -> None:
    """vLLM's ``bgmv_expand``: the per-token expand into the first ``common_len`` columns."""
    raise NotImplementedError("TODO(lab-02): expand_groups over decode_groups, into the first "
                              "min(d_out, output width) columns")


def bgmv_expand_slice(inputs, lora_b_weights, output_tensor, lora_indices_tensor,
                      slice_offset: int, slice_size: int, add_inputs: bool = True) -> None:
    """vLLM's ``bgmv_expand_slice``: the per-token expand into the slice."""
    raise NotImplementedError("TODO(lab-02): expand_groups over decode_groups, into the slice")


def lab_ops() -> dict[str, object]:
    """This module's six ops, by vLLM's names (given)."""
    return {name: globals()[name] for name in OP_NAMES}


def stock_ops() -> dict[str, object]:
    """vLLM's own six CPU ops, from ``vllm.lora.ops.torch_ops`` (given)."""
    from vllm.lora.ops import torch_ops

    return {name: getattr(torch_ops, name) for name in OP_NAMES}


def try_ops(ops: Mapping[str, object]) -> None:
    """Call each of the six ops once on a tiny batch of numpy arrays (given): raises what an op
    raises, so that a TODO shows before an engine runs a whole batch on it."""
    f32 = np.float32
    x, h, idx = np.ones((2, 3), f32), np.ones((2, 1), f32), np.array([0, -1])
    A, B = np.ones((1, 1, 1, 3), f32), np.ones((1, 1, 3, 1), f32)
    seg = (np.array([0]), np.array([2]), np.array([0]), 1, 2, 2)  # one segment of 2 tokens
    ops["sgmv_shrink"](x, A, np.zeros((2, 1), f32), *seg, 1.0)
    ops["sgmv_expand"](h, B, np.zeros((2, 3), f32), *seg, True)
    ops["sgmv_expand_slice"](h, B, np.zeros((2, 6), f32), *seg, 3, 3, True)
    ops["bgmv_shrink"](x, A, np.zeros((2, 1), f32), idx, 1.0)
    ops["bgmv_expand"](h, B, np.zeros((2, 3), f32), idx, True)
    ops["bgmv_expand_slice"](h, B, np.zeros((2, 6), f32), idx, 3, 3, True)


def install_ops(ops: Mapping[str, object]) -> dict[str, object]:
    """Make the engine call ``ops`` (given): set each of the six names on ``punica_cpu``, the module
    whose globals the CPU punica wrapper calls at every step, and return the ones it replaced.
    An in-process engine (``VLLM_ENABLE_V1_MULTIPROCESSING=0``) uses them from its next step on."""
    import importlib

    module = importlib.import_module(PUNICA_CPU)
    missing = sorted(set(OP_NAMES) - set(ops))
    if missing:
        raise ValueError(f"ops: expected all six of {OP_NAMES}, missing {missing}")
    before = {name: getattr(module, name) for name in OP_NAMES}
    for name in OP_NAMES:
        setattr(module, name, ops[name])
    return before
