"""Lab 01 spec: a mixed batch of LoRA adapters costs one base matmul plus rank-r deltas.

The claims, each its own test: the grouped forward equals the per-row loop (bit-for-bit where
float arithmetic is exact), base-only rows ride free, each adapter's delta factors through the
rank-r bottleneck, ``B @ A`` is never formed, grouping is a stable partition, and bad input is
refused with a message that names the argument.
"""

from __future__ import annotations

import gc
import re
import tracemalloc
from dataclasses import dataclass, replace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule, run_state_machine_as_test

from labkit import assert_bitwise_equal, assert_close, in_worker, load_lab

DTYPES = [np.float32, np.float64]
# every floating dtype the module docstring admits; float16 holds the integers these integer-valued
# batches reach (at most 1,800: d_in <= 8, r <= 4, entries in [-3, 3], scale <= 2) exactly
ADMITTED_DTYPES = [np.float16, np.float32, np.float64]
SCALE = 2.0  # lora_alpha / r = 32 / 16; a power of two keeps integer-valued products exact
SMALL_INT = 3  # inputs drawn from [-3, 3]: every sum in these shapes stays far below 2**24

# Random floats: the grouped path and the loop add the same products in a different order
# (BLAS blocking, matmul vs matvec), so they agree to a few ulps of O(1) outputs.
TOL = {np.float32: 1e-5, np.float64: 1e-12}

# The forward's working set is O(T * (d_in + d_out)) floats (about 200 KiB in the memory test);
# one B @ A is d_out * d_in floats (12 MiB there). An eighth of the latter is "well below".
MATERIALIZE_FRACTION = 1 / 8


# --- batches -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    """One layer's inputs: x (T, d_in), W (d_out, d_in), A_stack (L, r, d_in),
    B_stack (L, d_out, r), idx (T,)."""

    x: np.ndarray
    W: np.ndarray
    A_stack: np.ndarray
    B_stack: np.ndarray
    idx: np.ndarray
    scale: float = SCALE

    @property
    def args(self) -> tuple[np.ndarray, ...]:
        return self.x, self.W, self.A_stack, self.B_stack, self.idx

    @property
    def loop_args(self) -> tuple[np.ndarray, ...]:
        return self.x, self.A_stack, self.B_stack, self.idx

    @property
    def base_rows(self) -> np.ndarray:
        return np.flatnonzero(self.idx == -1)

    def with_all_rows_base(self) -> Batch:
        return replace(self, idx=np.full_like(self.idx, -1))

    def rows(self, perm: np.ndarray) -> Batch:
        return replace(self, x=self.x[perm], idx=self.idx[perm])


def draw(rng: np.random.Generator, shape: tuple[int, ...], dtype, integer: bool) -> np.ndarray:
    if integer:
        return rng.integers(-SMALL_INT, SMALL_INT + 1, size=shape).astype(dtype)
    fan_in = shape[-1] if shape[-1] else 1
    return (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(dtype)


def interleaved_idx(rng: np.random.Generator, T: int, L: int) -> np.ndarray:
    """Every adapter and the base model present (when T allows), in shuffled order."""
    return rng.permutation(np.arange(T) % (L + 1) - 1)


def make_batch(rng, T=40, d_in=24, d_out=20, r=4, L=5, dtype=np.float64, integer=True, idx=None):
    return Batch(
        x=draw(rng, (T, d_in), dtype, integer),
        W=draw(rng, (d_out, d_in), dtype, integer),
        A_stack=draw(rng, (L, r, d_in), dtype, integer),
        B_stack=draw(rng, (L, d_out, r), dtype, integer),
        idx=interleaved_idx(rng, T, L) if idx is None else np.asarray(idx, dtype=np.int64),
    )


def dense_reference(b: Batch) -> np.ndarray:
    """The definition, computed the expensive way: row i times (W + scale * B @ A).T."""
    y = b.x @ b.W.T
    for i, a in enumerate(b.idx):
        if a != -1:
            y[i] = b.x[i] @ (b.W + b.scale * (b.B_stack[a] @ b.A_stack[a])).T
    return y


@pytest.fixture
def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


# --- shrink and expand -------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_shrink_projects_into_the_rank_r_bottleneck(lab, rng, dtype):
    x, A = draw(rng, (9, 12), dtype, True), draw(rng, (3, 12), dtype, True)
    h = lab.shrink(x, A)
    assert h.dtype == dtype, f"shrink must keep x's dtype {np.dtype(dtype)}, got {h.dtype}"
    assert_bitwise_equal(h, x @ A.T, why="shrink(x, A) must be x @ A.T, shape (T, r)")


@pytest.mark.parametrize("dtype", DTYPES)
def test_expand_applies_B_and_scale(lab, rng, dtype):
    h, B = draw(rng, (9, 3), dtype, True), draw(rng, (10, 3), dtype, True)
    y = lab.expand(h, B, scale=SCALE)
    assert y.dtype == dtype, f"expand must keep h's dtype {np.dtype(dtype)}, got {y.dtype}"
    assert_bitwise_equal(y, SCALE * (h @ B.T),
                         why="expand(h, B, scale) must be scale * h @ B.T, shape (T, d_out)")


# --- the grouped forward equals the per-row loop -----------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_loop_matches_the_dense_definition(lab, rng, dtype):
    b = make_batch(rng, dtype=dtype)
    delta = lab.lora_delta_loop(*b.loop_args, scale=b.scale)
    assert_bitwise_equal(delta, dense_reference(b) - b.x @ b.W.T,
                         why="lora_delta_loop row i must be x[i] @ (scale * B @ A).T for "
                             "a = idx[i], and zeros where idx[i] == -1")


@pytest.mark.parametrize("dtype", DTYPES)
def test_grouped_equals_loop_bitwise_on_integer_inputs(lab, rng, dtype):
    b = make_batch(rng, dtype=dtype)
    y = lab.batched_lora_forward(*b.args, scale=b.scale)
    assert y.dtype == dtype, f"the forward must keep x's dtype {np.dtype(dtype)}, got {y.dtype}"
    expected = b.x @ b.W.T + lab.lora_delta_loop(*b.loop_args, scale=b.scale)
    assert_bitwise_equal(y, expected,
                         why="integer-valued inputs make float arithmetic exact: the grouped "
                             "forward must equal x @ W.T + the per-row loop bit for bit")


@pytest.mark.parametrize("dtype", DTYPES)
def test_grouped_matches_loop_on_random_floats(lab, rng, dtype):
    b = make_batch(rng, T=64, d_in=64, d_out=48, r=8, L=6, dtype=dtype, integer=False)
    y = lab.batched_lora_forward(*b.args, scale=b.scale)
    expected = b.x @ b.W.T + lab.lora_delta_loop(*b.loop_args, scale=b.scale)
    assert_close(y, expected, rtol=TOL[dtype], atol=TOL[dtype],
                 why="on random floats the grouped forward must match the per-row loop up to "
                     "summation order")


def test_output_rows_follow_input_rows_however_adapters_interleave(lab, rng):
    b = make_batch(rng)
    y = lab.batched_lora_forward(*b.args, scale=b.scale)
    assert_bitwise_equal(y, dense_reference(b), why="the unshuffled batch gives the definition")
    for trial in range(3):
        perm = rng.permutation(len(b.idx))
        y_perm = lab.batched_lora_forward(*b.rows(perm).args, scale=b.scale)
        assert_bitwise_equal(y_perm, y[perm],
                             why=f"shuffling the batch (trial {trial}) must shuffle the output "
                                 "rows the same way: deltas must scatter back to their own rows")


# --- base rows ride free -----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_base_rows_ride_free(lab, rng, dtype):
    b = make_batch(rng, T=48, d_in=64, d_out=40, r=8, L=5, dtype=dtype, integer=False)
    y_mixed = lab.batched_lora_forward(*b.args, scale=b.scale)
    y_base = lab.batched_lora_forward(*b.with_all_rows_base().args, scale=b.scale)
    assert_close(y_base, b.x @ b.W.T, rtol=TOL[dtype], atol=TOL[dtype],
                 why="a batch with every idx == -1 must be the base matmul alone")
    rows = b.base_rows
    assert 0 < rows.size < len(b.idx)
    assert_bitwise_equal(y_mixed[rows], y_base[rows],
                         why="a base-only row must not change when adapters share its batch")


@pytest.mark.parametrize("dtype", DTYPES)
def test_all_base_batch_is_exactly_the_base_matmul(lab, rng, dtype):
    b = make_batch(rng, dtype=dtype).with_all_rows_base()
    assert_bitwise_equal(lab.batched_lora_forward(*b.args, scale=b.scale), b.x @ b.W.T,
                         why="with every idx == -1 no adapter may touch any row")


def test_no_adapters_at_all(lab, rng):
    b = make_batch(rng, T=7, L=0, idx=np.full(7, -1))
    assert b.A_stack.shape[0] == 0
    assert_bitwise_equal(lab.batched_lora_forward(*b.args, scale=b.scale), b.x @ b.W.T,
                         why="L = 0 adapters and an all-base batch is just the base model")


@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_batch_returns_an_empty_output(lab, rng, dtype):
    b = make_batch(rng, T=0, d_out=20, dtype=dtype)
    y = lab.batched_lora_forward(*b.args, scale=b.scale)
    assert y.shape == (0, 20) and y.dtype == dtype, (
        f"T = 0 must give an empty (0, d_out) {np.dtype(dtype)} array, got {y.shape} {y.dtype}")


# --- the delta factors through the bottleneck --------------------------------------------------


def test_each_group_delta_has_rank_at_most_r(lab, rng):
    r = 3
    b = make_batch(rng, T=48, d_in=24, d_out=20, r=r, L=3, integer=False)
    b = replace(b, W=np.zeros_like(b.W))  # the output is then the delta alone
    delta = lab.batched_lora_forward(*b.args, scale=b.scale)
    assert_close(delta, dense_reference(b), rtol=TOL[np.float64], atol=TOL[np.float64],
                 why="with W = 0 the output is each row's delta")
    for a in range(b.A_stack.shape[0]):
        rows = np.flatnonzero(b.idx == a)
        assert rows.size > r
        rank = np.linalg.matrix_rank(delta[rows])
        assert rank <= r, (f"adapter {a}: its {rows.size} rows' delta has rank {rank} > r = {r}; "
                           "a LoRA delta factors through the rank-r bottleneck")


def forward_peak_bytes(args, scale) -> int:
    """Peak bytes traced during one ``batched_lora_forward`` (after a warm-up call)."""
    forward = load_lab("lab-01").batched_lora_forward
    forward(*args, scale=scale)  # warm-up: one-time caches are not the point
    gc.collect()  # the garbage of earlier tests is collected before tracing, not while
    tracemalloc.start()
    try:
        forward(*args, scale=scale)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_never_materializes_B_times_A(lab, rng):
    T, d_in, d_out, r, L = 8, 1024, 1024, 16, 4
    b = make_batch(rng, T, d_in, d_out, r, L, np.float32, integer=False,
                   idx=[0, 1, 2, 3, -1, 0, 3, 1])
    dense_bytes = d_out * d_in * b.x.itemsize
    want = b.x @ b.W.T + _loop_delta(b.x, b.A_stack, b.B_stack, b.idx, b.scale)  # factored: cheap
    assert_close(lab.batched_lora_forward(*b.args, scale=b.scale), want,
                 rtol=TOL[np.float32], atol=TOL[np.float32], why="the forward's value first")
    peak = in_worker(lab, forward_peak_bytes, b.args, b.scale)  # where the lab's code runs
    assert peak < MATERIALIZE_FRACTION * dense_bytes, (
        f"batched_lora_forward allocated up to {peak:,} B at T={T}; one d_out x d_in array is "
        f"{dense_bytes:,} B. Apply shrink then expand; never form B @ A (or W + s*B@A)")


# --- grouping: the permute trick ---------------------------------------------------------------


def grouping_problems(idx: np.ndarray, order, adapter_ids, offsets) -> list[str]:
    """Everything wrong with ``(order, adapter_ids, offsets)`` as a grouping of ``idx``."""
    order, adapter_ids, offsets = map(np.asarray, (order, adapter_ids, offsets))
    for name, a in (("order", order), ("adapter_ids", adapter_ids), ("offsets", offsets)):
        if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
            return [f"{name} must be a 1-D integer array, got {a.dtype} {a.shape}"]
    if len(offsets) != len(adapter_ids) + 1:
        return [f"len(offsets) = {len(offsets)} must be len(adapter_ids) + 1 = "
                f"{len(adapter_ids) + 1}"]
    problems = []
    if offsets[0] != 0 or offsets[-1] != len(order) or np.any(np.diff(offsets) <= 0):
        problems.append(f"offsets {offsets.tolist()} must rise strictly from 0 to "
                        f"len(order) = {len(order)}")
    if len(set(adapter_ids.tolist())) != len(adapter_ids):
        problems.append(f"adapter_ids {adapter_ids.tolist()} repeats an adapter")
    if sorted(order.tolist()) != np.flatnonzero(idx != -1).tolist():
        problems.append(f"order {order.tolist()} must hold every non-base row exactly once; "
                        f"non-base rows are {np.flatnonzero(idx != -1).tolist()}")
    if problems:
        return problems
    for g, a in enumerate(adapter_ids):
        seg = order[offsets[g]:offsets[g + 1]]
        if np.any(idx[seg] != a):
            problems.append(f"group {g} (adapter {a}) holds rows {seg.tolist()} whose idx are "
                            f"{idx[seg].tolist()}")
        elif np.any(np.diff(seg) <= 0):
            problems.append(f"group {g} (adapter {a}) lists rows {seg.tolist()}: not stable "
                            "(rows of one adapter must keep their batch order)")
    return problems


@pytest.mark.parametrize("idx", [
    [2, 0, -1, 2, 1, 0, -1, 2],
    [3, 3, 2, 2, 1, 1, 0, 0],
    [-1, -1, -1],
    [4, 4, 4, 4],
    [],
], ids=["interleaved", "descending", "all-base", "one-adapter", "empty"])
def test_group_by_adapter_is_a_stable_partition(lab, rng, idx):
    # the pattern's shape, with adapter ids relabelled and rows repeated by the seed
    labels = rng.permutation(int(rng.integers(5, 40)))
    idx = np.array([-1 if a == -1 else labels[a] for a in idx], dtype=np.int64)
    idx = np.repeat(idx, int(rng.integers(1, 4)))
    problems = grouping_problems(idx, *lab.group_by_adapter(idx))
    assert not problems, f"group_by_adapter({idx.tolist()}):\n  " + "\n  ".join(problems)


# --- properties over random batches ------------------------------------------------------------


@st.composite
def batches(draw_, max_T=10):
    T = draw_(st.integers(0, max_T))
    d_in, d_out = draw_(st.integers(1, 8)), draw_(st.integers(1, 8))
    r, L = draw_(st.integers(1, 4)), draw_(st.integers(0, 4))
    idx = draw_(st.lists(st.integers(-1, L - 1), min_size=T, max_size=T))
    dtype = draw_(st.sampled_from(DTYPES))
    rng = np.random.default_rng(draw_(st.integers(0, 2**32 - 1)))
    return make_batch(rng, T, d_in, d_out, r, L, dtype, integer=True, idx=idx)


@given(b=batches())
def test_forward_equals_the_definition_for_any_batch(lab, b):
    y = lab.batched_lora_forward(*b.args, scale=b.scale)
    assert_bitwise_equal(y, dense_reference(b),
                         why=f"idx={b.idx.tolist()}, x {b.x.shape}, A_stack {b.A_stack.shape}, "
                             f"{b.x.dtype}: row i must be x[i] @ (W + scale * B @ A).T")


@given(idx=st.lists(st.integers(-1, 6), max_size=24))
def test_grouping_is_a_stable_partition_for_any_idx(lab, idx):
    idx = np.asarray(idx, dtype=np.int64)
    problems = grouping_problems(idx, *lab.group_by_adapter(idx))
    assert not problems, f"group_by_adapter({idx.tolist()}):\n  " + "\n  ".join(problems)


# --- bad input is refused, naming the argument -------------------------------------------------


BAD_FORWARD_INPUTS = {
    # id: (how the valid batch is broken, the error, the argument its message must name)
    "x-1d": (lambda b: replace(b, x=b.x[0]), ValueError, "x"),
    "x-integer-dtype": (lambda b: replace(b, x=b.x.astype(np.int64)), TypeError, "x"),
    "W-wrong-d_in": (lambda b: replace(b, W=b.W[:, :-1]), ValueError, "W"),
    "W-3d": (lambda b: replace(b, W=b.W[None]), ValueError, "W"),
    "W-dtype-differs-from-x": (lambda b: replace(b, W=b.W.astype(np.float32)), TypeError, "W"),
    "A_stack-wrong-d_in": (lambda b: replace(b, A_stack=b.A_stack[:, :, :-1]), ValueError,
                           "A_stack"),
    "A_stack-2d": (lambda b: replace(b, A_stack=b.A_stack[0]), ValueError, "A_stack"),
    "B_stack-wrong-d_out": (lambda b: replace(b, B_stack=b.B_stack[:, :-1]), ValueError,
                            "B_stack"),
    "A-B-rank-mismatch": (lambda b: replace(b, B_stack=b.B_stack[:, :, :-1]), ValueError,
                          "A_stack|B_stack"),
    "A-B-adapter-count-mismatch": (lambda b: replace(b, B_stack=b.B_stack[:-1]), ValueError,
                                   "A_stack|B_stack"),
    "idx-float": (lambda b: replace(b, idx=b.idx.astype(np.float64)), TypeError, "idx"),
    "idx-2d": (lambda b: replace(b, idx=b.idx[None]), ValueError, "idx"),
    "idx-wrong-length": (lambda b: replace(b, idx=b.idx[:-1]), ValueError, "idx"),
}


def small_batch(rng: np.random.Generator) -> Batch:
    """A valid batch of seeded sizes, L = 4 adapters, every adapter and a base row present."""
    d_in, d_out = (int(v) for v in rng.choice(np.arange(3, 10), size=2, replace=False))
    return make_batch(rng, T=int(rng.integers(5, 9)), d_in=d_in, d_out=d_out,
                      r=int(rng.integers(2, 4)), L=4)


def check_forward(lab, b: Batch) -> None:
    """The valid call before a refusal: its result is the definition (a placeholder fails)."""
    want = dense_reference(b)
    assert_bitwise_equal(lab.batched_lora_forward(*b.args, scale=b.scale), want,
                         why="the valid batch a refusal test starts from must give the definition")


def offending(error: type, value) -> tuple[str, ...]:
    """How a message carries a bad array: its dtype for a TypeError, else its shape."""
    value = np.asarray(value)
    if error is TypeError:
        return (str(value.dtype),)
    return (str(value.shape), *(str(d) for d in value.shape))


def assert_names(err: pytest.ExceptionInfo, pattern: str, shows: tuple[str, ...] = ()) -> None:
    message = str(err.value)
    assert re.search(rf"\b({pattern})\b", message), (
        f"the {err.type.__name__} must name the argument ({pattern}), got: {message}")
    assert not shows or any(f in message for f in shows), (
        f"the {err.type.__name__} must carry the offending value (one of {shows}), got: "
        f"{message}")


@pytest.mark.parametrize("case", BAD_FORWARD_INPUTS, ids=list(BAD_FORWARD_INPUTS))
def test_forward_refuses_bad_input_naming_the_argument(lab, rng, case):
    breaks, error, name = BAD_FORWARD_INPUTS[case]
    valid = small_batch(rng)
    check_forward(lab, valid)
    b = breaks(valid)
    bad = next(getattr(b, f) for f in ("x", "W", "A_stack", "B_stack", "idx")
               if getattr(b, f) is not getattr(valid, f))
    with pytest.raises(error) as err:
        lab.batched_lora_forward(*b.args, scale=b.scale)
    assert_names(err, name, offending(error, bad))


@pytest.mark.parametrize("value, row", [(7, 3), (4, 1), (-2, 4)],
                         ids=["far-above-L", "equal-to-L", "below-minus-one"])
def test_idx_out_of_range_is_refused_not_wrapped(lab, rng, value, row):
    b = small_batch(rng)
    check_forward(lab, b)
    row = row % len(b.idx)
    idx = b.idx.copy()
    idx[row] = value
    for call in (lambda: lab.batched_lora_forward(*replace(b, idx=idx).args, scale=b.scale),
                 lambda: lab.lora_delta_loop(*replace(b, idx=idx).loop_args, scale=b.scale)):
        with pytest.raises(ValueError) as err:
            call()
        assert_names(err, "idx")
        message = str(err.value)
        assert re.search(rf"(?<![\d-]){value}(?!\d)", message) and re.search(
            rf"\brow {row}\b", message), (
            f"idx[{row}] = {value} with L = 4: the message must give the value and "
            f"'row {row}', got: {message}")


def test_loop_refuses_rank_mismatch(lab, rng):
    b = small_batch(rng)
    assert_bitwise_equal(lab.lora_delta_loop(*b.loop_args, scale=b.scale),
                         dense_reference(b) - b.x @ b.W.T, why="the valid loop call first")
    bad = b.B_stack[:, :, :-1]
    with pytest.raises(ValueError) as err:
        lab.lora_delta_loop(b.x, b.A_stack, bad, b.idx, scale=b.scale)
    assert_names(err, "A_stack|B_stack", offending(ValueError, bad))


def test_shrink_and_expand_refuse_mismatched_widths(lab, rng):
    T, d_in, r, d_out = (int(v) for v in rng.integers(3, 9, size=4))
    x, A = draw(rng, (T, d_in), np.float64, True), draw(rng, (r, d_in), np.float64, True)
    assert_bitwise_equal(lab.shrink(x, A), x @ A.T, why="the valid shrink first")
    with pytest.raises(ValueError) as err:
        lab.shrink(x, A[:, :-1])
    assert_names(err, "A|x", offending(ValueError, A[:, :-1]))
    h, B = draw(rng, (T, r), np.float64, True), draw(rng, (d_out, r), np.float64, True)
    assert_bitwise_equal(lab.expand(h, B), h @ B.T, why="the valid expand first")
    with pytest.raises(ValueError) as err:
        lab.expand(h, B[:, :-1])
    assert_names(err, "B|h", offending(ValueError, B[:, :-1]))


@pytest.mark.parametrize("idx, error", [([0.0, 1.0], TypeError), ([0, -2, 1], ValueError),
                                        ([[0, 1]], ValueError)],
                         ids=["float", "below-minus-one", "2d"])
def test_group_by_adapter_refuses_bad_idx(lab, rng, idx, error):
    valid = rng.integers(-1, 5, size=int(rng.integers(3, 12)))
    problems = grouping_problems(valid, *lab.group_by_adapter(valid))
    assert not problems, f"the valid grouping first, of {valid.tolist()}: {problems[0]}"
    idx = np.asarray(idx)
    with pytest.raises(error) as err:
        lab.group_by_adapter(idx)
    assert_names(err, "idx", ("float64",) if error is TypeError else (
        ("-2", "row 1") if idx.ndim == 1 else (str(idx.shape),)))


# --- the arithmetic of "mixed batches cost almost nothing" -------------------------------------


def test_lora_overhead_at_4096_square_rank_16(lab, rng):
    assert lab.lora_overhead(4096, 4096, 16) == 0.0078125  # 16 * 8192 / 4096**2 = 2**-7
    k, r = int(rng.integers(6, 15)), int(rng.integers(0, 5))  # any power-of-two square is exact
    assert lab.lora_overhead(2**k, 2**k, 2**r) == 2.0 ** (r + 1 - k)


def test_lora_overhead_is_shrink_plus_expand_over_base(lab, rng):
    # shrink costs r/d_out of the base matmul per row, expand r/d_in
    drawn = [tuple(int(v) for v in rng.integers(1, 20_000, size=3)) for _ in range(4)]
    for d_in, d_out, r in [(4096, 11008, 16), (11008, 4096, 8), (5120, 5120, 64), *drawn]:
        got = lab.lora_overhead(d_in, d_out, r)
        assert got == pytest.approx(r / d_out + r / d_in, rel=1e-12), (
            f"lora_overhead({d_in}, {d_out}, {r}) = {got}, expected r/d_out + r/d_in")


def test_lora_overhead_below_one_percent_at_7b_shapes(lab):
    hidden, intermediate = 4096, 11008  # Llama-2-7B: q,k,v,o are 4096x4096; MLP 4096<->11008
    for d_in, d_out in [(hidden, hidden), (hidden, intermediate), (intermediate, hidden)]:
        for r in range(1, 17):  # every rank the claim covers, in order
            got = lab.lora_overhead(d_in, d_out, r)
            want = r * (d_in + d_out) / (d_in * d_out)
            assert got == pytest.approx(want, rel=1e-12) and got < 0.01, (
                f"lora_overhead({d_in}, {d_out}, {r}) = {got}, expected {want:.5f} < 1%")


@pytest.mark.parametrize("name", ["d_in", "d_out", "r"])
def test_lora_overhead_refuses_non_positive_sizes(lab, rng, name):
    sizes = [int(v) for v in rng.integers(1, 10_000, size=3)]
    d_in, d_out, r = sizes
    assert lab.lora_overhead(*sizes) == pytest.approx(r * (d_in + d_out) / (d_in * d_out),
                                                      rel=1e-12), "the valid call first"
    bad = list(sizes)
    bad[["d_in", "d_out", "r"].index(name)] = -int(rng.integers(0, 100))  # 0 or below
    with pytest.raises(ValueError) as err:
        lab.lora_overhead(*bad)
    assert_names(err, name, (str(bad[["d_in", "d_out", "r"].index(name)]),))


# --- defaults, long batches, several bad entries -----------------------------------------------


def _arrays(rng, T, d_in=4, d_out=5, r=2, L=3):
    return (rng.standard_normal((T, d_in)), rng.standard_normal((d_out, d_in)),
            rng.standard_normal((L, r, d_in)), rng.standard_normal((L, d_out, r)),
            rng.integers(-1, L, size=T))


def _loop_delta(x, A_stack, B_stack, idx, scale):
    out = np.zeros((x.shape[0], B_stack.shape[1]))
    for i, a in enumerate(idx):
        if a != -1:
            out[i] = scale * (B_stack[a] @ (A_stack[a] @ x[i]))
    return out


def test_scale_defaults_to_one(lab, rng):
    x, W, A_stack, B_stack, idx = _arrays(rng, int(rng.integers(2, 9)))
    h = rng.standard_normal((x.shape[0], 2))
    for fn, args in [("expand", (h, B_stack[0])), ("lora_delta_loop", (x, A_stack, B_stack, idx)),
                     ("batched_lora_forward", (x, W, A_stack, B_stack, idx))]:
        got, want = getattr(lab, fn)(*args), getattr(lab, fn)(*args, scale=1.0)
        assert np.array_equal(got, want), f"{fn}: the documented default is scale=1.0"
    want = x @ W.T + _loop_delta(x, A_stack, B_stack, idx, 1.0)
    assert_close(lab.batched_lora_forward(x, W, A_stack, B_stack, idx), want, rtol=1e-12,
                 atol=1e-12, why="the default scale=1.0: the definition at scale 1")


@pytest.mark.parametrize("T", [257, 1000])
def test_long_batches_equal_the_loop(lab, rng, T):
    # more rows than any small-int cache: lengths are compared by value
    x, W, A_stack, B_stack, idx = _arrays(rng, T + int(rng.integers(0, 50)))
    want = x @ W.T + lab.lora_delta_loop(x, A_stack, B_stack, idx, scale=2.0)
    assert_close(lab.batched_lora_forward(x, W, A_stack, B_stack, idx, scale=2.0), want,
                 rtol=1e-12, atol=1e-12, why=f"a batch of {len(idx)} rows")


def test_the_first_bad_idx_entry_is_reported(lab, rng):
    T, L = int(rng.integers(6, 12)), 3
    x, W, A_stack, B_stack, _ = _arrays(rng, T, L=L)
    idx = rng.integers(-1, L, size=T)
    rows = np.sort(rng.choice(T, size=3, replace=False))
    # the first bad row holds the smallest bad value, the last the largest: "first" is by row
    values = np.sort(rng.choice(np.r_[np.arange(L, L + 40), np.arange(-40, -1)], 3,
                                replace=False))[::-1] if rng.random() < 0.5 else None
    values = np.array([L, L + 7, L + 30]) + int(rng.integers(0, 20)) if values is None else values
    idx[rows] = values
    first = (int(rows[0]), int(idx[rows[0]]))
    for call in (lambda: lab.batched_lora_forward(x, W, A_stack, B_stack, idx),
                 lambda: lab.lora_delta_loop(x, A_stack, B_stack, idx)):
        with pytest.raises(ValueError) as err:
            call()
        message = str(err.value)
        assert re.search(rf"\brow {first[0]}\b", message) and str(first[1]) in message, (
            f"bad entries at rows {rows.tolist()} ({idx[rows].tolist()}): the first in row "
            f"order, {first[1]} at row {first[0]}, is reported, got: {message}")


# --- every admitted form, and the calls after the first ----------------------------------------

SCALE_FORMS = {  # scale = 2 in every real-number form the docstring admits
    "float": lambda: 2.0, "int": lambda: 2, "np.float64": lambda: np.float64(2.0),
    "np.float32": lambda: np.float32(2.0), "np.int32": lambda: np.int32(2),
}
IDX_FORMS = {
    "int64": lambda v: np.asarray(v, dtype=np.int64), "int32": lambda v: np.asarray(v, np.int32),
    "int16": lambda v: np.asarray(v, np.int16), "list": lambda v: list(v),
    "intp-view": lambda v: np.asarray(v, np.intp)[::-1].copy()[::-1],
}


@st.composite
def admitted_calls(draw_, max_T=10):
    b = draw_(batches(max_T))
    dtype = draw_(st.sampled_from(ADMITTED_DTYPES))
    b = replace(b, x=b.x.astype(dtype), W=b.W.astype(dtype), A_stack=b.A_stack.astype(dtype),
                B_stack=b.B_stack.astype(dtype))
    return b, draw_(st.sampled_from(list(SCALE_FORMS))), draw_(st.sampled_from(list(IDX_FORMS)))


@given(call=admitted_calls())
def test_every_admitted_form_gives_the_definition_in_xs_dtype(lab, call):
    b, scale_form, idx_form = call
    want = dense_reference(b)  # scale 2.0, from the arrays before the call
    idx = IDX_FORMS[idx_form](b.idx.tolist())
    y = lab.batched_lora_forward(b.x, b.W, b.A_stack, b.B_stack, idx, scale=SCALE_FORMS[scale_form]())
    assert y.dtype == b.x.dtype, (
        f"{b.x.dtype} arrays, scale as {scale_form}, idx as {idx_form}: the output must stay "
        f"{b.x.dtype}, got {y.dtype}")
    assert_bitwise_equal(y, want, why=f"{b.x.dtype} arrays, scale as {scale_form}, idx as "
                                      f"{idx_form}, idx={b.idx.tolist()}")
    delta = lab.lora_delta_loop(b.x, b.A_stack, b.B_stack, IDX_FORMS[idx_form](b.idx.tolist()),
                                scale=SCALE_FORMS[scale_form]())
    assert delta.dtype == b.x.dtype and np.array_equal(delta, want - b.x @ b.W.T), (
        f"lora_delta_loop with {b.x.dtype} arrays, scale as {scale_form}, idx as {idx_form}")


@pytest.mark.parametrize("dtype", ADMITTED_DTYPES)
def test_shrink_and_expand_keep_every_floating_dtype(lab, rng, dtype):
    x, A = draw(rng, (5, 6), dtype, True), draw(rng, (3, 6), dtype, True)
    h = lab.shrink(x, A)
    assert h.dtype == dtype and np.array_equal(h, x @ A.T), f"shrink in {np.dtype(dtype)}"
    B = draw(rng, (4, 3), dtype, True)
    y = lab.expand(h, B, scale=np.float64(2.0))
    assert y.dtype == dtype, (f"expand with a numpy float64 scale must stay in h's dtype "
                              f"{np.dtype(dtype)}, got {y.dtype}")
    assert np.array_equal(y, (2 * (h @ B.T)).astype(dtype)), f"expand in {np.dtype(dtype)}"


class ForwardOnReusedBuffers(RuleBasedStateMachine):
    """A serving loop's buffers: idx and x are refilled in place between steps, as an engine
    reuses its metadata tensors; every step must answer for the values it is handed now."""

    lab = None  # the implementation under test, set by the test that runs the machine

    @initialize(seed=st.integers(0, 2**32 - 1))
    def allocate(self, seed):
        self.rng = np.random.default_rng(seed)
        self.b = make_batch(self.rng, T=12, d_in=6, d_out=5, r=2, L=4)
        self.idx, self.x = self.b.idx.copy(), self.b.x.copy()  # the reused buffers

    @rule(data=st.data())
    def refill_idx(self, data):
        self.idx[:] = data.draw(st.lists(st.integers(-1, 3), min_size=12, max_size=12))

    @rule()
    def refill_x(self):
        self.x[:] = draw(self.rng, self.x.shape, self.x.dtype, True)

    @rule()
    def forward(self):
        b = replace(self.b, x=self.x.copy(), idx=self.idx.copy())  # the expectation's copies
        y = self.lab.batched_lora_forward(self.x, b.W, b.A_stack, b.B_stack, self.idx,
                                          scale=b.scale)
        assert_bitwise_equal(y, dense_reference(b), why=(
            f"after the buffers were refilled in place (idx now {b.idx.tolist()}), the forward "
            "must use the current values, not groups or rows remembered from an earlier call"))

    @rule()
    def group(self):
        idx = self.idx.copy()
        problems = grouping_problems(idx, *self.lab.group_by_adapter(self.idx))
        assert not problems, (f"group_by_adapter on a refilled idx buffer {idx.tolist()}:\n  "
                              + "\n  ".join(problems))


def group_refilled(idx: np.ndarray, refill: np.ndarray):
    """Where the lab runs (one buffer must stay one object): group ``idx``'s buffer, refill it
    in place with ``refill``, and group the same buffer again."""
    lab01, buf = load_lab("lab-01"), idx.copy()
    lab01.group_by_adapter(buf)
    buf[:] = refill
    return lab01.group_by_adapter(buf)


def test_forward_on_buffers_refilled_in_place(lab, seed):
    # one plain call of each first: an unfinished function fails here, on its own TODO line,
    # rather than as one of the machine's several failures
    b = make_batch(np.random.default_rng(seed), T=12, d_in=6, d_out=5, r=2, L=4)
    want = dense_reference(b)
    assert_bitwise_equal(lab.batched_lora_forward(*b.args, scale=b.scale), want,
                         why="the forward on fresh buffers, before the machine refills them")
    assert not grouping_problems(b.idx.copy(), *lab.group_by_adapter(b.idx.copy()))
    # then one buffer refilled in place between two calls, every row's adapter changed, so
    # that no draw of the machine below is needed to meet the case
    refilled = (b.idx + 2) % 5 - 1  # -1 -> 0 -> 1 -> 2 -> 3 -> -1
    problems = grouping_problems(refilled, *in_worker(lab, group_refilled, b.idx, refilled))
    assert not problems, (f"group_by_adapter on an idx buffer refilled in place (now "
                          f"{refilled.tolist()}):\n  " + "\n  ".join(problems))
    ForwardOnReusedBuffers.lab = lab
    run_state_machine_as_test(ForwardOnReusedBuffers)


# --- the "how": one base matmul, the stacks read once per group --------------------------------

MATMUL_LIKE = ("matmul", "dot", "einsum", "tensordot", "inner", "vdot")


class Counted(np.ndarray):
    """An array that counts, in ``Counted.counts``, the matmul-like operations that consume it or
    a view of it (``<tag>:matmul``) and the indexing of the original array (``<tag>:reads``)."""

    counts: dict = {}

    def __array_finalize__(self, obj):
        self.tag = getattr(obj, "tag", None)
        self.root = False

    def __getitem__(self, key):
        if self.root:
            Counted.counts[f"{self.tag}:reads"] = Counted.counts.get(f"{self.tag}:reads", 0) + 1
        return super().__getitem__(key)

    def _note(self, name, args):
        if name in MATMUL_LIKE:
            for tag in {a.tag for a in args if isinstance(a, Counted)}:
                Counted.counts[f"{tag}:matmul"] = Counted.counts.get(f"{tag}:matmul", 0) + 1

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        self._note(ufunc.__name__, inputs)
        plain = [a.view(np.ndarray) if isinstance(a, Counted) else a for a in inputs]
        return getattr(ufunc, method)(*plain, **kwargs)

    def __array_function__(self, func, types, args, kwargs):
        self._note(func.__name__, [a for a in args if isinstance(a, np.ndarray)])
        return super().__array_function__(func, types, args, kwargs)


def counted(a: np.ndarray, tag: str) -> Counted:
    c = a.view(Counted)
    c.tag, c.root = tag, True
    return c


def forward_counts(x, W, A_stack, B_stack, idx, scale) -> dict:
    """Where the lab runs: the forward on counted W and stacks, and what it counted."""
    Counted.counts = {}
    forward = load_lab("lab-01").batched_lora_forward
    y = forward(x, counted(W, "W"), counted(A_stack, "A_stack"), counted(B_stack, "B_stack"),
                idx, scale=scale)
    return dict(Counted.counts), np.asarray(y).view(np.ndarray)


def gather_counts(x, A_stack, B_stack, idx, scale) -> tuple[dict, np.ndarray]:
    """Where the lab runs: the gather path on counted stacks, and what it counted."""
    Counted.counts = {}
    lab01 = load_lab("lab-01")
    h = lab01.gather_shrink(x, counted(A_stack, "A_stack"), idx)
    y = lab01.gather_expand(np.asarray(h).view(np.ndarray), counted(B_stack, "B_stack"), idx,
                            scale)
    return dict(Counted.counts), np.asarray(y).view(np.ndarray)


def test_the_gather_path_reads_each_stack_once_not_once_per_row(lab, rng):
    """gather_shrink / gather_expand: one gather of the adapter rows' weights and one batched
    product, so each stack is indexed once (twice with a shape read), never once per row."""
    b = make_batch(rng, T=int(rng.integers(24, 40)), L=int(rng.integers(2, 5)), integer=False)
    want = lab.lora_delta_loop(b.x.copy(), b.A_stack.copy(), b.B_stack.copy(), b.idx.copy(),
                               b.scale)
    counts, y = in_worker(lab, gather_counts, b.x, b.A_stack, b.B_stack, b.idx, b.scale)
    assert_close(y, want, rtol=TOL[np.float64], atol=TOL[np.float64],
                 why="the gather path on counted arrays must still give lora_delta_loop's delta")
    for stack, fn in (("A_stack", "gather_shrink"), ("B_stack", "gather_expand")):
        reads = counts.get(f"{stack}:reads", 0)
        assert reads <= 2 < len(b.idx), (
            f"{fn} indexed {stack} {reads} times for {len(b.idx)} rows: the gather path is one "
            "gather of every adapter row's weights, not a loop over rows")


def test_one_base_matmul_and_one_read_of_each_stack_per_group(lab, rng):
    b = make_batch(rng, T=int(rng.integers(24, 40)), L=int(rng.integers(2, 5)), integer=False)
    groups = len(set(b.idx.tolist()) - {-1})
    counts, y = in_worker(lab, forward_counts, *b.args, b.scale)
    assert_close(y, dense_reference(b), rtol=TOL[np.float64], atol=TOL[np.float64],
                 why="the forward on counted arrays must still give the definition")
    base = counts.get("W:matmul", 0)
    assert base <= 1, (
        f"batched_lora_forward ran {base} matmuls on W for {len(b.idx)} rows: the base term is "
        "ONE matmul for every row (x @ W.T), not one per row or per group")
    for stack in ("A_stack", "B_stack"):
        reads = counts.get(f"{stack}:reads", 0)
        # once per group, or twice (a shape read beside the slice): never once per row
        assert reads <= 2 * groups < len(b.idx), (
            f"batched_lora_forward indexed {stack} {reads} times for {groups} adapter groups "
            f"and {len(b.idx)} rows: one shrink and one expand per group reads each adapter "
            "once, not once per row")
