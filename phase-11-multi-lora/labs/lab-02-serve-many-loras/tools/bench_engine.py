"""The engine's LoRA tax: what a mixed batch costs against a base-only one, stock ops vs yours.

    .venv/bin/python phase-11-multi-lora/labs/lab-02-serve-many-loras/tools/bench_engine.py \
        [--rounds 3] [--prompts 24] [--keep-freed-memory] [--verbose]   # or: make bench-engine
        (vLLM's own log goes to a file whose path is printed; --verbose shows it instead)
    BENCH_JSON=PATH ...                                   # also write the figures as JSON

One in-process CPU engine (``build_llm`` of the lab code ``LAB_IMPL`` selects: SmolLM2, 3
slots, rank 16) runs three batches of the same prompts, greedy, one generated token each, so
the time is the prefill's:

- ``base``: every row untagged;
- ``mixed``: a third untagged, a third ``sql-lora``, a third ``question-lora``, interleaved;
- ``all``: every row an adapter, the two tenants interleaved.

After an untimed warm-up of every batch on both ops, each round runs the three batches under
vLLM's stock CPU punica ops and under part 3's ops (``lab_ops``, installed with
``install_ops``), the order of the two and of the batches rotated each round, so load drift
hits all alike. A batch's ratio is its time over the base-only batch's time *with the
same ops in the same round*; the table shows the median of the rounds' ratios. It also checks
that both ops give the same tokens on every row, and prints the FLOP limit (``flop_limit``:
1 + the LoRA FLOPs of the adapted linears over their base FLOPs). Machine-dependent: read the
ratios on your machine, not a promised figure.

JSON (``BENCH_JSON``): ``{"rows": [{"ops", "batch", "seconds", "ratio"}], "same_tokens",
"prompt_tokens", "prompts", "threads", "openblas_threads", "rounds", "flop_limit",
"allocator", "machine"}``; ``seconds`` is the median time, ``ratio`` the median of the per-round ratios.

``--keep-freed-memory`` runs both ops with glibc keeping freed memory in the process
(``labkit/allocator.py``, what the engine tests do): the stock ops' per-token slot copies are then
no longer faulted in page by page at every op, so the difference between the two runs of the
bench is the share of the stock tax that the allocator, not the arithmetic, costs. Without it
the allocator is left as the wheel ships it.

numpy's BLAS runs one thread here (``OPENBLAS_NUM_THREADS=1`` unless you export another value):
torch's OpenMP threads already occupy every core, bound to them by vLLM, and a second pool of
spinning BLAS threads on the same cores slows both.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

# numpy's OpenBLAS would start threads of its own for your ops' matmuls, on the cores torch's
# OpenMP threads are bound to, and both spin while they wait: one BLAS thread, unless you say.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

LAB = Path(__file__).resolve().parents[1]
REPO = LAB.parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # run as a script: labkit lives at the repository root

BATCHES = ("base", "mixed", "all")
OPS = ("stock", "lab")
MAX_LORAS, RANK = 3, 16  # both tenants resident, one slot left empty (the demo's engine)


def tags_for(batch: str, n: int) -> list[str | None]:
    """The tag of each of ``n`` rows: None (base), "sql-lora" or "question-lora"."""
    cycle = {"base": [None], "mixed": [None, "sql-lora", "question-lora"],
             "all": ["sql-lora", "question-lora"]}[batch]
    return [cycle[i % len(cycle)] for i in range(n)]


def flop_limit(shape, rank: int, targets) -> float:
    """1 + LoRA FLOPs / base FLOPs per token: rank * (d_in + d_out) over the adapted linears,
    against d_in * d_out over all seven (lab 03's ``module_dims``); attention and the LM head
    are the same in both batches and left out."""
    from labkit import load_lab

    econ = load_lab("lab-03")
    lora = sum(rank * sum(econ.module_dims(shape, t)) for t in econ.normalize_targets(targets))
    base = sum(d_in * d_out for d_in, d_out in (econ.module_dims(shape, t) for t in econ.TARGETS))
    return 1 + lora / base


def run(rounds: int, n_prompts: int, say, keep_freed: bool = False) -> dict:
    import torch

    from labkit import load_lab, load_support
    from labkit.allocator import keep_freed_memory

    allocator = "glibc, as shipped"
    if keep_freed:
        if not keep_freed_memory():
            raise SystemExit("--keep-freed-memory: expected glibc to accept both mallopt "
                             "thresholds; the C library is not glibc, or it refused one")
        allocator = "glibc, freed memory kept (labkit/allocator.py)"

    base_model, evaluation, sqldata = (load_support("lab-02", m)
                                       for m in ("tools.base_model", "tools.evaluation", "tools.sqldata"))
    lab = load_lab("lab-02")
    rows = sqldata.load_eval()[:n_prompts]
    prompts = [sqldata.sql_prompt(r["schema"], r["question"]) for r in rows]
    say(f"building the engine ({MAX_LORAS} slots, rank {RANK}) ...")
    t0 = time.monotonic()
    llm = lab.build_llm(base_model.base_model(), max_loras=MAX_LORAS, max_lora_rank=RANK,
                        max_cpu_loras=MAX_LORAS)
    say(f"engine ready after {time.monotonic() - t0:.0f} s")
    tokenizer = llm.get_tokenizer()
    prompt_tokens = sum(len(tokenizer(p).input_ids) for p in prompts)
    tenants = evaluation.lora_requests()
    sampling = evaluation.greedy(max_tokens=1)
    ops = {"stock": lab.stock_ops(), "lab": lab.lab_ops()}

    def generate(batch: str) -> tuple[float, list]:
        tags = [None if t is None else tenants[t] for t in tags_for(batch, len(prompts))]
        t0 = time.perf_counter()
        outs = llm.generate(prompts, sampling, lora_request=tags, use_tqdm=False)
        return time.perf_counter() - t0, [o.outputs[0].token_ids for o in outs]

    for name in OPS:  # warm-up, untimed: adapters into their slots, lab 01 loaded, every
        lab.install_ops(ops[name])  # batch shape seen once on each ops
        for batch in BATCHES:
            generate(batch)
        say(f"warmed up on {name} ops")
    times = {(o, b): [] for o in OPS for b in BATCHES}
    ratios = {(o, b): [] for o in OPS for b in BATCHES}
    tokens: dict[tuple[str, str], list] = {}
    for k in range(rounds):
        order = OPS if k % 2 == 0 else OPS[::-1]
        for name in order:
            lab.install_ops(ops[name])
            seconds = {}
            for batch in BATCHES[k % 3:] + BATCHES[:k % 3]:  # rotated: no batch always first
                seconds[batch], tokens[name, batch] = generate(batch)
                times[name, batch].append(seconds[batch])
                say(f"round {k + 1}/{rounds} {name:>5} ops {batch:>5}: {seconds[batch]:6.2f} s")
            for batch in BATCHES:
                ratios[name, batch].append(seconds[batch] / seconds["base"])
    lab.install_ops(ops["stock"])
    config = json.loads((base_model.base_model_dir() / "config.json").read_text())
    shape = load_lab("lab-03").ModelShape.from_hf_config(config)
    targets = json.loads((LAB / "assets" / "sql-lora" / "adapter_config.json").read_text())[
        "target_modules"]
    return {
        "rows": [{"ops": o, "batch": b, "seconds": statistics.median(times[o, b]),
                  "ratio": statistics.median(ratios[o, b])} for o in OPS for b in BATCHES],
        "same_tokens": all(tokens["stock", b] == tokens["lab", b] for b in BATCHES),
        "prompt_tokens": prompt_tokens,
        "prompts": len(prompts),
        "threads": torch.get_num_threads(),
        "openblas_threads": os.environ["OPENBLAS_NUM_THREADS"],
        "rounds": rounds,
        "flop_limit": flop_limit(shape, RANK, targets),
        "allocator": allocator,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load avg "
                   + ", ".join(f"{x:.1f}" for x in os.getloadavg()),
    }


def table(result: dict) -> str:
    lines = [f"lab-02 engine bench: {result['prompts']} prompts, {result['prompt_tokens']} prompt "
             f"tokens, 1 generated token, {result['rounds']} rounds, torch threads "
             f"{result['threads']}, OPENBLAS_NUM_THREADS={result['openblas_threads']}",
             f"machine: {result['machine']}; allocator: {result['allocator']}",
             "",
             "| ops | batch | median s | x base-only (median of rounds) |",
             "| --- | --- | ---: | ---: |"]
    lines += [f"| {r['ops']} | {r['batch']} | {r['seconds']:.2f} | {r['ratio']:.3f} |"
              for r in result["rows"]]
    lines += [f"| FLOP limit | | | {result['flop_limit']:.3f} |", "",
              f"same tokens, stock vs lab ops, every row of every batch: {result['same_tokens']}"]
    return "\n".join(lines)


def quiet(log_path: Path):
    """Send this process's stdout and stderr (vLLM's log, its C++ warnings, progress bars) to
    ``log_path``; return a file on the terminal's stdout for the bench's own lines."""
    terminal = os.fdopen(os.dup(1), "w", buffering=1)
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    return terminal


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=24)
    parser.add_argument("--keep-freed-memory", action="store_true",
                        help="glibc keeps freed memory in the process, for both ops "
                             "(default: the allocator as shipped)")
    parser.add_argument("--verbose", action="store_true",
                        help="show vLLM's log here (default: a log file whose path is printed)")
    args = parser.parse_args()
    out = sys.stdout
    if not args.verbose:
        fd, name = tempfile.mkstemp(prefix="lab02-bench-", suffix=".log")
        os.close(fd)
        print(f"[bench] vLLM's log: {name} (--verbose shows it here)", flush=True)
        out = quiet(Path(name))
    start = time.monotonic()

    def say(line: str) -> None:
        print(f"[bench {time.monotonic() - start:5.0f} s] {line}", file=out, flush=True)

    result = run(args.rounds, args.prompts, say, args.keep_freed_memory)
    print("\n" + table(result), file=out, flush=True)
    path = os.environ.get("BENCH_JSON")
    if path:
        Path(path).write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {path}", file=out, flush=True)


if __name__ == "__main__":
    main()
