"""Lab 04 spec, section 6: defer against barrier, measured on workloads instead of asserted.

Every workload is drawn from the ``seed`` fixture (``LAB_SEED``), so a hidden seed re-draws it;
each expectation is a closed form of the drawn numbers, computed before the call (one test
holds ``drain`` to the lab's ``Engine`` on the same workload: the docstring's claim is that
relation).
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from labkit import first_mismatch


def rids(requests) -> list[int]:
    return [r.rid for r in requests]


def jobs_to_requests(lab, jobs):
    """``[(adapter, tokens), ...]`` -> Requests with rids 0, 1, ... (adapter None = base)."""
    return [lab.Request(rid, adapter, tokens) for rid, (adapter, tokens) in enumerate(jobs)]


def check_report(report, policy: str, steps: int, waits: list[int]) -> None:
    assert report.policy == policy, f"the {policy} report names its policy, got {report.policy!r}"
    got = list(report.waits)
    assert got == waits, (f"{policy}: waits per request (steps in the queue before admission) "
                          f"{got}, expected {waits}: {first_mismatch(got, waits)}")
    assert report.steps == steps, f"{policy}: {report.steps} steps to drain, expected {steps}"


def assert_consistent(report, jobs) -> None:
    """A request that waited w steps and decodes t tokens is done after step w + t - 1."""
    assert len(report.waits) == len(jobs), "one wait per request, in the order given"
    assert all(w >= 0 for w in report.waits), f"waits are steps, never negative: {report.waits}"
    ends = [w + tokens for w, (_, tokens) in zip(report.waits, jobs, strict=True)]
    assert report.steps == max(ends, default=0), (
        f"{report.policy}: steps to drain must be max(wait + tokens) = {max(ends, default=0)}, "
        f"got {report.steps}")


# --- the strawman ------------------------------------------------------------------------------


def test_barrier_step_stops_at_the_reference_overflow(lab):
    waiting = jobs_to_requests(lab, [("L1", 1), ("L2", 1), (None, 1), (None, 1)])
    scheduled, still = lab.barrier_step(waiting, [], max_loras=1, max_batch=8)
    assert rids(scheduled) == [0], "max_loras=1, [L1, L2, base, base]: the barrier runs L1 alone"
    assert rids(still) == [1, 2, 3], "L2 and both base requests behind it wait, in queue order"


def test_barrier_step_is_schedule_steps_prefix(lab, seed):
    rng = random.Random(seed)
    for _ in range(40):
        jobs = [(rng.choice([None, "A", "B", "C"]), 1) for _ in range(rng.randint(0, 9))]
        running = rng.sample(["A", "B", "C", None], rng.randint(0, 1))
        max_loras, max_batch = rng.randint(1, 3), rng.randint(0, 9)
        waiting = jobs_to_requests(lab, jobs)
        defer, _ = lab.schedule_step(list(waiting), running, max_loras, max_batch)
        admitted = set(rids(defer))
        stop = next((i for i in range(len(jobs)) if i not in admitted), len(jobs))
        scheduled, still = lab.barrier_step(list(waiting), running, max_loras, max_batch)
        assert (rids(scheduled), rids(still)) == (list(range(stop)), list(range(stop, len(jobs)))), (
            f"queue {jobs}, running {running}, max_loras={max_loras}, max_batch={max_batch}: the "
            f"barrier admits the prefix schedule_step admits (rids 0..{stop - 1}), then waits")


BAD_STEPS = {  # case: (keyword overrides, error, argument); schedule_step's own checks
    "float max_loras": (dict(max_loras=1.0), TypeError, "max_loras"),
    "zero max_loras": (dict(max_loras=0), ValueError, "max_loras"),
    "bool max_batch": (dict(max_batch=True), TypeError, "max_batch"),
    "negative max_batch": (dict(max_batch=-1), ValueError, "max_batch"),
    "running over max_loras": (dict(running_adapters=["A", "B"]), ValueError, "running_adapters"),
}


@pytest.mark.parametrize("case", list(BAD_STEPS))
def test_barrier_step_checks_its_arguments_as_schedule_step_does(lab, case):
    overrides, error, argument = BAD_STEPS[case]
    call = dict(waiting=jobs_to_requests(lab, [("A", 1), (None, 1)]), running_adapters=["A"],
                max_loras=1, max_batch=2) | overrides
    for fn in (lab.schedule_step, lab.barrier_step):
        with pytest.raises(error, match=rf"\b{argument}\b"):
            fn(**call)


# --- the documented claim, measured ------------------------------------------------------------


def test_the_reference_queue_ties_on_steps_but_not_on_waits(lab):
    jobs = [("L1", 1), ("L2", 1), (None, 1), (None, 1)]
    defer, barrier = lab.defer_vs_barrier(jobs_to_requests(lab, jobs), max_loras=1, max_batch=8)
    check_report(defer, "defer", steps=2, waits=[0, 1, 0, 0])
    check_report(barrier, "barrier", steps=2, waits=[0, 1, 1, 1])


def test_defer_admits_what_fits_at_once_where_a_barrier_blocks_it(lab, seed):
    """max_loras=1, queue [L1 (a tokens), L2 (b), k base requests (c_i)], seats for all.

    Defer: L1 and every base request run at step 0; L2 runs when L1 is done, at step a.
    Barrier: L2 blocks the walk, so the base requests wait with it until step a. One base request
    outlasts L2 (c > b), so the deferral also drains sooner.
    """
    rng = random.Random(seed)
    for _ in range(20):
        a, b, k = rng.randint(1, 4), rng.randint(1, 3), rng.randint(1, 5)
        c = [rng.randint(1, 6) for _ in range(k)]
        c[rng.randrange(k)] = b + rng.randint(1, 3)
        jobs = [("L1", a), ("L2", b)] + [(None, t) for t in c]
        want_defer = (max(a + b, max(c)), [0, a] + [0] * k)
        want_barrier = (a + max(b, max(c)), [0, a] + [a] * k)
        defer, barrier = lab.defer_vs_barrier(jobs_to_requests(lab, jobs), 1, len(jobs))
        check_report(defer, "defer", *want_defer)
        check_report(barrier, "barrier", *want_barrier)
        assert defer.steps < barrier.steps, f"{jobs}: deferral drains sooner here"


def test_policies_tie_when_nothing_is_ever_deferred(lab, seed):
    """At most max_loras distinct adapters in the whole queue: no request is ever deferred."""
    rng = random.Random(seed)
    for _ in range(20):
        max_loras = rng.randint(1, 3)
        adapters = [None] + [f"L{i}" for i in range(max_loras)]
        jobs = [(rng.choice(adapters), rng.randint(1, 5)) for _ in range(rng.randint(1, 12))]
        seats = rng.randint(1, len(jobs))
        defer, barrier = lab.defer_vs_barrier(jobs_to_requests(lab, jobs), max_loras, seats)
        for report in (defer, barrier):
            assert_consistent(report, jobs)
        assert (defer.steps, list(defer.waits)) == (barrier.steps, list(barrier.waits)), (
            f"{jobs}, max_loras={max_loras}, max_batch={seats}: nothing is ever deferred, so "
            f"both walks are one walk; defer {defer}, barrier {barrier}")
        if seats == len(jobs):
            check_report(defer, "defer", max(t for _, t in jobs), [0] * len(jobs))


def test_a_full_batch_makes_the_rest_wait_their_turn(lab, seed):
    """n base requests of t tokens, m seats: request i waits (i // m) * t steps."""
    rng = random.Random(seed)
    for _ in range(10):
        n, m, t = rng.randint(1, 12), rng.randint(1, 4), rng.randint(1, 4)
        jobs = [(None, t)] * n
        waits = [(i // m) * t for i in range(n)]
        for report in lab.defer_vs_barrier(jobs_to_requests(lab, jobs), 1, m):
            check_report(report, report.policy, -(-n // m) * t, waits)


def test_deferral_is_not_shorter_waiting_for_every_request(lab):
    # max_loras=1: [A (1 token), B (1), A (5)]. Defer runs A's second request beside the first,
    # so B waits until A is free; the barrier runs B next and A's long request after it.
    jobs = [("A", 1), ("B", 1), ("A", 5)]
    defer, barrier = lab.defer_vs_barrier(jobs_to_requests(lab, jobs), max_loras=1, max_batch=4)
    check_report(defer, "defer", steps=6, waits=[0, 5, 0])
    check_report(barrier, "barrier", steps=7, waits=[0, 1, 2])


def test_both_policies_drain_every_random_workload(lab, seed):
    rng = random.Random(seed)
    for _ in range(30):
        jobs = [(rng.choice([None, 0, 1, 2, 3]), rng.randint(1, 4)) for _ in range(rng.randint(0, 12))]
        max_loras, seats = rng.randint(1, 3), rng.randint(1, 5)
        requests = jobs_to_requests(lab, jobs)
        for report in lab.defer_vs_barrier(iter(requests), max_loras, seats):
            assert_consistent(report, jobs)
        alone = lab.drain(requests, max_loras, seats, "barrier")
        _, barrier = lab.defer_vs_barrier(requests, max_loras, seats)
        assert (alone.steps, alone.waits) == (barrier.steps, barrier.waits), \
            "defer_vs_barrier's barrier report is drain(..., policy='barrier')"


def test_drain_runs_as_the_engine_does_when_the_slots_suffice(lab, seed):
    """With max_loras <= num_slots the cache never changes who runs: drain's defer report is
    what ``Engine.run`` does, read off its step records (a request's wait is the first step it
    appears in the batch)."""
    rng = random.Random(seed)
    for _ in range(10):
        jobs = [(rng.choice([None, "A", "B", "C", "D"]), rng.randint(1, 4))
                for _ in range(rng.randint(1, 10))]
        max_loras, seats = rng.randint(1, 3), rng.randint(1, 4)
        slots = max_loras + rng.randint(0, 2)
        engine = lab.Engine(lab.SlotCache(slots, 4, 3, 5), max_loras, seats,
                            lambda adapter: (np.ones((1, 3)), np.ones((5, 1))))
        records = engine.run(jobs_to_requests(lab, jobs), max_steps=100)
        first = {}
        for step, record in enumerate(records):
            for rid, _, _ in record.batch:
                first.setdefault(rid, step)
        want = (len(records), [first[rid] for rid in range(len(jobs))])
        check_report(lab.drain(jobs_to_requests(lab, jobs), max_loras, seats), "defer", *want)


def test_drain_defaults_to_defer(lab):
    jobs = [("L1", 1), ("L2", 1), (None, 1)]
    check_report(lab.drain(jobs_to_requests(lab, jobs), 1, 8), "defer", 2, [0, 1, 0])


# --- refusals ------------------------------------------------------------------------------------


BAD_DRAINS = {  # case: (requests as (rid, adapter, tokens), keyword overrides, error, argument)
    "unknown policy": ([(0, "A", 1)], dict(policy="fifo"), ValueError, "policy"),
    "repeated rid": ([(0, "A", 1), (0, None, 1)], {}, ValueError, "requests"),
    "zero tokens": ([(0, "A", 0)], {}, ValueError, "tokens"),
    "zero max_batch": ([(0, "A", 1)], dict(max_batch=0), ValueError, "max_batch"),
    "float max_loras": ([(0, "A", 1)], dict(max_loras=1.0), TypeError, "max_loras"),
    "float tokens": ([(0, "A", 1.0)], {}, TypeError, "tokens"),
    "zero max_loras": ([(0, "A", 1)], dict(max_loras=0), ValueError, "max_loras"),
    "bool max_batch": ([(0, "A", 1)], dict(max_batch=True), TypeError, "max_batch"),
}


@pytest.mark.parametrize("case", list(BAD_DRAINS))
def test_drain_refuses_bad_input_naming_it(lab, case):
    triples, overrides, error, argument = BAD_DRAINS[case]
    requests = [lab.Request(*triple) for triple in triples]
    call = {"max_loras": 1, "max_batch": 2, "policy": "defer", **overrides}
    with pytest.raises(error, match=argument):
        lab.drain(requests, **call)


@pytest.mark.parametrize("case", [c for c in BAD_DRAINS if "policy" not in BAD_DRAINS[c][1]])
def test_defer_vs_barrier_checks_its_arguments_as_drain_does(lab, case):
    triples, overrides, error, argument = BAD_DRAINS[case]
    call = {"max_loras": 1, "max_batch": 2, **overrides}
    with pytest.raises(error, match=argument):
        lab.defer_vs_barrier(iter([lab.Request(*triple) for triple in triples]), **call)
