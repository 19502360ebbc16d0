"""Lab 02 demo: one vLLM batch, two behaviours; the tag on each row decides which.

    .venv/bin/python phase-11-multi-lora/labs/lab-02-serve-many-loras/demo.py [--capture PATH]

Builds the CPU engine on the shipped tiny Llama with LoRA on (``build_llm``), then sends ONE
``generate`` call holding the same text-to-SQL prompt twice: row 0 untagged (the base model),
row 1 tagged with the shipped SQL adapter (``generate_mixed``). Prints the two rows side by side
with their tags, and what each output does in sqlite3. The lab code comes from ``LAB_IMPL``
(default: the solution). ``--capture PATH`` runs the same demo in a child process and tees its
whole stdout and stderr (vLLM's log included) to PATH: that is how capture/demo.log is made.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

LAB = Path(__file__).resolve().parent
REPO = LAB.parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # run as a script: labkit lives at the repository root

BASE_MODEL = LAB / "assets" / "tiny-llama"
SQL_LORA = LAB / "assets" / "sql-lora"
ADAPTER_NAME = "sql-lora"
EVAL_ROW = 0  # the held-out row whose prompt both rows share
MAX_LORAS = 2  # one slot for the adapter, one left empty (see the README's -1 finding)
MAX_LORA_RANK = 16  # the shipped adapter's r, one of vLLM's allowed ranks
MAX_CPU_LORAS = 2
MAX_TOKENS = 64  # the longest gold SQL is ~30 tokens


def versions() -> list[str]:
    """Machine and library versions, printed at the top of every capture."""
    import torch
    import vllm

    return [f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
            f"python {platform.python_version()}, torch {torch.__version__}, "
            f"vllm {vllm.__version__}, LAB_IMPL={os.environ.get('LAB_IMPL', 'solution')}"]


def _stacked_bytes(worker) -> int:
    """Runs inside the engine's worker: bytes of every LoRA slot buffer vLLM allocated."""
    total = 0
    for module in worker.model_runner.model.modules():
        for name in ("lora_a_stacked", "lora_b_stacked"):
            buffers = getattr(module, name, None)
            for t in buffers if isinstance(buffers, tuple | list) else [buffers]:
                total += t.numel() * t.element_size() if t is not None else 0
    return total


def slot_buffer_bytes(llm) -> int | None:
    """The LoRA slot buffers of the running engine, summed (vLLM 0.32 internals; None if the
    engine is laid out differently)."""
    try:
        return llm.llm_engine.engine_core.engine_core.model_executor.collective_rpc(
            _stacked_bytes)[0]
    except Exception:  # noqa: BLE001 - an internal probe: report "not measured", not a crash
        return None


def run_demo() -> None:
    from vllm import SamplingParams
    from vllm.lora.request import LoRARequest

    from labkit import load_lab, load_support

    lab, sqldata = load_lab("lab-02"), load_support("lab-02", "sqldata")
    for line in versions():
        print(f"[demo] {line}", flush=True)
    row = sqldata.load_eval()[EVAL_ROW]
    prompt = sqldata.sql_prompt(row["schema"], row["question"])
    llm = lab.build_llm(BASE_MODEL, max_loras=MAX_LORAS, max_lora_rank=MAX_LORA_RANK,
                        max_cpu_loras=MAX_CPU_LORAS)
    tags = ["base", ADAPTER_NAME]
    adapters = [None, LoRARequest(ADAPTER_NAME, 1, str(SQL_LORA))]
    texts = lab.generate_mixed(llm, [prompt, prompt], adapters,
                               SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS))
    print("\n== one generate() call: the same prompt in both rows, two tags ==")
    print(f"prompt: {prompt!r}")
    print(f"gold:   {row['gold_sql']!r}")
    for i, (tag, text) in enumerate(zip(tags, texts, strict=True)):
        print(f"row {i}  tag={tag:<9} -> {text.strip()!r}")
    measured = slot_buffer_bytes(llm)
    shape = load_lab("lab-03").ModelShape.from_hf_config(
        json.loads((BASE_MODEL / "config.json").read_text()))
    dtype_bytes = llm.llm_engine.vllm_config.model_config.dtype.itemsize
    derived = lab.lora_slot_bytes(shape, MAX_LORAS, MAX_LORA_RANK, dtype_bytes)
    seen = "not measured" if measured is None else f"{measured:,} B"
    print(f"\nLoRA slot buffers ({MAX_LORAS} slots, rank {MAX_LORA_RANK}): {seen} in the "
          f"engine's lora_a/b_stacked; lora_slot_bytes derives {derived:,} B")
    print("\n== what each row does in sqlite3 against the row's table ==")
    for i, (tag, text) in enumerate(zip(tags, texts, strict=True)):
        sql = text.strip()
        runs = lab.sql_executes(row["schema"], sql, row["inserts"])
        print(f"row {i}  tag={tag:<9} looks like SQL: {sqldata.is_sql(sql)!s:<5} "
              f"executes: {runs!s:<5} gold result: {sqldata.same_result(row, sql)}")


def capture(path: Path) -> int:
    """Run the demo in a child process; tee its stdout and stderr, interleaved, to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    child = subprocess.Popen([sys.executable, __file__], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, env=env)
    assert child.stdout is not None
    with path.open("wb") as log:
        for chunk in iter(lambda: child.stdout.readline(), b""):
            sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
            log.write(chunk)
    return child.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--capture", type=Path, metavar="PATH",
                        help="tee the full run (vLLM's log included) to PATH")
    args = parser.parse_args()
    if args.capture is not None:
        sys.exit(capture(args.capture))
    run_demo()


if __name__ == "__main__":
    main()
