"""The README's tables, printed as markdown from the lab's own functions.

Run ``python phase-11-multi-lora/labs/lab-03-lora-economics/tables.py`` and paste the output
into the README; ``test_readme_tables_match_the_code`` fails when a table goes stale. Each
function takes the implementation module (``econ``) so the test can pass the reference in.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import ModuleType

REPO_ROOT = Path(__file__).resolve().parents[3]

TENANTS = (10, 100, 1000)
SLOTS = 8  # max_loras per engine in every table
FLEET_TENANTS = 100  # the blast radius is priced on this fleet of section 5
# meta-llama/Llama-3.2-1B's config.json: GQA and a tied lm_head (as in test_lab.py)
LLAMA32_1B = dict(hidden=2048, intermediate=8192, layers=16, heads=32, kv_heads=8, vocab=128256,
                  tie_word_embeddings=True, head_dim=64)
RANKS = (8, 16, 64)
TARGET_SETS = {"q,v": ("q", "v"), "q,k,v,o": ("q", "k", "v", "o"), "all-linear": "all-linear"}
# vLLM #28761, the log's only source: Qwen3-30B-A3B at TP 4, --max-loras 16 --max-lora-rank 32,
# "Model loading took X GiB" per rank; each layout pair (attention, experts) beside the logged
# figure it would have to explain
MOE_DEPLOYMENT = dict(max_loras=16, max_lora_rank=32, tp=4)
MOE_LOGGED_GIB = {("default", "default"): 53.9761, ("fully_sharded", "default"): 53.9761,
                  ("fully_sharded", "fully_sharded"): 26.9761}
MOE_LAYOUTS = (("default", "default"), ("fully_sharded", "default"),
               ("fully_sharded", "fully_sharded"))


def markdown(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table: first column left-aligned (labels), the rest right-aligned (figures)."""
    rule = "| :--- |" + "".join(" ---: |" for _ in header[1:])
    lines = ["| " + " | ".join(header) + " |", rule]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def cfo_table(econ: ModuleType) -> str:
    """Dedicated (one fp16 Llama-2-7B per tenant) vs multi-LoRA engines of 8 rank-16 slots."""
    shape = econ.LLAMA2_7B
    per_dedicated = econ.base_bytes(shape)
    per_engine = per_dedicated + econ.slot_reservation_bytes(shape, SLOTS, 16)
    rows = []
    for tenants in TENANTS:
        engines = econ.engines_needed(tenants, SLOTS)
        rows.append([
            f"{tenants:,}", f"{tenants:,}", f"{econ.to_gib(tenants * per_dedicated):,.0f} GiB",
            f"{engines:,}", f"{econ.to_gib(engines * per_engine):,.0f} GiB",
            f"{econ.gpus_saved(tenants, SLOTS):,}", f"{engines / tenants:.1%}",
        ])
    return markdown(["tenants", "dedicated GPUs", "dedicated weights", "multi-LoRA GPUs",
                     "multi-LoRA weights + slots", "GPUs saved", "fleet size vs dedicated"], rows)


def adapter_table(econ: ModuleType) -> str:
    """Llama-2-7B adapter size in MiB by target set and rank (fp16)."""
    rows = [[name] + [f"{econ.to_mib(econ.adapter_bytes(econ.LLAMA2_7B, r, t)):g} MiB"
                      for r in RANKS]
            for name, t in TARGET_SETS.items()]
    return markdown(["targets"] + [f"r = {r}" for r in RANKS], rows)


def blast_radius_table(econ: ModuleType) -> str:
    """Fleet-wide bytes added by raising max_lora_rank from 16, on the 100-tenant fleet."""
    engines = econ.engines_needed(FLEET_TENANTS, SLOTS)
    rows = []
    for name in ("q,k,v,o", "all-linear"):
        targets = TARGET_SETS[name]
        per_engine = econ.slot_reservation_bytes(econ.LLAMA2_7B, SLOTS, 16, targets)
        row = [name, f"{econ.to_gib(per_engine):.2f} GiB"]
        for new_rank in (32, 64, 128):
            extra = econ.rank_blast_radius(econ.LLAMA2_7B, engines, SLOTS, 16, new_rank, targets)
            row.append(f"+{econ.to_gib(extra):.2f} GiB")
        rows.append(row)
    return markdown([f"engine targets ({engines} engines x {SLOTS} slots)",
                     "slots per engine at r = 16", "16 → 32", "16 → 64", "16 → 128"], rows)


def base_table(econ: ModuleType) -> str:
    """Section 1: base sizes of the three reference models, in every unit."""
    shapes = {"Llama-2-7B": econ.LLAMA2_7B, "Llama-3-8B": econ.LLAMA3_8B,
              "Llama-3.2-1B (tied lm_head)": econ.ModelShape(**LLAMA32_1B)}
    rows = [[name, f"{econ.base_params(shape):,}", f"{econ.base_bytes(shape):,}",
             f"{econ.to_gib(econ.base_bytes(shape)):.2f} GiB",
             f"{econ.to_gb(econ.base_bytes(shape)):.2f} GB"] for name, shape in shapes.items()]
    return markdown(["model", "`base_params`", "fp16 bytes", "GiB", "GB"], rows)


SHAPE_FIELDS = ("hidden", "intermediate", "layers", "heads", "kv_heads", "vocab",
                "tie_word_embeddings", "head_dim")  # ModelShape's, as its docstring lists them


def reshaped(econ: ModuleType, shape, **changes):
    """``shape`` with ``changes``, built by the lab's ``ModelShape``: where the lab runs in a
    worker, ``shape`` is a handle, not a dataclass, so ``dataclasses.replace`` cannot take it."""
    return econ.ModelShape(**({f: getattr(shape, f) for f in SHAPE_FIELDS} | changes))


def miscount_table(econ: ModuleType) -> str:
    """Section 1: the parameters a miscount adds, from the count itself."""
    gqa, tied = econ.LLAMA3_8B, econ.ModelShape(**LLAMA32_1B)
    square = reshaped(econ, gqa, kv_heads=gqa.heads)
    untied = reshaped(econ, tied, tie_word_embeddings=False)
    rows = [["Llama-3-8B, `k_proj` and `v_proj` counted square",
             f"+{econ.base_params(square) - econ.base_params(gqa):,}"],
            ["Llama-3.2-1B, the tied `lm_head` counted anyway",
             f"+{econ.base_params(untied) - econ.base_params(tied):,}"]]
    return markdown(["miscount", "phantom parameters"], rows)


def reference_adapter_table(econ: ModuleType) -> str:
    """Section 2: the phase's reference adapter (rank 16, q,k,v,o of Llama-2-7B) in every unit."""
    nbytes = econ.adapter_bytes(econ.LLAMA2_7B, 16)
    rows = [["`lora_params`", f"{econ.lora_params(econ.LLAMA2_7B, 16):,}"],
            ["`adapter_bytes` (fp16)", f"{nbytes:,}"],
            ["in MiB / GiB / GB", f"{econ.to_mib(nbytes):g} MiB / {econ.to_gib(nbytes):.4g} GiB / "
                                  f"{econ.to_gb(nbytes):.4g} GB"],
            ["`adapters_per_gib`", f"{econ.adapters_per_gib(nbytes)}"],
            ["`size_ratio` (base / adapter, consistent)",
             f"{econ.size_ratio(econ.LLAMA2_7B, 16):.1f}x"]]
    return markdown(["the reference adapter", "value"], rows)


def slot_table(econ: ModuleType) -> str:
    """Section 4: one engine's reservation, 8 all-linear slots of Llama-2-7B, against the base."""
    base = econ.base_bytes(econ.LLAMA2_7B)
    rows = []
    for rank in (16, 256):
        nbytes = econ.slot_reservation_bytes(econ.LLAMA2_7B, SLOTS, rank)
        size = (f"{econ.to_mib(nbytes):,.0f} MiB" if nbytes < econ.GiB
                else f"{econ.to_gib(nbytes):.2f} GiB")
        rows.append([f"r = {rank}", size, f"{nbytes / base:.1%}"])
    return markdown([f"{SLOTS} all-linear slots", "`slot_reservation_bytes`",
                     "of the base weights"], rows)


def readings_table(econ: ModuleType) -> str:
    """Every reading of "base / adapter" for Llama-2-7B, rank 16, q,k,v,o."""
    rows = [[f"`{r.name}`", r.division, f"{r.ratio:.1f}x", r.why]
            for r in econ.ratio_readings()]
    return markdown(["reading", "division", "ratio", "what it is"], rows)


def moe_reconciliation_table(econ: ModuleType) -> str:
    """Per-rank prediction for each layout pair beside the #28761 log, and the residual."""
    shape, d = econ.QWEN3_30B_A3B, MOE_DEPLOYMENT
    base = econ.moe_base_params(shape) * 2 // d["tp"]
    rows = []
    for attention, experts in MOE_LAYOUTS:
        parts = [econ.sharded_slot_bytes(shape, d["max_loras"], d["max_lora_rank"], d["tp"],
                                         layout, targets)
                 for layout, targets in ((attention, econ.ATTENTION_TARGETS),
                                         (experts, econ.EXPERT_TARGETS))]
        predicted = econ.model_loading_bytes(shape, d["max_loras"], d["max_lora_rank"], d["tp"],
                                             attention, experts)
        logged = MOE_LOGGED_GIB[attention, experts]
        rows.append([f"`{attention}` / `{experts}`", f"{econ.to_gib(base):.4f}",
                     f"{econ.to_gib(parts[0]):.4f}", f"{econ.to_gib(parts[1]):.4f}",
                     f"{econ.to_gib(predicted):.4f}", f"{logged}",
                     f"{logged - econ.to_gib(predicted):+.4f}"])
    return markdown(["attention / experts", "base / tp", "attention slots", "expert slots",
                     "predicted GiB", "logged GiB", "residual"], rows)


def moe_left_out_table(econ: ModuleType) -> str:
    """What the rules leave out, per rank, as vLLM 0.32 allocates it for the #28761 deployment."""
    shape, d = econ.QWEN3_30B_A3B, MOE_DEPLOYMENT
    h, e, n, tp = shape.hidden, shape.num_experts, shape.layers, d["tp"]
    slots = d["max_loras"] * d["max_lora_rank"]
    whole = 2 * (n * (h * e + 2 * h) + h)  # router and norms, bf16, on every rank
    items = [
        ("router and norms kept whole on every rank (beyond their 1/tp share)",
         whole - whole // tp),
        ("router slots (vLLM wraps the router: A (r, hidden) and B (experts, r), whole)",
         2 * n * slots * (h + e)),
        ("lm_head slots (LogitsProcessorWithLoRA: A (r, hidden) and B (vocab, r), whole)",
         2 * slots * (h + shape.vocab)),
        ("embed_tokens slots (A (vocab, r) and B (hidden, r), whole)",
         2 * slots * (shape.vocab + h)),
    ]
    rows = [[what, f"{econ.to_gib(nbytes):.4f}"] for what, nbytes in items]
    rows.append(["together", f"{econ.to_gib(sum(nbytes for _, nbytes in items)):.4f}"])
    return markdown(["left out", "GiB per rank"], rows)


def all_tables(econ: ModuleType) -> dict[str, str]:
    return {"base": base_table(econ), "miscounts": miscount_table(econ),
            "reference adapter": reference_adapter_table(econ), "slots": slot_table(econ),
            "cfo": cfo_table(econ), "adapters": adapter_table(econ),
            "blast radius": blast_radius_table(econ), "readings": readings_table(econ),
            "moe reconciliation": moe_reconciliation_table(econ),
            "moe left out": moe_left_out_table(econ)}


def main() -> None:
    # this checkout's labkit first, never the one of another installed checkout
    sys.path.insert(0, str(REPO_ROOT))
    from labkit import load_lab  # the implementation LAB_IMPL selects (DEFAULT_IMPL when unset)

    econ = load_lab("lab-03")
    print(f"<!-- tables from {os.path.relpath(econ.__file__, REPO_ROOT)} (LAB_IMPL) -->\n")
    for name, table in all_tables(econ).items():
        print(f"<!-- table: {name} -->\n{table}\n")


if __name__ == "__main__":
    main()
