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


# BEGIN SOLUTION
def _cuda_available() -> bool:
    """True when torch is installed and sees a CUDA device."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _positive_int(name: str, value: object) -> int:
    """``value`` if it is an int >= 1: ``TypeError`` for a non-int (bool included),
    ``ValueError`` for one below 1, each naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected a positive int, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
    return value


def _check_knobs(max_loras: int, max_lora_rank: int, max_cpu_loras: int) -> None:
    for name, value in (("max_loras", max_loras), ("max_lora_rank", max_lora_rank),
                        ("max_cpu_loras", max_cpu_loras)):
        _positive_int(name, value)
    if max_cpu_loras < max_loras:
        raise ValueError(f"max_cpu_loras: must be >= max_loras ({max_loras}): every adapter in "
                         f"a slot is also held in the CPU cache, got {max_cpu_loras}")
# END SOLUTION


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
    # BEGIN SOLUTION: TODO(lab-02): validate the knobs and assemble vllm.LLM's kwargs
    _check_knobs(max_loras, max_lora_rank, max_cpu_loras)
    kwargs = {"model": os.fspath(model), "enable_lora": True, "max_loras": max_loras,
              "max_lora_rank": max_lora_rank, "max_cpu_loras": max_cpu_loras}
    if not cuda:
        kwargs |= {"kv_cache_memory_bytes": CPU_KV_CACHE_BYTES, "dtype": CPU_DTYPE,
                   "max_model_len": CPU_MAX_MODEL_LEN}
    return kwargs | engine_kw
    # END SOLUTION


def build_llm(model: str | os.PathLike, *, max_loras: int, max_lora_rank: int,
              max_cpu_loras: int, **engine_kw):
    """A ``vllm.LLM`` with LoRA enabled, on the CPU build or on CUDA (see ``engine_kwargs``).

    Import vLLM inside the function, so this module imports without it. On CPU the engine core
    runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0`` unless the environment sets it):
    one log stream, no second interpreter importing torch again.
    """
    # BEGIN SOLUTION: TODO(lab-02): detect CUDA, build the kwargs, return vllm.LLM(...)
    cuda = _cuda_available()
    kwargs = engine_kwargs(model, max_loras=max_loras, max_lora_rank=max_lora_rank,
                           max_cpu_loras=max_cpu_loras, cuda=cuda, **engine_kw)
    if not cuda:
        os.environ.setdefault(INPROC_ENV, "0")
    from vllm import LLM

    return LLM(**kwargs)
    # END SOLUTION


# BEGIN SOLUTION
def _check_adapter(i: int, adapter: object) -> None:
    """``adapters[i]`` must be None or a LoRARequest whose local folder is a PEFT adapter."""
    if adapter is None:
        return
    path = getattr(adapter, "lora_path", None)
    if not isinstance(path, str) or not hasattr(adapter, "lora_int_id"):
        raise TypeError(f"adapters[{i}]: expected None or a vllm LoRARequest, "
                        f"got {type(adapter).__name__}")
    local = Path(path).expanduser()
    if local.is_absolute() or path.startswith((".", "~")) or local.exists():
        if not local.is_dir():
            raise FileNotFoundError(f"adapters[{i}] ({adapter.lora_name}): adapter folder "
                                    f"{path} does not exist")
        if not (local / "adapter_config.json").is_file():
            raise ValueError(f"adapters[{i}] ({adapter.lora_name}): {path} has no "
                             f"adapter_config.json, so it is not a PEFT adapter folder")
# END SOLUTION


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
    # BEGIN SOLUTION: TODO(lab-02): check the tags, then ONE llm.generate(..., lora_request=adapters) call
    prompts, adapters = list(prompts), list(adapters)
    if len(prompts) != len(adapters):
        raise ValueError(f"adapters: expected one tag per prompt ({len(prompts)}), "
                         f"got {len(adapters)}")
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise TypeError(f"prompts[{i}]: expected a str, got {type(prompt).__name__}")
    for i, adapter in enumerate(adapters):
        _check_adapter(i, adapter)
        _check_engine_accepts(llm, i, adapter)
    outputs = llm.generate(prompts, sampling, lora_request=adapters, use_tqdm=False)
    return [out.outputs[0].text for out in outputs]
    # END SOLUTION


# BEGIN SOLUTION
def _check_engine_accepts(llm, i: int, adapter) -> None:
    """Ask vLLM's own validator (``PEFTHelper.validate_legal``) before the batch is submitted.

    The engine runs the same check per request, but only after the rows before it are queued;
    on vLLM 0.32 (CPU, in-process) the engine did not finish the next batch after such a
    rejection. Checking first keeps the engine usable and surfaces vLLM's message unchanged.
    """
    lora_config = getattr(getattr(getattr(llm, "llm_engine", None), "vllm_config", None),
                          "lora_config", None)
    if adapter is None or lora_config is None or not Path(adapter.lora_path).is_dir():
        return
    from vllm.lora.peft_helper import PEFTHelper

    try:
        PEFTHelper.from_local_dir(adapter.lora_path, None).validate_legal(lora_config)
    except ValueError as err:
        raise ValueError(f"adapters[{i}] ({adapter.lora_name}): vLLM rejects this adapter: "
                         f"{err}") from err
# END SOLUTION


# --- reading an engine log ----------------------------------------------------------------------


# BEGIN SOLUTION
_NON_DEFAULT = re.compile(r"non-default args: (\{.*\})\s*$", re.MULTILINE)
_ENGINE = re.compile(r"Initializing a V1 LLM engine \(v([^)]+)\) with config: (.*)$",
                     re.MULTILINE)
_WEIGHTS = {
    "checkpoint": re.compile(r"Checkpoint size: (\d+(?:\.\d+)?) GiB"),
    "model_loading": re.compile(r"Model loading took (\d+(?:\.\d+)?) GiB"),
}
_KV_GIB = re.compile(r"(?:Explicitly|Auto) set \((\d+(?:\.\d+)?)/[\d.]+\) GiB for KV cache")
_KV_TOKENS = re.compile(r"KV cache size: ([\d,]+) tokens")
_PUNICA = re.compile(r"Using (PunicaWrapper\w+)")
_DEMO_ROW = re.compile(r"^row (\d+)\s+tag=(\S+)\s+-> (.*)$", re.MULTILINE)
_SLOT_BUFFERS = re.compile(r"LoRA slot buffers \(.*\): ([\d,]+) B in the engine")


def _config_field(config: str, key: str) -> str | None:
    found = re.search(rf"\b{key}=([^,]+)", config)
    return found.group(1).strip("'") if found else None


def _non_default_args(text: str) -> dict:
    found = _NON_DEFAULT.search(text)
    if not found:
        return {}
    try:
        return ast.literal_eval(found.group(1))
    except (ValueError, SyntaxError):
        return {}  # an argument vLLM printed as a non-literal (a class, a dtype object)


def _logged(pattern: re.Pattern, text: str) -> Logged | None:
    found = pattern.search(text)
    return Logged(float(found.group(1)), found.group(1)) if found else None
# END SOLUTION


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
    # BEGIN SOLUTION: TODO(lab-02): pull each figure out of the log with a regex
    if not isinstance(text, str):
        raise TypeError(f"text: expected the log as a str, got {type(text).__name__}")
    args = _non_default_args(text)
    engine = _ENGINE.search(text)
    config = engine.group(2) if engine else ""
    kind = next((k for k, pattern in _WEIGHTS.items() if pattern.search(text)), None)
    lora = {k: int(args.get(k, default)) for k, default in VLLM_LORA_DEFAULTS.items()}
    lora["max_cpu_loras"] = int(args.get("max_cpu_loras") or lora["max_loras"])
    max_len = _config_field(config, "max_seq_len")
    tokens = _KV_TOKENS.search(text)
    punica = _PUNICA.search(text)
    slots = _SLOT_BUFFERS.search(text)
    return Capture(
        vllm_version=engine.group(1) if engine else None,
        device=_config_field(config, "device_config"),
        dtype=(_config_field(config, "dtype") or "").removeprefix("torch.") or None,
        max_model_len=int(max_len) if max_len else None,
        weights=_logged(_WEIGHTS[kind], text) if kind else None,
        weights_kind=kind,
        kv_cache=_logged(_KV_GIB, text),
        kv_cache_bytes=args.get("kv_cache_memory_bytes"),
        kv_cache_tokens=int(tokens.group(1).replace(",", "")) if tokens else None,
        lora_enabled=bool(args.get("enable_lora", False)),
        lora=lora,
        punica_wrapper=punica.group(1) if punica else None,
        outputs=[(tag, ast.literal_eval(body)) for _, tag, body in _DEMO_ROW.findall(text)],
        slot_buffer_bytes=int(slots.group(1).replace(",", "")) if slots else None,
    )
    # END SOLUTION


# --- reconciling a capture with labs 01/03/04 ---------------------------------------------------


def lora_slot_bytes(shape, max_loras: int, max_lora_rank: int, dtype_bytes: int) -> int:
    """Bytes vLLM allocates for its LoRA slots on a Llama model (measured on vLLM 0.32 CPU).

    Lab 03's ``slot_reservation_bytes`` over every LoRA-capable linear (vLLM wraps them all,
    whatever the adapter targets), plus the vocabulary slots of the embedding and the logits
    layer: per slot ``A: (vocab, r)``, ``B: (hidden, r)`` each, ``2 * r * (vocab + hidden)``.
    """
    # BEGIN SOLUTION: TODO(lab-02): lab 03's slot reservation plus the vocab slots
    econ = load_lab("lab-03")
    linear = econ.slot_reservation_bytes(shape, max_loras, max_lora_rank, econ.ENGINE_TARGETS,
                                         dtype_bytes)
    vocab = 2 * max_loras * max_lora_rank * (shape.vocab + shape.hidden) * dtype_bytes
    return linear + vocab
    # END SOLUTION


def kv_bytes_per_token(shape, dtype_bytes: int) -> int:
    """K and V of one token across all layers: ``2 * layers * kv_heads * head_dim * dtype``."""
    # BEGIN SOLUTION: TODO(lab-02): bytes of K and V for one token, all layers
    return 2 * shape.layers * shape.kv_heads * shape.head_dim * dtype_bytes
    # END SOLUTION


# BEGIN SOLUTION
def _gib_check(figure: str, logged: Logged, derived_bytes: int, how: str) -> Check:
    derived = derived_bytes / 2**30
    agrees = abs(logged.value - derived) <= logged.half_unit + 1e-12
    return Check(figure, "engine log", logged.value, derived, agrees, how)


def _weight_checks(capture: Capture, shape, econ, disk_dtype_bytes: int | None) -> list[Check]:
    """The weight line: files on disk (CPU build) or device memory after loading (GPU)."""
    if capture.weights is None:
        return []
    dtype_bytes = headers.dtype_bytes(capture.dtype or "", "capture.dtype")
    if capture.weights_kind == "checkpoint":  # the files, in the checkpoint's own dtype
        disk = disk_dtype_bytes or dtype_bytes
        return [_gib_check("weights on disk (GiB)", capture.weights, econ.base_bytes(shape, disk),
                           f"lab 03 base_bytes(shape, {disk}), at the printed precision")]
    base = econ.base_bytes(shape, dtype_bytes)
    lora = capture.lora
    slots = (lora_slot_bytes(shape, lora["max_loras"], lora["max_lora_rank"], dtype_bytes)
             if capture.lora_enabled else 0)
    return [_gib_check("weights in device memory (GiB)", capture.weights, base + slots,
                       f"lab 03 base_bytes {base / 2**30:.3f} + LoRA slots {slots / 2**30:.3f}")]


def _kv_checks(capture: Capture, shape) -> list[Check]:
    if capture.kv_cache_bytes is None:
        return []
    checks = []
    if capture.kv_cache is not None:
        checks.append(_gib_check("KV cache (GiB)", capture.kv_cache, capture.kv_cache_bytes,
                                 "kv_cache_memory_bytes as passed"))
    if capture.kv_cache_tokens is not None:
        per_token = kv_bytes_per_token(shape, headers.dtype_bytes(capture.dtype or "", "capture.dtype"))
        block = per_token * CPU_KV_BLOCK_TOKENS  # the cache is whole blocks of tokens
        tokens = capture.kv_cache_bytes // block * CPU_KV_BLOCK_TOKENS
        checks.append(Check("KV cache (tokens)", "engine log", capture.kv_cache_tokens, tokens,
                            capture.kv_cache_tokens == tokens,
                            f"whole {CPU_KV_BLOCK_TOKENS}-token blocks of {per_token} B "
                            f"per token in kv_cache_memory_bytes"))
    return checks


def _lora_pairs(tensors: dict[str, Tensor]) -> list[tuple[int, int, int]]:
    """``(r, d_in, d_out)`` of each adapted module, from its ``lora_A`` / ``lora_B`` shapes."""
    modules: dict[str, dict[str, tuple[int, ...]]] = {}
    for name, t in tensors.items():
        module, _, part = name.partition(".lora_")
        modules.setdefault(module, {})[part[0]] = t.shape
    pairs = []
    for module, ab in modules.items():
        if set(ab) != {"A", "B"}:
            raise ValueError(f"adapter: {module} has lora_{''.join(ab)} but not both A and B")
        (r, d_in), (d_out, _) = ab["A"], ab["B"]
        pairs.append((r, d_in, d_out))
    return pairs


def _adapter_checks(adapter_dir: Path, config: dict, shape, econ, lab01) -> list[Check]:
    rank, targets = config["r"], econ.normalize_targets(config["target_modules"])
    tensors = {n: t for n, t in headers.tensors_in(adapter_dir).items() if ".lora_" in n}
    dtype_bytes = headers.one_dtype(tensors, adapter_dir)
    observed = sum(t.nbytes for t in tensors.values())
    derived = econ.adapter_bytes(shape, rank, targets, dtype_bytes)
    # Delta FLOPs / base FLOPs over the adapted linears: the file's own A and B shapes against
    # lab 01's per-matrix ratio on lab 03's dimensions, each weighted by its base FLOPs.
    pairs = _lora_pairs(tensors)
    ratio_file = (sum(r * (d_in + d_out) for r, d_in, d_out in pairs)
                  / sum(d_in * d_out for _, d_in, d_out in pairs))
    dims = [econ.module_dims(shape, t) for t in targets]
    ratio_lab = (sum(lab01.lora_overhead(d_in, d_out, rank) * d_in * d_out for d_in, d_out in dims)
                 / sum(d_in * d_out for d_in, d_out in dims))
    return [
        Check("adapter bytes", "safetensors header", observed, derived, observed == derived,
              f"lab 03 adapter_bytes(shape, r={rank}, {','.join(targets)}, {dtype_bytes})"),
        Check("delta FLOPs / base FLOPs", "safetensors header", ratio_file, ratio_lab,
              math.isclose(ratio_file, ratio_lab, rel_tol=RATIO_RTOL),
              "lab 01 lora_overhead per target, weighted by d_in*d_out"),
    ]


def _checkpoint_checks(tensors: dict[str, Tensor], dtype_bytes: int, shape, econ) -> list[Check]:
    observed = sum(t.nbytes for t in tensors.values())
    derived = econ.base_bytes(shape, dtype_bytes)
    return [Check("checkpoint bytes", "safetensors header", observed, derived,
                  observed == derived, f"lab 03 base_bytes(shape, {dtype_bytes})")]


def _slot_buffer_checks(capture: Capture, shape) -> list[Check]:
    """The slot buffers the engine allocated, against ``lora_slot_bytes`` (lab 03 inside)."""
    if capture.slot_buffer_bytes is None or not capture.lora_enabled:
        return []
    lora = capture.lora
    dtype_bytes = headers.dtype_bytes(capture.dtype or "", "capture.dtype")
    derived = lora_slot_bytes(shape, lora["max_loras"], lora["max_lora_rank"], dtype_bytes)
    return [Check("LoRA slot buffers (bytes)", "engine (demo probe)", capture.slot_buffer_bytes,
                  derived, capture.slot_buffer_bytes == derived,
                  f"lora_slot_bytes: lab 03 slot_reservation_bytes x {lora['max_loras']} slots "
                  f"at rank {lora['max_lora_rank']}, plus the vocab slots")]


def _slot_checks(capture: Capture, config: dict, shape, econ, slots) -> list[Check]:
    lora, rank = capture.lora, config["r"]
    d_in, d_out = econ.module_dims(shape, econ.normalize_targets(config["target_modules"])[0])
    cache = slots.SlotCache(lora["max_loras"], lora["max_lora_rank"], d_in, d_out)
    try:
        cache.acquire("adapter", lambda _: (np.zeros((rank, d_in), np.float32),
                                            np.zeros((d_out, rank), np.float32)))
        fits = True
    except ValueError:
        fits = False
    checks = [Check("adapter rank <= max_lora_rank", "adapter_config.json", rank,
                    lora["max_lora_rank"], fits, "lab 04 SlotCache.acquire loads it into a slot")]
    if capture.outputs:
        queue = [slots.Request(i, None if tag == "base" else tag)
                 for i, (tag, _) in enumerate(capture.outputs)]
        scheduled, deferred = slots.schedule_step(queue, [], lora["max_loras"], len(queue))
        distinct = len({r.adapter for r in queue if r.adapter is not None})
        checks.append(Check("demo rows admitted in one step", "demo output", len(queue),
                            len(scheduled), not deferred,
                            f"lab 04 schedule_step: {distinct} adapter(s), "
                            f"max_loras={lora['max_loras']}"))
    return checks
# END SOLUTION


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
    # BEGIN SOLUTION: TODO(lab-02): one Check per figure, derived with labs 01/03/04
    if not isinstance(capture, Capture):
        raise TypeError(f"capture: expected a Capture from parse_capture, "
                        f"got {type(capture).__name__}")
    adapter_dir = Path(adapter)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise FileNotFoundError(f"adapter: {adapter_dir} has no adapter_config.json")
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    econ, lab01, slots = load_lab("lab-03"), load_lab("lab-01"), load_lab("lab-04")
    checks = []
    disk_dtype_bytes = None
    if checkpoint is not None:
        tensors = headers.tensors_in(Path(checkpoint))
        disk_dtype_bytes = headers.one_dtype(tensors, Path(checkpoint))
        checks += _checkpoint_checks(tensors, disk_dtype_bytes, shape, econ)
    checks = (_weight_checks(capture, shape, econ, disk_dtype_bytes) + _kv_checks(capture, shape)
              + checks + _slot_buffer_checks(capture, shape))
    checks += _adapter_checks(adapter_dir, config, shape, econ, lab01)
    checks += _slot_checks(capture, config, shape, econ, slots)
    return Reconciliation(checks)
    # END SOLUTION


# --- eval diff: due diligence before moving a tenant ---------------------------------------------


def sql_executes(schema: str, sql: str, inserts: Sequence[str] = ()) -> bool:
    """True when ``sql`` is a query that runs in a fresh in-memory sqlite3 database holding
    ``schema`` (and ``inserts``). Empty text, a statement that returns no rows (DDL, DML) and
    any ``sqlite3.Error`` or ``sqlite3.Warning`` (two statements at once) mean False.
    """
    # BEGIN SOLUTION: TODO(lab-02): build the table in :memory: and run the SQL
    db = sqlite3.connect(":memory:")
    try:
        db.execute(schema)
        for statement in inserts:
            db.execute(statement)
        cursor = db.execute(sql)
        cursor.fetchall()
        return cursor.description is not None  # None: nothing was queried
    except (sqlite3.Error, sqlite3.Warning):
        return False
    finally:
        db.close()
    # END SOLUTION


# BEGIN SOLUTION
def _eval_row(name: str, i: int, row: object) -> Mapping:
    if not isinstance(row, Mapping):
        raise TypeError(f"{name}[{i}]: expected a dict, got {type(row).__name__}")
    for key in ("schema", "output"):
        if not isinstance(row.get(key), str):
            raise ValueError(f"{name}[{i}]: expected a str under {key!r}, got {row.get(key)!r}")
    return row
# END SOLUTION


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
    # BEGIN SOLUTION: TODO(lab-02): pair the rows, diff the outputs, run each in sqlite3
    rows_a, rows_b = list(rows_a), list(rows_b)
    if len(rows_a) != len(rows_b):
        raise ValueError(f"rows_b: expected the same {len(rows_a)} eval rows as rows_a, "
                         f"got {len(rows_b)}")
    differing, runs_a, runs_b = [], 0, 0
    for i, (a, b) in enumerate(zip(rows_a, rows_b, strict=True)):
        a, b = _eval_row("rows_a", i, a), _eval_row("rows_b", i, b)
        if a["schema"] != b["schema"] or a.get("id") != b.get("id"):
            raise ValueError(f"rows_b[{i}]: expected the same eval row as rows_a[{i}] "
                             f"(id {a.get('id')!r}), got id {b.get('id')!r}")
        executes_a = sql_executes(a["schema"], a["output"], a.get("inserts", ()))
        executes_b = sql_executes(b["schema"], b["output"], b.get("inserts", ()))
        runs_a, runs_b = runs_a + executes_a, runs_b + executes_b
        if a["output"] != b["output"]:
            differing.append(RowDiff(i, a.get("id"), a["output"], b["output"],
                                     executes_a, executes_b))
    return EvalDiff(len(rows_a), len(rows_a) - len(differing), differing, runs_a, runs_b)
    # END SOLUTION


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
    # BEGIN SOLUTION: TODO(lab-02): validate the settings and build the server argv
    _check_knobs(max_loras, max_lora_rank, max_cpu_loras)
    if max_lora_rank not in VLLM_MAX_LORA_RANKS:
        raise ValueError(f"max_lora_rank: expected one of {VLLM_MAX_LORA_RANKS}, "
                         f"got {max_lora_rank!r}")
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"port: expected an int in [1, 65535], got {type(port).__name__} {port!r}")
    if not 1 <= port <= 65535:
        raise ValueError(f"port: expected an int in [1, 65535], got {port!r}")
    if not isinstance(host, str) or not host:
        raise ValueError(f"host: expected a non-empty address, got {host!r}")
    name = Path(model).name if served_model_name is None else served_model_name
    if not isinstance(name, str) or not _ADAPTER_NAME.fullmatch(name):
        raise ValueError(f"served_model_name: expected a name without blanks or '=', "
                         f"got {name!r}")
    if not adapters:
        raise ValueError("adapters: expected at least one name -> path, got none")
    modules = []
    for adapter, path in adapters.items():
        if not isinstance(adapter, str) or not _ADAPTER_NAME.fullmatch(adapter):
            raise ValueError(f"adapters: names must be non-empty without blanks or '=', "
                             f"got {adapter!r}")
        if adapter == name:
            raise ValueError(f"adapters: {adapter!r} is the base model's served name")
        modules.append(f"{adapter}={os.fspath(path)}")
    argv = [sys.executable, "-m", SERVER_MODULE, "--model", os.fspath(model),
            "--served-model-name", name, "--enable-lora", "--lora-modules", *modules,
            "--max-loras", str(max_loras), "--max-lora-rank", str(max_lora_rank),
            "--max-cpu-loras", str(max_cpu_loras), "--host", host, "--port", str(port)]
    if kv_cache_bytes is not None:
        argv += ["--kv-cache-memory-bytes", str(_positive_int("kv_cache_bytes", kv_cache_bytes))]
    if dtype is not None:
        argv += ["--dtype", dtype]
    if max_model_len is not None:
        argv += ["--max-model-len", str(_positive_int("max_model_len", max_model_len))]
    return argv + list(extra_args)
    # END SOLUTION


def serve(model: str | os.PathLike, adapters: Mapping[str, str | os.PathLike], *,
          dtype: str | None = CPU_DTYPE, **kw) -> AbstractContextManager[Server]:
    """Given: vLLM's OpenAI server for a ``with`` block, started from this module's
    ``serve_argv`` on a free loopback port (``server.serve`` in ``given/server.py``). ``dtype``
    defaults to ``CPU_DTYPE``, as ``build_llm`` runs."""
    return server.serve(serve_argv, model, adapters, dtype=dtype, **kw)


# BEGIN SOLUTION
def _post_lora_route(base_url: str, route: str, payload: dict, timeout_s: float) -> str:
    if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
        raise ValueError(f"base_url: expected the server's http(s)://host:port/v1, "
                         f"got {base_url!r}")
    name = payload["lora_name"]
    if not isinstance(name, str) or not name:
        raise ValueError(f"name: expected a non-empty adapter name, got {name!r}")
    url = f"{base_url.rstrip('/')}/{route}"
    status, text = server.post_json(url, payload, timeout_s)
    if not 200 <= status < 300:
        raise AdapterRequestError(url, status, text)
    return text
# END SOLUTION


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
    # BEGIN SOLUTION: TODO(lab-02): POST the load request; surface non-2xx answers
    payload = {"lora_name": name, "lora_path": os.fspath(path)}
    return _post_lora_route(base_url, "load_lora_adapter", payload, timeout_s)
    # END SOLUTION


def unload_adapter(base_url: str, name: str, *, timeout_s: float = ADAPTER_TIMEOUT_S) -> str:
    """Remove ``name`` from a running server (POST ``{base_url}/unload_lora_adapter``).

    Returns the server's success text; a non-2xx answer raises ``AdapterRequestError`` (404
    for a name the server does not know).
    """
    # BEGIN SOLUTION: TODO(lab-02): POST the unload request; surface non-2xx answers
    return _post_lora_route(base_url, "unload_lora_adapter", {"lora_name": name}, timeout_s)
    # END SOLUTION


def percentile_ms(latencies_ms: np.ndarray, q: float) -> float:
    """Nearest-rank percentile: the ceil(q/100 * n)-th smallest latency, never an
    interpolation, so "the p99 tail" is a set of real requests. NaN for no samples.
    """
    # BEGIN SOLUTION: TODO(lab-02): the nearest-rank percentile of the samples
    if len(latencies_ms) == 0:
        return float("nan")
    return float(np.percentile(latencies_ms, q, method="inverted_cdf"))
    # END SOLUTION


# BEGIN SOLUTION
def _summary(latencies_ms: np.ndarray) -> LatencySummary:
    return LatencySummary(len(latencies_ms), percentile_ms(latencies_ms, 50),
                          percentile_ms(latencies_ms, 99))
# END SOLUTION


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
    # BEGIN SOLUTION: TODO(lab-02): replay the trace through lab 04's cache, then summarize hot and cold latencies and the p99 tail
    latencies = np.asarray(latencies_ms, dtype=np.float64)
    if latencies.ndim != 1 or len(latencies) != len(trace):
        raise ValueError(f"latencies_ms: expected one latency per trace entry ({len(trace)}), "
                         f"got shape {latencies.shape}")
    if len(latencies) == 0:
        raise ValueError("trace: expected at least one request, got an empty trace")
    bad = np.flatnonzero(~np.isfinite(latencies) | (latencies < 0))
    if len(bad):
        raise ValueError(f"latencies_ms: expected finite values >= 0, got "
                         f"{latencies[bad[0]]} at position {bad[0]}")
    num_slots = _positive_int("num_slots", num_slots)
    hits = np.asarray(load_lab("lab-04").replay(list(trace), num_slots), dtype=bool)
    p99 = percentile_ms(latencies, 99)
    tail = latencies >= p99
    return ColdSlotSignature(
        labels=tuple("hot" if hit else "cold" for hit in hits),
        hot=_summary(latencies[hits]),
        cold=_summary(latencies[~hits]),
        overall=_summary(latencies),
        tail_count=int(tail.sum()),
        tail_cold_share=float((tail & ~hits).sum() / tail.sum()),
    )
    # END SOLUTION


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
    # BEGIN SOLUTION: TODO(lab-02): group the segments with lab 01's group_by_adapter, then list each group's token rows
    starts, lens, slots = (as_array(t) for t in (b_seq_start_loc, seq_len_tensor,
                                                  lora_indices_tensor))
    key = ("prefill", *(_fingerprint(a) for a in (starts, lens, slots)))
    if key in _LAST_GROUPS:
        return _LAST_GROUPS[key]
    seg_order, adapter_ids, seg_offsets = load_lab("lab-01").group_by_adapter(slots)
    lens, starts = lens[seg_order], starts[seg_order]
    ends = np.cumsum(lens)  # each segment's end in the grouped order
    order = np.arange(ends[-1] if len(ends) else 0) + np.repeat(starts - (ends - lens), lens)
    offsets = np.concatenate(([0], ends))[seg_offsets].astype(np.intp)
    return _remember(key, (order.astype(np.intp), adapter_ids, offsets))
    # END SOLUTION


def decode_groups(lora_indices_tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group per-token slot indices (the decode path: one index per row, -1 for base rows).

    Exactly lab 01's ``group_by_adapter`` on the indices as a numpy array; base rows form no
    group. The tensor is left unchanged; as for ``prefill_groups``, a result may be reused only
    for the same contents.
    """
    # BEGIN SOLUTION: TODO(lab-02): lab 01's group_by_adapter on the indices
    idx = as_array(lora_indices_tensor)
    key = ("decode", _fingerprint(idx))
    if key in _LAST_GROUPS:
        return _LAST_GROUPS[key]
    return _remember(key, load_lab("lab-01").group_by_adapter(idx))
    # END SOLUTION


# BEGIN SOLUTION
_LAST_GROUPS: dict[tuple, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}  # the latest grouping


def _fingerprint(a: np.ndarray) -> tuple[str, bytes]:
    """An array's contents, as a key: the same values in the same dtype, whatever object."""
    return a.dtype.str, a.tobytes()


def _remember(key: tuple, groups: tuple) -> tuple:
    """Keep only the latest grouping: one step's ops all share it, the next step's differ."""
    _LAST_GROUPS.clear()
    _LAST_GROUPS[key] = groups
    return groups


def _slots(weights, dtype) -> np.ndarray:
    """vLLM's slot stack, ``(max_loras, 1, a, b)`` or ``(max_loras, a, b)``, as ``(max_loras, a, b)``
    in ``dtype`` (a view when the dtype already matches)."""
    w = as_array(weights).astype(dtype, copy=False)
    return w[:, 0] if w.ndim == 4 else w


RUNS_PER_GROUP_MAX = 64  # a group of prefill segments is a few runs of consecutive rows


def _windows(out: np.ndarray, rows: np.ndarray, cols: slice):
    """``(part, window)`` pairs covering ``out[rows, cols]``: views of each run of consecutive
    rows (written in place, in one pass) when the rows form few runs, as prefill segments do;
    else one fancy-indexed pair, written back when the caller is done (decode: a run per row)."""
    bounds = np.flatnonzero(np.diff(rows) != 1) + 1
    if len(bounds) < RUNS_PER_GROUP_MAX:
        edges = [0, *bounds.tolist(), len(rows)]
        for a, b in zip(edges[:-1], edges[1:], strict=False):
            yield slice(a, b), out[rows[a]:rows[a] + b - a, cols]
        return
    window = out[rows, cols]
    yield slice(None), window
    out[rows, cols] = window


def _group_rows(groups):
    order, adapter_ids, offsets = groups
    for g, slot in enumerate(adapter_ids):
        yield int(slot), order[offsets[g]:offsets[g + 1]]
# END SOLUTION


def shrink_groups(inputs, lora_a_weights, output_tensor, groups, scaling: float) -> None:
    """``output_tensor[rows, :r] = scaling * lab01.shrink(inputs[rows], A[slot])`` per group.

    ``inputs``: (T, d_in); ``lora_a_weights``: the slots, (max_loras, 1, r, d_in) (or without
    the 1); ``output_tensor``: (T, >= r), written in place; ``groups``: ``(order, slot_ids,
    offsets)`` from ``prefill_groups`` or ``decode_groups``. Inputs and weights are computed in
    the output's dtype, as vLLM's ops do. Rows in no group (base rows) are left untouched: no
    slot, the last one included, is ever read for them.
    """
    # BEGIN SOLUTION: TODO(lab-02): for each group, lab 01's shrink of its rows through its slot's A, scaled, written to its rows
    out = as_array(output_tensor)
    x, A = as_array(inputs).astype(out.dtype, copy=False), _slots(lora_a_weights, out.dtype)
    shrink = load_lab("lab-01").shrink
    for slot, rows in _group_rows(groups):
        out[rows, :A.shape[1]] = scaling * shrink(x[rows], A[slot])
    # END SOLUTION


def expand_groups(inputs, lora_b_weights, output_tensor, groups, slice_offset: int,
                  slice_size: int, add_inputs: bool) -> None:
    """``output_tensor[rows, slice] (+)= lab01.expand(inputs[rows], B[slot])`` per group.

    ``inputs``: (T, r); ``lora_b_weights``: the slots, (max_loras, 1, d_out, r) (or without the
    1); ``output_tensor``: (T, >= slice_offset + slice_size), changed in place in columns
    ``[slice_offset, slice_offset + slice_size)`` only; the delta's first ``slice_size`` columns
    are added there when ``add_inputs``, else written over them. Rows in no group are left
    untouched.
    """
    # BEGIN SOLUTION: TODO(lab-02): for each group, lab 01's expand of its rows through its slot's B, added to (or written over) its rows' slice
    out = as_array(output_tensor)
    h, B = as_array(inputs).astype(out.dtype, copy=False), _slots(lora_b_weights, out.dtype)
    expand = load_lab("lab-01").expand
    cols = slice(slice_offset, slice_offset + slice_size)
    for slot, rows in _group_rows(groups):
        delta = expand(h[rows], B[slot])[:, :slice_size]
        for part, window in _windows(out, rows, cols):
            if add_inputs:
                window += delta[part]
            else:
                window[...] = delta[part]
    # END SOLUTION


def sgmv_shrink(inputs, lora_a_weights, output_tensor, b_seq_start_loc, seq_len_tensor,
                lora_indices_tensor, batches: int, max_seq_length: int, token_nums: int,
                scaling: float) -> None:
    """vLLM's ``sgmv_shrink``: the prefill shrink, one group per slot from the segments."""
    # BEGIN SOLUTION: TODO(lab-02): shrink_groups over prefill_groups
    groups = prefill_groups(b_seq_start_loc, seq_len_tensor, lora_indices_tensor)
    shrink_groups(inputs, lora_a_weights, output_tensor, groups, scaling)
    # END SOLUTION


def sgmv_expand(inputs, lora_b_weights, output_tensor, b_seq_start_loc, seq_len_tensor,
                lora_indices_tensor, batches: int, max_seq_length: int, token_nums: int,
                add_inputs: bool = False) -> None:
    """vLLM's ``sgmv_expand``: the prefill expand into the output's first columns, as many as
    both the slot's ``d_out`` and the output have (vLLM's ``common_len``: padding may differ)."""
    # BEGIN SOLUTION: TODO(lab-02): expand_groups over prefill_groups, into the first min(d_out, output width) columns
    groups = prefill_groups(b_seq_start_loc, seq_len_tensor, lora_indices_tensor)
    width = min(lora_b_weights.shape[-2], output_tensor.shape[1])
    expand_groups(inputs, lora_b_weights, output_tensor, groups, 0, width, add_inputs)
    # END SOLUTION


def sgmv_expand_slice(inputs, lora_b_weights, output_tensor, b_seq_start_loc, seq_len_tensor,
                      lora_indices_tensor, batches: int, max_seq_length: int, token_nums: int,
                      slice_offset: int, slice_size: int, add_inputs: bool = False) -> None:
    """vLLM's ``sgmv_expand_slice``: the prefill expand into columns
    ``[slice_offset, slice_offset + slice_size)`` (one of q/k/v, or gate/up)."""
    # BEGIN SOLUTION: TODO(lab-02): expand_groups over prefill_groups, into the slice
    groups = prefill_groups(b_seq_start_loc, seq_len_tensor, lora_indices_tensor)
    expand_groups(inputs, lora_b_weights, output_tensor, groups, slice_offset, slice_size,
                  add_inputs)
    # END SOLUTION


def bgmv_shrink(inputs, lora_b_weights, output_tensor, lora_indices_tensor,
                scaling: float = 1.0) -> None:
    """vLLM's ``bgmv_shrink`` (its A weights are named ``lora_b_weights`` there too): the
    per-token shrink, grouped by ``decode_groups``."""
    # BEGIN SOLUTION: TODO(lab-02): shrink_groups over decode_groups
    groups = decode_groups(lora_indices_tensor)
    shrink_groups(inputs, lora_b_weights, output_tensor, groups, scaling)
    # END SOLUTION


def bgmv_expand(inputs, lora_b_weights, output_tensor, lora_indices_tensor,
                add_inputs: bool = True) -> None:
    """vLLM's ``bgmv_expand``: the per-token expand into the first ``common_len`` columns."""
    # BEGIN SOLUTION: TODO(lab-02): expand_groups over decode_groups, into the first min(d_out, output width) columns
    groups, width = decode_groups(lora_indices_tensor), min(lora_b_weights.shape[-2],
                                                            output_tensor.shape[1])
    expand_groups(inputs, lora_b_weights, output_tensor, groups, 0, width, add_inputs)
    # END SOLUTION


def bgmv_expand_slice(inputs, lora_b_weights, output_tensor, lora_indices_tensor,
                      slice_offset: int, slice_size: int, add_inputs: bool = True) -> None:
    """vLLM's ``bgmv_expand_slice``: the per-token expand into the slice."""
    # BEGIN SOLUTION: TODO(lab-02): expand_groups over decode_groups, into the slice
    groups = decode_groups(lora_indices_tensor)
    expand_groups(inputs, lora_b_weights, output_tensor, groups, slice_offset, slice_size,
                  add_inputs)
    # END SOLUTION


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
