"""Draw lab 04's figure from the implementation LAB_IMPL selects: figures/hit_rate_vs_slots.png.

Left: LRU hit rate against the slot count on seeded 80/20 traffic over 16 adapters.
Right: the cyclic thrash, a loop over 8 adapters: 0% until the whole loop fits.

    python phase-11-multi-lora/labs/lab-04-adapter-slot-cache/figures.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the backend

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[2]
OUT = HERE / "figures" / "hit_rate_vs_slots.png"
NUM_ADAPTERS, NUM_REQUESTS, SEED = 16, 10_000, 0  # the workload the tests pin
CYCLE, ROUNDS = 8, 50  # the thrash panel: adapters 0..7 in a loop, 50 times


def main() -> None:
    # this checkout's labkit first, never the one of another installed checkout
    sys.path.insert(0, str(REPO_ROOT))
    from labkit import load_lab  # the implementation LAB_IMPL selects (DEFAULT_IMPL when unset)

    lab = load_lab("lab-04")
    slots = list(range(1, NUM_ADAPTERS + 1))
    trace = lab.zipf_80_20_trace(NUM_ADAPTERS, NUM_REQUESTS, SEED)
    zipf_rates = [lab.simulate(trace, k).hit_rate for k in slots]
    cycle = list(range(CYCLE)) * ROUNDS
    cycle_rates = [lab.simulate(cycle, k).hit_rate for k in slots]

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    left.plot(slots, zipf_rates, "o-", color="tab:blue")
    left.axhline(0.75, ls="--", color="gray", lw=1)
    left.annotate(f"4 slots: {zipf_rates[3]:.1%}", (4, zipf_rates[3]), xytext=(6.5, 0.45),
                  arrowprops={"arrowstyle": "->", "color": "gray"})
    left.set_title(f"80/20 traffic, {NUM_ADAPTERS} adapters, {NUM_REQUESTS:,} requests")
    left.set_ylabel("LRU hit rate")

    right.plot(slots, cycle_rates, "o-", color="tab:red")
    right.axvline(CYCLE, ls=":", color="gray", lw=1)
    right.annotate(f"{CYCLE - 1} slots, loop of {CYCLE}: every request misses",
                   (CYCLE - 1, 0.0), xytext=(1.3, 0.35),
                   arrowprops={"arrowstyle": "->", "color": "gray"})
    right.set_title(f"cyclic trace over {CYCLE} adapters (LRU thrash)")

    for ax in (left, right):
        ax.set_xlabel("slots (max_loras)")
        ax.set_xticks([1, *range(2, NUM_ADAPTERS + 1, 2)])
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    OUT.parent.mkdir(exist_ok=True)
    fig.savefig(OUT, dpi=120)
    print(f"wrote {OUT.relative_to(HERE.parent.parent.parent)}")
    rates = ", ".join(f"{k}:{r:.3f}" for k, r in zip(slots, zipf_rates, strict=True))
    print(f"80/20 hit rate by slots: {rates}")


if __name__ == "__main__":
    main()
