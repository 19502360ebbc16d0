"""Lab 01: many LoRA adapters in one batch, the punica/SGMV idea in numpy.

Row ``i`` of a batch uses adapter ``idx[i]`` (``-1``: the base model only). Every row shares one
base matmul ``x @ W.T``; each adapter adds ``scale * (x @ A.T) @ B.T`` on its own rows, through
the rank-r bottleneck (shrink, then expand). ``B @ A`` is never formed; inputs stay unchanged.

Layouts follow PEFT: ``A: (r, d_in)`` is ``lora_A.weight``, ``B: (d_out, r)`` is ``lora_B.weight``,
stacked over ``L`` adapters as ``A_stack: (L, r, d_in)`` and ``B_stack: (L, d_out, r)``.

Admitted forms: the float arrays may have any floating dtype (float16, float32, float64), all of
one dtype per call, and every result keeps it; ``scale`` is any real number that is not a bool
(a Python or numpy float or int: a numpy float64 ``scale`` does not upcast a float32 batch);
``idx`` is any integer array-like of shape (T,) (a list, int32 or int64, ...).
Bad input is refused, never clipped, wrapped or guessed: ``TypeError`` for a wrong type (an
array argument that is not a numpy array, a non-floating dtype such as int64, bool or
complex128, float arrays of mixed dtypes, a non-integer ``idx``, a ``scale`` that is not a real
number or is a bool, a non-int size), ``ValueError`` for a wrong value (shapes, ranks, adapter
counts, idx entries, sizes <= 0; a numpy scalar or 0-d ``idx`` is a wrong shape, ``()``).
The message names the argument as the signature spells it (``x``, ``W``, ``A``, ``B``, ``h``,
``A_stack``, ``B_stack``, ``idx``, ``d_in``, ...), the expectation and the offending value: a
wrong dtype by its name (``int64``), a wrong shape as numpy prints it (``(1, 3, 4)``), another
type by its name (``list``) or its value, a scalar by its value. An ``idx`` entry outside ``[-1, L)`` is
reported (the first one in row order, when there are several) with its value and its position,
written ``row N``: ``ValueError("idx: entries must be in [-1, 4), got 7 at row 3")``.
"""

from __future__ import annotations

# BEGIN SOLUTION
import numbers

# END SOLUTION
import numpy as np

BASE = -1  # idx value of a row that uses no adapter


# BEGIN SOLUTION
# --- argument checks: every message names the argument, the expectation and the offending value


def _check_float(name: str, a: object, ndim: int, like: tuple[str, np.ndarray] | None = None
                 ) -> np.ndarray:
    """``a`` as a floating ndarray of ``ndim`` dims, of the same dtype as ``like = (name, array)``
    when given (numpy would silently upcast a mix, and float64 math at float32 prices is a bug)."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array, got {type(a).__name__}")
    if not np.issubdtype(a.dtype, np.floating):
        raise TypeError(f"{name}: expected a floating dtype, got {a.dtype}")
    if like is not None and a.dtype != like[1].dtype:
        raise TypeError(f"{name}: dtype must match {like[0]}'s {like[1].dtype}, got {a.dtype}")
    if a.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, got shape {a.shape}")
    return a


def _check_dim(name: str, a: np.ndarray, axis: int, size: int, what: str) -> None:
    if a.shape[axis] != size:
        raise ValueError(
            f"{name}: axis {axis} must be {what}={size}, got {a.shape[axis]} in shape {a.shape}"
        )


def _check_scale(scale: object) -> float:
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise TypeError(f"scale: expected a real number, got {scale!r}")
    return float(scale)  # a Python float keeps float32 arithmetic in float32


def _check_idx(idx: object, T: int | None = None, L: int | None = None) -> np.ndarray:
    """``idx`` as a 1-D integer array of length ``T`` with entries in ``[-1, L)``."""
    given, idx = idx, np.asarray(idx)
    if idx.size == 0 and not isinstance(given, np.ndarray):
        idx = idx.astype(np.intp)  # an empty list holds no entry, so no non-integer one
    if not np.issubdtype(idx.dtype, np.integer):
        raise TypeError(f"idx: expected an integer array of adapter ids, got dtype {idx.dtype}")
    if idx.ndim != 1:
        raise ValueError(f"idx: expected shape (T,), got {idx.shape}")
    if T is not None and idx.shape[0] != T:
        raise ValueError(f"idx: expected one entry per row of x, T={T}, got {idx.shape[0]}")
    too_high = np.zeros(idx.shape, dtype=bool) if L is None else idx >= L
    bad = np.flatnonzero((idx < BASE) | too_high)
    if bad.size:
        row = int(bad[0])
        allowed = "-1 or an adapter id >= 0" if L is None else f"in [-1, {L})"
        raise ValueError(f"idx: entries must be {allowed}, got {int(idx[row])} at row {row}")
    return idx


def _check_stacks(x: np.ndarray, A_stack: object, B_stack: object) -> tuple[np.ndarray, ...]:
    """Adapter stacks consistent with each other and with ``x``: (L, r, d_in) and (L, d_out, r)."""
    A_stack = _check_float("A_stack", A_stack, 3, ("x", x))
    B_stack = _check_float("B_stack", B_stack, 3, ("x", x))
    L, r, _ = A_stack.shape
    _check_dim("A_stack", A_stack, 2, x.shape[1], "x's d_in")
    _check_dim("B_stack", B_stack, 0, L, "A_stack's adapter count L")
    _check_dim("B_stack", B_stack, 2, r, "A_stack's rank r")
    return A_stack, B_stack
# END SOLUTION


# --- the lab


def shrink(x: np.ndarray, A: np.ndarray) -> np.ndarray:
    """Project activations into the adapter's rank-r bottleneck.

    x: (T, d_in); A: (r, d_in), PEFT's lora_A layout. Returns (T, r) = x @ A.T, in x's dtype.
    """
    # BEGIN SOLUTION: TODO(lab-01): check shapes and dtypes, then return x @ A.T
    x = _check_float("x", x, 2)
    A = _check_float("A", A, 2, ("x", x))
    _check_dim("A", A, 1, x.shape[1], "x's d_in")
    return x @ A.T
    # END SOLUTION


def expand(h: np.ndarray, B: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Expand rank-r activations back to the output width.

    h: (T, r) shrunk activations; B: (d_out, r), PEFT's lora_B layout; scale = lora_alpha / r.
    Returns (T, d_out) = scale * h @ B.T, in h's dtype. Never form B @ A: the delta must stay
    factored through the rank-r bottleneck.
    """
    # BEGIN SOLUTION: TODO(lab-01): project h through B and apply scale
    h = _check_float("h", h, 2)
    B = _check_float("B", B, 2, ("h", h))
    _check_dim("B", B, 1, h.shape[1], "h's rank r")
    scale, y = _check_scale(scale), h @ B.T
    return y if scale == 1.0 else scale * y  # 1.0 * y is y: skip a pass over (T, d_out)
    # END SOLUTION


def lora_delta_loop(
    x: np.ndarray,
    A_stack: np.ndarray,
    B_stack: np.ndarray,
    idx: np.ndarray,
    scale: float = 1.0,
) -> np.ndarray:
    """The obviously-correct reference: each row's LoRA delta, one row at a time.

    x: (T, d_in); A_stack: (L, r, d_in); B_stack: (L, d_out, r); idx: (T,) integers in [-1, L).
    Returns (T, d_out): row i is scale * B_stack[a] @ (A_stack[a] @ x[i]) for a = idx[i],
    and zeros where idx[i] == -1. Beware: numpy reads A_stack[-1] as the last adapter.
    """
    # BEGIN SOLUTION: TODO(lab-01): validate, then loop over rows; -1 rows stay zero
    x = _check_float("x", x, 2)
    A_stack, B_stack = _check_stacks(x, A_stack, B_stack)
    idx = _check_idx(idx, x.shape[0], A_stack.shape[0])
    scale = _check_scale(scale)
    delta = np.zeros((x.shape[0], B_stack.shape[1]), dtype=x.dtype)
    for i, a in enumerate(idx):
        if a != BASE:
            delta[i] = scale * (B_stack[a] @ (A_stack[a] @ x[i]))
    return delta
    # END SOLUTION


def group_by_adapter(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The permute trick: sort rows by adapter so that each adapter's rows form one segment.

    idx: (T,) integers, -1 for base-only rows. Returns ``(order, adapter_ids, offsets)``:
    ``order``: (N,) row numbers of the N non-base rows, grouped by adapter, ascending within a
    group (stable); ``adapter_ids``: (G,) distinct adapters present; ``offsets``: (G + 1,) with
    ``offsets[0] == 0`` and ``offsets[G] == N``, so that rows ``order[offsets[g]:offsets[g+1]]``
    all use ``adapter_ids[g]``. Base rows form no group.
    """
    # BEGIN SOLUTION: TODO(lab-01): stable-sort the non-base rows by adapter id and return (order, adapter_ids, offsets)
    idx = _check_idx(idx)
    order = np.argsort(idx, kind="stable")
    order = order[np.count_nonzero(idx == BASE):]  # base rows sort first: drop them
    adapter_ids, starts = np.unique(idx[order], return_index=True)
    offsets = np.append(starts, order.size).astype(np.intp)
    return order, adapter_ids, offsets
    # END SOLUTION


def batched_lora_forward(
    x: np.ndarray,
    W: np.ndarray,
    A_stack: np.ndarray,
    B_stack: np.ndarray,
    idx: np.ndarray,
    scale: float = 1.0,
) -> np.ndarray:
    """One layer of a mixed batch: the shared base matmul plus each row's own adapter.

    x: (T, d_in); W: (d_out, d_in); A_stack: (L, r, d_in); B_stack: (L, d_out, r);
    idx: (T,) integers in [-1, L), -1 for base-only rows; scale = lora_alpha / r.
    Returns (T, d_out) in x's dtype = x @ W.T + the per-row deltas of ``lora_delta_loop``,
    computed as ONE base matmul for all rows, then one shrink and one expand per adapter group
    (``group_by_adapter``), each group's result added back onto its own rows. T = 0 gives an
    empty (0, d_out) array.
    """
    # BEGIN SOLUTION: TODO(lab-01): one base matmul, then per group shrink -> expand, scatter-added back to the group's rows
    x = _check_float("x", x, 2)
    W = _check_float("W", W, 2, ("x", x))
    _check_dim("W", W, 1, x.shape[1], "x's d_in")
    A_stack, B_stack = _check_stacks(x, A_stack, B_stack)
    _check_dim("B_stack", B_stack, 1, W.shape[0], "W's d_out")
    idx = _check_idx(idx, x.shape[0], A_stack.shape[0])

    y = x @ W.T  # the one base matmul: every row, adapter or not
    order, adapter_ids, offsets = group_by_adapter(idx)
    x_sorted = x[order]  # permute: each adapter's rows become one contiguous segment
    delta_sorted = np.empty((order.size, W.shape[0]), dtype=x.dtype)
    for g, a in enumerate(adapter_ids):
        seg = slice(offsets[g], offsets[g + 1])
        delta_sorted[seg] = expand(shrink(x_sorted[seg], A_stack[a]), B_stack[a], scale)
    y[order] += delta_sorted  # un-permute: each delta lands on the row it came from
    return y
    # END SOLUTION


# --- the per-row gather path (BGMV): decode, one adapter index per row


def gather_shrink(x: np.ndarray, A_stack: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Shrink each row through its own adapter, gathered per row: vLLM's ``bgmv_shrink``.

    x: (T, d_in); A_stack: (L, r, d_in); idx: (T,) integers in [-1, L).
    Returns (T, r) in x's dtype: row i is A_stack[idx[i]] @ x[i], and exactly zero where
    idx[i] == -1. One gather of the adapter rows' A and one batched product, no loop over rows.
    Beware: ``A_stack[idx]`` reads -1 as the LAST adapter, so a base row gathered by its raw
    index gets the last slot's weights whenever that slot holds an adapter.
    """
    # BEGIN SOLUTION: TODO(lab-01): gather A for the rows whose idx is not -1, one batched product, zeros elsewhere
    x = _check_float("x", x, 2)
    A_stack = _check_float("A_stack", A_stack, 3, ("x", x))
    _check_dim("A_stack", A_stack, 2, x.shape[1], "x's d_in")
    idx = _check_idx(idx, x.shape[0], A_stack.shape[0])
    h = np.zeros((x.shape[0], A_stack.shape[1]), dtype=x.dtype)
    rows = np.flatnonzero(idx != BASE)  # base rows gather nothing: never A_stack[-1]
    h[rows] = np.einsum("ti,tri->tr", x[rows], A_stack[idx[rows]])
    return h
    # END SOLUTION


def gather_expand(h: np.ndarray, B_stack: np.ndarray, idx: np.ndarray,
                  scale: float = 1.0) -> np.ndarray:
    """Expand each row through its own adapter, gathered per row: vLLM's ``bgmv_expand``.

    h: (T, r); B_stack: (L, d_out, r); idx: (T,) integers in [-1, L); scale = lora_alpha / r.
    Returns (T, d_out) in h's dtype: row i is scale * B_stack[idx[i]] @ h[i], and exactly zero
    where idx[i] == -1 (whatever h holds on that row). So
    ``gather_expand(gather_shrink(x, A_stack, idx), B_stack, idx, scale)`` equals
    ``lora_delta_loop(x, A_stack, B_stack, idx, scale)``.
    """
    # BEGIN SOLUTION: TODO(lab-01): gather B for the rows whose idx is not -1, one batched product, zeros elsewhere
    h = _check_float("h", h, 2)
    B_stack = _check_float("B_stack", B_stack, 3, ("h", h))
    _check_dim("B_stack", B_stack, 2, h.shape[1], "h's rank r")
    idx = _check_idx(idx, h.shape[0], B_stack.shape[0])
    scale = _check_scale(scale)
    y = np.zeros((h.shape[0], B_stack.shape[1]), dtype=h.dtype)
    rows = np.flatnonzero(idx != BASE)
    y[rows] = scale * np.einsum("tr,tor->to", h[rows], B_stack[idx[rows]])
    return y
    # END SOLUTION


def lora_overhead(d_in: int, d_out: int, r: int) -> float:
    """LoRA delta FLOPs over base FLOPs for one row of one layer.

    d_in, d_out, r: positive integers. Base: 2*d_in*d_out FLOPs; shrink 2*r*d_in; expand
    2*r*d_out. Returns r*(d_in+d_out) / (d_in*d_out), e.g. 0.0078125 at 4096, 4096, r = 16.
    """
    # BEGIN SOLUTION: TODO(lab-01): return the delta/base FLOP ratio
    for name, value in (("d_in", d_in), ("d_out", d_out), ("r", r)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{name}: expected a positive integer, got {value!r}")
        if value <= 0:
            raise ValueError(f"{name}: expected a positive integer, got {value}")
    return r * (d_in + d_out) / (d_in * d_out)
    # END SOLUTION
