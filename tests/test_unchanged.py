"""``labkit.unchanged``: the inputs-unchanged check every lab's ``test_inputs.py`` runs."""

from __future__ import annotations

import numpy as np
import pytest

from labkit.unchanged import edited_by, same_value

F32 = np.arange(6, dtype=np.float32).reshape(2, 3)


@pytest.mark.parametrize(("a", "b", "same"), [
    (F32, F32.copy(), True),
    (F32, F32.astype(np.float64), False),  # a dtype is part of the value
    (F32, F32.tolist(), False),
    ([1, [2, 3]], [1, [2, 3]], True),
    ([1, [2, 3]], [1, [2, 4]], False),
    ((1, 2), [1, 2], False),
    ([1, 2], [1.0, 2.0], False),  # an int list edited into floats is an edit
    ({"a": F32}, {"a": F32.copy()}, True),  # `==` on a dict of arrays would raise
    ({"a": F32}, {"a": F32 + 1}, False),
    ({"a": 1}, {"b": 1}, False),
    ("x", "x", True),
])
def test_same_value_compares_type_dtype_and_items(a, b, same):
    assert same_value(a, b) is same


def zero_x_return_sum(x, out):
    total = float(x.sum())
    x[...] = 0
    out[...] = total
    return total


def test_edited_by_names_each_edited_argument_but_the_written_one():
    kwargs = {"x": F32.copy(), "out": np.zeros(1, np.float32)}
    assert edited_by(zero_x_return_sum, kwargs) == (["x", "out"], 15.0)
    kwargs = {"x": F32.copy(), "out": np.zeros(1, np.float32)}
    assert edited_by(zero_x_return_sum, kwargs, writes=("out",)) == (["x"], 15.0)


def test_edited_by_compares_with_copies_taken_before_the_call():
    def shares_state(items):
        items.append(len(items))

    assert edited_by(shares_state, {"items": [1, 2]}) == (["items"], None)
    def reads(items):
        return len(items)

    assert edited_by(reads, {"items": [1, 2]}) == ([], 2)
