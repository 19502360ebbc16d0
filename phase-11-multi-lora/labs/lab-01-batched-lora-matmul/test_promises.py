"""Lab 01 spec, the promises a mutation tool found untested (the course's mutation sweep).

Each test states one documented sentence that the main spec (test_lab.py) left open: the
default ``scale``, a batch of any length (no small-size shortcut), and which bad ``idx`` entry
an error reports when there are several.
"""

from __future__ import annotations

import numpy as np
import pytest

from labkit import assert_close


def _arrays(rng, T, d_in=4, d_out=5, r=2, L=3):
    return (rng.standard_normal((T, d_in)), rng.standard_normal((d_out, d_in)),
            rng.standard_normal((L, r, d_in)), rng.standard_normal((L, d_out, r)),
            rng.integers(-1, L, size=T))


def test_scale_defaults_to_one(lab):
    rng = np.random.default_rng(3)
    x, W, A_stack, B_stack, idx = _arrays(rng, 6)
    h = rng.standard_normal((6, 2))
    for fn, args in [("expand", (h, B_stack[0])), ("lora_delta_loop", (x, A_stack, B_stack, idx)),
                     ("batched_lora_forward", (x, W, A_stack, B_stack, idx))]:
        got, want = getattr(lab, fn)(*args), getattr(lab, fn)(*args, scale=1.0)
        assert np.array_equal(got, want), f"{fn}: the documented default is scale=1.0"


@pytest.mark.parametrize("T", [257, 1000])
def test_long_batches_equal_the_loop(lab, T):
    # more rows than any small-int cache: lengths are compared by value
    x, W, A_stack, B_stack, idx = _arrays(np.random.default_rng(T), T)
    want = x @ W.T + lab.lora_delta_loop(x, A_stack, B_stack, idx, scale=2.0)
    assert_close(lab.batched_lora_forward(x, W, A_stack, B_stack, idx, scale=2.0), want,
                 rtol=1e-12, atol=1e-12, why=f"a batch of {T} rows")


def test_the_first_bad_idx_entry_is_reported(lab):
    rng = np.random.default_rng(5)
    x, W, A_stack, B_stack, _ = _arrays(rng, 6)
    idx = np.array([0, 1, 9, -1, 7, -5])  # rows 2, 4 and 5 are out of range
    with pytest.raises(ValueError) as err:
        lab.batched_lora_forward(x, W, A_stack, B_stack, idx)
    message = str(err.value)
    assert "row 2" in message and "9" in message, (
        f"three bad entries (rows 2, 4, 5): the first one, 9 at row 2, is reported, got: {message}")
