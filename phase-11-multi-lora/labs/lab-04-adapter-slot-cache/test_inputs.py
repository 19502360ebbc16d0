"""Lab 04 spec, input checks: every documented refusal, one row per argument and bad value.

The docstrings promise, for every size and count: an int (not a bool), else ``TypeError``; at
least its minimum, else ``ValueError``; each message naming the argument. ``dtype`` must be a
floating numpy dtype, ``target_hit_rate`` a number in (0, 1]. This table is that promise, call by
call: the valid call, one argument replaced, the error, the name the message must carry.
"""

from __future__ import annotations

import math
import random
import re
from collections import OrderedDict

import numpy as np
import pytest

from labkit import in_worker, load_lab
from labkit.refusals import assert_refused
from labkit.unchanged import edited_by


def lru(trace, num_slots: int) -> list[bool]:
    """The cache model from first principles: hit/miss per item, None a hit that takes no slot."""
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


def draws(seed: int) -> dict:
    """Every valid call's numbers, from the seed: a table cannot know them in advance."""
    rng = random.Random(seed * 7919 + 4)
    adapters = [f"t{rng.randint(0, 999)}-{i}" for i in range(rng.randint(2, 6))]
    trace = [rng.choice(adapters + [None]) for _ in range(rng.randint(8, 30))] + adapters[:1]
    return dict(num_slots=rng.randint(1, 4), max_rank=rng.randint(1, 8), d_in=rng.randint(1, 9),
                d_out=rng.randint(1, 9), adapters=adapters, trace=trace,
                slot_bytes=rng.randint(1, 100), budget=rng.randint(100, 1000),
                target=rng.choice([0.25, 0.5, 0.6, 0.75]), n=rng.randint(1, 40),
                requests=rng.randint(0, 60), seed=rng.randint(0, 10**6), max_batch=rng.randint(1, 6))


def calls(lab, seed: int) -> dict:
    """Each checked call as a function of its keyword arguments, with valid, seeded defaults."""
    d = draws(seed)
    slots, adapters = d["num_slots"], d["adapters"]

    def load(adapter_id):
        return np.ones((1, 3)), np.ones((5, 1))

    def cache(**kw):
        args = dict(num_slots=slots, max_rank=d["max_rank"], d_in=d["d_in"], d_out=d["d_out"]) | kw
        return lab.SlotCache(**args)

    def engine(**kw):
        args = dict(cache=lab.SlotCache(slots, 4, 3, 5), max_loras=slots, max_batch=d["max_batch"],
                    load=load) | kw
        return lab.Engine(**args)

    def sizing(**kw):
        args = dict(trace=list(d["trace"]), slot_bytes=d["slot_bytes"],
                    memory_budget_bytes=d["budget"], target_hit_rate=d["target"]) | kw
        return lab.size_slots(**args)

    def step(**kw):
        waiting = [lab.Request(i, a) for i, a in enumerate(d["trace"])]
        args = dict(waiting=waiting, running_adapters=adapters[:1], max_loras=slots,
                    max_batch=d["max_batch"]) | kw
        return lab.schedule_step(**args)

    return {
        "SlotCache": cache,
        "Engine": engine,
        "size_slots": sizing,
        "schedule_step": step,
        "zipf_80_20_weights": lambda **kw: lab.zipf_80_20_weights(**(dict(num_adapters=d["n"]) | kw)),
        "zipf_80_20_trace": lambda **kw: lab.zipf_80_20_trace(
            **(dict(num_adapters=d["n"], num_requests=d["requests"], seed=d["seed"]) | kw)),
        "simulate": lambda **kw: lab.simulate(**(dict(trace=list(d["trace"]),
                                                      num_slots=slots) | kw)),
        "replay": lambda **kw: lab.replay(**(dict(trace=list(d["trace"]), num_slots=slots) | kw)),
    }


def oracle(lab, fn: str, seed: int):
    """A check of the valid call's result, from the test's own model of the lab."""
    d = draws(seed)
    slots, trace = d["num_slots"], d["trace"]
    labels = lru(trace, slots)
    adapter_labels = [h for a, h in zip(trace, labels, strict=True) if a is not None]

    def check_cache(c):
        assert c.A.shape == (slots, d["max_rank"], d["d_in"]) and c.B.shape == (
            slots, d["d_out"], d["max_rank"]) and not c.A.any() and not c.B.any(), (
            f"SlotCache({slots}, {d['max_rank']}, {d['d_in']}, {d['d_out']}): zeroed buffers "
            f"(num_slots, max_rank, d_in) and (num_slots, d_out, max_rank), got A {c.A.shape}, "
            f"B {c.B.shape}")
        assert list(c.resident) == [None] * slots, f"a new cache holds nothing: {c.resident}"

    def check_engine(e):
        requests = [lab.Request(i, a) for i, a in enumerate(trace)]
        records = e.run(requests, max_steps=len(trace) + 1)
        finished = sorted(rid for r in records for rid in r.finished)
        assert finished == list(range(len(trace))), (
            f"Engine.run of {len(trace)} one-token requests must finish each once: {finished}")

    def check_sizing(got):
        affordable = d["budget"] // d["slot_bytes"]
        distinct = len({a for a in trace if a is not None})
        rate = {k: sum(x for a, x in zip(trace, lru(trace, k), strict=True) if a is not None)
                / max(1, len(adapter_labels)) for k in range(1, distinct + 2)}
        fits = [k for k in range(1, min(affordable, distinct) + 1) if rate[k] >= d["target"]]
        want = fits[0] if fits else max(1, min(affordable, distinct))
        assert (got.num_slots, got.meets_target) == (want, bool(fits)), (
            f"size_slots of a seeded trace (slot {d['slot_bytes']} B, budget {d['budget']} B, "
            f"target {d['target']}): expected {want} slots (meets: {bool(fits)}), got {got}")

    def check_step(got):
        scheduled, left = got
        in_batch, seats, want = set(d["adapters"][:1]), d["max_batch"], []
        for i, a in enumerate(trace):
            if len(want) < seats and (a is None or a in in_batch or len(in_batch) < slots):
                in_batch |= {a} - {None}
                want.append(i)
        assert [r.rid for r in scheduled] == want, (
            f"schedule_step of a seeded queue: scheduled {[r.rid for r in scheduled]}, expected "
            f"{want}")
        assert sorted(r.rid for r in scheduled + list(left)) == list(range(len(trace)))

    def check_weights(w):
        w = np.asarray(w)
        hot = max(1, round(0.2 * d["n"]))
        assert w.shape == (d["n"],) and abs(w.sum() - 1) < 1e-9 and (
            d["n"] == hot or abs(w[:hot].sum() - 0.8) < 1e-6), (
            f"zipf_80_20_weights({d['n']}): (n,) summing to 1, the hottest {hot} drawing 0.8")

    def check_trace(got):
        rng = np.random.default_rng(d["seed"])
        want = rng.choice(d["n"], size=d["requests"], p=lab.zipf_80_20_weights(d["n"])).tolist()
        assert list(got) == want, (f"zipf_80_20_trace({d['n']}, {d['requests']}, {d['seed']}): "
                                   "default_rng(seed).choice over the weights")

    def check_stats(got):
        hits = sum(adapter_labels)
        want = (len(adapter_labels), hits, len(adapter_labels) - hits)
        assert (got.lookups, got.hits, got.misses) == want, f"simulate: {got}, expected {want}"

    def check_replay(got):
        assert list(got) == labels, f"replay: {list(got)}, expected {labels}"

    return {"SlotCache": check_cache, "Engine": check_engine, "size_slots": check_sizing,
            "schedule_step": check_step, "zipf_80_20_weights": check_weights,
            "zipf_80_20_trace": check_trace, "simulate": check_stats,
            "replay": check_replay}[fn]


def _count(fn, arg, minimum=1):
    rows = [(fn, arg, "float", 2.0, TypeError), (fn, arg, "bool", True, TypeError),
            (fn, arg, "str", "2", TypeError), (fn, arg, f"{minimum - 1}", minimum - 1, ValueError)]
    if minimum > 0:
        rows.append((fn, arg, "negative", -3, ValueError))
    return rows


CASES = [
    *[row for arg in ("num_slots", "max_rank", "d_in", "d_out") for row in _count("SlotCache", arg)],
    ("SlotCache", "dtype", "int", np.int32, TypeError),
    *_count("Engine", "max_loras"),
    *_count("Engine", "max_batch"),
    ("Engine", "max_loras", "above-num_slots", "num_slots + 1", ValueError),
    *_count("schedule_step", "max_loras"),
    *_count("schedule_step", "max_batch", minimum=0),
    ("schedule_step", "running_adapters", "over-max_loras", "num_slots + 1 adapters", ValueError),
    *_count("zipf_80_20_weights", "num_adapters"),
    *_count("zipf_80_20_trace", "num_adapters"),
    *_count("zipf_80_20_trace", "num_requests", minimum=0),
    *_count("zipf_80_20_trace", "seed", minimum=0),
    *_count("simulate", "num_slots"),
    *_count("replay", "num_slots"),
    ("simulate", "trace", "unhashable-item", [0, [1]], TypeError),
    ("replay", "trace", "unhashable-item", [0, {1: 2}], TypeError),
    *_count("size_slots", "slot_bytes"),
    *_count("size_slots", "memory_budget_bytes", minimum=0),
    ("size_slots", "target_hit_rate", "str", "0.5", TypeError),
    ("size_slots", "target_hit_rate", "bool", True, TypeError),
    ("size_slots", "target_hit_rate", "None", None, TypeError),
    ("size_slots", "target_hit_rate", "zero", 0.0, ValueError),
    ("size_slots", "target_hit_rate", "above-one", 1.01, ValueError),
    ("size_slots", "target_hit_rate", "nan", math.nan, ValueError),
]


SHOWS = {"dtype": ("int32",), "running_adapters": ("exceed", "max_loras")}


@pytest.mark.parametrize("fn, arg, bad, value, error", CASES,
                         ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in CASES])
def test_bad_argument_is_refused_naming_it(lab, seed, fn, arg, bad, value, error):
    call, slots = calls(lab, seed)[fn], draws(seed)["num_slots"]
    if value == "num_slots + 1":  # one more than the seeded cache's slots
        value = slots + 1
    elif value == "num_slots + 1 adapters":  # more running adapters than max_loras = num_slots
        value = [f"running-{i}" for i in range(slots + 1)]
    shows = SHOWS.get(arg)
    if arg == "trace":  # an unhashable item: its type and its position
        shows = (type(value[1]).__name__,)
    assert_refused(lambda **kw: call(**kw), lambda: {}, oracle(lab, fn, seed), arg, value, error,
                   what=f"{fn}: a {bad} {arg}", shows=shows)
    if arg == "trace":
        with pytest.raises(TypeError) as err:
            call(trace=value)
        assert re.search(r"\bposition 1\b", str(err.value)), (
            f"{fn}: name the position, got {err.value}")


@pytest.mark.parametrize("tokens, error", [(0, ValueError), (1.0, TypeError), (True, TypeError)])
def test_submit_refuses_a_bad_token_count(lab, seed, tokens, error):
    engine = calls(lab, seed)["Engine"]()
    with pytest.raises(error) as err:
        engine.submit([lab.Request(0, "a", tokens)])
    assert "tokens" in str(err.value), f"the {error.__name__} must name tokens, got: {err.value}"


def test_pin_and_unpin_name_the_adapter(lab, seed):
    cache = calls(lab, seed)["SlotCache"]()
    for method in (cache.pin, cache.unpin):
        with pytest.raises(ValueError) as err:
            method("ghost")
        assert "ghost" in str(err.value), f"{method.__name__}: name the adapter, got {err.value}"


# every minimum is itself valid: "at least its minimum", not "above it"
BOUNDARY = [("SlotCache", arg, 1) for arg in ("num_slots", "max_rank", "d_in", "d_out")] + [
    ("Engine", "max_loras", 1), ("Engine", "max_batch", 1),
    ("schedule_step", "max_loras", 1), ("schedule_step", "max_batch", 0),
    ("zipf_80_20_weights", "num_adapters", 1), ("zipf_80_20_trace", "num_adapters", 1),
    ("zipf_80_20_trace", "num_requests", 0), ("zipf_80_20_trace", "seed", 0),
    ("simulate", "num_slots", 1), ("replay", "num_slots", 1),
    ("size_slots", "slot_bytes", 1), ("size_slots", "memory_budget_bytes", 0),
    ("size_slots", "target_hit_rate", 1.0), ("size_slots", "target_hit_rate", 1),
    ("size_slots", "target_hit_rate", 1e-9),
]


@pytest.mark.parametrize("fn, arg, value", BOUNDARY, ids=[f"{f}-{a}-{v}" for f, a, v in BOUNDARY])
def test_the_minimum_itself_is_accepted(lab, seed, fn, arg, value):
    calls(lab, seed)[fn](**{arg: value})


# --- arguments are read, never edited ----------------------------------------------------------


def list_calls(lab, d: dict) -> dict[str, tuple]:
    """Each function that takes a list, called with lists drawn from ``draws``: name ->
    (function, keyword arguments)."""
    waiting = [lab.Request(i, a, 1 + i % 3) for i, a in enumerate(d["trace"])]
    running = list(d["adapters"][:1])
    slots, batch = d["num_slots"], d["max_batch"]
    return {
        "simulate": (lab.simulate, dict(trace=list(d["trace"]), num_slots=slots)),
        "replay": (lab.replay, dict(trace=list(d["trace"]), num_slots=slots)),
        "size_slots": (lab.size_slots, dict(trace=list(d["trace"]), slot_bytes=d["slot_bytes"],
                                            memory_budget_bytes=d["budget"],
                                            target_hit_rate=d["target"])),
        "schedule_step": (lab.schedule_step, dict(waiting=list(waiting), running_adapters=running,
                                                  max_loras=slots, max_batch=batch)),
        "barrier_step": (lab.barrier_step, dict(waiting=list(waiting), running_adapters=running,
                                                max_loras=slots, max_batch=batch)),
        "drain": (lab.drain, dict(requests=list(waiting), max_loras=slots, max_batch=batch)),
        "defer_vs_barrier": (lab.defer_vs_barrier, dict(requests=list(waiting), max_loras=slots,
                                                        max_batch=batch)),
        "Engine.run": (lambda **kw: lab.Engine(lab.SlotCache(slots, 4, 3, 5), slots, batch,
                                              lambda a: (np.ones((1, 3)), np.ones((5, 1))))
                       .run(**kw), dict(requests=list(waiting), max_steps=10 * len(waiting))),
    }


LIST_FUNCTIONS = ("simulate", "replay", "size_slots", "schedule_step", "barrier_step", "drain",
                  "defer_vs_barrier", "Engine.run")


def edited_arguments(fn: str, seed: int) -> list[str]:
    """Where the lab runs: ``fn`` on seeded lists; the names of the arguments it edited
    (compared with deep copies made before the call)."""
    call, kwargs = list_calls(load_lab("lab-04"), draws(seed))[fn]
    return edited_by(call, kwargs)[0]


@pytest.mark.parametrize("fn", LIST_FUNCTIONS)
def test_every_function_leaves_its_arguments_unchanged(lab, seed, fn):
    edited = in_worker(lab, edited_arguments, fn, seed)
    assert not edited, (
        f"{fn} edited its argument(s) {edited}: every function and method leaves its arguments "
        "unchanged (``waiting`` too); state lives in the objects")
