"""Lab 03 spec, section 6: LoRA slots on a mixture-of-experts model, at a tensor-parallel degree.

A real engine log, reconciled from first principles: vLLM #28761, Qwen3-30B-A3B at TP 4 with
``--max-loras 16 --max-lora-rank 32`` logged "Model loading took 53.9761 GiB" per rank, and
26.9761 GiB once its MoE LoRA was fully sharded. The layouts below are vLLM 0.32's
(``vllm/lora/layers/fused_moe.py``, ``column_parallel_linear.py``, ``row_parallel_linear.py``);
shapes are drawn from the ``seed`` fixture, expectations written out as the counts they stand for.
"""

from __future__ import annotations

import random

import pytest

from labkit.refusals import assert_refused, shows_value

GiB = 2**30  # the test's own unit, independent of the student's

# Qwen/Qwen3-30B-A3B config.json, the fields the count needs (README section 6 says where from)
QWEN3_30B_A3B_CONFIG = {
    "model_type": "qwen3_moe", "hidden_size": 2048, "intermediate_size": 6144,
    "moe_intermediate_size": 768, "num_hidden_layers": 48, "num_attention_heads": 32,
    "num_key_value_heads": 4, "head_dim": 128, "num_experts": 128, "num_experts_per_tok": 8,
    "vocab_size": 151936, "tie_word_embeddings": False, "decoder_sparse_step": 1,
    "mlp_only_layers": [],
}
# vLLM #28761: one deployment, two logs of "Model loading took X GiB" (per rank, 4 decimals)
MAX_LORAS, MAX_LORA_RANK, TP = 16, 32, 4
LOGGED_GIB = {"experts default": 53.9761, "experts fully sharded": 26.9761}
# The rules leave out only allocations (README section 6: the router and norms kept whole, the
# router, lm_head and embedding slots, LoRA metadata buffers): the log may exceed the prediction
# by their sum, under half a GiB per rank here, and can never fall below it.
LOADING_SLACK_GIB = 0.5
PUBLISHED_ROUNDING = 0.05e9  # "30.5B" on the model card: three significant figures

ATTENTION = ("q", "k", "v", "o")
EXPERTS = ("gate", "up", "down")
COLUMN_PARALLEL = ("q", "k", "v", "gate", "up")  # vLLM splits d_out across ranks


def layer_dims(h: int, i: int, heads: int, kv: int, hd: int) -> dict[str, tuple[int, int]]:
    """(d_in, d_out) per target: the test's own inventory of one decoder layer."""
    return {"q": (h, heads * hd), "k": (h, kv * hd), "v": (h, kv * hd), "o": (heads * hd, h),
            "gate": (h, i), "up": (h, i), "down": (i, h)}


def rank_slot_params(dims, rank: int, tp: int, sharded: bool, experts: int, targets) -> int:
    """One layer's slot parameters on one rank, per vLLM 0.32's stacked LoRA tensors.

    Column-parallel: B (d_out / tp, r); A (r, d_in), or (r / tp, d_in) fully sharded.
    Row-parallel: A (r, d_in / tp); B (d_out, r), or (d_out / tp, r) fully sharded.
    """
    total = 0
    for target in targets:
        d_in, d_out = dims[target]
        if target in COLUMN_PARALLEL:
            a, b = (rank // tp if sharded else rank) * d_in, d_out // tp * rank
        else:
            a, b = rank * (d_in // tp), (d_out // tp if sharded else d_out) * rank
        total += (experts if target in EXPERTS else 1) * (a + b)
    return total


def draw_moe(rng: random.Random) -> dict:
    """A small MoE shape whose every split dimension is a multiple of 4 (tp in 1, 2, 4)."""
    kv = rng.choice([1, 2, 4])
    return dict(hidden=4 * rng.randint(2, 16), intermediate=4 * rng.randint(1, 12),
                layers=rng.randint(1, 4), heads=kv * rng.choice([1, 2, 4]), kv_heads=kv,
                vocab=rng.randint(10, 500), head_dim=4 * rng.randint(1, 8),
                num_experts=rng.randint(1, 9), experts_per_token=1)


def dims_of(spec: dict) -> dict[str, tuple[int, int]]:
    return layer_dims(spec["hidden"], spec["intermediate"], spec["heads"], spec["kv_heads"],
                      spec["head_dim"])


def moe_params(spec: dict) -> int:
    """The test's own parameter count of an MoE shape: attention, every expert, the router, two
    norms per layer; embeddings, final norm and lm_head (counted once when tied)."""
    dims, e, h = dims_of(spec), spec["num_experts"], spec["hidden"]
    attention = sum(dims[t][0] * dims[t][1] for t in ATTENTION)
    experts = e * sum(dims[t][0] * dims[t][1] for t in EXPERTS)
    heads = 1 if spec.get("tie_word_embeddings") else 2
    return heads * spec["vocab"] * h + spec["layers"] * (attention + experts + h * e + 2 * h) + h


QWEN3_DIMS = layer_dims(2048, 768, 32, 4, 128)  # hidden, expert width, heads, kv heads, head_dim


# --- the shape ----------------------------------------------------------------------------------


@pytest.mark.structural
def test_qwen3_30b_a3b_reads_from_its_config(lab):
    shape = lab.MoEShape.from_hf_config(QWEN3_30B_A3B_CONFIG)
    assert shape == lab.QWEN3_30B_A3B, "QWEN3_30B_A3B must be what its config.json reads as"
    assert (shape.intermediate, shape.num_experts, shape.head_dim) == (768, 128, 128), \
        "intermediate is one expert's width (moe_intermediate_size), head_dim as given"
    with pytest.raises(ValueError, match="model_type"):
        lab.MoEShape.from_hf_config({**QWEN3_30B_A3B_CONFIG, "model_type": "llama"})
    with pytest.raises(ValueError, match="mlp_only_layers"):
        lab.MoEShape.from_hf_config({**QWEN3_30B_A3B_CONFIG, "mlp_only_layers": [0]})
    with pytest.raises(ValueError, match="decoder_sparse_step"):
        lab.MoEShape.from_hf_config({**QWEN3_30B_A3B_CONFIG, "decoder_sparse_step": 2})
    with pytest.raises(ValueError, match="num_experts"):
        lab.MoEShape.from_hf_config({k: v for k, v in QWEN3_30B_A3B_CONFIG.items()
                                     if k != "num_experts"})


@pytest.mark.structural
def test_moe_config_reads_the_optional_keys_as_the_dense_config_does(lab):
    for dropped, tied in (("num_key_value_heads", True), ("head_dim", False), (None, True)):
        cfg = {k: v for k, v in QWEN3_30B_A3B_CONFIG.items() if k != dropped}
        cfg["tie_word_embeddings"] = tied
        moe = lab.MoEShape.from_hf_config(cfg)
        dense = lab.ModelShape.from_hf_config({**cfg, "model_type": "llama",
                                               "intermediate_size": 768})
        for name in ("hidden", "intermediate", "layers", "heads", "kv_heads", "vocab",
                     "tie_word_embeddings", "head_dim"):
            assert getattr(moe, name) == getattr(dense, name), (
                f"without {dropped}, tie_word_embeddings={tied}: {name} must read as "
                f"ModelShape.from_hf_config reads it, {getattr(moe, name)!r} != "
                f"{getattr(dense, name)!r}")
        assert (moe.num_experts, moe.experts_per_token) == (128, 8)


def test_qwen3_30b_a3b_has_30_5b_params(lab):
    h, i, n, vocab, e, q, kv = 2048, 768, 48, 151936, 128, 32 * 128, 4 * 128
    per_layer = 2 * h * q + 2 * h * kv + e * 3 * h * i + h * e + 2 * h  # attention, experts,
    expected = 2 * vocab * h + n * per_layer + h                         # router, two norms
    got = lab.moe_base_params(lab.QWEN3_30B_A3B)
    assert got == expected, f"moe_base_params(Qwen3-30B-A3B) = {got:,}, expected {expected:,}"
    assert abs(got - 30.5e9) <= PUBLISHED_ROUNDING, f"published as 30.5B, got {got:,}"


def test_moe_base_params_counts_every_expert_and_the_router(lab, seed):
    rng = random.Random(seed)
    for _ in range(20):
        spec = draw_moe(rng)
        dims, e, h = dims_of(spec), spec["num_experts"], spec["hidden"]
        attention = sum(dims[t][0] * dims[t][1] for t in ATTENTION)
        experts = e * sum(dims[t][0] * dims[t][1] for t in EXPERTS)
        expected = (2 * spec["vocab"] * h + spec["layers"] * (attention + experts + h * e + 2 * h)
                    + h)
        got = lab.moe_base_params(lab.MoEShape(**spec))
        assert got == expected, f"moe_base_params({spec}) = {got:,}, expected {expected:,}"


def test_experts_per_token_is_compute_and_a_tied_head_is_counted_once(lab, seed):
    rng = random.Random(seed)
    for _ in range(10):
        spec, tp = draw_moe(rng), rng.choice([1, 2, 4])
        loras, rank = rng.randint(1, 4), 4 * rng.randint(1, 8)
        top1 = lab.MoEShape(**spec)
        want = (lab.moe_base_params(top1), lab.sharded_slot_bytes(top1, loras, rank, tp),
                lab.model_loading_bytes(top1, loras, rank, tp))
        for k in range(2, spec["num_experts"] + 1):
            topk = lab.MoEShape(**{**spec, "experts_per_token": k})
            got = (lab.moe_base_params(topk), lab.sharded_slot_bytes(topk, loras, rank, tp),
                   lab.model_loading_bytes(topk, loras, rank, tp))
            assert got == want, (f"{spec}, experts_per_token={k}: top-k sets compute, not "
                                 f"memory; (params, slot bytes, loading bytes) {got} != {want}")
        untied = want[0]
        tied = lab.moe_base_params(lab.MoEShape(**{**spec, "tie_word_embeddings": True}))
        assert tied == untied - spec["vocab"] * spec["hidden"], (
            f"{spec}: a tied lm_head is the embedding, counted once as in base_params: "
            f"{tied:,} != {untied:,} - vocab x hidden")


# --- slots per rank -------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["default", "fully_sharded"])
def test_one_rank_holds_the_whole_reservation(lab, seed, layout):
    rng = random.Random(seed)
    for _ in range(10):
        spec = {**draw_moe(rng), "num_experts": 1}
        dense = lab.ModelShape(**{k: v for k, v in spec.items()
                                  if k not in ("num_experts", "experts_per_token")})
        loras, rank = rng.randint(1, 8), rng.choice([1, 8, 16])
        got = lab.sharded_slot_bytes(dense, loras, rank, 1, layout)
        expected = loras * spec["layers"] * 2 * sum(rank * (d_in + d_out)
                                                    for d_in, d_out in dims_of(spec).values())
        assert got == expected, (f"{spec}, tp=1, {layout}: one rank holds every slot's A and B "
                                 f"over every linear, {got:,} != {expected:,}")
        want = lab.slot_reservation_bytes(dense, loras, rank)
        assert got == want, f"tp=1, {layout}: a rank holds slot_reservation_bytes, {got} != {want}"


@pytest.mark.parametrize("layout", ["default", "fully_sharded"])
def test_one_rank_of_an_moe_holds_every_expert_slot(lab, seed, layout):
    rng = random.Random(seed)
    for _ in range(10):
        spec = draw_moe(rng)
        loras, rank, dtype_bytes = rng.randint(1, 8), rng.choice([1, 8, 16]), rng.choice([1, 2, 4])
        dims, e = dims_of(spec), spec["num_experts"]
        want = loras * spec["layers"] * dtype_bytes * sum(
            (e if t in EXPERTS else 1) * rank * (dims[t][0] + dims[t][1])
            for t in ATTENTION + EXPERTS)
        got = lab.sharded_slot_bytes(lab.MoEShape(**spec), loras, rank, 1, layout,
                                     dtype_bytes=dtype_bytes)
        assert got == want, (f"{spec}, tp=1, {layout}: one rank holds the whole reservation "
                             f"with every expert's A and B, {got:,} != {want:,}")


def test_default_layout_splits_one_factor_per_linear(lab, seed):
    rng = random.Random(seed)
    for _ in range(20):
        spec, tp = draw_moe(rng), rng.choice([1, 2, 4])
        loras, rank = rng.randint(1, 4), 4 * rng.randint(1, 8)
        expected = (loras * spec["layers"] * 2
                    * rank_slot_params(dims_of(spec), rank, tp, False, spec["num_experts"],
                                       ATTENTION + EXPERTS))
        got = lab.sharded_slot_bytes(lab.MoEShape(**spec), loras, rank, tp, "default")
        assert got == expected, (
            f"{spec}, max_loras={loras}, rank={rank}, tp={tp}, default layout: got {got:,}, "
            f"expected {expected:,} (column-parallel B and row-parallel A split, the rest whole)")


def test_fully_sharded_puts_every_slot_byte_on_one_rank(lab, seed):
    rng = random.Random(seed)
    for _ in range(20):
        spec, tp = draw_moe(rng), rng.choice([2, 4])
        loras, rank = rng.randint(1, 4), 4 * rng.randint(1, 8)
        shape = lab.MoEShape(**spec)
        whole = lab.sharded_slot_bytes(shape, loras, rank, 1, "fully_sharded")
        per_rank = lab.sharded_slot_bytes(shape, loras, rank, tp, "fully_sharded")
        assert per_rank * tp == whole, (
            f"{spec}, tp={tp}: fully sharded, the ranks together hold the reservation once: "
            f"{tp} x {per_rank:,} != {whole:,}")
        expected = loras * spec["layers"] * 2 * rank_slot_params(
            dims_of(spec), rank, tp, True, spec["num_experts"], ATTENTION + EXPERTS)
        assert per_rank == expected
        default = lab.sharded_slot_bytes(shape, loras, rank, tp, "default")
        assert default > per_rank, "the default layout replicates a factor the other one splits"


def test_expert_slots_hold_one_a_and_b_per_expert(lab, seed):
    rng = random.Random(seed)
    spec = draw_moe(rng)
    one = lab.sharded_slot_bytes(lab.MoEShape(**{**spec, "num_experts": 1}), 2, 8, 2,
                                 "default", ("gate", "up", "down"))
    expected = 2 * spec["layers"] * 2 * rank_slot_params(dims_of(spec), 8, 2, False, 1, EXPERTS)
    assert one == expected, (f"{spec}, one expert, 2 slots of rank 8 at tp=2: gate, up and down "
                             f"hold {expected:,} bytes on a rank, got {one:,}")
    for e in (2, 7, 128):
        many = lab.sharded_slot_bytes(lab.MoEShape(**{**spec, "num_experts": e}), 2, 8, 2,
                                      "default", ["gate_up_proj", "down_proj"])
        assert many == e * one, f"{e} experts hold {e} x the expert slots of one: {many} != {e * one}"
    attention = lab.sharded_slot_bytes(lab.MoEShape(**{**spec, "num_experts": 9}), 2, 8, 2,
                                       "default", ("q", "k", "v", "o"))
    assert attention == 2 * spec["layers"] * 2 * rank_slot_params(dims_of(spec), 8, 2, False, 9,
                                                                  ATTENTION), \
        f"{spec}, 9 experts: q, k, v, o hold one A and B per slot, got {attention:,} bytes"
    assert attention == lab.sharded_slot_bytes(lab.MoEShape(**{**spec, "num_experts": 1}), 2, 8,
                                               2, "default", ("q", "k", "v", "o")), \
        "the experts do not multiply the attention slots"


def test_rank_share_is_linear_in_slots_rank_and_dtype(lab):
    shape = lab.QWEN3_30B_A3B
    one = lab.sharded_slot_bytes(shape, 1, 8, 4, "fully_sharded")
    expected = 48 * 2 * rank_slot_params(QWEN3_DIMS, 8, 4, True, 128, ATTENTION + EXPERTS)
    assert one == expected, (f"Qwen3-30B-A3B, one rank-8 slot fully sharded at tp=4: "
                             f"{expected:,} bytes per rank, got {one:,}")
    assert lab.sharded_slot_bytes(shape, 16, 8, 4, "fully_sharded") == 16 * one
    assert lab.sharded_slot_bytes(shape, 1, 32, 4, "fully_sharded") == 4 * one
    assert lab.sharded_slot_bytes(shape, 1, 8, 4, "fully_sharded", dtype_bytes=4) == 2 * one


# --- the log, reconciled --------------------------------------------------------------------------


def assert_reconciles(predicted: int, logged_gib: float, what: str) -> None:
    residual = logged_gib - predicted / GiB
    assert 0 <= residual <= LOADING_SLACK_GIB, (
        f"{what}: predicted {predicted / GiB:.4f} GiB per rank, logged {logged_gib} GiB; the "
        f"residual {residual:+.4f} GiB must lie in [0, {LOADING_SLACK_GIB}] (what the rules "
        f"leave out only adds memory)")


def test_the_fully_sharded_log_reconciles(lab):
    predicted = lab.model_loading_bytes(lab.QWEN3_30B_A3B, MAX_LORAS, MAX_LORA_RANK, TP,
                                        "fully_sharded")
    assert_reconciles(predicted, LOGGED_GIB["experts fully sharded"], "every slot fully sharded")


def test_the_larger_log_reconciles_with_only_the_experts_unsharded(lab):
    predicted = lab.model_loading_bytes(lab.QWEN3_30B_A3B, MAX_LORAS, MAX_LORA_RANK, TP,
                                        attention_layout="fully_sharded",
                                        expert_layout="default")
    assert_reconciles(predicted, LOGGED_GIB["experts default"],
                      "attention fully sharded, experts in the default layout")


def test_the_default_layout_everywhere_would_exceed_the_larger_log(lab):
    predicted = lab.model_loading_bytes(lab.QWEN3_30B_A3B, MAX_LORAS, MAX_LORA_RANK, TP,
                                        "default")
    assert predicted / GiB > LOGGED_GIB["experts default"], (
        f"default layout everywhere predicts {predicted / GiB:.4f} GiB: it must exceed the "
        f"logged {LOGGED_GIB['experts default']} GiB, so the logged run cannot have used it")
    assert predicted == lab.model_loading_bytes(lab.QWEN3_30B_A3B, MAX_LORAS, MAX_LORA_RANK, TP,
                                                "default", "default"), \
        "expert_layout=None means the attention layout"


def test_the_two_logs_differ_by_the_expert_slots_alone(lab):
    experts = [lab.sharded_slot_bytes(lab.QWEN3_30B_A3B, MAX_LORAS, MAX_LORA_RANK, TP, layout,
                                      EXPERTS) for layout in ("default", "fully_sharded")]
    logged = round(LOGGED_GIB["experts default"] - LOGGED_GIB["experts fully sharded"], 4)
    assert round((experts[0] - experts[1]) / GiB, 4) == logged, (
        f"the expert slots shrink by {(experts[0] - experts[1]) / GiB:.4f} GiB per rank when "
        f"fully sharded; the logs differ by {logged} GiB")


def test_model_loading_counts_the_base_share_and_both_slot_sets(lab, seed):
    rng = random.Random(seed)
    for _ in range(10):
        spec, tp = draw_moe(rng), rng.choice([1, 2, 4])
        loras, rank, dtype_bytes = rng.randint(1, 4), 4 * rng.randint(1, 8), rng.choice([1, 2, 4])
        shape = lab.MoEShape(**spec)
        attention_layout, expert_layout = rng.choice(["default", "fully_sharded"]), \
            rng.choice(["default", "fully_sharded"])
        base = lab.moe_base_params(shape) * dtype_bytes // tp
        dims = dims_of(spec)
        slots = loras * spec["layers"] * dtype_bytes * (
            rank_slot_params(dims, rank, tp, attention_layout == "fully_sharded", 1, ATTENTION)
            + rank_slot_params(dims, rank, tp, expert_layout == "fully_sharded",
                               spec["num_experts"], EXPERTS))
        got = lab.model_loading_bytes(shape, loras, rank, tp, attention_layout, expert_layout,
                                      dtype_bytes)
        assert got == base + slots, (
            f"{spec}, tp={tp}, dtype_bytes={dtype_bytes}, attention {attention_layout}, "
            f"experts {expert_layout}: got "
            f"{got:,}, expected base share {base:,} + slots {slots:,}")


# --- refusals ---------------------------------------------------------------------------------
# Each row starts from a valid call on arguments drawn from the seed, whose result the test
# computes itself, then replaces one argument: the error must name it and carry its value.

WIDTH_PRIMES = (3, 5, 7, 11, 13, 17, 19, 23)  # at most three of them divide a width <= 128


def refusal_draw(seed: int) -> dict:
    """The arguments of every valid call a refusal row starts from (tp divides every width)."""
    rng = random.Random(seed * 4099 + 17)
    spec = draw_moe(rng)
    targets = rng.sample(ATTENTION + EXPERTS, rng.randint(1, 7))
    # the width tp always splits, per target: q and o the heads', k and v the kv heads', the
    # experts' one expert's width
    split = {"q": spec["heads"] * spec["head_dim"], "o": spec["heads"] * spec["head_dim"],
             "k": spec["kv_heads"] * spec["head_dim"], "v": spec["kv_heads"] * spec["head_dim"],
             "gate": spec["intermediate"], "up": spec["intermediate"],
             "down": spec["intermediate"]}

    def not_dividing(names) -> int:
        primes = rng.sample(WIDTH_PRIMES, len(WIDTH_PRIMES))
        return next(p for p in primes if any(split[t] % p for t in names))

    return dict(spec=spec, targets=targets, tp=rng.choice([1, 2, 4]), loras=rng.randint(1, 4),
                rank=4 * rng.randint(1, 8), odd_rank=4 * rng.randint(0, 7) + rng.randint(1, 3),
                layout=rng.choice(["default", "fully_sharded"]),
                attention_layout=rng.choice(["default", "fully_sharded"]),
                expert_layout=rng.choice(["default", "fully_sharded"]),
                dtype_bytes=rng.choice([1, 2, 4]), bad_tp=not_dividing(targets),
                bad_tp_loading=not_dividing(ATTENTION + EXPERTS))


def moe_arguments(fn: str, n: dict) -> dict:
    """``fn``'s valid arguments, the shape as its spec."""
    slots = dict(shape=n["spec"], max_loras=n["loras"], max_lora_rank=n["rank"], tp=n["tp"])
    return {
        "moe_base_params": dict(shape=n["spec"]),
        "sharded_slot_bytes": dict(slots, layout=n["layout"], targets=list(n["targets"]),
                                   dtype_bytes=n["dtype_bytes"]),
        "model_loading_bytes": dict(slots, attention_layout=n["attention_layout"],
                                    expert_layout=n["expert_layout"],
                                    dtype_bytes=n["dtype_bytes"]),
    }[fn]


def moe_expected(fn: str, args: dict) -> int:
    """What ``fn`` returns on ``args``, from the test's own counts."""
    spec = args["shape"]
    if fn == "moe_base_params":
        return moe_params(spec)
    dims, e, tp = dims_of(spec), spec["num_experts"], args["tp"]

    def slots(layout: str, targets) -> int:
        return (args["max_loras"] * spec["layers"] * args["dtype_bytes"]
                * rank_slot_params(dims, args["max_lora_rank"], tp, layout == "fully_sharded", e,
                                   targets))

    if fn == "sharded_slot_bytes":
        return slots(args["layout"], args["targets"])
    return (moe_params(spec) * args["dtype_bytes"] // tp
            + slots(args["attention_layout"], ATTENTION) + slots(args["expert_layout"], EXPERTS))


def dense_of(lab, n: dict):
    """The seeded shape without its experts: a ``ModelShape``, not a ``MoEShape``."""
    return lab.ModelShape(**{k: v for k, v in n["spec"].items()
                             if k not in ("num_experts", "experts_per_token")})


# case: (function, overrides of its valid arguments, the argument replaced, its bad value, the
# error, the texts of which the message must carry one; None: the value as ``shows_value`` and,
# for a ValueError, its repr or str only)
BAD_CALLS = {
    "unknown layout": ("sharded_slot_bytes", {}, "layout", lambda lab, n: "s-lora", ValueError,
                       None),
    "tp not dividing a width": ("sharded_slot_bytes", {}, "tp", lambda lab, n: n["bad_tp"],
                                ValueError, None),
    # tp=4 divides every width of a drawn shape, not the rank; a valid call at tp=1
    "tp not dividing the rank": ("sharded_slot_bytes",
                                 lambda n: dict(layout="fully_sharded", tp=1,
                                                max_lora_rank=n["odd_rank"],
                                                targets=list(ATTENTION + EXPERTS)),
                                 "tp", lambda lab, n: 4, ValueError, None),
    "zero tp": ("sharded_slot_bytes", {}, "tp", lambda lab, n: 0, ValueError, None),
    "float tp": ("sharded_slot_bytes", {}, "tp", lambda lab, n: float(n["tp"]), TypeError, None),
    "dense shape to moe_base_params": ("moe_base_params", {}, "shape", dense_of, TypeError,
                                       ("ModelShape",)),
    "dense shape to model_loading_bytes": ("model_loading_bytes", {}, "shape", dense_of,
                                           TypeError, ("ModelShape",)),
    # "sharded" is part of "fully_sharded": the message quotes it
    "unknown expert layout": ("model_loading_bytes", {}, "expert_layout",
                              lambda lab, n: "sharded", ValueError, ("'sharded'", '"sharded"')),
    "unknown attention layout": ("model_loading_bytes", {}, "attention_layout",
                                 lambda lab, n: "sharded", ValueError,
                                 ("'sharded'", '"sharded"')),
    "tp not dividing a width, loading": ("model_loading_bytes", {}, "tp",
                                         lambda lab, n: n["bad_tp_loading"], ValueError, None),
    "zero max_loras": ("sharded_slot_bytes", {}, "max_loras", lambda lab, n: 0, ValueError, None),
    "bool max_lora_rank": ("sharded_slot_bytes", {}, "max_lora_rank", lambda lab, n: True,
                           TypeError, None),
    "unknown target": ("sharded_slot_bytes", {}, "targets", lambda lab, n: ["experts"],
                       ValueError, ("'experts'", "experts")),
}


@pytest.mark.parametrize("case", list(BAD_CALLS))
def test_bad_moe_input_is_refused_naming_the_argument(lab, seed, case):
    fn, overrides, arg, bad, error, shows = BAD_CALLS[case]
    n = refusal_draw(seed)
    args = {**moe_arguments(fn, n), **(overrides(n) if callable(overrides) else overrides)}
    want = moe_expected(fn, args)

    def valid() -> dict:
        return {**args, "shape": lab.MoEShape(**args["shape"]),
                **({"targets": list(args["targets"])} if "targets" in args else {})}

    def check(got) -> None:
        assert got == want, (f"{fn} on the seeded valid arguments {args}: got {got!r}, "
                             f"expected {want:,}")

    value = bad(lab, n)
    if shows is None:
        shows = shows_value(value) if error is TypeError else (repr(value), str(value))
    assert_refused(getattr(lab, fn), valid, check, arg, value, error, what=f"{fn}: {case}",
                   shows=shows)
