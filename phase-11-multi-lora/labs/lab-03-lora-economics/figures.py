"""Draw the lab's figure from the implementation LAB_IMPL selects: figures/fleet_and_slots.png.

Left: GPUs needed against tenants, one dedicated GPU per tenant vs multi-LoRA engines of
``max_loras`` slots. Right: what one engine pre-allocates for its slots as ``max_lora_rank``
grows, for q,k,v,o and all-linear targets (Llama-2-7B, fp16, 8 slots), against the size of
the weights themselves.

Run: python phase-11-multi-lora/labs/lab-03-lora-economics/figures.py
Nothing here is random: the figure is a pure function of the lab's formulas.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first

REPO_ROOT = Path(__file__).resolve().parents[3]
OUT = Path(__file__).resolve().parent / "figures" / "fleet_and_slots.png"
SLOT_COUNTS = (4, 8, 16)
RANKS = (8, 16, 32, 64, 128, 256)  # values vLLM accepts for max_lora_rank


def draw(econ) -> plt.Figure:
    fig, (fleet, slots) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")

    tenants = list(range(0, 201))
    fleet.plot(tenants, tenants, color="0.35", label="dedicated: one GPU per tenant")
    for max_loras in SLOT_COUNTS:
        engines = [econ.engines_needed(t, max_loras) for t in tenants]
        fleet.step(tenants, engines, where="post", label=f"multi-LoRA, max_loras = {max_loras}")
    fleet.annotate(f"100 tenants, 8 slots:\n{econ.engines_needed(100, 8)} GPUs "
                   f"({econ.gpus_saved(100, 8)} saved)", xy=(100, econ.engines_needed(100, 8)),
                   xytext=(110, 60), arrowprops={"arrowstyle": "->", "color": "0.3"})
    fleet.set(xlabel="tenants (one LoRA adapter each)", ylabel="GPUs (one engine per GPU)",
              title="GPUs needed: dedicated vs consolidated")
    fleet.legend(loc="upper left", fontsize=8)
    fleet.grid(alpha=0.3)

    shape = econ.LLAMA2_7B
    for label, targets in (("all-linear (vLLM default)", "all-linear"),
                           ("q,k,v,o", ("q", "k", "v", "o"))):
        gib = [econ.to_gib(econ.slot_reservation_bytes(shape, 8, r, targets)) for r in RANKS]
        slots.plot(RANKS, gib, marker="o", label=label)
    weights = econ.to_gib(econ.base_bytes(shape))
    slots.axhline(weights, color="0.35", linestyle="--")
    slots.text(RANKS[0], weights * 0.97, f"the 7B weights themselves: {weights:.2f} GiB",
               va="top", fontsize=8, color="0.3")
    slots.set_xticks(RANKS[1:], [str(r) for r in RANKS[1:]])  # 8 would collide with 16
    slots.set(xlabel="max_lora_rank", ylabel="slot buffers per engine (GiB)",
              title="Llama-2-7B, fp16, max_loras = 8: linear in rank")
    slots.legend(loc="center left", fontsize=8)
    slots.grid(alpha=0.3)
    return fig


def main() -> None:
    # this checkout's labkit first, never the one of another installed checkout
    sys.path.insert(0, str(REPO_ROOT))
    from labkit import load_lab  # the implementation LAB_IMPL selects (DEFAULT_IMPL when unset)

    OUT.parent.mkdir(exist_ok=True)
    draw(load_lab("lab-03")).savefig(OUT, dpi=120)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
