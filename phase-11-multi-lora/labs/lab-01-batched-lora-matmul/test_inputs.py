"""Lab 01 spec, input checks: every documented refusal, one row per argument and bad value.

The phase convention (phase README, "Errors") and this lab's module docstring promise a
``TypeError`` for a wrong type (not a numpy array, a non-floating dtype, float arrays of mixed
dtypes, a non-integer ``idx``, a non-real ``scale`` or a bool, a non-int size) and a
``ValueError`` for a wrong value, each message naming the argument and carrying the offending
value. This table is that promise, function by function: a valid call on inputs drawn from the
seed, whose result is checked, then the call with one argument replaced, the error, the name and
the value its message must carry (``labkit.refusals.assert_refused``).
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from labkit import assert_close, in_worker, load_lab
from labkit.refusals import assert_refused, shows_value
from labkit.unchanged import edited_by

F64 = np.float64
# the oracle and the student's call add the same products, maybe in another order (BLAS)
TOL = {np.float32: 1e-5, np.float64: 1e-12}


def sizes(seed: int) -> dict[str, int]:
    """T, d_in, d_out, r, L drawn from the seed: a table cannot know them in advance."""
    rng = np.random.default_rng([seed, 101])
    d_in, d_out = rng.choice(np.arange(3, 10), size=2, replace=False)
    return dict(T=int(rng.integers(4, 9)), d_in=int(d_in), d_out=int(d_out),
                r=int(rng.integers(1, 4)), L=int(rng.integers(2, 5)))


def valid(seed: int) -> dict[str, dict]:
    """One valid call per function, float64, idx with every adapter and a base row."""
    n = sizes(seed)
    rng = np.random.default_rng([seed, 102])

    def a(*shape):
        return rng.standard_normal(shape).astype(F64)

    T, d_in, d_out, r, L = n["T"], n["d_in"], n["d_out"], n["r"], n["L"]
    x, W = a(T, d_in), a(d_out, d_in)
    A_stack, B_stack = a(L, r, d_in), a(L, d_out, r)
    idx = rng.permutation(np.arange(T) % (L + 1) - 1)
    scale = float(rng.integers(1, 8)) / 2
    return {
        "shrink": dict(x=x, A=a(r, d_in)),
        "expand": dict(h=a(T, r), B=a(d_out, r), scale=scale),
        "lora_delta_loop": dict(x=x, A_stack=A_stack, B_stack=B_stack, idx=idx, scale=scale),
        "group_by_adapter": dict(idx=idx),
        "batched_lora_forward": dict(x=x, W=W, A_stack=A_stack, B_stack=B_stack, idx=idx,
                                     scale=scale),
        "lora_overhead": dict(d_in=int(rng.integers(64, 8192)), d_out=int(rng.integers(64, 8192)),
                              r=int(rng.integers(1, 65))),
        "gather_shrink": dict(x=x, A_stack=A_stack, idx=idx),
        "gather_expand": dict(h=a(T, r), B_stack=B_stack, idx=idx, scale=scale),
    }


def _delta(kw: dict) -> np.ndarray:
    """The per-row definition: scale * B[a] @ A[a] @ x[i], zeros for -1."""
    x, A, B, idx = kw["x"], kw["A_stack"], kw["B_stack"], kw["idx"]
    out = np.zeros((x.shape[0], B.shape[1]), dtype=x.dtype)
    for i, a in enumerate(idx):
        if a != -1:
            out[i] = kw["scale"] * (B[a] @ (A[a] @ x[i]))
    return out


def _grouping(idx: np.ndarray):
    def check(got):
        order, ids, offsets = (np.asarray(v) for v in got)
        rows = np.flatnonzero(idx != -1)
        assert sorted(order.tolist()) == rows.tolist() and len(offsets) == len(ids) + 1, (
            f"group_by_adapter({idx.tolist()}) = {got}: not a grouping of the non-base rows")
        for g, a in enumerate(ids):
            seg = order[offsets[g]:offsets[g + 1]]
            assert seg.size and np.all(idx[seg] == a) and np.all(np.diff(seg) > 0), (
                f"group_by_adapter({idx.tolist()}): group {g} (adapter {a}) holds rows "
                f"{seg.tolist()}")
    return check


def oracle(fn: str, kw: dict):
    """What the valid call must return, computed from copies before the call."""
    kw = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in kw.items()}
    if fn == "group_by_adapter":
        return _grouping(kw["idx"])
    if fn == "lora_overhead":
        want = kw["r"] * (kw["d_in"] + kw["d_out"]) / (kw["d_in"] * kw["d_out"])
        return lambda got: _same(fn, got, want, 1e-12)
    if fn in ("gather_shrink", "gather_expand"):
        stack = kw["A_stack"] if fn == "gather_shrink" else kw["B_stack"]
        rows = kw["x"] if fn == "gather_shrink" else kw["h"]
        want = np.zeros((rows.shape[0], stack.shape[1]), dtype=rows.dtype)
        for i, a in enumerate(kw["idx"]):
            if a != -1:
                want[i] = stack[a] @ rows[i] * (kw["scale"] if fn == "gather_expand" else 1.0)
        return lambda got: assert_close(got, want, rtol=TOL[want.dtype.type],
                                        atol=TOL[want.dtype.type],
                                        why=f"{fn}: the valid call on seeded inputs")
    want = {"shrink": lambda: kw["x"] @ kw["A"].T,
            "expand": lambda: kw["scale"] * (kw["h"] @ kw["B"].T),
            "lora_delta_loop": lambda: _delta(kw),
            "batched_lora_forward": lambda: kw["x"] @ kw["W"].T + _delta(kw)}[fn]()
    return lambda got: assert_close(got, want, rtol=TOL[want.dtype.type], atol=TOL[want.dtype.type],
                                    why=f"{fn}: the valid call on seeded inputs")


def _same(fn, got, want, rel):
    assert got == pytest.approx(want, rel=rel), f"{fn}: the valid call gave {got!r}, not {want!r}"


def _f32(v, kw):
    return v.astype(np.float32)


def _shape(v, kw):
    return v[None]


# (function, argument, id of the bad value, how the valid value is broken, error, what the
# message must carry besides the name: None = shows_value(bad))
CASES = []
for fn, arrays in [("shrink", ["x", "A"]), ("expand", ["h", "B"]),
                   ("lora_delta_loop", ["x", "A_stack", "B_stack"]),
                   ("batched_lora_forward", ["x", "W", "A_stack", "B_stack"])]:
    for arg in arrays:
        CASES += [(fn, arg, "list", lambda v, kw: v.tolist(), TypeError, None),
                  (fn, arg, "int-dtype", lambda v, kw: v.astype(np.int64), TypeError, ("int64",)),
                  (fn, arg, "bool-dtype", lambda v, kw: v > 0, TypeError, ("bool",)),
                  (fn, arg, "complex-dtype", lambda v, kw: v.astype(np.complex128), TypeError,
                   ("complex128",)),
                  (fn, arg, "extra-axis", _shape, ValueError, None)]
    # float arrays of mixed dtypes: numpy would silently upcast a float32 operand
    for arg in arrays[1:]:
        CASES.append((fn, arg, "float32-in-float64", _f32, TypeError, ("float32",)))
for fn in ["expand", "lora_delta_loop", "batched_lora_forward"]:
    CASES += [(fn, "scale", "str", lambda v, kw: str(v), TypeError, None),
              (fn, "scale", "bool", lambda v, kw: True, TypeError, ("True", "bool")),
              (fn, "scale", "None", lambda v, kw: None, TypeError, None),
              (fn, "scale", "complex", lambda v, kw: complex(v, 1), TypeError, None)]
for fn in ["lora_delta_loop", "group_by_adapter", "batched_lora_forward"]:
    CASES += [(fn, "idx", "float", lambda v, kw: v.astype(F64), TypeError, ("float64",)),
              (fn, "idx", "bool", lambda v, kw: v > 0, TypeError, ("bool",)),
              (fn, "idx", "2d", lambda v, kw: v[None], ValueError, None),
              (fn, "idx", "0d", lambda v, kw: v[:1].reshape(()), ValueError, ("()",)),
              (fn, "idx", "numpy-scalar", lambda v, kw: v[0], ValueError, ("()", "scalar"))]
for fn in ["lora_delta_loop", "batched_lora_forward"]:
    CASES.append((fn, "idx", "one-entry-short", lambda v, kw: v[:-1], ValueError, None))
    CASES.append((fn, "idx", "one-entry-long", lambda v, kw: np.append(v, 0), ValueError, None))
for arg in ["d_in", "d_out", "r"]:
    CASES += [("lora_overhead", arg, "float", lambda v, kw: float(v), TypeError, None),
              ("lora_overhead", arg, "bool", lambda v, kw: True, TypeError, None),
              ("lora_overhead", arg, "str", lambda v, kw: str(v), TypeError, None),
              ("lora_overhead", arg, "zero", lambda v, kw: 0, ValueError, None),
              ("lora_overhead", arg, "negative", lambda v, kw: -v, ValueError, None)]


def _shows(bad, fn: str, arg: str, shows) -> tuple[str, ...]:
    if shows is not None:
        return shows
    if isinstance(bad, list):  # its type, or the list itself (its first entries)
        return ("list", repr(bad)[:8])
    if fn != "lora_overhead" and isinstance(bad, np.ndarray):
        return (str(bad.shape), str(bad.ndim), str(len(bad)) if bad.ndim else "()")
    return shows_value(bad)


@pytest.mark.parametrize("fn, arg, bad, breaks, error, shows", CASES,
                         ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in CASES])
def test_bad_argument_is_refused_naming_it(lab, seed, fn, arg, bad, breaks, error, shows):
    kw = valid(seed)[fn]
    value = breaks(kw[arg], kw)
    assert_refused(getattr(lab, fn), lambda: valid(seed)[fn], oracle(fn, kw), arg, value, error,
                   what=f"{fn}: a {bad} {arg}", shows=_shows(value, fn, arg, shows))


@pytest.mark.parametrize("fn, arg", [(c[0], c[1]) for c in CASES if c[2] == "float32-in-float64"],
                         ids=[f"{c[0]}-{c[1]}" for c in CASES if c[2] == "float32-in-float64"])
def test_float64_in_a_float32_call_is_refused(lab, seed, fn, arg):
    def float32_call():
        return {k: (v.astype(np.float32) if isinstance(v, np.ndarray) and k != "idx" else v)
                for k, v in valid(seed)[fn].items()}
    kw = float32_call()
    assert_refused(getattr(lab, fn), float32_call, oracle(fn, kw), arg,
                   kw[arg].astype(F64), TypeError, what=f"{fn}: a float64 {arg} in a float32 call",
                   shows=("float64",))


# the reference argument a mixed-dtype message names: "W: dtype must match x's float64, ..."
REFERENCE = {"shrink": "x", "expand": "h", "lora_delta_loop": "x", "batched_lora_forward": "x"}


@pytest.mark.parametrize("fn", list(REFERENCE))
def test_complex_arrays_are_refused(lab, seed, fn):
    # every array complex, so no dtype-mismatch check can stand in for the dtype check
    def complex_call():
        return {k: (v.astype(np.complex128) if isinstance(v, np.ndarray) and k != "idx" else v)
                for k, v in valid(seed)[fn].items()}
    with pytest.raises(TypeError) as err:
        getattr(lab, fn)(**complex_call())
    message, arrays = str(err.value), [k for k, v in complex_call().items()
                                       if isinstance(v, np.ndarray) and k != "idx"]
    assert "complex128" in message and re.search(rf"\b({'|'.join(arrays)})\b", message), (
        f"{fn}: complex arrays have no floating dtype: a TypeError naming one of {arrays} and "
        f"complex128, got: {message}")


@pytest.mark.parametrize("fn", ["lora_delta_loop", "batched_lora_forward"])
def test_float32_batches_stay_float32(lab, seed, fn):
    # the mixed-dtype refusal is not a refusal of float32: a consistent float32 call works
    kwargs = {k: (v.astype(np.float32) if isinstance(v, np.ndarray) and k != "idx" else v)
              for k, v in valid(seed)[fn].items()}
    check = oracle(fn, kwargs)
    out = getattr(lab, fn)(**kwargs)
    assert out.dtype == np.float32, f"{fn} on float32 inputs returned {out.dtype}"
    check(out)




@pytest.mark.parametrize("fn, arg", [(c[0], c[1]) for c in CASES if c[2] == "float32-in-float64"],
                         ids=[f"{c[0]}-{c[1]}" for c in CASES if c[2] == "float32-in-float64"])
def test_mixed_dtypes_message_names_both_arrays_and_dtypes(lab, seed, fn, arg):
    kwargs = valid(seed)[fn]
    kwargs[arg] = kwargs[arg].astype(np.float32)
    with pytest.raises(TypeError) as err:
        getattr(lab, fn)(**kwargs)
    ref, message = REFERENCE[fn], str(err.value)
    assert re.search(rf"\b{ref}\b", message) and "float32" in message and "float64" in message, (
        f"{fn}: a float32 {arg} beside a float64 {ref} must be refused naming {ref} and both "
        f"dtypes, got: {message}")


@pytest.mark.parametrize("fn", ["lora_delta_loop", "batched_lora_forward"])
@pytest.mark.parametrize("above", [0, 1, 9], ids=["equal-to-L", "L-plus-1", "far-above-L"])
def test_idx_message_states_the_allowed_range(lab, seed, fn, above):
    kwargs, L = valid(seed)[fn], sizes(seed)["L"]
    rng = np.random.default_rng([seed, 103])
    row = int(rng.integers(0, len(kwargs["idx"])))
    kwargs["idx"][row] = L + above
    with pytest.raises(ValueError) as err:
        getattr(lab, fn)(**kwargs)
    message = str(err.value)
    # the upper bound, L as in "[-1, L)" or L - 1 as in "-1..L-1", besides the value and its row
    bound = re.search(rf"(?<![-\d])({L}|{L - 1})(?!\d)", message.replace(str(L + above), " ", 1))
    assert bound and str(L + above) in message and re.search(rf"\brow {row}\b", message), (
        f"{fn}: idx[{row}] = {L + above} with L = {L} must be refused stating the allowed "
        f"range (e.g. [-1, {L})), the value and 'row {row}', got: {message}")


def test_group_by_adapter_states_its_bound_without_an_adapter_count(lab, seed):
    rng = np.random.default_rng([seed, 104])
    idx = rng.integers(0, 5, size=int(rng.integers(2, 9)))
    row, value = int(rng.integers(0, len(idx))), -int(rng.integers(2, 50))
    idx[row] = value
    with pytest.raises(ValueError) as err:
        lab.group_by_adapter(idx)
    message = str(err.value)
    assert ("-1" in message and str(value) in message and f"row {row}" in message
            and "None" not in message), (
        "group_by_adapter knows no adapter count: an entry below -1 must be refused stating "
        f"the bound -1, the value {value} and 'row {row}', with no placeholder bound, got: "
        f"{message}")


# --- inputs are read, never edited ------------------------------------------------------------


def edited_arguments(fn: str, seed: int) -> tuple[list[str], object]:
    """Where the lab runs: ``fn`` on its seeded valid arguments; the names of those it edited,
    and what it returned (``labkit.unchanged.edited_by``)."""
    return edited_by(getattr(load_lab("lab-01"), fn), valid(seed)[fn])


@pytest.mark.parametrize("fn", list(valid(0)))
def test_every_function_leaves_its_inputs_unchanged(lab, seed, fn):
    edited, got = in_worker(lab, edited_arguments, fn, seed)
    oracle(fn, valid(seed)[fn])(got)  # the call was a real one: its result is checked too
    assert not edited, (
        f"{fn} edited its argument(s) {edited}: every function leaves its inputs unchanged "
        "(a caller may reuse them, and vLLM refills its own buffers in place)")
