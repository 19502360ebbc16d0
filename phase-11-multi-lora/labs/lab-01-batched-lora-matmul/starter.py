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

import numpy as np

BASE = -1  # idx value of a row that uses no adapter


# --- the lab


def shrink(x: np.ndarray, A: np.ndarray) -> np.ndarray:
    """Project activations into the adapter's rank-r bottleneck.

    x: (T, d_in); A: (r, d_in), PEFT's lora_A layout. Returns (T, r) = x @ A.T, in x's dtype.
    """
    raise NotImplementedError("TODO(lab-01): check shapes and dtypes, then return x @ A.T")


def expand(h: np.ndarray, B: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Expand rank-r activations back to the output width.

    h: (T, r) shrunk activations; B: (d_out, r), PEFT's lora_B layout; scale = lora_alpha / r.
    Returns (T, d_out) = scale * h @ B.T, in h's dtype. Never form B @ A: the delta must stay
    factored through the rank-r bottleneck.
    """
    raise NotImplementedError("TODO(lab-01): project h through B and apply scale")


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
    raise NotImplementedError("TODO(lab-01): validate, then loop over rows; -1 rows stay zero")


def group_by_adapter(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The permute trick: sort rows by adapter so that each adapter's rows form one segment.

    idx: (T,) integers, -1 for base-only rows. Returns ``(order, adapter_ids, offsets)``:
    ``order``: (N,) row numbers of the N non-base rows, grouped by adapter, ascending within a
    group (stable); ``adapter_ids``: (G,) distinct adapters present; ``offsets``: (G + 1,) with
    ``offsets[0] == 0`` and ``offsets[G] == N``, so that rows ``order[offsets[g]:offsets[g+1]]``
    all use ``adapter_ids[g]``. Base rows form no group.
    """
    raise NotImplementedError("TODO(lab-01): stable-sort the non-base rows by adapter id and "
                              "return (order, adapter_ids, offsets)")


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
    raise NotImplementedError("TODO(lab-01): one base matmul, then per group shrink -> expand, "
                              "scatter-added back to the group's rows")


# --- the per-row gather path (BGMV): decode, one adapter index per row


def gather_shrink(x: np.ndarray, A_stack: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Shrink each row through its own adapter, gathered per row: vLLM's ``bgmv_shrink``.

    x: (T, d_in); A_stack: (L, r, d_in); idx: (T,) integers in [-1, L).
    Returns (T, r) in x's dtype: row i is A_stack[idx[i]] @ x[i], and exactly zero where
    idx[i] == -1. One gather of the adapter rows' A and one batched product, no loop over rows.
    Beware: ``A_stack[idx]`` reads -1 as the LAST adapter, so a base row gathered by its raw
    index gets the last slot's weights whenever that slot holds an adapter.
    """
    raise NotImplementedError("TODO(lab-01): gather A for the rows whose idx is not -1, one "
                              "batched product, zeros elsewhere")


def gather_expand(h: np.ndarray, B_stack: np.ndarray, idx: np.ndarray,
                  scale: float = 1.0) -> np.ndarray:
    """Expand each row through its own adapter, gathered per row: vLLM's ``bgmv_expand``.

    h: (T, r); B_stack: (L, d_out, r); idx: (T,) integers in [-1, L); scale = lora_alpha / r.
    Returns (T, d_out) in h's dtype: row i is scale * B_stack[idx[i]] @ h[i], and exactly zero
    where idx[i] == -1 (whatever h holds on that row). So
    ``gather_expand(gather_shrink(x, A_stack, idx), B_stack, idx, scale)`` equals
    ``lora_delta_loop(x, A_stack, B_stack, idx, scale)``.
    """
    raise NotImplementedError("TODO(lab-01): gather B for the rows whose idx is not -1, one "
                              "batched product, zeros elsewhere")


def lora_overhead(d_in: int, d_out: int, r: int) -> float:
    """LoRA delta FLOPs over base FLOPs for one row of one layer.

    d_in, d_out, r: positive integers. Base: 2*d_in*d_out FLOPs; shrink 2*r*d_in; expand
    2*r*d_out. Returns r*(d_in+d_out) / (d_in*d_out), e.g. 0.0078125 at 4096, 4096, r = 16.
    """
    raise NotImplementedError("TODO(lab-01): return the delta/base FLOP ratio")
