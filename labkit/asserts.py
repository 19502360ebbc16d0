"""Assertions that teach: on failure they name the broken contract and show the smallest evidence
(the first mismatching row and the max |diff|), never two full arrays."""

from __future__ import annotations

import numpy as np


def _first_bad_row(mask: np.ndarray) -> int | None:
    rows = mask.reshape(mask.shape[0], -1).any(axis=1) if mask.ndim > 1 else mask
    hits = np.flatnonzero(rows)
    return int(hits[0]) if hits.size else None


def _describe(actual: np.ndarray, expected: np.ndarray, bad: np.ndarray, why: str) -> str:
    row = _first_bad_row(bad)
    diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    finite = diff[np.isfinite(diff)]
    max_diff = float(finite.max()) if finite.size else float("nan")
    n_bad = int(bad.reshape(bad.shape[0], -1).any(axis=1).sum()) if bad.ndim > 1 else int(bad.sum())
    msg = f"{why}\n  {n_bad} of {actual.shape[0]} rows differ; max |diff| = {max_diff:.3g}"
    if row is not None:
        a, e = np.atleast_1d(actual[row]), np.atleast_1d(expected[row])
        msg += f"\n  first differing row {row}: got {_head(a)}, expected {_head(e)}"
    return msg


def _head(v: np.ndarray, n: int = 4) -> str:
    flat = v.ravel()
    body = ", ".join(f"{x:.6g}" for x in flat[:n])
    return f"[{body}{', ...' if flat.size > n else ''}]"


def _check_shapes(actual: np.ndarray, expected: np.ndarray, why: str) -> None:
    if actual.shape != expected.shape:
        raise AssertionError(f"{why}\n  shape {actual.shape} != expected {expected.shape}")


def assert_bitwise_equal(actual, expected, *, why: str) -> None:
    """Exact equality, NaN-aware, with the first differing row on failure."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    _check_shapes(actual, expected, why)
    if actual.size == 0:
        return
    bad = ~((actual == expected) | (np.isnan(actual) & np.isnan(expected)))
    if bad.any():
        raise AssertionError(_describe(actual, expected, bad, why))


def assert_close(actual, expected, *, rtol: float, atol: float, why: str) -> None:
    """``np.allclose`` semantics, with the first differing row and max |diff| on failure."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    _check_shapes(actual, expected, why)
    if actual.size == 0:
        return
    bad = ~np.isclose(actual, expected, rtol=rtol, atol=atol)
    if bad.any():
        raise AssertionError(_describe(actual, expected, bad, why) + f" (rtol={rtol}, atol={atol})")


def first_mismatch(actual: list, expected: list) -> str:
    """For sequences: the first index where two lists differ, in one line."""
    for i, (a, e) in enumerate(zip(actual, expected, strict=False)):
        if a != e:
            return f"first mismatch at position {i}: got {a!r}, expected {e!r}"
    if len(actual) != len(expected):
        return f"lengths differ: got {len(actual)}, expected {len(expected)}"
    return "sequences are equal"
