"""Lab 04 spec, the promises a mutation tool found untested (the course's mutation sweep).

Each test states one documented sentence that the main spec (test_lab.py) left open.
"""

from __future__ import annotations

import numpy as np
import pytest

D_IN, D_OUT, MAX_RANK = 3, 5, 4


def load(adapter_id, rank=2):
    v = 1.0 + len(str(adapter_id))
    return np.full((rank, D_IN), v), np.full((D_OUT, rank), -v)


def cache_with(lab, num_slots, adapters):
    cache = lab.SlotCache(num_slots, MAX_RANK, D_IN, D_OUT)
    for a in adapters:
        cache.acquire(a, load)
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
    cache.acquire("c", load)
    assert cache.resident == ["c", "b"], "a was least recently used and is the one evicted"
    assert cache.stats.lookups == 3, "slot_of and `in` are not lookups"


def test_a_rank_zero_load_is_refused(lab):
    cache = cache_with(lab, 2, ["a"])
    with pytest.raises(ValueError, match=r"^load\(7\)"):
        cache.acquire(7, lambda a: load(a, rank=0))
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
    engine = lab.Engine(lab.SlotCache(1, MAX_RANK, D_IN, D_OUT), 1, 4, load)
    records = engine.run([lab.Request(0, None, tokens=3), lab.Request(1, "a")], max_steps=5)
    assert [rid for rid, _, _ in records[0].batch] == [0, 1], (
        "a running base request leaves the one adapter seat free: both run in step 1")


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
    engine = lab.Engine(lab.SlotCache(1, MAX_RANK, D_IN, D_OUT), 1, 1, load)
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
    engine = lab.Engine(lab.SlotCache(2, MAX_RANK, D_IN, D_OUT), 2, 4, load)
    requests = [lab.Request(0, "a", tokens=3), lab.Request(1, None, tokens=1),
                lab.Request(2, "b", tokens=2)]
    records = engine.run(requests, max_steps=5)
    steps = {r.rid: sum(r.rid in {rid for rid, _, _ in rec.batch} for rec in records)
             for r in requests}
    assert steps == {0: 3, 1: 1, 2: 2}, f"steps in the batch per rid: {steps}"
    assert [rec.finished for rec in records] == [(1,), (2,), (0,)]


def test_a_request_runs_one_step_by_default(lab):
    assert lab.Request(0, "a").tokens == 1, "Request(rid, adapter, tokens=1)"
    engine = lab.Engine(lab.SlotCache(1, MAX_RANK, D_IN, D_OUT), 1, 1, load)
    records = engine.run([lab.Request(0, "a"), lab.Request(1, None)], max_steps=2)
    assert [rec.finished for rec in records] == [(0,), (1,)]
