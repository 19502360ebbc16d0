"""Lab 01 spec, the per-row gather path (BGMV): decode, one adapter index per row.

``gather_shrink`` and ``gather_expand`` compute what vLLM's ``bgmv_shrink`` / ``bgmv_expand``
compute: every row gathers its own adapter's A and B. ``-1`` means no delta. Every batch here is
drawn with EVERY slot holding a non-zero adapter, so a base row that gathers ``A_stack[-1]`` (the
last slot) comes out non-zero and is caught. Inputs are drawn from the seed; expectations are
computed from copies made before the call.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from labkit import assert_bitwise_equal, assert_close

SMALL_INT = 3  # integer-valued inputs in [-3, 3]: every sum below stays exact in float32
SCALE = 2.0  # a power of two keeps integer-valued products exact
TOL = {np.float32: 1e-5, np.float64: 1e-12}  # random floats: the same products, summed in another order


def full_slots(rng: np.random.Generator, T: int, d_in: int, d_out: int, r: int, L: int,
               dtype=np.float64, integer: bool = True) -> tuple[np.ndarray, ...]:
    """x, A_stack, B_stack, idx with every slot holding an adapter whose A and B have no zero
    row or column (so the last slot's delta is never zero), every slot used by some row when T
    allows, and base rows (-1) between them."""
    def ints(shape):
        v = rng.integers(1, SMALL_INT + 1, size=shape) * rng.choice([-1, 1], size=shape)
        return v.astype(dtype)  # never 0: each slot's A and B are full

    def floats(shape):
        return (rng.standard_normal(shape) / np.sqrt(shape[-1])).astype(dtype)

    make = ints if integer else floats
    x = make((T, d_in))
    A_stack, B_stack = make((L, r, d_in)), make((L, d_out, r))
    idx = rng.permutation(np.arange(T) % (L + 1) - 1)  # every slot and the base, shuffled
    return x, A_stack, B_stack, idx


def gathered_shrink(x, A_stack, idx) -> np.ndarray:
    """The definition, row by row: A[idx[i]] @ x[i], zeros on -1 rows."""
    out = np.zeros((x.shape[0], A_stack.shape[1]), dtype=x.dtype)
    for i, a in enumerate(idx):
        if a != -1:
            out[i] = A_stack[a] @ x[i]
    return out


def gathered_expand(h, B_stack, idx, scale) -> np.ndarray:
    out = np.zeros((h.shape[0], B_stack.shape[1]), dtype=h.dtype)
    for i, a in enumerate(idx):
        if a != -1:
            out[i] = scale * (B_stack[a] @ h[i])
    return out


@pytest.fixture
def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gather_shrink_is_each_rows_own_A_bitwise(lab, rng, dtype):
    x, A_stack, _, idx = full_slots(rng, T=23, d_in=12, d_out=10, r=3, L=4, dtype=dtype)
    want = gathered_shrink(x.copy(), A_stack.copy(), idx.copy())
    got = lab.gather_shrink(x, A_stack, idx)
    assert_bitwise_equal(got, want, why="gather_shrink row i is A_stack[idx[i]] @ x[i], zeros "
                                        "where idx[i] == -1 (integer-valued inputs: exact)")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gather_expand_is_each_rows_own_B_times_scale_bitwise(lab, rng, dtype):
    _, _, B_stack, idx = full_slots(rng, T=23, d_in=12, d_out=10, r=3, L=4, dtype=dtype)
    h = rng.integers(-SMALL_INT, SMALL_INT + 1, size=(23, 3)).astype(dtype)
    want = gathered_expand(h.copy(), B_stack.copy(), idx.copy(), SCALE)
    got = lab.gather_expand(h, B_stack, idx, SCALE)
    assert_bitwise_equal(got, want, why="gather_expand row i is scale * B_stack[idx[i]] @ h[i], "
                                        "zeros where idx[i] == -1 (integer-valued inputs: exact)")


def test_base_rows_gather_no_adapter_when_every_slot_is_full(lab, rng):
    """The -1 sentinel: with every slot holding an adapter, A_stack[-1] is a real adapter, so a
    base row that gathers by its raw index comes out non-zero."""
    x, A_stack, B_stack, idx = full_slots(rng, T=15, d_in=8, d_out=6, r=2, L=3)
    h_in = rng.integers(1, SMALL_INT + 1, size=(15, 2)).astype(np.float64)  # no zero row
    base = np.flatnonzero(idx == -1)
    h = lab.gather_shrink(x, A_stack, idx)
    y = lab.gather_expand(h_in, B_stack, idx, SCALE)
    assert_bitwise_equal(h, gathered_shrink(x, A_stack, idx), why="gather_shrink, every row")
    assert_bitwise_equal(y, gathered_expand(h_in, B_stack, idx, SCALE),
                         why="gather_expand, every row")
    for name, out in (("gather_shrink", h), ("gather_expand", y)):
        leaked = [int(i) for i in base if np.any(out[i] != 0)]
        assert not leaked, (
            f"{name}: base rows {leaked} (idx == -1) got a delta; with every slot full, "
            f"A_stack[-1] / B_stack[-1] is the last adapter, not 'no adapter'")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_shrink_then_expand_gathered_equals_the_loop(lab, rng, dtype):
    x, A_stack, B_stack, idx = full_slots(rng, T=31, d_in=16, d_out=12, r=4, L=5, dtype=dtype,
                                          integer=False)
    want = lab.lora_delta_loop(x.copy(), A_stack.copy(), B_stack.copy(), idx.copy(), SCALE)
    got = lab.gather_expand(lab.gather_shrink(x, A_stack, idx), B_stack, idx, SCALE)
    assert_close(got, want, rtol=TOL[dtype], atol=TOL[dtype],
                 why="gather_expand(gather_shrink(x)) is lora_delta_loop's per-row delta")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gather_keeps_the_inputs_dtype(lab, rng, dtype):
    x, A_stack, B_stack, idx = full_slots(rng, T=9, d_in=6, d_out=5, r=2, L=2, dtype=dtype)
    h = lab.gather_shrink(x, A_stack, idx)
    y = lab.gather_expand(h, B_stack, idx, SCALE)
    assert (h.dtype, y.dtype) == (np.dtype(dtype), np.dtype(dtype)), (
        f"gather_shrink / gather_expand return x's / h's dtype {np.dtype(dtype)}, "
        f"got {h.dtype} / {y.dtype}")


def test_an_all_base_batch_gathers_nothing(lab, rng):
    x, A_stack, B_stack, mixed = full_slots(rng, T=7, d_in=6, d_out=5, r=2, L=3)
    assert_bitwise_equal(lab.gather_shrink(x, A_stack, mixed),
                         gathered_shrink(x, A_stack, mixed), why="a mixed batch first")
    idx = np.full(7, -1)
    h = lab.gather_shrink(x, A_stack, idx)
    y = lab.gather_expand(rng.standard_normal((7, 2)), B_stack, idx)
    assert h.shape == (7, 2) and not h.any(), "an all-base batch shrinks to zeros, shape (T, r)"
    assert y.shape == (7, 5) and not y.any(), "an all-base batch expands to zeros, shape (T, d_out)"


def test_an_empty_batch_gathers_an_empty_output(lab, rng):
    x, A_stack, B_stack, mixed = full_slots(rng, T=4, d_in=6, d_out=5, r=2, L=3)
    assert_bitwise_equal(lab.gather_shrink(x, A_stack, mixed),
                         gathered_shrink(x, A_stack, mixed), why="a mixed batch first")
    idx = np.zeros(0, dtype=np.int64)
    assert lab.gather_shrink(np.zeros((0, 6)), A_stack, idx).shape == (0, 2)
    assert lab.gather_expand(np.zeros((0, 2)), B_stack, idx).shape == (0, 5)


def test_gather_leaves_its_inputs_unchanged(lab, rng):
    x, A_stack, B_stack, idx = full_slots(rng, T=11, d_in=6, d_out=5, r=2, L=3)
    copies = [a.copy() for a in (x, A_stack, B_stack, idx)]
    h = lab.gather_shrink(x, A_stack, idx)
    lab.gather_expand(h, B_stack, idx, SCALE)
    for name, before, after in zip(("x", "A_stack", "B_stack", "idx"), copies,
                                   (x, A_stack, B_stack, idx), strict=True):
        assert_bitwise_equal(after, before, why=f"the gather path must not edit {name}")


@given(st.data())
def test_gather_path_equals_the_loop_for_any_idx(lab, data):
    """Any T, L, r and idx pattern (every slot full): the gathered delta is the loop's delta."""
    T = data.draw(st.integers(0, 12), label="T")
    L = data.draw(st.integers(1, 4), label="L")
    r = data.draw(st.integers(1, 4), label="r")
    idx = np.array(data.draw(st.lists(st.integers(-1, L - 1), min_size=T, max_size=T),
                             label="idx"), dtype=np.int64)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    x, A_stack, B_stack, _ = full_slots(rng, T=T, d_in=5, d_out=4, r=r, L=L)
    want = lab.lora_delta_loop(x.copy(), A_stack.copy(), B_stack.copy(), idx.copy(), SCALE)
    got = lab.gather_expand(lab.gather_shrink(x, A_stack, idx), B_stack, idx, SCALE)
    assert_bitwise_equal(got, want, why="the gather path equals lora_delta_loop (exact inputs)")


# --- bad input: the same rules as the grouped path -------------------------------------------
#
# Each refusal starts from a valid call on seeded sizes whose result is checked, and its message
# must carry the offending value or shape: a table of canned answers cannot pass it.


def seeded_sizes(rng: np.random.Generator) -> dict[str, int]:
    d_in, d_out = (int(v) for v in rng.choice(np.arange(4, 12), size=2, replace=False))
    return dict(T=int(rng.integers(6, 12)), d_in=d_in, d_out=d_out,
                r=int(rng.integers(2, 5)), L=int(rng.integers(2, 5)))


def checked_valid_calls(lab, x, A_stack, B_stack, idx) -> np.ndarray:
    """Both gathers on valid inputs, each checked against the definition; h for the refusals."""
    h = lab.gather_shrink(x, A_stack, idx)
    assert_bitwise_equal(h, gathered_shrink(x.copy(), A_stack.copy(), idx.copy()),
                         why="the valid gather_shrink call before the refusal")
    y = lab.gather_expand(h.copy(), B_stack, idx, SCALE)
    assert_bitwise_equal(y, gathered_expand(h.copy(), B_stack.copy(), idx.copy(), SCALE),
                         why="the valid gather_expand call before the refusal")
    return h


@pytest.mark.parametrize("past", [-1, 0, 6], ids=["below -1", "L", "L+6"])
def test_gather_refuses_idx_outside_the_slots_not_wrapped(lab, rng, past):
    n = seeded_sizes(rng)
    x, A_stack, B_stack, idx = full_slots(rng, **n)
    h = checked_valid_calls(lab, x, A_stack, B_stack, idx)
    value, row = (-2 if past == -1 else n["L"] + past), int(rng.integers(0, n["T"]))
    idx[row] = value
    for call in (lambda: lab.gather_shrink(x, A_stack, idx),
                 lambda: lab.gather_expand(h, B_stack, idx)):
        with pytest.raises(ValueError) as err:
            call()
        message = str(err.value)
        assert ("idx" in message and re.search(rf"(?<![\d-]){value}(?!\d)", message)
                and re.search(rf"\brow {row}\b", message)), (
            f"idx[{row}] = {value} with L = {n['L']}: the message must name idx and give the "
            f"value and 'row {row}', got: {message}")


def test_gather_refuses_mismatched_widths_naming_the_argument(lab, rng):
    n = seeded_sizes(rng)
    x, A_stack, B_stack, idx = full_slots(rng, **n)
    h = checked_valid_calls(lab, x, A_stack, B_stack, idx)
    T, d_in, r = n["T"], n["d_in"], n["r"]
    cases = [  # (call, error, argument, what the message must carry)
        (lambda: lab.gather_shrink(x[:, :-1], A_stack, idx), ValueError, "A_stack", str(d_in)),
        (lambda: lab.gather_expand(np.zeros((T, r + 1)), B_stack, idx), ValueError, "B_stack",
         str(r)),
        (lambda: lab.gather_shrink(x, A_stack, idx[:-1]), ValueError, "idx", str(T - 1)),
        (lambda: lab.gather_shrink(x, A_stack, idx.astype(np.float64)), TypeError, "idx",
         "float64"),
        (lambda: lab.gather_expand(h, B_stack, idx, "2"), TypeError, "scale", "2"),
    ]
    for call, error, arg, shows in cases:
        with pytest.raises(error) as err:
            call()
        message = str(err.value)
        assert arg in message and shows in message, (
            f"the {error.__name__} must name {arg} and carry the offending value {shows!r}, "
            f"got: {message}")
