"""Lab 04 spec: pre-allocated slots, an honest LRU, a scheduler that defers.

Read top to bottom: the slot buffers, the cache's layouts and pins, hit accounting, 80/20
traffic and the LRU thrash, the scheduler, sizing, then invariants over random workloads.
"""

from __future__ import annotations

import itertools
import re
from collections import OrderedDict

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from labkit import assert_bitwise_equal, first_mismatch, in_worker, load_lab

D_IN, D_OUT, MAX_RANK = 6, 5, 4  # small slots: every value below is exact in float32

NUM_ADAPTERS, NUM_REQUESTS, SEED = 16, 10_000, 0  # the curriculum's 80/20 workload
TARGET_80_20_HIT_RATE = 0.75  # 4 slots over 16 adapters on 80/20 traffic must beat this
SHARE_TOL = 0.02  # sampling noise of a 10,000-request share: ~4.5 standard deviations
# lab 03: slot_reservation_bytes(LLAMA2_7B, max_loras=1, max_lora_rank=16), q,k,v,o in fp16
SLOT_BYTES = 33_554_432
GIB = 1 << 30


def weights(adapter_id: int, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """A recognisable adapter: every entry encodes the adapter id, so a wrong copy shows."""
    base = 1000.0 * (adapter_id + 1)
    A = base + np.arange(rank * D_IN, dtype=np.float32).reshape(rank, D_IN)
    B = -base - np.arange(D_OUT * rank, dtype=np.float32).reshape(D_OUT, rank)
    return A, B


class Loader:
    """``load(adapter_id)`` for the cache, recording each call; ranks default to ``MAX_RANK``."""

    def __init__(self, ranks: dict | None = None):
        self.ranks = ranks or {}
        self.calls: list = []

    def __call__(self, adapter_id):
        self.calls.append(adapter_id)
        return weights(adapter_id, self.ranks.get(adapter_id, MAX_RANK))


def new_cache(lab, num_slots: int):
    return lab.SlotCache(num_slots, MAX_RANK, D_IN, D_OUT)


def acquire_all(cache, adapters, load=None) -> list[int]:
    load = load or Loader()
    return [cache.acquire(a, load) for a in adapters]


def stats_tuple(stats) -> tuple[int, int, int, int]:
    return stats.lookups, stats.hits, stats.misses, stats.evictions


# --- the slot buffers ------------------------------------------------------------------------


def test_buffers_are_allocated_once_with_fixed_shapes(lab):
    cache = new_cache(lab, 3)
    assert cache.A.shape == (3, MAX_RANK, D_IN) and cache.B.shape == (3, D_OUT, MAX_RANK), (
        f"slot buffers must be A (num_slots, max_rank, d_in) and B (num_slots, d_out, max_rank), "
        f"got A {cache.A.shape}, B {cache.B.shape}")
    assert cache.A.dtype == np.float32 and cache.B.dtype == np.float32
    assert cache.resident == [None, None, None], "a new cache holds no adapter"


def buffer_identities(cache) -> list:
    """(id, shape, address) of the slot buffers, taken where the lab's code runs."""
    return [(id(buf), buf.shape, buf.ctypes.data) for buf in (cache.A, cache.B)]


def test_buffers_keep_identity_shape_and_address_across_loads(lab):
    cache = new_cache(lab, 2)
    before = in_worker(lab, buffer_identities, cache)
    acquire_all(cache, [0, 1, 2, 0, 3, 1, 4], Loader({1: 1, 2: 2, 3: 3}))
    after = in_worker(lab, buffer_identities, cache)
    assert after == before, (
        "a load must copy into the existing slot buffers: kernels and captured CUDA graphs hold "
        f"their shapes and addresses (before {before}, after {after})")


def test_load_copies_the_adapter_into_its_slot(lab):
    cache = new_cache(lab, 2)
    slot = cache.acquire(7, Loader())
    A, B = weights(7, MAX_RANK)
    assert_bitwise_equal(cache.A[slot], A, why="A[slot] must hold the adapter's lora_A")
    assert_bitwise_equal(cache.B[slot], B, why="B[slot] must hold the adapter's lora_B")


def test_padding_is_zero_after_loading_a_smaller_rank(lab):
    cache = new_cache(lab, 1)
    load = Loader({0: MAX_RANK, 1: 2})
    cache.acquire(0, load)
    slot = cache.acquire(1, load)  # evicts adapter 0, full rank, from the same slot
    A, B = weights(1, 2)
    assert_bitwise_equal(cache.A[slot, :2], A, why="the rank-2 adapter's A rows")
    assert_bitwise_equal(cache.B[slot, :, :2], B, why="the rank-2 adapter's B columns")
    assert_bitwise_equal(cache.A[slot, 2:], np.zeros((MAX_RANK - 2, D_IN), np.float32),
                         why="A rows past the rank must be zero, not the evicted adapter's")
    assert_bitwise_equal(cache.B[slot, :, 2:], np.zeros((D_OUT, MAX_RANK - 2), np.float32),
                         why="B columns past the rank must be zero, not the evicted adapter's")


def test_rank_above_max_rank_is_rejected_with_vllms_wording(lab):
    cache = new_cache(lab, 2)
    cache.acquire(0, Loader())
    with pytest.raises(ValueError, match=rf"^LoRA rank {MAX_RANK + 1} is greater than "
                                         rf"max_lora_rank {MAX_RANK}\.$"):
        cache.acquire(1, Loader({1: MAX_RANK + 1}))
    assert cache.resident == [0, None], "a rejected load must leave the slots untouched"
    assert stats_tuple(cache.stats) == (1, 0, 1, 0), "a rejected load is not a lookup"


def refused_weights(adapter_id: int, bad: str) -> tuple[np.ndarray, np.ndarray]:
    """Weights a load must refuse: a wrong shape, or a rank above ``MAX_RANK``."""
    if bad == "rank_above_max_rank":
        return weights(adapter_id, MAX_RANK + 1)
    A, B = weights(adapter_id, 2)
    return {"A_width": (A[:, :-1], B), "B_height": (A, B[:-1]),
            "rank_mismatch": (A, B[:, :1])}[bad]


WRONG_SHAPES = ["A_width", "B_height", "rank_mismatch"]


@pytest.mark.parametrize("bad", WRONG_SHAPES)
def test_load_with_wrong_shapes_is_rejected(lab, bad):
    A, B = refused_weights(0, bad)
    with pytest.raises(ValueError, match=r"^load\(0\)") as err:
        new_cache(lab, 1).acquire(0, lambda _: (A, B))
    assert str(A.shape) in str(err.value) or str(B.shape) in str(err.value), (
        f"the message must give the shapes the load returned (A {A.shape}, B {B.shape}), "
        f"got: {err.value}")


@pytest.mark.parametrize("bad", [*WRONG_SHAPES, "rank_above_max_rank"])
def test_a_refused_load_into_a_full_cache_changes_nothing(lab, bad):
    cache, load = new_cache(lab, 2), Loader()
    acquire_all(cache, [0, 1, 0], load)  # full, LRU order [1, 0]: a miss would evict 1
    before = (cache.resident, cache.lru_order(), stats_tuple(cache.stats))
    A, B = cache.A.copy(), cache.B.copy()
    with pytest.raises(ValueError):
        cache.acquire(2, lambda _: refused_weights(2, bad))
    after = (cache.resident, cache.lru_order(), stats_tuple(cache.stats))
    assert after == before, (
        f"a refused load ({bad}) must change nothing, not evict first: (resident, lru_order, "
        f"(lookups, hits, misses, evictions)) went from {before} to {after}")
    assert_bitwise_equal(cache.A, A, why=f"a refused load ({bad}) must not touch the A slots")
    assert_bitwise_equal(cache.B, B, why=f"a refused load ({bad}) must not touch the B slots")


# --- layouts, LRU order, pins (in the style of vLLM's tests/lora/test_lora_manager.py) --------


def test_slots_fill_lowest_first_and_evictions_reuse_the_victims_slot(lab):
    cache = new_cache(lab, 3)
    assert acquire_all(cache, [1, 2, 3]) == [0, 1, 2]
    assert cache.resident == [1, 2, 3]
    cache.acquire(1, Loader())  # a hit: 1 becomes most recently used
    assert cache.lru_order() == [2, 3, 1], "a hit must move the adapter to the MRU end"
    assert cache.acquire(4, Loader()) == 1
    assert cache.resident == [1, 4, 3], "the miss must evict 2, the least recently used"
    assert cache.acquire(5, Loader()) == 2
    assert cache.resident == [1, 4, 5]
    assert cache.lru_order() == [1, 4, 5]
    assert [cache.slot_of(a) for a in (1, 2, 4, 5)] == [0, None, 1, 2]
    assert stats_tuple(cache.stats) == (6, 1, 5, 2), "(lookups, hits, misses, evictions)"


def test_a_hit_does_not_reload(lab):
    cache, load = new_cache(lab, 2), Loader()
    acquire_all(cache, [1, 2, 1, 2, 1], load)
    assert load.calls == [1, 2], f"only misses may call load, got calls {load.calls}"


def test_pinned_adapter_is_never_evicted(lab):
    cache = new_cache(lab, 2)
    acquire_all(cache, [1, 2])
    cache.pin(1)  # 1 is the LRU adapter, but a running request holds it
    cache.acquire(3, Loader())
    assert cache.resident == [1, 3], "the miss must evict 2, the LRU *unpinned* adapter"


def test_pins_are_counted(lab):
    cache = new_cache(lab, 2)
    acquire_all(cache, [1, 2])
    cache.pin(1)
    cache.pin(1)
    cache.unpin(1)
    assert cache.pin_count(1) == 1
    cache.acquire(3, Loader())
    assert cache.resident == [1, 3], "one of two pins released: 1 must stay resident"
    cache.unpin(1)
    assert cache.pin_count(1) == 0
    cache.acquire(4, Loader())
    assert cache.resident == [4, 3], "after its last unpin, 1 is the LRU victim again"


def test_miss_with_every_slot_pinned_raises_and_changes_nothing(lab):
    cache, load = new_cache(lab, 2), Loader()
    acquire_all(cache, [1, 2], load)
    cache.pin(1)
    cache.pin(2)
    with pytest.raises(RuntimeError, match="pinned"):
        cache.acquire(3, load)
    assert cache.resident == [1, 2] and cache.lru_order() == [1, 2]
    assert stats_tuple(cache.stats) == (2, 0, 2, 0), "a refused miss is not a lookup"
    assert load.calls == [1, 2], "a refused miss must not load"
    assert cache.acquire(2, load) == 1, "a hit on a pinned adapter needs no slot: it must work"


def test_pin_and_unpin_reject_unknown_adapters(lab):
    cache = new_cache(lab, 2)
    cache.acquire(1, Loader())
    with pytest.raises(ValueError, match="9"):
        cache.unpin(9)
    with pytest.raises(ValueError, match="1"):
        cache.unpin(1)  # resident but not pinned
    with pytest.raises(ValueError, match="9"):
        cache.pin(9)  # only a resident adapter can be pinned


@pytest.mark.parametrize("num_slots, error", [(0, ValueError), (-1, ValueError),
                                              (2.0, TypeError), (True, TypeError)])
def test_num_slots_must_be_a_positive_int(lab, num_slots, error):
    with pytest.raises(error, match="num_slots"):
        lab.SlotCache(num_slots, MAX_RANK, D_IN, D_OUT)


# --- hit accounting --------------------------------------------------------------------------


@pytest.mark.parametrize("trace, num_slots, expected", [
    # (lookups, hits, misses, evictions), worked by hand in README.md
    ([1, 2, 1, 3, 1, 2], 2, (6, 2, 4, 2)),
    ([1, 2, 3, 1, 2, 3], 2, (6, 0, 6, 4)),
    ([1, 2, 3, 1, 2, 3], 3, (6, 3, 3, 0)),
    ([1, 1, 1, 2, 2, 1], 1, (6, 3, 3, 2)),
    ([], 2, (0, 0, 0, 0)),
])
def test_small_traces_give_hand_computed_stats(lab, trace, num_slots, expected):
    got = stats_tuple(lab.simulate(trace, num_slots))
    assert got == expected, f"simulate({trace}, {num_slots}): got {got}, expected {expected}"


def test_compulsory_misses_count_as_misses(lab):
    stats = lab.simulate(list(range(5)), 5)
    assert stats_tuple(stats) == (5, 0, 5, 0), "first touches are misses; filling evicts nothing"
    assert stats.hit_rate == 0.0


def test_base_requests_take_no_slot_and_no_lookup(lab):
    trace = [None, 1, None, 2, 1, None]
    assert stats_tuple(lab.simulate(trace, 1)) == (3, 0, 3, 2), (
        "None is a base-model request: it must neither count as a lookup nor evict")
    assert lab.replay(trace, 1) == [True, False, True, False, False, True], (
        "replay: one label per item; base requests are hot (they never wait for a load)")


def test_replay_labels_are_simulates_misses(lab):
    trace = lab.zipf_80_20_trace(NUM_ADAPTERS, 2_000, SEED)
    labels, stats = lab.replay(trace, 4), lab.simulate(trace, 4)
    assert len(labels) == len(trace)
    assert (labels.count(True), labels.count(False)) == (stats.hits, stats.misses)
    assert stats.hits + stats.misses == stats.lookups == len(trace)


def test_replaying_a_trace_gives_identical_stats(lab):
    trace = lab.zipf_80_20_trace(NUM_ADAPTERS, 2_000, SEED)
    assert lab.simulate(trace, 3) == lab.simulate(trace, 3)
    assert lab.replay(trace, 3) == lab.replay(trace, 3)


def test_replay_rejects_unhashable_trace_items(lab):
    with pytest.raises(TypeError, match="position 1"):
        lab.replay([1, [2], 3], 2)


# --- 80/20 traffic and the LRU thrash ------------------------------------------------------


def test_zipf_weights_put_80_percent_on_the_hottest_fifth(lab):
    w = lab.zipf_80_20_weights(NUM_ADAPTERS)
    hot = round(0.2 * NUM_ADAPTERS)
    assert w.shape == (NUM_ADAPTERS,) and np.isclose(w.sum(), 1.0)
    assert np.all(np.diff(w) < 0), "adapter 0 is the hottest; popularity falls with the id"
    assert np.isclose(w[:hot].sum(), 0.8), f"top {hot} adapters draw {w[:hot].sum():.4f}, not 0.8"


def test_zipf_trace_is_seeded_reproducible_and_80_20(lab):
    trace = lab.zipf_80_20_trace(NUM_ADAPTERS, NUM_REQUESTS, SEED)
    assert trace == lab.zipf_80_20_trace(NUM_ADAPTERS, NUM_REQUESTS, SEED), "same seed, same trace"
    assert trace != lab.zipf_80_20_trace(NUM_ADAPTERS, NUM_REQUESTS, SEED + 1)
    assert len(trace) == NUM_REQUESTS and set(trace) <= set(range(NUM_ADAPTERS))
    hot_share = np.mean(np.asarray(trace) < round(0.2 * NUM_ADAPTERS))
    assert abs(hot_share - 0.8) < SHARE_TOL, f"hot adapters drew {hot_share:.3f} of requests"


def test_four_slots_serve_most_of_80_20_traffic(lab):
    trace = lab.zipf_80_20_trace(NUM_ADAPTERS, NUM_REQUESTS, SEED)
    rate = lab.simulate(trace, 4).hit_rate
    assert rate > TARGET_80_20_HIT_RATE, f"4 slots over 16 adapters: hit rate {rate:.3f}"


def test_lru_hit_rate_never_falls_as_slots_grow(lab):
    # any trace shows it; the 80/20 workload's first 2,000 requests do, five times faster
    trace = lab.zipf_80_20_trace(NUM_ADAPTERS, NUM_REQUESTS, SEED)[:2_000]
    hits = [lab.simulate(trace, k).hits for k in range(1, NUM_ADAPTERS + 1)]
    drops = [(k, k + 1) for k, (a, b) in enumerate(itertools.pairwise(hits), 1) if b < a]
    assert not drops, f"LRU is a stack algorithm; hits fell from slots {drops[0]}: {hits}"


@pytest.mark.parametrize("k", [1, 2, 4, 8])
def test_cyclic_trace_over_k_plus_one_adapters_thrashes_k_slots(lab, k):
    trace = list(range(k + 1)) * 10
    labels = lab.replay(trace, k)
    assert labels.count(True) == 0, (
        f"LRU with {k} slots on a cycle of {k + 1}: every request evicts the next one needed, "
        f"so every request misses; {first_mismatch(labels, [False] * len(labels))}")
    warm = lab.replay(trace, k + 1)[k + 1:]
    assert all(warm), f"with {k + 1} slots the cycle fits: {first_mismatch(warm, [True] * len(warm))}"


# --- the scheduler: defer, never a barrier ----------------------------------------------------


def queue(lab, *adapters, tokens: int = 1):
    """Requests with rids 0, 1, ... for the given adapters (None = base)."""
    return [lab.Request(rid, adapter, tokens) for rid, adapter in enumerate(adapters)]


def rids(requests) -> list[int]:
    return [r.rid for r in requests]


def test_reference_scenario_defers_L2_and_lets_base_requests_through(lab):
    waiting = queue(lab, "L1", "L2", None, None)
    scheduled, waiting = lab.schedule_step(waiting, [], max_loras=1, max_batch=8)
    assert rids(scheduled) == [0, 2, 3], (
        "max_loras=1, queue [L1, L2, base, base]: L2 is deferred and the walk goes on; "
        f"scheduled rids {rids(scheduled)} ({first_mismatch(rids(scheduled), [0, 2, 3])})")
    assert rids(waiting) == [1], "L2 keeps its place"
    scheduled, waiting = lab.schedule_step(waiting, [], max_loras=1, max_batch=8)
    assert rids(scheduled) == [1] and waiting == [], "L2 heads the next walk"


def test_deferred_requests_keep_fifo_order(lab):
    waiting = queue(lab, "A", "B", "C", "B", None, "D", "A")
    scheduled, waiting = lab.schedule_step(waiting, [], max_loras=1, max_batch=8)
    assert rids(scheduled) == [0, 4, 6], "A, the base request and A's second request fit"
    assert rids(waiting) == [1, 2, 3, 5], f"deferred in queue order: {rids(waiting)}"


def test_running_adapters_count_towards_max_loras(lab):
    waiting = queue(lab, "Y", "X", None, "Z")
    scheduled, waiting = lab.schedule_step(waiting, ["X", "W"], max_loras=2, max_batch=8)
    assert rids(scheduled) == [1, 2], "X and W are running: only X's request and base fit"
    assert rids(waiting) == [0, 3]


@pytest.mark.parametrize("max_batch", [0, 1, 3])
def test_max_batch_is_respected(lab, max_batch):
    waiting = queue(lab, None, "A", None, "A", None)
    scheduled, waiting = lab.schedule_step(waiting, [], max_loras=1, max_batch=max_batch)
    assert rids(scheduled) == list(range(max_batch)), "admit in queue order until the batch is full"
    assert rids(waiting) == list(range(max_batch, 5)), "the rest wait, in order"


@pytest.mark.parametrize("max_loras, error", [(0, ValueError), (-2, ValueError),
                                              (1.0, TypeError)])
def test_max_loras_must_be_a_positive_int(lab, max_loras, error):
    with pytest.raises(error, match="max_loras"):
        lab.schedule_step(queue(lab, "A"), [], max_loras=max_loras, max_batch=4)


# --- sizing max_loras from traffic and memory --------------------------------------------------


def trace_80_20(lab) -> list[int]:
    return lab.zipf_80_20_trace(NUM_ADAPTERS, NUM_REQUESTS, SEED)


def test_size_slots_finds_the_smallest_count_reaching_the_target(lab):
    trace = trace_80_20(lab)
    sizing = lab.size_slots(trace, SLOT_BYTES, GIB, TARGET_80_20_HIT_RATE)
    n = sizing.num_slots
    assert sizing.meets_target and 1 <= n <= 4, f"1 GiB affords 32 slots; 4 reach 75%: {sizing}"
    assert sizing.hit_rate == lab.simulate(trace, n).hit_rate >= TARGET_80_20_HIT_RATE
    assert sizing.reserved_bytes == n * SLOT_BYTES
    assert n == 1 or lab.simulate(trace, n - 1).hit_rate < TARGET_80_20_HIT_RATE, (
        f"{n - 1} slots already reach the target: {n} is not the smallest")


def test_size_slots_says_cannot_when_the_budget_falls_short(lab):
    trace = trace_80_20(lab)
    sizing = lab.size_slots(trace, SLOT_BYTES, 2 * SLOT_BYTES + 1, TARGET_80_20_HIT_RATE)
    assert not sizing.meets_target, f"2 slots cannot reach 75% on this trace: {sizing}"
    assert sizing.num_slots == 2 and sizing.reserved_bytes == 2 * SLOT_BYTES
    assert sizing.hit_rate == lab.simulate(trace, 2).hit_rate, "the best rate within budget"


def test_size_slots_says_cannot_when_not_one_slot_fits(lab):
    trace = trace_80_20(lab)
    sizing = lab.size_slots(trace, SLOT_BYTES, SLOT_BYTES - 1, TARGET_80_20_HIT_RATE)
    assert (sizing.meets_target, sizing.num_slots, sizing.hit_rate) == (False, 0, 0.0), sizing
    assert sizing.reason, "the 'cannot' answer must say why"


@pytest.mark.parametrize("target", [0.0, -0.1, 1.5])
def test_size_slots_rejects_a_target_outside_0_1(lab, target):
    with pytest.raises(ValueError, match="target_hit_rate"):
        lab.size_slots([0, 1, 0], SLOT_BYTES, GIB, target)


# --- the engine: scheduler + cache ----------------------------------------------------------


def new_engine(lab, num_slots: int, max_loras: int, max_batch: int):
    return lab.Engine(new_cache(lab, num_slots), max_loras, max_batch, Loader())


def test_engine_counts_one_lookup_per_request_not_per_token(lab):
    engine = new_engine(lab, num_slots=2, max_loras=2, max_batch=4)
    requests = queue(lab, 1, 2, None, 1, 3, tokens=5)
    engine.run(requests, max_steps=100)
    stats = engine.cache.stats
    assert stats.lookups == 4, (
        f"4 adapter requests of 5 tokens each: 4 lookups, got {stats.lookups} "
        "(a lookup per token or per retry inflates the hit rate)")
    assert stats.hits + stats.misses == stats.lookups


def test_a_running_adapter_keeps_its_slot_while_others_pass_through(lab):
    # 2 slots: adapter 7 decodes for 5 steps while 8, then 9 (one token each) come and go.
    # 9's load must evict 8, which finished, never 7, which is still running.
    engine = new_engine(lab, num_slots=2, max_loras=2, max_batch=4)
    requests = [lab.Request(0, 7, 5), lab.Request(1, 8, 1), lab.Request(2, 9, 1)]
    records = engine.run(requests, max_steps=20)
    problems = engine_problems(records, num_slots=2, max_loras=2, max_batch=4)
    assert not problems, problems[0]
    a_slots = [slot for rec in records for rid, _, slot in rec.batch if rid == 0]
    assert a_slots == [0] * 5, f"adapter 7 must decode 5 steps from slot 0, got slots {a_slots}"


def test_engine_rejects_max_loras_above_its_slots(lab):
    with pytest.raises(ValueError, match="max_loras"):
        new_engine(lab, num_slots=2, max_loras=3, max_batch=4)


# --- invariants over random workloads ---------------------------------------------------------

adapter_ids = st.one_of(st.none(), st.integers(0, 5))


@st.composite
def workloads(draw):
    num_slots = draw(st.integers(1, 4))
    max_loras = draw(st.integers(1, num_slots))
    max_batch = draw(st.integers(1, 6))
    jobs = draw(st.lists(st.tuples(adapter_ids, st.integers(1, 4)), max_size=25))
    return num_slots, max_loras, max_batch, jobs


@st.composite
def churn_workloads(draw):
    """Long requests admitted first, then short ones over more distinct adapters than slots:
    later admissions must load around the long requests' adapters while those still decode."""
    num_slots = draw(st.integers(2, 4))
    max_loras = draw(st.integers(2, num_slots))
    max_batch = draw(st.integers(2, 6))
    adapters = st.integers(0, num_slots + 2)
    long = draw(st.lists(st.tuples(adapters, st.integers(4, 10)), min_size=1, max_size=2))
    short = draw(st.lists(st.tuples(st.one_of(st.none(), adapters), st.integers(1, 2)),
                          min_size=num_slots + 1, max_size=16))
    return num_slots, max_loras, max_batch, long + short


def engine_problems(records, num_slots: int, max_loras: int, max_batch: int) -> list[str]:
    """Every broken invariant of an engine run, in step order: the batch fits ``max_loras`` and
    ``max_batch``; every running request's adapter is resident, in the slot its record names,
    the same slot at every step of its life."""
    problems = []
    slot_held: dict[int, int] = {}
    for step, rec in enumerate(records):
        adapters = {a for _, a, _ in rec.batch if a is not None}
        if not len(adapters) <= max_loras <= num_slots:
            problems.append(f"step {step}: {len(adapters)} distinct adapters > max_loras "
                            f"{max_loras}")
        if len(rec.batch) > max_batch:
            problems.append(f"step {step}: batch of {len(rec.batch)} > max_batch {max_batch}")
        for rid, adapter, slot in rec.batch:
            if adapter is None:
                if slot != -1:
                    problems.append(f"step {step}: base request {rid} given slot {slot}")
                continue
            valid = isinstance(slot, int) and 0 <= slot < num_slots
            if not valid or rec.resident[slot] != adapter:
                holds = f"which holds {rec.resident[slot]!r}" if valid else "not a slot"
                problems.append(
                    f"step {step}: request {rid} runs adapter {adapter!r} from slot {slot!r}, "
                    f"{holds} (resident {list(rec.resident)}): a running request's adapter was "
                    f"evicted; it must stay pinned from admission until the request finishes")
            elif slot_held.setdefault(rid, slot) != slot:
                problems.append(f"step {step}: request {rid} moved from slot {slot_held[rid]} "
                                f"to slot {slot}")
    return problems


def check_engine_run(lab, workload) -> None:
    num_slots, max_loras, max_batch, jobs = workload
    engine = new_engine(lab, num_slots, max_loras, max_batch)
    requests = [lab.Request(rid, adapter, tokens) for rid, (adapter, tokens) in enumerate(jobs)]
    # progress every step: the running batch decodes, or the queue's head is admitted
    records = engine.run(requests, max_steps=sum(t for _, t in jobs) + 1)
    problems = engine_problems(records, num_slots, max_loras, max_batch)
    assert not problems, f"{len(problems)} broken invariant(s); the first: {problems[0]}"
    finished = [rid for rec in records for rid in rec.finished]
    assert sorted(finished) == list(range(len(jobs))), "every request is served exactly once"
    stats = engine.cache.stats
    assert stats.lookups == sum(a is not None for a, _ in jobs), "one lookup per adapter request"
    assert stats.hits + stats.misses == stats.lookups


@given(workloads())
def test_engine_invariants_hold_on_random_workloads(lab, workload):
    check_engine_run(lab, workload)


@given(churn_workloads())
def test_running_adapters_stay_resident_under_slot_churn(lab, workload):
    check_engine_run(lab, workload)


@given(st.lists(adapter_ids, max_size=30), st.lists(adapter_ids, max_size=6),
       st.integers(1, 3), st.integers(0, 8))
def test_schedule_step_defers_only_what_cannot_fit(lab, adapters, running, max_loras, max_batch):
    running = list(dict.fromkeys(a for a in running if a is not None))[:max_loras]
    waiting = queue(lab, *adapters)
    scheduled, left = lab.schedule_step(waiting, running, max_loras, max_batch)
    assert sorted(rids(scheduled) + rids(left)) == rids(waiting), "a request was lost or duplicated"
    assert rids(scheduled) == sorted(rids(scheduled)) and rids(left) == sorted(rids(left)), (
        "scheduled and still-waiting requests keep queue order")
    assert len(scheduled) <= max_batch
    batch = set(running) | {r.adapter for r in scheduled if r.adapter is not None}
    assert len(batch) <= max_loras, f"{len(batch)} distinct adapters > max_loras={max_loras}"
    if len(scheduled) < max_batch:  # seats were left: every waiting request must be blocked
        for r in left:
            assert r.adapter is not None and r.adapter not in batch and len(batch) == max_loras, (
                f"request {r.rid} ({r.adapter!r}) was left waiting with seats free and room for it:"
                " a barrier, not a deferral")


@given(st.lists(st.tuples(st.sampled_from(["acquire", "pin", "unpin"]), st.integers(0, 5)),
                max_size=40), st.integers(1, 4))
@example(ops=[("acquire", 0), ("pin", 0), ("acquire", 1)], num_slots=1)  # always one refusal
def test_pinned_adapters_survive_every_acquire(lab, ops, num_slots):
    cache, load = new_cache(lab, num_slots), Loader()
    for op, adapter in ops:
        if op == "pin" and adapter in cache.resident:
            cache.pin(adapter)
        elif op == "unpin" and cache.pin_count(adapter) > 0:
            cache.unpin(adapter)
        elif op == "acquire":
            held = {a: cache.slot_of(a) for a in cache.resident if a is not None
                    and cache.pin_count(a) > 0}
            if len(held) == num_slots and adapter not in held:
                with pytest.raises(RuntimeError):
                    cache.acquire(adapter, load)
                continue
            cache.acquire(adapter, load)
            moved = {a: s for a, s in held.items() if cache.slot_of(a) != s}
            assert not moved, f"pinned adapters left their slots: {moved}"
            assert cache.resident.count(adapter) == 1
    stats = cache.stats
    assert stats.hits + stats.misses == stats.lookups


# --- views, boundaries and records --------------------------------------------------------------


def flat_load(adapter_id, rank=2):
    """A rank-2 adapter whose entries encode the length of its id."""
    v = 1.0 + len(str(adapter_id))
    return np.full((rank, D_IN), v), np.full((D_OUT, rank), -v)


def cache_with(lab, num_slots, adapters):
    cache = lab.SlotCache(num_slots, MAX_RANK, D_IN, D_OUT)
    for a in adapters:
        cache.acquire(a, flat_load)
    return cache


def test_resident_is_a_copy(lab):
    cache = cache_with(lab, 3, ["a", "b"])
    view = cache.resident
    view[0], view[2] = "zz", "zz"
    assert cache.resident == ["a", "b", None], "resident is a copy: editing it changes nothing"
    assert "zz" not in cache and cache.slot_of("zz") is None
    assert cache.lru_order() == ["a", "b"]


def test_slot_of_and_contains_leave_lru_order_alone(lab):
    cache = cache_with(lab, 2, ["a", "b"])  # LRU order [a, b]: a miss evicts a
    assert cache.slot_of("a") == 0 and "a" in cache and cache.pin_count("a") == 0
    assert cache.lru_order() == ["a", "b"], "slot_of is a lookup: it does not refresh a"
    cache.acquire("c", flat_load)
    assert cache.resident == ["c", "b"], "a was least recently used and is the one evicted"
    assert cache.stats.lookups == 3, "slot_of and `in` are not lookups"


def test_a_rank_zero_load_is_refused(lab):
    cache = cache_with(lab, 2, ["a"])
    with pytest.raises(ValueError, match=r"^load\(7\)"):
        cache.acquire(7, lambda a: flat_load(a, rank=0))
    assert cache.resident == ["a", None] and cache.stats.lookups == 1


@pytest.mark.parametrize("n", [3, 8, 13, 18, 23])
def test_the_hot_set_is_rounded_not_floored(lab, n):
    # 0.2 * n = 0.6, 1.6, 2.6, 3.6, 4.6: round and floor differ
    hot = max(1, round(0.2 * n))
    w = lab.zipf_80_20_weights(n)
    assert w[:hot].sum() == pytest.approx(0.8, abs=1e-9), (
        f"n={n}: the hottest round(0.2 n) = {hot} adapters draw 80%, got {w[:hot].sum():.4f}")


def test_the_trace_is_drawn_from_the_given_seed_only(lab):
    w = lab.zipf_80_20_weights(16)
    want = np.random.default_rng(7).choice(16, size=500, p=w).tolist()
    np.random.seed(1)
    first = lab.zipf_80_20_trace(16, 500, 7)
    np.random.seed(2)
    second = lab.zipf_80_20_trace(16, 500, 7)
    assert first == second == want, "the trace is np.random.default_rng(seed).choice(n, size, p)"
    assert all(type(a) is int for a in first), "Python ints"


def test_size_slots_target_is_reached_at_equality(lab):
    trace = [0, 1, 0, 1]  # 1 slot: 0% hits; 2 slots: exactly 50%
    sizing = lab.size_slots(trace, 10, 100, 0.5)
    assert (sizing.meets_target, sizing.num_slots, sizing.hit_rate) == (True, 2, 0.5), sizing


def test_a_cannot_answer_caps_num_slots_at_the_distinct_adapters(lab):
    trace = [0, 1, 2, 0, 1, 2]  # 3 distinct adapters: 3 slots give the best rate, 50%
    sizing = lab.size_slots(trace, 10, 1000, 0.9)  # the budget affords 100 slots
    assert (sizing.meets_target, sizing.num_slots, sizing.hit_rate) == (False, 3, 0.5), sizing
    assert sizing.reserved_bytes == 30


def test_a_running_base_request_holds_no_adapter(lab):
    # the Engine passes None for a running base request: it counts towards nothing
    scheduled, waiting = lab.schedule_step([lab.Request(1, "a")], [None], max_loras=1,
                                           max_batch=2)
    assert [r.rid for r in scheduled] == [1] and waiting == []
    engine = lab.Engine(lab.SlotCache(1, MAX_RANK, D_IN, D_OUT), 1, 4, flat_load)
    records = engine.run([lab.Request(0, None, tokens=3), lab.Request(1, "a")], max_steps=5)
    assert sorted(rid for rid, _, _ in records[0].batch) == [0, 1], (
        "a running base request leaves the one adapter seat free: both run in step 1 (in any "
        "order: StepRecord.batch promises its rows, not their order)")


def test_hit_rate_is_zero_before_the_first_lookup(lab):
    assert lab.CacheStats(0, 0, 0, 0).hit_rate == 0.0
    assert lab.simulate([], 2).hit_rate == 0.0 and lab.simulate([None, None], 1).hit_rate == 0.0


def test_wide_slots_load_like_narrow_ones(lab):
    # widths past 256: shapes are compared by value
    cache = lab.SlotCache(1, 2, 300, 400)
    A, B = np.ones((2, 300)), np.ones((400, 2))
    assert cache.acquire("w", lambda _: (A, B)) == 0 and cache.ranks[0] == 2


def test_a_rank_past_256_loads(lab):
    # ranks are compared by value: a rank-300 adapter fills a max_rank=300 slot
    cache = lab.SlotCache(1, 300, 2, 3)
    A, B = np.ones((300, 2)), np.ones((3, 300))
    assert cache.acquire("r", lambda _: (A, B)) == 0 and cache.ranks[0] == 300
    assert cache.A[0].sum() == 600 and cache.B[0].sum() == 900


@pytest.mark.parametrize("bad", ["A-wider", "A-3d", "B-taller", "B-1d", "A-1d", "B-3d",
                                 "B-wider-rank"])
def test_every_wrong_shape_is_refused_before_any_copy(lab, bad):
    A, B = np.ones((2, D_IN)), np.ones((D_OUT, 2))
    A, B = {"A-wider": (np.ones((2, D_IN + 1)), B), "A-3d": (A[..., None], B),
            "B-taller": (A, np.ones((D_OUT + 1, 2))), "B-1d": (A, np.ones(D_OUT)),
            "A-1d": (np.ones(D_IN), B), "B-3d": (A, B[..., None]),
            "B-wider-rank": (A, np.ones((D_OUT, 3)))}[bad]  # B's rank above A's: no shared r
    cache = cache_with(lab, 1, [])
    with pytest.raises(ValueError, match=r"^load\(7\)"):
        cache.acquire(7, lambda _: (A, B))
    assert cache.resident == [None] and not cache.A.any()


def test_two_adapters_hot_set_is_one(lab):
    w = lab.zipf_80_20_weights(2)  # round(0.4) = 0, but the hot set holds at least one adapter
    assert w[0] == pytest.approx(0.8, abs=1e-9) and w.sum() == pytest.approx(1.0)


def test_an_empty_trace_can_be_drawn(lab):
    assert lab.zipf_80_20_trace(4, 0, 0) == []


def test_size_slots_answers_with_one_slot_when_one_suffices(lab):
    sizing = lab.size_slots([0, 0, 0, 0], 10, 100, 0.5)  # 1 slot: 3 hits of 4
    assert (sizing.meets_target, sizing.num_slots, sizing.hit_rate) == (True, 1, 0.75), sizing


def test_size_slots_is_the_smallest_count_for_every_target(lab):
    trace = lab.zipf_80_20_trace(12, 600, 3)
    rates = [lab.simulate(trace, n).hit_rate for n in range(1, 13)]
    # every rate a count achieves is itself a target: "reaches" includes equality
    for target in sorted({*np.linspace(0.05, max(rates), 23).tolist(), *rates}):
        want = next(n for n, r in enumerate(rates, 1) if r >= target)
        got = lab.size_slots(trace, 10, 10**6, float(target))
        assert got.meets_target and got.num_slots == want, (
            f"target {target:.3f}: the smallest count is {want}, got {got}")


def test_not_one_slot_reserves_nothing(lab):
    sizing = lab.size_slots([0, 1], 10, 9, 0.5)
    assert (sizing.num_slots, sizing.reserved_bytes, sizing.meets_target) == (0, 0, False)


def test_a_trace_of_base_requests_is_answered(lab):
    sizing = lab.size_slots([None, None, None], 10, 100, 0.5)  # no lookups: hit rate 0.0
    assert sizing.meets_target is False and sizing.num_slots >= 0


def test_a_large_cache_evicts_when_full(lab):
    # more slots than small-int caching covers: "full" is a comparison of counts
    cache = lab.SlotCache(300, 1, 1, 1)
    for a in range(301):
        cache.acquire(a, lambda _: (np.ones((1, 1)), np.ones((1, 1))))
    assert 0 not in cache and cache.stats.evictions == 1 and cache.resident[0] == 300


def test_the_hot_set_is_fitted_where_the_exponent_is_below_one(lab):
    # n = 5000: the top 1000 adapters draw 80% at s < 1 (at s = 1 they draw less than 80%)
    w = lab.zipf_80_20_weights(5000)
    assert w[:1000].sum() == pytest.approx(0.8, abs=1e-9)
    ranks = np.arange(1, 5001)
    assert (1.0 / ranks)[:1000].sum() / (1.0 / ranks).sum() > 0.8  # so s < 1 here


def test_a_single_adapter_cannot_use_a_second_slot(lab):
    sizing = lab.size_slots([0, 0], 10, 100, 1.0)  # 1 slot: 50%, and a second cannot help
    assert (sizing.meets_target, sizing.num_slots, sizing.hit_rate) == (False, 1, 0.5), sizing


def test_run_stops_at_max_steps_past_small_counts(lab):
    engine = lab.Engine(lab.SlotCache(1, MAX_RANK, D_IN, D_OUT), 1, 1, flat_load)
    with pytest.raises(RuntimeError):  # "RuntimeError past max_steps"
        engine.run([lab.Request(i, None) for i in range(300)], max_steps=299)


@pytest.mark.structural
def test_the_records_are_frozen(lab):
    import dataclasses
    for record, field in [(lab.Request(0, None), "tokens"), (lab.CacheStats(0, 0, 0, 0), "hits"),
                          (lab.StepRecord((), (), ()), "finished"),
                          (lab.SlotSizing(0, 0.0, 0, False, ""), "num_slots")]:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(record, field, 1)


def test_a_batch_of_more_than_256_seats_fills_exactly(lab):
    # counts past small-int caching: "full" and "fewer than max_loras" compare values
    base = [lab.Request(i, None) for i in range(400)]
    scheduled, waiting = lab.schedule_step(base, [], max_loras=1, max_batch=300)
    assert (len(scheduled), len(waiting)) == (300, 100), "max_batch seats, then the walk stops"
    distinct = [lab.Request(i, i) for i in range(400)]
    scheduled, waiting = lab.schedule_step(distinct, [], max_loras=300, max_batch=400)
    assert (len(scheduled), len(waiting)) == (300, 100), "max_loras distinct adapters, the rest defer"


def test_each_request_runs_exactly_its_tokens_steps(lab):
    # Request.tokens: "decode steps it stays in the running batch", whatever runs beside it
    engine = lab.Engine(lab.SlotCache(2, MAX_RANK, D_IN, D_OUT), 2, 4, flat_load)
    requests = [lab.Request(0, "a", tokens=3), lab.Request(1, None, tokens=1),
                lab.Request(2, "b", tokens=2)]
    records = engine.run(requests, max_steps=5)
    steps = {r.rid: sum(r.rid in {rid for rid, _, _ in rec.batch} for rec in records)
             for r in requests}
    assert steps == {0: 3, 1: 1, 2: 2}, f"steps in the batch per rid: {steps}"
    assert [rec.finished for rec in records] == [(1,), (2,), (0,)]


def test_a_request_runs_one_step_by_default(lab):
    assert lab.Request(0, "a").tokens == 1, "Request(rid, adapter, tokens=1)"
    engine = lab.Engine(lab.SlotCache(1, MAX_RANK, D_IN, D_OUT), 1, 1, flat_load)
    records = engine.run([lab.Request(0, "a"), lab.Request(1, None)], max_steps=2)
    assert [rec.finished for rec in records] == [(0,), (1,)]


# --- every admitted form of a trace, and the cache's operations interleaved ---------------------


def lru_labels(trace, num_slots: int) -> list[bool]:
    """The cache model from first principles: hit/miss per item; None a hit that takes no slot."""
    order: OrderedDict = OrderedDict()
    labels = []
    for a in trace:
        if a is None:
            labels.append(True)
            continue
        labels.append(a in order)
        order[a] = True
        order.move_to_end(a)
        if len(order) > num_slots:
            order.popitem(last=False)
    return labels


ID_FORMS = {  # equal ids built anew at every occurrence: one adapter, however it was made
    "int": lambda i: i,
    "numpy-int": lambda i: np.int64(i) if i % 2 else i,  # np.int64(3) == 3 and hashes alike
    "str": lambda i: "".join(["tenant-", str(i)]),  # a new str object each time
    "tuple": lambda i: ("org", str(i)),
    "frozenset": lambda i: frozenset({"adapter", i}),
}
TRACE_FORMS = {
    "list": list, "tuple": tuple, "generator": lambda items: (a for a in items),
    "iterator": lambda items: iter(list(items)),
}


@given(st.lists(st.one_of(st.none(), st.integers(0, 7)), max_size=40),
       st.sampled_from(list(ID_FORMS)), st.sampled_from(list(TRACE_FORMS)), st.integers(1, 4))
def test_simulate_and_replay_read_every_form_of_a_trace(lab, raw, id_form, trace_form, num_slots):
    want = lru_labels(raw, num_slots)
    got, stats = in_worker(lab, read_trace, raw, id_form, trace_form, num_slots)
    assert got == want, (
        f"replay of a {trace_form} of {id_form} ids {raw} at {num_slots} slots: "
        f"{first_mismatch(got, want)} (equal ids are one adapter)")
    adapter_labels = [h for a, h in zip(raw, want, strict=True) if a is not None]
    expected = (len(adapter_labels), sum(adapter_labels), len(adapter_labels) - sum(adapter_labels))
    assert stats[:3] == expected, (
        f"simulate of a {trace_form} of {id_form} ids {raw}: (lookups, hits, misses) = "
        f"{stats[:3]}, expected {expected}")


def read_trace(raw, id_form: str, trace_form: str, num_slots: int):
    """Where the lab runs (a generator cannot travel): replay's labels and simulate's stats of
    ``raw`` built in the given forms."""
    lab = load_lab("lab-04")
    items = [None if a is None else ID_FORMS[id_form](a) for a in raw]
    labels = [bool(h) for h in lab.replay(TRACE_FORMS[trace_form](items), num_slots)]
    return labels, stats_tuple(lab.simulate(TRACE_FORMS[trace_form](items), num_slots))


def test_a_numpy_trace_is_a_trace(lab):
    trace = np.array([0, 1, 0, 2, 1, 0, 3, 3])
    assert lab.replay(trace, 2) == lru_labels(trace.tolist(), 2)
    # 0 miss, 1 miss, 0 hit, 2 miss (evicts 1), 1 miss, 0 miss, 3 miss, 3 hit
    assert stats_tuple(lab.simulate(trace, 2))[:3] == (8, 2, 6)


@given(st.lists(st.one_of(st.none(), st.integers(0, 6)), min_size=1, max_size=30),
       st.integers(1, 40), st.integers(0, 400), st.sampled_from([0.2, 0.5, 0.75, 0.9, 1.0]),
       st.sampled_from(["float", "np.float64", "np.float32"]))
def test_size_slots_for_any_trace_budget_and_target(lab, raw, slot_bytes, budget, target, form):
    rate = {k: (sum(h for a, h in zip(raw, lru_labels(raw, k), strict=True) if a is not None)
                / max(1, sum(a is not None for a in raw))) for k in range(1, 9)}
    distinct = len({a for a in raw if a is not None})
    affordable = budget // slot_bytes
    wanted = {"float": float, "np.float64": np.float64, "np.float32": np.float32}[form](target)
    got = lab.size_slots(raw, slot_bytes, budget, wanted)
    if distinct == 0:  # no adapter at all: test_a_trace_of_base_requests_is_answered's case
        assert got.meets_target is False
        return
    fits = [k for k in range(1, min(affordable, distinct) + 1) if rate[k] >= wanted]
    if affordable == 0:
        want = (0, False)
    elif fits:
        want = (fits[0], True)
    else:
        want = (max(1, min(affordable, distinct)), False)
    assert (got.num_slots, got.meets_target) == want, (
        f"size_slots({raw}, slot_bytes={slot_bytes}, budget={budget}, target={target} as "
        f"{form}): expected (num_slots, meets_target) = {want}, got {got} (None items are "
        "base requests: no adapter, no lookup)")
    assert got.reserved_bytes == got.num_slots * slot_bytes


def test_replay_counts_positions_over_every_item(lab):
    with pytest.raises(TypeError) as err:
        lab.replay([None, None, "a", ["b"]], 2)
    assert re.search(r"\bposition 3\b", str(err.value)), (
        f"the bad item is the 4th of the trace, base requests included: got {err.value}")


@pytest.mark.parametrize("tokens, error", [(0, ValueError), (1.5, TypeError)])
def test_run_checks_its_requests_like_submit(lab, tokens, error):
    engine = new_engine(lab, num_slots=1, max_loras=1, max_batch=2)
    with pytest.raises(error) as err:
        engine.run([lab.Request(0, "a", tokens)], max_steps=5)
    assert "tokens" in str(err.value), f"run submits through submit: got {err.value}"


class CacheAgainstItsModel(RuleBasedStateMachine):
    """A SlotCache driven by any interleaving of acquire, pin, unpin and the lookups, beside a
    model: an OrderedDict for LRU order, a slot map, pin counts and the counters. Ids are built
    anew at every call (equal, not identical)."""

    lab = None  # the implementation under test, set by the test that runs the machine

    @initialize(num_slots=st.integers(1, 4))
    def start(self, num_slots):
        self.cache, self.load = self.lab.SlotCache(num_slots, MAX_RANK, D_IN, D_OUT), flat_load
        self.num_slots, self.slots = num_slots, [None] * num_slots
        self.order: OrderedDict = OrderedDict()
        self.pins: dict = {}
        self.counts = [0, 0, 0, 0]  # lookups, hits, misses, evictions

    @rule(i=st.integers(0, 5))
    def acquire(self, i):
        a = "".join(["ad", str(i)])
        if a in self.order:
            self.counts[:2] = [self.counts[0] + 1, self.counts[1] + 1]
            self.order.move_to_end(a)
            want = self.slots.index(a)
        elif None in self.slots:
            want = self.slots.index(None)
            self.counts[0] += 1
            self.counts[2] += 1
        else:
            victims = [v for v in self.order if not self.pins.get(v)]
            if not victims:
                with pytest.raises(RuntimeError):
                    self.cache.acquire(a, self.load)
                return
            want = self.slots.index(victims[0])
            del self.order[victims[0]]
            self.counts = [self.counts[0] + 1, self.counts[1], self.counts[2] + 1,
                           self.counts[3] + 1]
        self.slots[want] = a
        self.order[a] = True
        got = self.cache.acquire(a, self.load)
        assert got == want, (f"acquire({a!r}) gave slot {got}, the model says {want} "
                             f"(slots {self.slots}, LRU {list(self.order)}, pins {self.pins})")

    @rule(i=st.integers(0, 5))
    def pin(self, i):
        a = "".join(["ad", str(i)])
        if a in self.order:
            self.cache.pin(a)
            self.pins[a] = self.pins.get(a, 0) + 1

    @rule(i=st.integers(0, 5))
    def unpin(self, i):
        a = "".join(["ad", str(i)])
        if self.pins.get(a):
            self.cache.unpin(a)
            self.pins[a] -= 1

    @invariant()
    def agrees_with_the_model(self):
        if not hasattr(self, "cache"):
            return
        c = self.cache
        assert list(c.resident) == self.slots, f"resident {c.resident}, model {self.slots}"
        assert list(c.lru_order()) == list(self.order), (
            f"lru_order {c.lru_order()}, model {list(self.order)}")
        for a in list(self.order) + ["ad9"]:
            assert c.slot_of("".join([a])) == (self.slots.index(a) if a in self.slots else None)
            assert ("".join([a]) in c) == (a in self.order)
            assert c.pin_count(a) == self.pins.get(a, 0)
        assert list(c.lru_order()) == list(self.order), "slot_of and `in` must leave LRU order"
        assert stats_tuple(c.stats) == tuple(self.counts), (
            f"stats {stats_tuple(c.stats)}, model (lookups, hits, misses, evictions) "
            f"{tuple(self.counts)}")


def test_cache_operations_interleaved_agree_with_the_model(lab):
    CacheAgainstItsModel.lab = lab
    # first one fixed run of the machine's own rules, so that no draw is needed to meet it: two
    # slots, a hit on the older adapter, then a third adapter evicts the least recently used
    fixed = CacheAgainstItsModel()
    fixed.start(num_slots=2)
    for i in (0, 1, 0, 2):
        fixed.acquire(i)
        fixed.agrees_with_the_model()
    run_state_machine_as_test(CacheAgainstItsModel)


class EngineWithArrivals(RuleBasedStateMachine):
    """Requests arrive between steps (submit, step, submit, ...): every step keeps the limits,
    runs each adapter from a slot that holds it, and at the end every request ran once."""

    lab = None

    @initialize(num_slots=st.integers(1, 3), max_batch=st.integers(1, 4), data=st.data())
    def start(self, num_slots, max_batch, data):
        self.max_loras = data.draw(st.integers(1, num_slots))
        self.num_slots, self.max_batch = num_slots, max_batch
        self.engine = new_engine(self.lab, num_slots, self.max_loras, max_batch)
        self.submitted, self.finished, self.records = 0, [], []

    @rule(jobs=st.lists(st.tuples(st.one_of(st.none(), st.integers(0, 4)), st.integers(1, 3)),
                        max_size=4))
    def arrive(self, jobs):
        self.engine.submit([self.lab.Request(self.submitted + i, a, t)
                            for i, (a, t) in enumerate(jobs)])
        self.submitted += len(jobs)

    @rule()
    def step(self):
        if self.engine.idle():
            return
        record = self.engine.step()
        self.records.append(record)
        self.finished += list(record.finished)
        problems = engine_problems(self.records, self.num_slots, self.max_loras, self.max_batch)
        assert not problems, problems[0]

    def teardown(self):
        if not hasattr(self, "engine"):
            return
        for _ in range(100):
            if self.engine.idle():
                break
            self.finished += list(self.engine.step().finished)
        assert sorted(self.finished) == list(range(self.submitted)), (
            f"every submitted request runs once: finished {sorted(self.finished)}")


def test_engine_with_requests_arriving_between_steps(lab):
    EngineWithArrivals.lab = lab
    run_state_machine_as_test(EngineWithArrivals)
