"""Lab 01 bench: what a mixed batch of adapters costs over a base-only batch, side by side.

One layer at T=64, d_in=d_out=4096, r=16, 8 adapters plus base rows, float32, four ways:

- base-only:    ``batched_lora_forward`` with every ``idx == -1``: the floor, one base matmul;
- mixed:        ``batched_lora_forward`` on the mixed batch: base matmul + shrink/expand per group;
- per-row loop: ``x @ W.T + lora_delta_loop(...)``: the same deltas, one row at a time;
- materialized: per adapter group, ``x_g @ (W + s*B@A).T``: a merged d_out x d_in weight each.

The implementation is the one ``LAB_IMPL`` selects (``labkit.loader.DEFAULT_IMPL`` when unset),
so a student can bench their own ``starter.py``. Each repeat runs all four paths in a rotated order, so a change
in the machine's load hits them alike; the table gives medians and ratios to base-only, beside
the FLOP limit ``1 + lora_overhead``.
The ratio is the median over rounds of each round's own ratio, so load drift cancels.

    python phase-11-multi-lora/labs/lab-01-batched-lora-matmul/bench.py [--repeats 15]
"""

from __future__ import annotations

import os

# One BLAS thread unless you export OPENBLAS_NUM_THREADS: on a small machine shared with other
# work, a multi-threaded gemm waits on preempted threads and its median time means little.
# Read when numpy loads, so it is set before the import.
BLAS_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
for _var in BLAS_THREAD_VARS:
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[3]
# First on sys.path, even when it is there already: this checkout's labkit, never the one of
# another checkout that is installed (editable) in the same environment.
sys.path.insert(0, str(REPO_ROOT))

from labkit import load_impl  # noqa: E402

LAB = "lab-01"
SCALE = 2.0  # lora_alpha / r = 32 / 16


def make_layer(T: int, d_in: int, d_out: int, r: int, L: int, dtype=np.float32, seed: int = 0):
    """Random x (T, d_in), W (d_out, d_in), A_stack (L, r, d_in), B_stack (L, d_out, r)."""
    rng = np.random.default_rng(seed)

    def draw(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape, dtype=np.float32) / np.sqrt(shape[-1])).astype(dtype)

    return draw(T, d_in), draw(d_out, d_in), draw(L, r, d_in), draw(L, d_out, r)


def mixed_idx(T: int, adapters: int, with_base: bool = True, seed: int = 0) -> np.ndarray:
    """(T,) adapter ids: ``adapters`` distinct adapters (and base rows), evenly, shuffled."""
    classes = adapters + 1 if with_base else adapters
    ids = np.arange(T) % classes - (1 if with_base else 0)
    return np.random.default_rng(seed).permutation(ids)


def materialized_forward(x, W, A_stack, B_stack, idx, scale=SCALE) -> np.ndarray:
    """The merge-per-adapter way: each group multiplies by its own W + scale * B @ A."""
    y = np.empty((x.shape[0], W.shape[0]), dtype=x.dtype)
    base = idx == -1
    y[base] = x[base] @ W.T
    for a in np.unique(idx[~base]):
        rows = idx == a
        y[rows] = x[rows] @ (W + float(scale) * (B_stack[a] @ A_stack[a])).T
    return y


def paths(lab, x, W, A_stack, B_stack, idx, scale=SCALE) -> dict[str, Callable[[], np.ndarray]]:
    """The four ways to run the layer, as zero-argument calls."""
    base_idx = np.full_like(idx, -1)
    return {
        "base-only": lambda: lab.batched_lora_forward(x, W, A_stack, B_stack, base_idx, scale),
        "mixed": lambda: lab.batched_lora_forward(x, W, A_stack, B_stack, idx, scale),
        "per-row loop": lambda: x @ W.T + lab.lora_delta_loop(x, A_stack, B_stack, idx, scale),
        "materialized": lambda: materialized_forward(x, W, A_stack, B_stack, idx, scale),
    }


def check_agreement(calls: dict[str, Callable[[], np.ndarray]], rtol: float = 1e-3) -> None:
    """Every adapter path must compute the same layer before its time means anything."""
    ref = calls["materialized"]()
    for name in ("mixed", "per-row loop"):
        err = np.max(np.abs(calls[name]() - ref)) / np.max(np.abs(ref))
        if not err < rtol:
            raise SystemExit(f"bench: {name} disagrees with the materialized layer "
                             f"(max relative diff {err:.2e}); fix the lab before timing it")


def time_side_by_side(calls: dict[str, Callable[[], object]], repeats: int,
                      desc: str = "bench") -> dict[str, np.ndarray]:
    """Seconds per call for each path: every repeat runs all paths, in a rotated order."""
    names = list(calls)
    for call in calls.values():  # warm-up: page in the weights, let BLAS spin up its threads
        call()
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for i in tqdm(range(repeats), desc=desc, unit="round", file=sys.stderr, leave=False):
        for name in names[i % len(names):] + names[:i % len(names)]:
            t0 = time.perf_counter()
            calls[name]()
            seconds[name].append(time.perf_counter() - t0)
    return {name: np.asarray(s) for name, s in seconds.items()}


def machine() -> str:
    """Where the numbers come from: CPU, cores, load, numpy and its BLAS."""
    blas = "unknown BLAS"
    try:
        info = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        blas = f"{info['name']} {info['version']}"
    except Exception:  # noqa: BLE001 - the build info layout is numpy's to change
        pass
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    threads = os.environ[BLAS_THREAD_VARS[0]]
    return (f"{platform.machine()}, {os.cpu_count()} CPUs, load avg {load}; "
            f"Python {platform.python_version()}, numpy {np.__version__}, {blas}, "
            f"OPENBLAS_NUM_THREADS={threads}")


def round_ratios(times: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per round, each path's time over base-only's time in the same round.

    The paths of one round run back to back, so a round's ratio cancels the machine's load at
    that moment; a ratio of two medians taken across rounds would not.
    """
    return {name: s / times["base-only"] for name, s in times.items()}


def table(times: dict[str, np.ndarray], flop_limit: float) -> str:
    """Markdown: median, interquartile range and best time per path; median ratio to base-only."""
    ratios = round_ratios(times)
    lines = ["| path | median ms | p25–p75 ms | best ms | × base-only (median of rounds) |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for name, s in times.items():
        p25, p50, p75 = np.percentile(s, [25, 50, 75]) * 1e3
        lines.append(f"| {name} | {p50:.1f} | {p25:.1f}–{p75:.1f} | {s.min() * 1e3:.1f} "
                     f"| {np.median(ratios[name]):.3f} |")
    lines.append(f"| FLOP limit: 1 + lora_overhead | | | | {flop_limit:.4f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", type=int, default=64, help="batch rows T (default 64)")
    p.add_argument("--d-in", type=int, default=4096)
    p.add_argument("--d-out", type=int, default=4096)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--adapters", type=int, default=8, help="distinct adapters in the batch")
    p.add_argument("--repeats", type=int, default=15, help="rounds of all four paths")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    lab = load_impl(LAB)
    x, W, A_stack, B_stack = make_layer(args.tokens, args.d_in, args.d_out, args.rank,
                                        args.adapters, seed=args.seed)
    idx = mixed_idx(args.tokens, args.adapters, seed=args.seed)
    calls = paths(lab, x, W, A_stack, B_stack, idx)
    try:
        check_agreement(calls)
    except NotImplementedError as err:
        print(f"bench: {LAB} ({lab.__file__}) is not implemented yet: {err}", file=sys.stderr)
        return 1
    times = time_side_by_side(calls, args.repeats)

    n_base = int(np.sum(idx == -1))
    print(f"lab-01 bench: T={args.tokens}, d_in={args.d_in}, d_out={args.d_out}, "
          f"r={args.rank}, {args.adapters} adapters + {n_base} base rows, float32, "
          f"{args.repeats} rounds")
    print(f"implementation: {os.path.relpath(lab.__file__, REPO_ROOT)} (LAB_IMPL)")
    print(f"machine: {machine()}\n")
    print(table(times, 1 + lab.lora_overhead(args.d_in, args.d_out, args.rank)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
