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

from labkit.refusals import assert_refused, shows_value

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
# Each row starts from a valid call on arguments drawn from the seed, whose result the test
# computes itself (its own LRU, slot and KV arithmetic), then replaces one argument: the error
# must name it and carry the offending value.


def refusal_draw(seed: int) -> dict:
    """A small fleet question with an answer: 2 to 4 tenants, a trace that opens with one
    tenant twice (a hit on any fleet), a budget with room for every slot and the KV floor, a
    reachable hit-rate target."""
    rng = random.Random(seed * 6007 + 29)
    tenants = rng.randint(2, 4)
    ranks = [rng.choice([4, 8, 16, 32, 64]) for _ in range(tenants)]
    first = rng.randrange(tenants)
    trace = [first, first] + [None if rng.random() < 0.1 else rng.randrange(tenants)
                              for _ in range(rng.randint(30, 60))]
    return dict(ranks=ranks, trace=trace, budget=LLAMA2_7B_BYTES + rng.randint(4, 20) * GiB,
                min_kv=rng.randint(0, 5000), target=rng.choice([0.3, 0.4, 0.5]),
                slots=rng.randint(1, 16), rank=rng.choice(VLLM_MAX_LORA_RANKS),
                engines=rng.randint(1, tenants), stray=tenants + rng.randint(0, 9),
                at=rng.randint(0, len(trace)))


def fleet_arguments(lab, n: dict) -> dict:
    return dict(shape=lab.LLAMA2_7B, tenant_ranks=list(n["ranks"]), trace=list(n["trace"]),
                memory_budget_bytes=n["budget"], kv_bytes_per_token=KV_BYTES_PER_TOKEN,
                min_kv_tokens=n["min_kv"], target_hit_rate=n["target"])


def one_bad(values: list, at: int, bad) -> list:
    """``values`` with the item at ``at`` (modulo its length) replaced by ``bad``."""
    out = list(values)
    out[at % len(out)] = bad  # as one_of reads it
    return out


def one_of(values: list, at: int):
    return values[at % len(values)]


def value_shows(value, error) -> tuple[str, ...]:
    """A wrong type is shown by its value or its type's name; a wrong value by itself."""
    return shows_value(value) if error is TypeError else (repr(value), str(value))


# case: (the argument replaced, its bad value from the draw, the error, the texts of which the
# message must carry one; None: ``value_shows`` of the bad value)
BAD_CALLS = {
    "no tenants": ("tenant_ranks", lambda n: [], ValueError, ("[]", "none", "empty", "no ")),
    "rank zero": ("tenant_ranks", lambda n: one_bad(n["ranks"], n["at"], 0), ValueError, ("0",)),
    "rank as float": ("tenant_ranks",
                      lambda n: one_bad(n["ranks"], n["at"], float(one_of(n["ranks"], n["at"]))),
                      TypeError, ("float",)),
    # the stray tenant, or the number of tenants it is not below
    "stray tenant": ("trace", lambda n: one_bad(n["trace"], n["at"], n["stray"]), ValueError,
                     None),
    "target above one": ("target_hit_rate", lambda n: 1 + n["target"], ValueError, None),
    "target as text": ("target_hit_rate", lambda n: str(n["target"]), TypeError, None),
    "target zero": ("target_hit_rate", lambda n: 0, ValueError, None),
    "float min_kv_tokens": ("min_kv_tokens", lambda n: float(n["min_kv"]), TypeError, None),
    "negative min_kv_tokens": ("min_kv_tokens", lambda n: -1 - n["min_kv"], ValueError, None),
    "zero kv bytes": ("kv_bytes_per_token", lambda n: 0, ValueError, None),
}


@pytest.mark.parametrize("case", list(BAD_CALLS))
def test_size_fleet_refuses_bad_input_naming_it(lab, seed, case):
    arg, bad, error, shows = BAD_CALLS[case]
    n = refusal_draw(seed)
    want = exhaustive(n["ranks"], n["trace"], n["budget"], n["min_kv"], n["target"])
    assert want is not None, f"the test's own draw has no fleet: {n}"

    def check(got) -> None:
        assert as_tuple(got) == want, (
            f"size_fleet on tenant ranks {n['ranks']}, {len(n['trace'])} requests, budget "
            f"{n['budget'] / GiB:.2f} GiB, min_kv_tokens {n['min_kv']:,}, target {n['target']}: "
            f"the exhaustive search gives {want}, got {as_tuple(got)}")

    value = bad(n)
    if shows is None and arg == "trace":
        shows = (repr(n["stray"]), str(len(n["ranks"])))
    elif shows is None:
        shows = value_shows(value, error)
    elif arg == "tenant_ranks" and value:  # a bad item: its value
        item = one_of(value, n["at"])
        shows = (repr(item), *shows)
    assert_refused(lab.size_fleet, lambda: fleet_arguments(lab, n), check, arg, value, error,
                   what=f"size_fleet: {case}", shows=shows)


def hit_rate_call(n: dict) -> tuple[dict, float]:
    """fleet_hit_rate's valid arguments and the test's own rate (above 0: tenants return)."""
    kwargs = dict(trace=list(n["trace"]), engines=n["engines"], max_loras=n["slots"] % 4 + 1)
    return kwargs, pooled_rate(kwargs["trace"], kwargs["engines"], kwargs["max_loras"])


def test_fleet_hit_rate_refuses_what_is_not_a_tenant(lab, seed):
    n = refusal_draw(seed)
    kwargs, want = hit_rate_call(n)

    def check(got) -> None:
        assert got == pytest.approx(want, abs=1e-12), (
            f"fleet_hit_rate({kwargs}): the engines' hits over their lookups is {want:.4f}, "
            f"got {got!r}")

    tenant = next(t for t in n["trace"] if t is not None)
    for bad, error in ((str(tenant), TypeError), (-1 - tenant, ValueError)):
        value = one_bad(n["trace"], n["at"], bad)
        assert_refused(lab.fleet_hit_rate, lambda: dict(kwargs, trace=list(n["trace"])), check,
                       "trace", value, error, what=f"fleet_hit_rate: a trace item {bad!r}",
                       shows=value_shows(bad, error))


def kv_call(lab, n: dict) -> tuple[dict, int]:
    """engine_kv_tokens' valid arguments and the test's own token count (above 0)."""
    slots, rank = n["slots"], n["rank"]
    budget = LLAMA2_7B_BYTES + slots * rank * SLOT_BYTES_PER_RANK + n["budget"] % GiB + GiB
    kwargs = dict(shape=lab.LLAMA2_7B, max_loras=slots, max_lora_rank=rank,
                  memory_budget_bytes=budget, kv_bytes_per_token=KV_BYTES_PER_TOKEN)
    return kwargs, kv_tokens(budget, slots, rank)


# case: (the function, the argument replaced, its bad value from the valid arguments, the error)
PIECE_BAD_CALLS = {
    "negative budget": ("engine_kv_tokens", "memory_budget_bytes", lambda kw: -1, ValueError),
    "float budget": ("engine_kv_tokens", "memory_budget_bytes",
                     lambda kw: float(kw["memory_budget_bytes"]), TypeError),
    "zero kv bytes": ("engine_kv_tokens", "kv_bytes_per_token", lambda kw: 0, ValueError),
    "float kv bytes": ("engine_kv_tokens", "kv_bytes_per_token",
                       lambda kw: float(kw["kv_bytes_per_token"]), TypeError),
    "zero engines": ("fleet_hit_rate", "engines", lambda kw: 0, ValueError),
    "float engines": ("fleet_hit_rate", "engines", lambda kw: float(kw["engines"]), TypeError),
    "zero max_loras": ("fleet_hit_rate", "max_loras", lambda kw: 0, ValueError),
    "bool max_loras": ("fleet_hit_rate", "max_loras", lambda kw: True, TypeError),
}


@pytest.mark.parametrize("case", list(PIECE_BAD_CALLS))
def test_kv_tokens_and_hit_rate_refuse_bad_input_naming_it(lab, seed, case):
    fn, arg, bad, error = PIECE_BAD_CALLS[case]
    n = refusal_draw(seed)
    kwargs, want = kv_call(lab, n) if fn == "engine_kv_tokens" else hit_rate_call(n)

    def check(got) -> None:
        if fn == "engine_kv_tokens":
            assert got == want and isinstance(got, int), (
                f"{fn} on the seeded valid arguments {kwargs}: expected {want!r} tokens, got "
                f"{got!r}")
        else:
            assert got == pytest.approx(want, abs=1e-12), (
                f"{fn} on the seeded valid arguments {kwargs}: expected {want!r}, got {got!r}")

    value = bad(kwargs)
    assert_refused(getattr(lab, fn), lambda: {k: list(v) if isinstance(v, list) else v
                                              for k, v in kwargs.items()},
                   check, arg, value, error, what=f"{fn}: {case}", shows=value_shows(value, error))
