"""Lab 04 spec, input checks: every documented refusal, one row per argument and bad value.

The docstrings promise, for every size and count: an int (not a bool), else ``TypeError``; at
least its minimum, else ``ValueError``; each message naming the argument. ``dtype`` must be a
floating numpy dtype, ``target_hit_rate`` a number in (0, 1]. This table is that promise, call by
call: the valid call, one argument replaced, the error, the name the message must carry.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest


def calls(lab) -> dict:
    """Each checked call as a function of its keyword arguments, with valid defaults."""
    def cache(**kw):
        args = dict(num_slots=2, max_rank=4, d_in=3, d_out=5) | kw
        return lab.SlotCache(**args)

    def engine(**kw):
        args = dict(cache=lab.SlotCache(2, 4, 3, 5), max_loras=2, max_batch=4,
                    load=lambda a: (np.ones((1, 3)), np.ones((5, 1)))) | kw
        return lab.Engine(**args)

    def sizing(**kw):
        args = dict(trace=[0, 1, 0, 1], slot_bytes=10, memory_budget_bytes=100,
                    target_hit_rate=0.5) | kw
        return lab.size_slots(**args)

    def step(**kw):
        args = dict(waiting=[lab.Request(0, "a")], running_adapters=[], max_loras=1,
                    max_batch=2) | kw
        return lab.schedule_step(**args)

    return {
        "SlotCache": cache,
        "Engine": engine,
        "size_slots": sizing,
        "schedule_step": step,
        "zipf_80_20_weights": lambda **kw: lab.zipf_80_20_weights(**(dict(num_adapters=5) | kw)),
        "zipf_80_20_trace": lambda **kw: lab.zipf_80_20_trace(
            **(dict(num_adapters=5, num_requests=10, seed=0) | kw)),
        "simulate": lambda **kw: lab.simulate(**(dict(trace=[0, 1], num_slots=1) | kw)),
        "replay": lambda **kw: lab.replay(**(dict(trace=[0, 1], num_slots=1) | kw)),
    }


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
    ("Engine", "max_loras", "above-num_slots", 3, ValueError),
    *_count("schedule_step", "max_loras"),
    *_count("schedule_step", "max_batch", minimum=0),
    ("schedule_step", "running_adapters", "over-max_loras", ["x", "y"], ValueError),
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


@pytest.mark.parametrize("fn, arg, bad, value, error", CASES,
                         ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in CASES])
def test_bad_argument_is_refused_naming_it(lab, fn, arg, bad, value, error):
    call = calls(lab)[fn]
    call()  # the valid call goes through
    with pytest.raises(error) as err:
        call(**{arg: value})
    assert re.search(rf"\b{arg}\b", str(err.value)), (
        f"{fn}: a {bad} {arg} must raise a {error.__name__} that names {arg}, got: {err.value}")


@pytest.mark.parametrize("tokens, error", [(0, ValueError), (1.0, TypeError), (True, TypeError)])
def test_submit_refuses_a_bad_token_count(lab, tokens, error):
    engine = calls(lab)["Engine"]()
    with pytest.raises(error) as err:
        engine.submit([lab.Request(0, "a", tokens)])
    assert "tokens" in str(err.value), f"the {error.__name__} must name tokens, got: {err.value}"


def test_pin_and_unpin_name_the_adapter(lab):
    cache = calls(lab)["SlotCache"]()
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
def test_the_minimum_itself_is_accepted(lab, fn, arg, value):
    calls(lab)[fn](**{arg: value})
