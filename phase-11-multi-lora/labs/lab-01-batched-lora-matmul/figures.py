"""Draw lab 01's figure: layer time vs the number of distinct adapters in a 64-row batch.

Mixed (one base matmul + a shrink/expand per adapter group), the per-row loop and the
materialized ``W + s*B@A`` per group, beside the base-only floor, all timed side by side with
``bench.py``'s helpers at T=64, d_in=d_out=2048, r=16, float32 (half the bench's width, to keep
the run near a minute; the ratios are what carry over). Timings depend on the machine; the seed
fixes the data.

    python phase-11-multi-lora/labs/lab-01-batched-lora-matmul/figures.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import bench  # first: it pins BLAS threads before numpy loads and puts the repo on sys.path
import matplotlib
import numpy as np

from labkit import load_impl

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402

HERE = Path(__file__).resolve().parent
OUT = HERE / "figures" / "time_vs_adapters.png"
T, D_IN, D_OUT, RANK = 64, 2048, 2048, 16
ADAPTER_COUNTS = [1, 2, 4, 8, 16, 32, 64]
REPEATS = 7
SEED = 0
STYLE = {  # path: (label, matplotlib format)
    "base-only": ("base-only batch (the floor)", "k--"),
    "mixed": ("mixed: batched_lora_forward", "o-"),
    "per-row loop": ("x @ W.T + per-row loop", "s-"),
    "materialized": ("materialized W + s·B·A per group", "^-"),
}


def measure(lab) -> tuple[dict[str, list[float]], dict[str, np.ndarray]]:
    """Per adapter count: median ms per path, and the quartiles of its per-round ratio to
    base-only (rows: p25, p50, p75; columns: adapter counts).

    Every row of the batch uses an adapter (no base rows), so k = 64 is one row per adapter.
    """
    x, W, A_stack, B_stack = bench.make_layer(T, D_IN, D_OUT, RANK, max(ADAPTER_COUNTS),
                                              seed=SEED)
    medians: dict[str, list[float]] = {name: [] for name in STYLE}
    quartiles: dict[str, list[np.ndarray]] = {name: [] for name in STYLE}
    for k in ADAPTER_COUNTS:
        idx = bench.mixed_idx(T, k, with_base=False, seed=SEED)
        times = bench.time_side_by_side(bench.paths(lab, x, W, A_stack, B_stack, idx), REPEATS,
                                        desc=f"{k:>2} adapters")
        for name, ratio in bench.round_ratios(times).items():
            medians[name].append(float(np.median(times[name])) * 1e3)
            quartiles[name].append(np.percentile(ratio, [25, 50, 75]))
    return medians, {name: np.stack(q, axis=1) for name, q in quartiles.items()}


def draw(medians: dict[str, list[float]], ratios: dict[str, np.ndarray], flop_limit: float,
         where: str) -> plt.Figure:
    """Left: time per layer (log). Right: the adapter paths as multiples of base-only, with the
    interquartile range of the per-round ratios as error bars."""
    fig, (ax_t, ax_r) = plt.subplots(1, 2, figsize=(11, 4.6), layout="constrained")
    fig.get_layout_engine().set(rect=(0, 0.04, 1, 0.96))  # room for the machine note
    for name, (label, fmt) in STYLE.items():
        ax_t.plot(ADAPTER_COUNTS, medians[name], fmt, label=label, markersize=5)
        if name != "base-only":
            p25, p50, p75 = ratios[name]
            ax_r.errorbar(ADAPTER_COUNTS, p50, yerr=(p50 - p25, p75 - p50), fmt=fmt,
                          label=label, markersize=5, capsize=3)
    ax_r.axhline(flop_limit, color="0.4", lw=1, ls=":",
                 label=f"FLOP limit 1 + lora_overhead = {flop_limit:.4f}")
    ax_t.set(yscale="log", ylabel="median time per layer (ms)", title="time per layer")
    ax_r.set(yscale="log", ylabel="× base-only (per-round ratio: median, p25–p75)",
             title="cost over a base-only batch")
    for ax in (ax_t, ax_r):
        ax.set_xscale("log")
        ax.set_xticks(ADAPTER_COUNTS, [str(k) for k in ADAPTER_COUNTS])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(f"distinct adapters in the batch (T = {T} rows, none base-only)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
    fig.suptitle(f"One layer: d_in = d_out = {D_IN}, r = {RANK}, float32")
    fig.text(0.01, 0.01, f"{REPEATS} side-by-side rounds per point; {where}",
             fontsize=7, color="0.35", ha="left", va="bottom")
    return fig


def main() -> int:
    lab = load_impl("lab-01")
    medians, ratios = measure(lab)
    OUT.parent.mkdir(exist_ok=True)
    flop_limit = 1 + lab.lora_overhead(D_IN, D_OUT, RANK)
    draw(medians, ratios, flop_limit, bench.machine()).savefig(OUT, dpi=150)
    print("adapters:     " + "".join(f"{k:>16}" for k in ADAPTER_COUNTS))
    for name in STYLE:
        cells = "".join(f"{ms:>9.1f} ({r:5.2f}x)"
                        for ms, r in zip(medians[name], ratios[name][1], strict=True))
        print(f"{name:<13} " + cells)
    print(f"wrote {OUT.relative_to(HERE.parents[2])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
