"""Lab 01 spec, input checks: every documented refusal, one row per argument and bad value.

The phase convention (phase README, "Errors") and this lab's module docstring promise a
``TypeError`` for a wrong type (not a numpy array, a non-floating dtype, float arrays of mixed
dtypes, a non-integer ``idx``, a non-real ``scale``, a non-int size) and a ``ValueError`` for a
wrong value, each message naming the argument. This table is that promise, function by
function: the valid call, the argument replaced, the error, the name the message must carry.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

F64 = np.float64


def valid() -> dict[str, dict]:
    """One valid call per function: T=3, d_in=4, d_out=5, r=2, L=2 (float64, idx with a base row)."""
    rng = np.random.default_rng(0)

    def a(*shape):
        return rng.standard_normal(shape).astype(F64)

    x, W = a(3, 4), a(5, 4)
    A_stack, B_stack = a(2, 2, 4), a(2, 5, 2)
    idx = np.array([0, -1, 1])
    return {
        "shrink": dict(x=x, A=a(2, 4)),
        "expand": dict(h=a(3, 2), B=a(5, 2), scale=2.0),
        "lora_delta_loop": dict(x=x, A_stack=A_stack, B_stack=B_stack, idx=idx, scale=2.0),
        "group_by_adapter": dict(idx=idx),
        "batched_lora_forward": dict(x=x, W=W, A_stack=A_stack, B_stack=B_stack, idx=idx,
                                     scale=2.0),
        "lora_overhead": dict(d_in=4096, d_out=4096, r=16),
    }


def _f32(v):
    return v.astype(np.float32)


def _int(v):
    return v.astype(np.int64)


def _list(v):
    return v.tolist()


# (function, argument, id of the bad value, how the valid value is broken, error)
CASES = []
for fn, arrays in [("shrink", ["x", "A"]), ("expand", ["h", "B"]),
                   ("lora_delta_loop", ["x", "A_stack", "B_stack"]),
                   ("batched_lora_forward", ["x", "W", "A_stack", "B_stack"])]:
    for arg in arrays:
        CASES += [(fn, arg, "list", _list, TypeError),          # an array is documented
                  (fn, arg, "int-dtype", _int, TypeError),      # a floating dtype is documented
                  (fn, arg, "extra-axis", lambda v: v[None], ValueError)]
    # float arrays of mixed dtypes: numpy would silently upcast a float32 operand
    for arg in arrays[1:]:
        CASES.append((fn, arg, "float32-in-float64", _f32, TypeError))
        CASES.append((fn, arg, "float64-in-float32", "f64-in-f32", TypeError))
for fn in ["expand", "lora_delta_loop", "batched_lora_forward"]:
    CASES += [(fn, "scale", "str", lambda v: "2", TypeError),
              (fn, "scale", "bool", lambda v: True, TypeError),
              (fn, "scale", "None", lambda v: None, TypeError)]
for fn in ["lora_delta_loop", "group_by_adapter", "batched_lora_forward"]:
    CASES += [(fn, "idx", "float", lambda v: v.astype(F64), TypeError),
              (fn, "idx", "bool", lambda v: v > 0, TypeError),
              (fn, "idx", "2d", lambda v: v[None], ValueError),
              (fn, "idx", "0d", lambda v: v[0], ValueError),
              (fn, "idx", "below-minus-one", lambda v: v - 2, ValueError)]
for fn in ["lora_delta_loop", "batched_lora_forward"]:
    CASES.append((fn, "idx", "one-entry-short", lambda v: v[:-1], ValueError))
    CASES.append((fn, "idx", "one-entry-long", lambda v: np.append(v, 0), ValueError))
    CASES.append((fn, "idx", "equal-to-L", lambda v: v + 2, ValueError))
for arg in ["d_in", "d_out", "r"]:
    CASES += [("lora_overhead", arg, "float", float, TypeError),
              ("lora_overhead", arg, "bool", lambda v: True, TypeError),
              ("lora_overhead", arg, "str", str, TypeError),
              ("lora_overhead", arg, "zero", lambda v: 0, ValueError),
              ("lora_overhead", arg, "negative", lambda v: -v, ValueError)]


@pytest.mark.parametrize("fn, arg, bad, breaks, error", CASES,
                         ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in CASES])
def test_bad_argument_is_refused_naming_it(lab, fn, arg, bad, breaks, error):
    kwargs = valid()[fn]
    if breaks == "f64-in-f32":  # a float32 call, one float64 array in it
        kwargs = {k: (_f32(v) if isinstance(v, np.ndarray) and k not in ("idx", arg) else v)
                  for k, v in kwargs.items()}
    else:
        getattr(lab, fn)(**kwargs)  # the valid call goes through
        kwargs[arg] = breaks(kwargs[arg])
    with pytest.raises(error) as err:
        getattr(lab, fn)(**kwargs)
    assert re.search(rf"\b{arg}\b", str(err.value)), (
        f"{fn}: a {bad} {arg} must raise a {error.__name__} that names {arg}, got: {err.value}")


@pytest.mark.parametrize("fn", ["lora_delta_loop", "batched_lora_forward"])
def test_float32_batches_stay_float32(lab, fn):
    # the mixed-dtype refusal is not a refusal of float32: a consistent float32 call works
    kwargs = {k: (_f32(v) if isinstance(v, np.ndarray) and k != "idx" else v)
              for k, v in valid()[fn].items()}
    out = getattr(lab, fn)(**kwargs)
    assert out.dtype == np.float32, f"{fn} on float32 inputs returned {out.dtype}"


# the reference argument a mixed-dtype message names: "W: dtype must match x's float64, ..."
REFERENCE = {"shrink": "x", "expand": "h", "lora_delta_loop": "x", "batched_lora_forward": "x"}


@pytest.mark.parametrize("fn, arg", [(c[0], c[1]) for c in CASES if c[2] == "float32-in-float64"],
                         ids=[f"{c[0]}-{c[1]}" for c in CASES if c[2] == "float32-in-float64"])
def test_mixed_dtypes_message_names_both_arrays_and_dtypes(lab, fn, arg):
    kwargs = valid()[fn]
    kwargs[arg] = _f32(kwargs[arg])
    with pytest.raises(TypeError) as err:
        getattr(lab, fn)(**kwargs)
    ref, message = REFERENCE[fn], str(err.value)
    assert re.search(rf"\b{ref}\b", message) and "float32" in message and "float64" in message, (
        f"{fn}: a float32 {arg} beside a float64 {ref} must be refused naming {ref} and both "
        f"dtypes, got: {message}")


@pytest.mark.parametrize("fn", ["lora_delta_loop", "batched_lora_forward"])
def test_idx_message_states_the_allowed_range(lab, fn):
    kwargs = valid()[fn]  # L = 2 adapters
    kwargs["idx"] = np.array([5, 0, 0])
    with pytest.raises(ValueError) as err:
        getattr(lab, fn)(**kwargs)
    # the upper bound, L = 2 as in "[-1, 2)" or L - 1 = 1 as in "-1..1", besides the value 5
    assert re.search(r"(?<![-\d])[12](?!\d)", str(err.value)), (
        f"{fn}: idx entry 5 with L = 2 must be refused stating the allowed range, e.g. "
        f"[-1, 2), got: {err.value}")


def test_group_by_adapter_states_its_bound_without_an_adapter_count(lab):
    with pytest.raises(ValueError) as err:
        lab.group_by_adapter(np.array([0, -2]))
    message = str(err.value)
    assert "-1" in message and "-2" in message and "row 1" in message and "None" not in message, (
        "group_by_adapter knows no adapter count: an entry below -1 must be refused stating "
        f"the bound -1, the value and 'row 1', with no placeholder bound, got: {message}")
