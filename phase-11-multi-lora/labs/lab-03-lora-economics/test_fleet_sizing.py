"""Lab 03 spec, section 7: fleet sizing, where adapter slots compete with the KV cache.

The test searches the whole space the README gives (engines and max_loras from 1 to the number
of tenants, max_lora_rank in vLLM's list) with its own LRU, its own slot and KV arithmetic, and
holds the student's choice to the result. Tenant mixes and traces are drawn from the ``seed``
fixture, so a hidden seed re-draws them.
"""

from __future__ import annotations

import random
from collections import OrderedDict

import pytest

GiB = 2**30
VLLM_MAX_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # README section 4
# Llama-2-7B, the lab's reference model: its fp16 weights and one all-linear slot per rank unit
LLAMA2_7B_BYTES = 13_476_831_232
SLOT_BYTES_PER_RANK = 32 * (4 * (4096 + 4096) + 3 * (4096 + 11008)) * 2  # layers x sum(d_in+d_out)
KV_BYTES_PER_TOKEN = 2 * 32 * 32 * 128 * 2  # K and V x layers x kv heads x head_dim x fp16


def lru_hits(requests, slots: int) -> tuple[int, int]:
    """(hits, lookups) of an LRU cache of ``slots`` adapters: the test's own cache model."""
    cache: OrderedDict = OrderedDict()
    hits = 0
    for tenant in requests:
        if tenant in cache:
            hits += 1
            cache.move_to_end(tenant)
            continue
        if len(cache) == slots:
            cache.popitem(last=False)
        cache[tenant] = True
    return hits, len(requests)


def pooled_rate(trace, engines: int, slots: int) -> float:
    shares = [[t for t in trace if t is not None and t % engines == e] for e in range(engines)]
    counts = [lru_hits(share, slots) for share in shares]
    lookups = sum(n for _, n in counts)
    return sum(h for h, _ in counts) / lookups if lookups else 0.0


def kv_tokens(budget: int, slots: int, rank: int) -> int:
    return (budget - LLAMA2_7B_BYTES - slots * rank * SLOT_BYTES_PER_RANK) // KV_BYTES_PER_TOKEN


def exhaustive(ranks, trace, budget: int, min_kv: int, target: float):
    """Every legal (engines, max_loras, max_lora_rank): the fewest engines, then the most KV."""
    legal = []
    tenants = len(ranks)
    for engines in range(1, tenants + 1):
        for slots in range(1, tenants + 1):
            rate = pooled_rate(trace, engines, slots)
            for rank in VLLM_MAX_LORA_RANKS:
                tokens = kv_tokens(budget, slots, rank)
                if rank >= max(ranks) and tokens >= min_kv and rate >= target:
                    legal.append((engines, -tokens, slots, rank, rate))
    if not legal:
        return None
    engines, neg_tokens, slots, rank, rate = min(legal)
    return engines, slots, rank, -neg_tokens, rate


def draw_mix(rng: random.Random):
    tenants = rng.randint(3, 7)
    ranks = [rng.choice([4, 8, 8, 12, 16, 16, 32, 64]) for _ in range(tenants)]
    weights = [1 / (i + 1) ** rng.uniform(0.5, 1.5) for i in range(tenants)]
    order = rng.sample(range(tenants), tenants)  # the hottest tenant is not always tenant 0
    trace = rng.choices(order, weights, k=rng.randint(200, 600))
    trace = [None if rng.random() < 0.1 else t for t in trace]  # some base-model requests
    return ranks, trace


def as_tuple(choice):
    if choice is None:
        return None
    return (choice.engines, choice.max_loras, choice.max_lora_rank, choice.kv_tokens,
            choice.hit_rate)


# --- the pieces -----------------------------------------------------------------------------------


def test_kv_tokens_are_what_weights_and_slots_leave(lab, seed):
    rng = random.Random(seed)
    for _ in range(10):
        budget = LLAMA2_7B_BYTES + rng.randint(0, 20) * GiB + rng.randint(0, GiB)
        slots, rank = rng.randint(1, 16), rng.choice(VLLM_MAX_LORA_RANKS)
        want = kv_tokens(budget, slots, rank)
        got = lab.engine_kv_tokens(lab.LLAMA2_7B, slots, rank, budget, KV_BYTES_PER_TOKEN)
        assert got == want, (
            f"budget {budget:,} B, {slots} slots at rank {rank}: (budget - weights - slots) // "
            f"{KV_BYTES_PER_TOKEN} = {want:,} tokens, got {got:,}")


def test_kv_tokens_go_negative_when_the_slots_do_not_fit(lab):
    budget = LLAMA2_7B_BYTES + SLOT_BYTES_PER_RANK * 16  # one rank-16 slot, no room for KV
    assert lab.engine_kv_tokens(lab.LLAMA2_7B, 1, 16, budget, KV_BYTES_PER_TOKEN) == 0
    assert lab.engine_kv_tokens(lab.LLAMA2_7B, 2, 16, budget, KV_BYTES_PER_TOKEN) < 0, \
        "weights and slots past the budget leave a negative token count"


def test_kv_tokens_follow_the_targets_and_the_dtype(lab, seed):
    rng = random.Random(seed)
    qkvo_per_rank = 32 * 4 * (4096 + 4096)  # layers x q,k,v,o x (d_in + d_out)
    for _ in range(10):
        dtype_bytes = rng.choice([1, 2, 4])
        slots, rank = rng.randint(1, 16), rng.choice(VLLM_MAX_LORA_RANKS)
        weights = LLAMA2_7B_BYTES // 2 * dtype_bytes
        budget = weights + rng.randint(0, 20) * GiB + rng.randint(0, GiB)
        want = (budget - weights - slots * rank * qkvo_per_rank * dtype_bytes) // KV_BYTES_PER_TOKEN
        got = lab.engine_kv_tokens(lab.LLAMA2_7B, slots, rank, budget, KV_BYTES_PER_TOKEN,
                                   targets=["q_proj", "k_proj", "v_proj", "o_proj"],
                                   dtype_bytes=dtype_bytes)
        assert got == want, (
            f"{slots} slots at rank {rank} over q,k,v,o, {dtype_bytes}-byte weights, budget "
            f"{budget:,} B: {want:,} tokens, got {got:,} (the slots cover targets only, weights "
            f"and slots at dtype_bytes)")


def test_fleet_hit_rate_sends_tenant_t_to_engine_t_mod_engines(lab):
    # 2 engines, 1 slot each. Engine 0 serves tenants 0 and 2: [0, 0, 2, 0] -> miss hit miss miss.
    # Engine 1 serves tenant 1: [1, 1] -> miss hit. The fleet: 2 hits in 6 lookups.
    trace = [0, 1, 0, None, 1, 2, 0]
    assert lab.fleet_hit_rate(trace, 2, 1) == pytest.approx(2 / 6)
    assert lab.fleet_hit_rate(trace, 1, 3) == pytest.approx(3 / 6), "one engine, 3 slots: 3 hits"
    assert lab.fleet_hit_rate([None, None], 2, 1) == 0.0, "no lookups, no hits"


def test_fleet_hit_rate_pools_hits_over_lookups(lab, seed):
    rng = random.Random(seed)
    for _ in range(5):
        _, trace = draw_mix(rng)
        engines, slots = rng.randint(1, 4), rng.randint(1, 3)
        want = pooled_rate(trace, engines, slots)
        got = lab.fleet_hit_rate(list(trace), engines, slots)
        assert got == pytest.approx(want, abs=1e-12), (
            f"{engines} engines x {slots} slots: the engines' hits over their lookups is "
            f"{want:.4f}, got {got:.4f} (an average of per-engine rates weighs a quiet engine "
            f"like a busy one)")


# --- the search -----------------------------------------------------------------------------------


def test_size_fleet_matches_an_exhaustive_search(lab, seed):
    rng = random.Random(seed)
    for _ in range(4):
        ranks, trace = draw_mix(rng)
        rank = min(r for r in VLLM_MAX_LORA_RANKS if r >= max(ranks))
        budget = LLAMA2_7B_BYTES + rng.randint(2, 6) * GiB
        min_kv = max(0, kv_tokens(budget, rng.randint(1, len(ranks)), rank))  # caps the slots
        target = rng.choice([0.5, 0.6, 0.7, 0.8, 0.9])
        want = exhaustive(ranks, trace, budget, min_kv, target)
        got = lab.size_fleet(lab.LLAMA2_7B, list(ranks), list(trace), budget,
                             KV_BYTES_PER_TOKEN, min_kv, target)
        assert as_tuple(got) == want, (
            f"tenant ranks {ranks}, {len(trace)} requests, budget {budget / GiB:.2f} GiB, "
            f"min_kv_tokens {min_kv:,}, target {target}: the exhaustive search gives (engines, "
            f"max_loras, max_lora_rank, kv_tokens, hit_rate) = {want}, got {as_tuple(got)}")


def test_the_largest_tenant_sets_max_lora_rank(lab):
    trace = [0, 1, 2, 0, 1, 2] * 10
    for big, rank in ((64, 64), (300, 320), (9, 16)):
        got = lab.size_fleet(lab.LLAMA2_7B, [8, big, 4], trace, 40 * GiB, KV_BYTES_PER_TOKEN,
                             0, 0.9)
        assert got is not None and got.max_lora_rank == rank, (
            f"a rank-{big} tenant needs max_lora_rank {rank} (the smallest legal one that fits "
            f"it), got {as_tuple(got)}")
    once = lab.size_fleet(lab.LLAMA2_7B, iter([8, 64, 4]), iter(trace), 40 * GiB,
                          KV_BYTES_PER_TOKEN, 0, 0.9)
    assert once is not None and once.max_lora_rank == 64, "tenant_ranks and trace as iterators"


def test_no_fleet_when_no_legal_choice_exists(lab):
    trace = [0, 1] * 20
    assert lab.size_fleet(lab.LLAMA2_7B, [8, 600], trace, 40 * GiB, KV_BYTES_PER_TOKEN, 0,
                          0.5) is None, "no max_lora_rank vLLM takes holds a rank-600 adapter"
    assert lab.size_fleet(lab.LLAMA2_7B, [8, 8], trace, 40 * GiB, KV_BYTES_PER_TOKEN, 0,
                          1) is None, ("a target of 1 is in (0, 1], and no LRU hits a tenant's "
                                       "first request")
    cramped = LLAMA2_7B_BYTES + 8 * SLOT_BYTES_PER_RANK  # one rank-8 slot, no KV room
    assert lab.size_fleet(lab.LLAMA2_7B, [8, 8], trace, cramped, KV_BYTES_PER_TOKEN, 1,
                          0.5) is None, "the budget holds no KV token beside one slot"


def test_more_engines_when_slots_would_starve_the_kv_cache(lab):
    # Two tenants in turn: one engine needs 2 slots to hit; the budget leaves min_kv_tokens only
    # beside 1 slot, so the fleet takes 2 engines of 1 slot each.
    trace = [0, 1] * 30
    budget = LLAMA2_7B_BYTES + 16 * SLOT_BYTES_PER_RANK + 1000 * KV_BYTES_PER_TOKEN
    got = lab.size_fleet(lab.LLAMA2_7B, [16, 16], trace, budget, KV_BYTES_PER_TOKEN, 1000, 0.9)
    assert as_tuple(got) == exhaustive([16, 16], trace, budget, 1000, 0.9), as_tuple(got)
    assert (got.engines, got.max_loras, got.kv_tokens) == (2, 1, 1000)


# --- refusals -------------------------------------------------------------------------------------

BAD_CALLS = {
    "no tenants": (dict(tenant_ranks=[]), ValueError, "tenant_ranks"),
    "rank zero": (dict(tenant_ranks=[8, 0]), ValueError, "tenant_ranks"),
    "rank as float": (dict(tenant_ranks=[8, 16.0]), TypeError, "tenant_ranks"),
    "stray tenant": (dict(trace=[0, 1, 5]), ValueError, "trace"),
    "target above one": (dict(target_hit_rate=1.5), ValueError, "target_hit_rate"),
    "target as text": (dict(target_hit_rate="0.9"), TypeError, "target_hit_rate"),
    "target zero": (dict(target_hit_rate=0), ValueError, "target_hit_rate"),
    "float min_kv_tokens": (dict(min_kv_tokens=1.0), TypeError, "min_kv_tokens"),
    "negative min_kv_tokens": (dict(min_kv_tokens=-1), ValueError, "min_kv_tokens"),
    "zero kv bytes": (dict(kv_bytes_per_token=0), ValueError, "kv_bytes_per_token"),
}


@pytest.mark.parametrize("case", list(BAD_CALLS))
def test_size_fleet_refuses_bad_input_naming_it(lab, case):
    overrides, error, argument = BAD_CALLS[case]
    call = dict(shape=lab.LLAMA2_7B, tenant_ranks=[8, 16], trace=[0, 1, 0],
                memory_budget_bytes=40 * GiB, kv_bytes_per_token=KV_BYTES_PER_TOKEN,
                min_kv_tokens=0, target_hit_rate=0.5) | overrides
    with pytest.raises(error, match=argument):
        lab.size_fleet(**call)


def test_fleet_hit_rate_refuses_what_is_not_a_tenant(lab):
    with pytest.raises(TypeError, match="trace"):
        lab.fleet_hit_rate([0, "1"], 1, 1)
    with pytest.raises(ValueError, match="trace"):
        lab.fleet_hit_rate([0, -1], 1, 1)


PIECE_BAD_CALLS = {
    "negative budget": (lambda lab: lab.engine_kv_tokens(lab.LLAMA2_7B, 1, 8, -1,
                                                         KV_BYTES_PER_TOKEN),
                        ValueError, "memory_budget_bytes"),
    "float budget": (lambda lab: lab.engine_kv_tokens(lab.LLAMA2_7B, 1, 8, 40.0 * GiB,
                                                      KV_BYTES_PER_TOKEN),
                     TypeError, "memory_budget_bytes"),
    "zero kv bytes": (lambda lab: lab.engine_kv_tokens(lab.LLAMA2_7B, 1, 8, 40 * GiB, 0),
                      ValueError, "kv_bytes_per_token"),
    "float kv bytes": (lambda lab: lab.engine_kv_tokens(lab.LLAMA2_7B, 1, 8, 40 * GiB, 2.0),
                       TypeError, "kv_bytes_per_token"),
    "zero engines": (lambda lab: lab.fleet_hit_rate([0, 1], 0, 1), ValueError, "engines"),
    "float engines": (lambda lab: lab.fleet_hit_rate([0, 1], 2.0, 1), TypeError, "engines"),
    "zero max_loras": (lambda lab: lab.fleet_hit_rate([0, 1], 1, 0), ValueError, "max_loras"),
    "bool max_loras": (lambda lab: lab.fleet_hit_rate([0, 1], 1, True), TypeError, "max_loras"),
}


@pytest.mark.parametrize("case", list(PIECE_BAD_CALLS))
def test_kv_tokens_and_hit_rate_refuse_bad_input_naming_it(lab, case):
    call, error, argument = PIECE_BAD_CALLS[case]
    with pytest.raises(error, match=rf"\b{argument}\b"):
        call(lab)
