"""Lab 03 spec: the multi-tenant arithmetic, pinned to the phase's figures.

Each expected value is written out as the count it stands for (layers x modules x widths), so a
failure shows which term is off; the curriculum's headline figures (6,738,415,616 parameters,
33,554,432 bytes, 401.6x, 13 engines) are checked against those derivations too.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
import re
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from labkit import in_worker, load_lab, load_support
from labkit.loader import Impl, load_impl

GiB, MiB, GB = 2**30, 2**20, 10**9  # the test's own units, independent of the student's

LLAMA2_7B_DIMS = dict(hidden=4096, intermediate=11008, layers=32, heads=32, kv_heads=32, vocab=32000)
LLAMA3_8B_DIMS = dict(hidden=4096, intermediate=14336, layers=32, heads=32, kv_heads=8, vocab=128256)
# meta-llama/Llama-3.2-1B config.json (the fields the count needs): GQA and a tied lm_head.
LLAMA32_1B_CONFIG = {
    "model_type": "llama", "hidden_size": 2048, "intermediate_size": 8192,
    "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8,
    "head_dim": 64, "vocab_size": 128256, "tie_word_embeddings": True,
}
ALL_LINEAR = ("q", "k", "v", "o", "gate", "up", "down")

PUBLISHED_ROUNDING = 0.005e9  # model cards round parameter counts to 3 significant figures
AUDIT_CLAIM_TOL = 0.05  # the audit's matched ratio must be within 0.05x of the exact division
# size_ratio in any consistent unit, (base/MB)/(adapter/MB) say, is bytes/bytes to a few ulps
RATIO_RTOL = 1e-12
# "ranks are any int >= 1 ... do not restrict it to the values vLLM accepts": ranks vLLM refuses
# for max_lora_rank (3, 12, 24, 40, 160) beside ones it accepts, and each one's double
RANKS = (1, 3, 8, 12, 16, 24, 40, 160, 256)


def shape_of(lab, spec: dict, **overrides):
    return lab.ModelShape(**{**spec, **overrides})


def param_miss(what: str, got: int, expected: int, terms: dict[str, int]) -> str:
    """A failure line that names the term a wrong count is missing or has twice, if one fits."""
    delta = got - expected
    msg = f"{what} = {got:,}, expected {expected:,} (off by {delta:+,})"
    for name, term in terms.items():
        if term and delta % term == 0 and abs(delta // term) <= 64:
            msg += f"; that is {delta // term:+d} x {name} ({term:,})"
            break
    return msg


# --- units ---------------------------------------------------------------------------------------


def test_units_keep_decimal_and_binary_apart(lab):
    assert (lab.GiB, lab.MiB, lab.GB) == (GiB, MiB, GB), "GiB = 2**30, MiB = 2**20, GB = 10**9"
    conversions = (lab.to_gib(GiB), lab.to_mib(MiB), lab.to_gb(GB))
    assert conversions == (1.0, 1.0, 1.0), f"to_gib(GiB), to_mib(MiB), to_gb(GB): {conversions}"
    assert lab.to_gib(GB) == pytest.approx(0.9313, abs=1e-4), \
        "to_gib(10**9) must be 0.93: a decimal GB is 7% smaller than a binary GiB"


# --- base model ----------------------------------------------------------------------------------


def test_llama2_7b_has_6_738_415_616_params(lab):
    h, i, n, vocab = 4096, 11008, 32, 32000
    terms = {
        "embed_tokens (vocab x hidden)": vocab * h,
        "one layer's q,k,v,o (4 x hidden^2)": 4 * h * h,
        "one layer's gate,up,down (3 x hidden x intermediate)": 3 * h * i,
        "one RMSNorm (hidden)": h,
    }
    expected = 2 * vocab * h + n * (4 * h * h + 3 * h * i + 2 * h) + h  # untied lm_head
    assert expected == 6_738_415_616
    reference_shape = shape_of(lab, LLAMA2_7B_DIMS)
    assert reference_shape == lab.LLAMA2_7B, "LLAMA2_7B must match the curriculum's shape"
    got = lab.base_params(lab.LLAMA2_7B)
    assert got == expected, param_miss("base_params(LLAMA2_7B)", got, expected, terms)


def test_llama2_7b_fp16_weights_are_12_55_gib(lab):
    nbytes = lab.base_bytes(lab.LLAMA2_7B)
    assert nbytes == 2 * 6_738_415_616 == 13_476_831_232, \
        f"base_bytes at 2 bytes/param: got {nbytes:,}, expected 13,476,831,232"
    assert f"{lab.to_gib(nbytes):.2f}" == "12.55", "vLLM logs the 7B weight copy as 12.55 GiB"
    assert f"{lab.to_gb(nbytes):.2f}" == "13.48", "the same bytes are 13.48 decimal GB"
    assert lab.base_bytes(lab.LLAMA2_7B, dtype_bytes=4) == 2 * nbytes, "fp32 doubles the bytes"


def test_gqa_sizes_k_and_v_by_kv_heads_llama3_8b(lab):
    shape = shape_of(lab, LLAMA3_8B_DIMS)
    h, i, n, vocab, kv = 4096, 14336, 32, 128256, 8 * 128  # 8 kv heads of head_dim 128
    assert lab.module_dims(shape, "k") == lab.module_dims(shape, "v") == (h, kv), \
        "under GQA k_proj and v_proj map hidden -> kv_heads * head_dim"
    expected = 2 * vocab * h + n * (2 * h * h + 2 * h * kv + 3 * h * i + 2 * h) + h
    got = lab.base_params(shape)
    assert got == expected, param_miss("base_params(Llama-3-8B)", got, expected, {
        "one layer's k,v widened to hidden (2 x hidden x (hidden - kv))": 2 * h * (h - kv),
        "lm_head": vocab * h,
        "one RMSNorm (hidden)": h,
    })
    assert abs(got - 8.03e9) <= PUBLISHED_ROUNDING, f"Llama-3-8B is published as 8.03B, got {got:,}"
    assert lab.lora_params(shape, 16, ("k",)) == n * 16 * (h + kv), "a k_proj LoRA's B is (kv, r)"


def untie(shape):
    """``shape`` with untied embeddings (run where the lab's code runs: see ``in_worker``)."""
    return dataclasses.replace(shape, tie_word_embeddings=False)


def test_tied_lm_head_is_counted_once_llama32_1b(lab):
    shape = lab.ModelShape.from_hf_config(LLAMA32_1B_CONFIG)
    h, i, n, vocab, kv = 2048, 8192, 16, 128256, 8 * 64
    expected = vocab * h + n * (2 * h * h + 2 * h * kv + 3 * h * i + 2 * h) + h  # one embedding
    assert expected == 1_235_814_400  # Llama-3.2-1B's published count, 1.24B
    got = lab.base_params(shape)
    assert got == expected, param_miss("base_params(Llama-3.2-1B, tied)", got, expected,
                                       {"tied lm_head (vocab x hidden)": vocab * h})
    untied = in_worker(lab, untie, shape)
    assert lab.base_params(untied) - got == vocab * h, "untying adds exactly one vocab x hidden"


def test_head_dim_sets_attention_widths_when_given(lab):
    # head_dim 32 with 4 heads: q and o are 128 wide, kv 64 wide, though hidden is 64.
    shape = lab.ModelShape(hidden=64, intermediate=96, layers=2, heads=4, kv_heads=2, vocab=10,
                           head_dim=32)
    assert lab.module_dims(shape, "q") == (64, 128) and lab.module_dims(shape, "o") == (128, 64)
    per_layer = 64 * 128 + 2 * 64 * 64 + 128 * 64 + 3 * 64 * 96 + 2 * 64
    expected = 2 * 10 * 64 + 2 * per_layer + 64
    assert lab.base_params(shape) == expected, \
        f"q/o must use heads * head_dim: got {lab.base_params(shape):,}, expected {expected:,}"


# --- adapters ------------------------------------------------------------------------------------


def test_rank16_qkvo_adapter_is_32_mib(lab):
    expected_params = 32 * 4 * 16 * (4096 + 4096)  # layers x targets x r(d_in + d_out)
    assert expected_params == 16_777_216
    got = lab.lora_params(lab.LLAMA2_7B, 16)
    assert got == expected_params, param_miss("lora_params(7B, r=16, qkvo)", got, expected_params, {
        "layers": 1, "one layer's adapter": 4 * 16 * 8192})
    nbytes = lab.adapter_bytes(lab.LLAMA2_7B, 16)
    assert nbytes == 33_554_432 == 32 * MiB, f"adapter_bytes: got {nbytes:,}, expected 32 MiB"
    assert f"{lab.to_gib(nbytes):.2f}" == "0.03", "lab 02 logs the adapter as 0.03 GiB"
    assert lab.adapters_per_gib(nbytes) == 32


@pytest.mark.parametrize(("targets", "per_layer_width"), [
    (("q", "v"), 2 * (4096 + 4096)),
    (("q", "k", "v", "o"), 4 * (4096 + 4096)),
    (ALL_LINEAR, 4 * (4096 + 4096) + 3 * (4096 + 11008)),
], ids=["q,v", "q,k,v,o", "all-linear"])
@pytest.mark.parametrize("rank", [8, 16, 64])
def test_adapter_bytes_by_targets_and_rank(lab, targets, per_layer_width, rank):
    expected = 32 * rank * per_layer_width * 2  # layers x r x sum(d_in + d_out) x fp16
    got = lab.adapter_bytes(lab.LLAMA2_7B, rank, targets)
    assert got == expected, f"adapter_bytes(7B, r={rank}, {targets}): got {got:,}, " \
                            f"expected {expected:,} = {expected / MiB} MiB"


def test_target_table_at_rank_16_reads_16_32_76_25_mib(lab):
    mib = [lab.to_mib(lab.adapter_bytes(lab.LLAMA2_7B, 16, t))
           for t in (("q", "v"), ("q", "k", "v", "o"), ALL_LINEAR)]
    assert mib == [16.0, 32.0, 76.25], f"q,v / q,k,v,o / all-linear at r=16: got {mib} MiB"


def test_rank_is_a_linear_memory_dial_for_every_target_set(lab):
    shapes = (lab.LLAMA2_7B, shape_of(lab, LLAMA3_8B_DIMS))
    # d_in + d_out per target, from the dims (k and v project to kv_heads x head_dim = 128)
    widths = [{t: d["hidden"] + {"q": d["hidden"], "o": d["hidden"], "k": d["kv_heads"] * 128,
                                  "v": d["kv_heads"] * 128}.get(t, d["intermediate"])
               for t in ALL_LINEAR} for d in (LLAMA2_7B_DIMS, LLAMA3_8B_DIMS)]
    subsets = [c for k in range(1, 8) for c in itertools.combinations(ALL_LINEAR, k)]
    for (shape, width), targets, rank in itertools.product(zip(shapes, widths, strict=True),
                                                           subsets, RANKS):
        one, two = (lab.adapter_bytes(shape, r, targets) for r in (rank, 2 * rank))
        expected = 32 * rank * sum(width[t] for t in targets) * 2  # layers x r x widths x fp16
        assert one == expected, \
            f"adapter_bytes(r={rank}, {targets}): got {one:,}, expected {expected:,}"
        assert two == 2 * one, f"doubling rank {rank} -> {2 * rank} on {targets}: {one} -> {two}"
        slots = [lab.slot_reservation_bytes(shape, 4, r, targets) for r in (rank, 2 * rank)]
        assert slots[1] == 2 * slots[0], f"slot reservation must double with rank on {targets}"


def test_peft_and_vllm_module_names_mean_the_same_targets(lab):
    assert lab.normalize_targets(["v_proj", "q_proj"]) == ("q", "v"), "canonical order q,k,v,o,..."
    assert lab.normalize_targets(["qkv_proj", "o"]) == ("q", "k", "v", "o")
    assert lab.normalize_targets(["gate_up_proj", "down_proj"]) == ("gate", "up", "down")
    assert lab.normalize_targets("all-linear") == ALL_LINEAR
    peft = lab.adapter_bytes(lab.LLAMA2_7B, 16, ["q_proj", "k_proj", "v_proj", "o_proj"])
    assert peft == lab.adapter_bytes(lab.LLAMA2_7B, 16, ("q", "k", "v", "o"))


# --- the ratio and its audit ---------------------------------------------------------------------


def test_size_ratio_is_401_6_in_consistent_units(lab):
    ratio = lab.size_ratio(lab.LLAMA2_7B, 16)
    assert ratio == pytest.approx(13_476_831_232 / 33_554_432, rel=RATIO_RTOL), \
        f"size_ratio: got {ratio}, expected base bytes / adapter bytes"
    assert f"{ratio:.1f}" == "401.6"
    assert lab.size_ratio(lab.LLAMA2_7B, 16, dtype_bytes=4) == pytest.approx(ratio, rel=RATIO_RTOL), \
        "the ratio of two sizes in the same dtype does not depend on the dtype"


def test_audit_explains_430x_as_gb_over_gib(lab):
    audit = lab.audit_ratio_claim(430)
    mixed = (13_476_831_232 / GB) / (33_554_432 / GiB)  # 13.48 GB / 0.03125 GiB
    assert audit.reading is not None and audit.reading.name == "gb_over_gib", \
        f"~430x is decimal base over binary adapter; the audit chose {audit.reading}"
    assert audit.reading.ratio == pytest.approx(mixed, abs=AUDIT_CLAIM_TOL)
    assert audit.consistent == pytest.approx(13_476_831_232 / 33_554_432, abs=AUDIT_CLAIM_TOL)
    for figure in ("13.48 GB", "0.03125 GiB", "401.6"):
        assert figure in audit.sentence, f"the verdict must quote {figure!r}: {audit.sentence!r}"


@pytest.mark.parametrize(("claimed", "reading"), [
    (400, "consistent"), (401.6, "consistent"), (374, "gib_over_gb"), (200, "fp32_adapter"),
])
def test_audit_names_the_reading_behind_a_claim(lab, claimed, reading):
    audit = lab.audit_ratio_claim(claimed)
    got = audit.reading.name if audit.reading else None
    assert got == reading, f"audit_ratio_claim({claimed}): expected {reading!r}, got {got!r}"


def test_audit_admits_an_unexplained_claim(lab):
    audit = lab.audit_ratio_claim(1000)
    assert audit.reading is None, f"no reading gives 1000x, yet the audit chose {audit.reading}"
    assert "401.6" in audit.sentence, "even unexplained, the verdict states the consistent ratio"


# --- engines and fleets --------------------------------------------------------------------------


def test_engine_reserves_every_linear_by_default(lab):
    per_slot = lab.adapter_bytes(lab.LLAMA2_7B, 16, ALL_LINEAR)
    assert per_slot == 32 * 16 * (4 * (4096 + 4096) + 3 * (4096 + 11008)) * 2, \
        f"an all-linear rank-16 adapter of 7B is 76.25 MiB, got {per_slot:,} bytes"
    got = lab.slot_reservation_bytes(lab.LLAMA2_7B, 8, 16)
    assert got == 8 * per_slot, \
        f"8 slots at r=16 over every LoRA-capable linear: got {got:,}, expected {8 * per_slot:,}"


def test_slot_reservation_is_linear_in_slots(lab):
    one = lab.slot_reservation_bytes(lab.LLAMA2_7B, 1, 16, ("q", "v"))
    assert one == 16 * MiB, f"one rank-16 slot over q,v of 7B holds 16 MiB, got {one:,} bytes"
    assert one == lab.adapter_bytes(lab.LLAMA2_7B, 16, ("q", "v")), "one slot holds one adapter"
    for slots in (2, 8, 13):
        got = lab.slot_reservation_bytes(lab.LLAMA2_7B, slots, 16, ("q", "v"))
        assert got == slots * one, f"{slots} slots: got {got:,}, expected {slots * one:,}"


def test_rank_16_to_64_blast_radius_across_13_engines_of_8_slots(lab):
    # 13 engines x 8 slots x 48 extra ranks x 32 layers x sum(d_in + d_out) x 2 bytes
    all_linear = 13 * 8 * 48 * 32 * (4 * 8192 + 3 * (4096 + 11008)) * 2
    got = lab.rank_blast_radius(lab.LLAMA2_7B, 13, 8, 16, 64)
    assert got == all_linear, f"blast radius (all linears): got {got:,}, expected {all_linear:,}"
    assert f"{lab.to_gib(got):.2f}" == "23.23"
    qkvo = lab.rank_blast_radius(lab.LLAMA2_7B, 13, 8, 16, 64, ("q", "k", "v", "o"))
    assert qkvo == 13 * 8 * (128 - 32) * MiB, "q,k,v,o slots grow from 32 MiB to 128 MiB each"
    assert lab.rank_blast_radius(lab.LLAMA2_7B, 13, 8, 64, 16) == -got, "lowering the rank frees it"
    assert lab.rank_blast_radius(lab.LLAMA2_7B, 13, 8, 16, 16) == 0


def test_100_tenants_on_8_slots_need_13_engines_and_save_87_gpus(lab):
    assert lab.engines_needed(100, 8) == 13, "ceil(100 / 8) = 13: the last engine is half full"
    assert lab.gpus_saved(100, 8) == 87


@pytest.mark.parametrize(("tenants", "max_loras", "engines"), [
    (0, 8, 0), (1, 8, 1), (96, 8, 12), (97, 8, 13), (5, 1, 5), (1000, 8, 125),
])
def test_engines_needed_edge_cases(lab, seed, tenants, max_loras, engines):
    check_seeded_calls(lab, seed)
    got = lab.engines_needed(tenants, max_loras)
    assert got == engines, f"engines_needed({tenants}, {max_loras}): got {got}, expected {engines}"
    assert lab.gpus_saved(tenants, max_loras) == tenants - engines


# --- bad input -----------------------------------------------------------------------------------

BAD_CALLS = {
    "unknown target": (lambda lab: lab.lora_params(lab.LLAMA2_7B, 16, ("q", "qproj")), "targets"),
    "no targets": (lambda lab: lab.lora_params(lab.LLAMA2_7B, 16, ()), "targets"),
    "target twice": (lambda lab: lab.lora_params(lab.LLAMA2_7B, 16, ("q", "q_proj")), "targets"),
    "rank 0": (lambda lab: lab.lora_params(lab.LLAMA2_7B, 0), "rank"),
    "rank -8": (lambda lab: lab.adapter_bytes(lab.LLAMA2_7B, -8), "rank"),
    "max_lora_rank 0": (lambda lab: lab.slot_reservation_bytes(lab.LLAMA2_7B, 8, 0),
                        "max_lora_rank|rank"),
    "negative tenants": (lambda lab: lab.engines_needed(-1, 8), "tenants"),
    "max_loras 0": (lambda lab: lab.engines_needed(10, 0), "max_loras"),
    "max_loras 0 in slots": (lambda lab: lab.slot_reservation_bytes(lab.LLAMA2_7B, 0, 16),
                             "max_loras"),
    "negative engines": (lambda lab: lab.rank_blast_radius(lab.LLAMA2_7B, -1, 8, 16, 64),
                         "engines"),
    "zero-byte adapter": (lambda lab: lab.adapters_per_gib(0), "adapter"),
    "non-positive claim": (lambda lab: lab.audit_ratio_claim(0), "claimed"),
}


def check_seeded_calls(lab, seed: int) -> None:
    """Valid calls on inputs drawn from the seed, checked against the test's own arithmetic:
    a refusal test starts from a lab that computes (a table of refusals does not)."""
    rng = random.Random(seed * 31 + 7)
    heads = rng.choice([2, 4, 8])
    s = dict(hidden=heads * 8, intermediate=rng.randint(10, 300), layers=rng.randint(1, 5),
             heads=heads, kv_heads=rng.choice([1, heads]), vocab=rng.randint(10, 500), head_dim=8,
             tie_word_embeddings=False)
    rank, tenants, max_loras = rng.randint(1, 99), rng.randint(0, 10**9), rng.randint(1, 64)
    shape = lab.ModelShape(**s)
    got = lab.lora_params(shape, rank, ALL_LINEAR)
    assert got == lora_count(s, rank, ALL_LINEAR), (
        f"a seeded valid call first: lora_params(rank={rank}) = {got}, expected "
        f"{lora_count(s, rank, ALL_LINEAR)}")
    got = lab.engines_needed(tenants, max_loras)
    assert got == -(-tenants // max_loras), f"engines_needed({tenants}, {max_loras}) = {got}"
    got = lab.base_bytes(shape, 2)
    assert got == 2 * base_count(s), f"base_bytes of a seeded shape = {got}"


def assert_refused_naming(lab, call, argument: str, error: type[Exception], case: str,
                          seed: int) -> None:
    check_seeded_calls(lab, seed)
    with pytest.raises(error) as err:
        call(lab)
    assert re.search(argument, str(err.value)), \
        f"{case}: the {error.__name__} must name {argument!r}, got {str(err.value)!r}"


@pytest.mark.parametrize("case", list(BAD_CALLS))
def test_bad_input_raises_value_error_naming_the_argument(lab, seed, case):
    call, argument = BAD_CALLS[case]
    assert_refused_naming(lab, call, argument, ValueError, case, seed)


WRONG_TYPES = {
    "float rank": (lambda lab: lab.lora_params(lab.LLAMA2_7B, 16.0), "rank"),
    "bool rank": (lambda lab: lab.adapter_bytes(lab.LLAMA2_7B, True), "rank"),
    "string max_loras": (lambda lab: lab.slot_reservation_bytes(lab.LLAMA2_7B, "8", 16),
                         "max_loras"),
    "float tenants": (lambda lab: lab.engines_needed(100.0, 8), "tenants"),
    "bare target string": (lambda lab: lab.lora_params(lab.LLAMA2_7B, 16, "q_proj"), "targets"),
    "string claim": (lambda lab: lab.audit_ratio_claim("430"), "claimed"),
}


@pytest.mark.parametrize("case", list(WRONG_TYPES))
def test_wrong_types_raise_type_error_naming_the_argument(lab, seed, case):
    call, argument = WRONG_TYPES[case]
    assert_refused_naming(lab, call, argument, TypeError, case, seed)


# --- structural: the given dataclass, and the README's generated tables --------------------------


@pytest.mark.structural
def test_model_shape_reads_a_hf_config(lab):
    cfg = {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008,
           "num_hidden_layers": 32, "num_attention_heads": 32, "vocab_size": 32000}
    assert lab.ModelShape.from_hf_config(cfg) == lab.LLAMA2_7B, "kv heads default to heads"
    assert lab.LLAMA2_7B.head_dim == 128, "head_dim defaults to hidden // heads"
    with pytest.raises(ValueError, match="model_type"):
        lab.ModelShape.from_hf_config({**cfg, "model_type": "gpt2"})
    with pytest.raises(ValueError, match="vocab_size"):
        lab.ModelShape.from_hf_config({k: v for k, v in cfg.items() if k != "vocab_size"})
    with pytest.raises(ValueError, match="kv_heads"):
        shape_of(lab, LLAMA2_7B_DIMS, kv_heads=5)


@pytest.mark.structural
def test_readme_tables_match_the_code():
    readme = (Path(__file__).parent / "README.md").read_text()
    if not (Path(__file__).parent / "solution.py").is_file():
        pytest.skip("the README quotes the reference solution, which this copy does not ship")
    reference = load_impl("lab-03", Impl("solution"))  # the README quotes the reference
    for name, table in load_support("lab-03", "tables").all_tables(reference).items():
        if table not in readme:
            pytest.fail(f"README table {name!r} is stale: run python tables.py and paste it",
                        pytrace=False)


# --- module widths, floors, tolerances, zero fleets, frozen records ------------------------------

# a GQA shape where every width differs: a reversed (d_in, d_out) shows in module_dims
SHAPE = dict(hidden=64, intermediate=160, layers=2, heads=4, kv_heads=2, vocab=100)
DIMS = {"q": (64, 64), "k": (64, 32), "v": (64, 32), "o": (64, 64),
        "gate": (64, 160), "up": (64, 160), "down": (160, 64)}


@pytest.mark.parametrize("target", list(DIMS))
def test_module_dims_are_d_in_then_d_out(lab, target):
    got = lab.module_dims(lab.ModelShape(**SHAPE), target)
    assert tuple(got) == DIMS[target], (
        f"module_dims(shape, {target!r}) = {got}, expected (d_in, d_out) = {DIMS[target]} "
        f"(hidden=64, intermediate=160, kv width 2 x 16 = 32)")


def test_o_proj_reads_the_query_width_when_head_dim_is_given(lab):
    # heads * head_dim = 4 * 8 = 32 differs from hidden = 64: o maps the query width back
    shape = lab.ModelShape(**SHAPE, head_dim=8)
    assert tuple(lab.module_dims(shape, "o")) == (32, 64)
    assert tuple(lab.module_dims(shape, "q")) == (64, 32)


@pytest.mark.parametrize("nbytes, fit", [(GiB // 2 + 1, 1), (GiB // 3 + 1, 2), (GiB, 1),
                                          (GiB + 1, 0), (3 * 2**20, 341)])
def test_adapters_per_gib_is_a_floor(lab, nbytes, fit):
    got = lab.adapters_per_gib(nbytes)
    assert got == fit and isinstance(got, int), (
        f"adapters_per_gib({nbytes}) = {got!r}: whole adapters per GiB, floor({GiB / nbytes:.4f})"
        f" = {fit}")


def test_audit_honours_rtol(lab):
    # 430 lies 0.3% from the gb_over_gib reading 431.3
    assert lab.audit_ratio_claim(430, rtol=0.001).reading is None, \
        "rtol=0.001: 430 is 0.3% from 431.3x and must match nothing"
    assert lab.audit_ratio_claim(430, rtol=0.01).reading.name == "gb_over_gib"
    assert lab.audit_ratio_claim(600, rtol=0.5).reading is not None, \
        "rtol=0.5: 600 is within 50% of a reading"


@pytest.mark.parametrize("claimed", [0.5, 1, 1e-3])
def test_any_positive_claim_is_audited(lab, claimed):
    audit = lab.audit_ratio_claim(claimed)
    assert audit.reading is None and "401.6" in audit.sentence


def test_zero_engines_have_no_blast_radius(lab, seed):
    check_seeded_calls(lab, seed)
    shape = lab.ModelShape(**SHAPE)
    assert lab.rank_blast_radius(shape, 0, 8, 16, 64) == 0, \
        "engines >= 0: a fleet of zero engines grows by zero bytes"
    assert lab.engines_needed(0, 8) == 0 and lab.gpus_saved(0, 8) == 0


@pytest.mark.structural
def test_units_and_published_shapes(lab):
    assert (lab.GB, lab.MB, lab.GiB, lab.MiB) == (10**9, 10**6, 2**30, 2**20)
    llama3_8b = lab.ModelShape(hidden=4096, intermediate=14336, layers=32, heads=32, kv_heads=8,
                               vocab=128256)  # meta-llama/Meta-Llama-3-8B config.json
    llama2_7b = lab.ModelShape(hidden=4096, intermediate=11008, layers=32, heads=32,
                               kv_heads=32, vocab=32000)  # meta-llama/Llama-2-7b-hf
    assert llama3_8b == lab.LLAMA3_8B and llama2_7b == lab.LLAMA2_7B
    with pytest.raises(dataclasses.FrozenInstanceError):
        llama2_7b.hidden = 1  # a shape is a value: fixed once read from config.json


def test_readings_and_verdicts_are_frozen(lab):
    audit = lab.audit_ratio_claim(430)
    for record in (audit, audit.reading):
        with pytest.raises(dataclasses.FrozenInstanceError):
            record.ratio = 1.0 if record is audit.reading else None


# --- every admitted form, any shape and rank -----------------------------------------------------

ALIAS = {t: (t, f"{t}_proj") for t in ALL_LINEAR}


@st.composite
def shapes(draw):
    heads = draw(st.sampled_from([1, 2, 4, 8, 32]))
    head_dim = draw(st.sampled_from([2, 8, 64, 128]))
    return dict(hidden=heads * head_dim * draw(st.sampled_from([1, 2])),
                intermediate=draw(st.integers(1, 20000)), layers=draw(st.integers(1, 80)),
                heads=heads, kv_heads=draw(st.sampled_from([d for d in (1, 2, 4, 8, 32)
                                                            if heads % d == 0])),
                vocab=draw(st.integers(1, 200000)), head_dim=head_dim,
                tie_word_embeddings=draw(st.booleans()))


def dims_of(s: dict, target: str) -> tuple[int, int]:
    q, kv, h, i = s["heads"] * s["head_dim"], s["kv_heads"] * s["head_dim"], s["hidden"], \
        s["intermediate"]
    return {"q": (h, q), "k": (h, kv), "v": (h, kv), "o": (q, h), "gate": (h, i), "up": (h, i),
            "down": (i, h)}[target]


def lora_count(s: dict, rank: int, targets) -> int:
    return s["layers"] * sum(rank * sum(dims_of(s, t)) for t in targets)


def base_count(s: dict) -> int:
    per_layer = sum(a * b for a, b in (dims_of(s, t) for t in ALL_LINEAR)) + 2 * s["hidden"]
    lm_head = 0 if s["tie_word_embeddings"] else s["vocab"] * s["hidden"]
    return s["vocab"] * s["hidden"] + s["layers"] * per_layer + s["hidden"] + lm_head


ITERABLES = {  # every iterable a target list arrives as: PEFT stores target_modules as a set
    "list": list, "tuple": tuple, "set": set, "frozenset": frozenset,
    "generator": lambda names: (n for n in names), "dict-keys": lambda names: dict.fromkeys(names),
    "iterator": lambda names: iter(list(names)),
}


@given(s=shapes(), rank=st.integers(1, 600), data=st.data())
def test_any_rank_and_any_iterable_of_targets_is_counted(lab, s, rank, data):
    targets = data.draw(st.lists(st.sampled_from(ALL_LINEAR), min_size=1, max_size=7,
                                 unique=True))
    names = [data.draw(st.sampled_from(ALIAS[t])) for t in targets]
    form = data.draw(st.sampled_from(list(ITERABLES)))
    dtype_bytes = data.draw(st.sampled_from([1, 2, 4]))
    want = lora_count(s, rank, targets)
    canonical = tuple(t for t in ALL_LINEAR if t in targets)
    normalized, params, nbytes, slots, base = in_worker(lab, counted_with, form, names, s, rank,
                                                        dtype_bytes)
    assert normalized == canonical, f"normalize_targets of a {form} {names}: got {normalized}"
    assert params == want, (f"lora_params(rank={rank}, targets as a {form} {names}) = {params}, "
                            f"expected layers x sum of r*(d_in+d_out) = {want}")
    assert nbytes == want * dtype_bytes, f"adapter_bytes at dtype_bytes={dtype_bytes}: {nbytes}"
    assert slots == 3 * want * dtype_bytes, (
        f"slot_reservation_bytes(max_loras=3, max_lora_rank={rank}, dtype_bytes={dtype_bytes}) = "
        f"{slots}, expected 3 slots x {want} params x {dtype_bytes} B")
    assert base == base_count(s) * dtype_bytes


def counted_with(form: str, names: list[str], s: dict, rank: int, dtype_bytes: int) -> tuple:
    """Where the lab runs (a generator cannot cross to a worker): each counting function given
    the targets as a fresh ``form`` built there."""
    lab = load_lab("lab-03")
    shape, make = lab.ModelShape(**s), ITERABLES[form]
    return (tuple(lab.normalize_targets(make(names))), lab.lora_params(shape, rank, make(names)),
            lab.adapter_bytes(shape, rank, make(names), dtype_bytes),
            lab.slot_reservation_bytes(shape, 3, rank, make(names), dtype_bytes),
            lab.base_bytes(shape, dtype_bytes))


def test_a_rank_12_adapter_is_counted_like_any_rank(lab):
    # 12 is no vLLM max_lora_rank, and the docstring says not to restrict ranks to those
    got = lab.adapter_bytes(lab.LLAMA2_7B, 12)
    assert got == 32 * 4 * 12 * 8192 * 2, f"a rank-12 q,k,v,o adapter of 7B: got {got}"
    assert lab.slot_reservation_bytes(lab.LLAMA2_7B, 2, 12) == 2 * 32 * 12 * (
        4 * 8192 + 3 * (4096 + 11008)) * 2


@given(tenants=st.integers(0, 2**80), max_loras=st.integers(1, 2**64))
@example(tenants=2**53 + 1, max_loras=1)  # a float holds 2**53 + 1 as 2**53: one engine short
@example(tenants=2**64 + 9, max_loras=8)
@example(tenants=3 * 2**70 + 1, max_loras=3)
def test_engines_needed_is_the_exact_integer_ceiling(lab, tenants, max_loras):
    want = -(-tenants // max_loras)
    got = lab.engines_needed(tenants, max_loras)
    assert type(got) is int and got == want, (
        f"engines_needed({tenants}, {max_loras}) = {got!r}, expected the int ceiling {want} "
        "(float division loses engines past 2**53)")
    assert lab.gpus_saved(tenants, max_loras) == tenants - want


@pytest.mark.parametrize("tenants", [0, 1, 100])
def test_max_loras_is_checked_even_with_no_tenants(lab, seed, tenants):
    check_seeded_calls(lab, seed)
    with pytest.raises(ValueError) as err:
        lab.engines_needed(tenants, 0)
    assert "max_loras" in str(err.value), f"engines_needed({tenants}, 0): got {err.value}"
    with pytest.raises(ValueError):
        lab.gpus_saved(tenants, 0)


def _figures(division: str) -> list[tuple[float, str]]:
    return [(float(v), unit) for v, unit in re.findall(r"([\d.e+-]+) (GiB|GB)", division)]


@given(s=shapes(), rank=st.integers(1, 600))
def test_readings_and_audit_hold_for_any_shape_and_rank(lab, s, rank):
    shape = lab.ModelShape(**s)
    base, adapter = base_count(s) * 2, lora_count(s, rank, ("q", "k", "v", "o")) * 2
    want = {"consistent": (base / GiB, "GiB", adapter / GiB, "GiB"),
            "gb_over_gib": (base / GB, "GB", adapter / GiB, "GiB"),
            "gib_over_gb": (base / GiB, "GiB", adapter / GB, "GB"),
            "fp32_adapter": (base / GiB, "GiB", 2 * adapter / GiB, "GiB")}
    readings = lab.ratio_readings(shape, rank)
    assert [r.name for r in readings] == list(want), [r.name for r in readings]
    for r in readings:
        num, num_unit, den, den_unit = want[r.name]
        assert r.ratio == pytest.approx(num / den, rel=RATIO_RTOL), f"{r.name}: {r.ratio}"
        figures = _figures(r.division)
        assert figures == [(float(f"{num:.4g}"), num_unit), (float(f"{den:.4g}"), den_unit)], (
            f"{r.name} at rank {rank}: division {r.division!r} must print {num:.4g} {num_unit} "
            f"/ {den:.4g} {den_unit} (four significant figures)")
    mix = readings[1]
    audit = lab.audit_ratio_claim(mix.ratio, shape, rank)
    consistent = f"{readings[0].ratio:.1f}"
    assert audit.reading is not None and mix.division in audit.sentence, (
        f"a claim equal to the {mix.name} reading must quote its division, got {audit.sentence!r}")
    if audit.reading.name != "consistent":
        assert consistent in audit.sentence, (
            f"the verdict must state the consistent ratio {consistent}x, got {audit.sentence!r}")
    lost = lab.audit_ratio_claim(readings[0].ratio * 1000, shape, rank)
    assert lost.reading is None and consistent in lost.sentence, (
        f"an unexplained claim still states the consistent {consistent}x: {lost.sentence!r}")


@pytest.mark.parametrize("claimed", ["inf", "nan"])
def test_a_claim_that_is_no_finite_ratio_is_refused(lab, seed, claimed):
    check_seeded_calls(lab, seed)
    with pytest.raises(ValueError) as err:
        lab.audit_ratio_claim(float(claimed))
    assert "claimed" in str(err.value), f"audit_ratio_claim({claimed}): got {err.value}"


def test_a_numpy_claim_is_audited(lab):
    np = pytest.importorskip("numpy")
    for claimed in (np.float64(430.0), np.int64(430), np.float32(430.0)):
        audit = lab.audit_ratio_claim(claimed)
        assert audit.reading is not None and audit.reading.name == "gb_over_gib", (
            f"a {type(claimed).__name__} claim of 430 is a number: got {audit!r}")


@given(s=shapes(), old=st.integers(1, 300), new=st.integers(1, 300), engines=st.integers(0, 50),
       max_loras=st.integers(1, 16))
def test_blast_radius_is_every_slot_of_every_engine_either_way(lab, s, old, new, engines,
                                                                max_loras):
    want = engines * max_loras * (lora_count(s, new, ALL_LINEAR) - lora_count(s, old, ALL_LINEAR)) * 2
    got = lab.rank_blast_radius(lab.ModelShape(**s), engines, max_loras, old, new)
    assert got == want, (f"rank_blast_radius({engines} engines x {max_loras} slots, rank {old} -> "
                         f"{new}) = {got}, expected {want} (negative when the rank goes down)")
