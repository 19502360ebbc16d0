"""The labs' promise that a function leaves its inputs unchanged, checked one way for all four.

Each lab's ``test_inputs.py`` runs a seeded valid call where the lab runs (``in_worker``) through
``edited_by``, which compares every argument with a deep copy made before the call. Nothing the
call returns or writes back is trusted for the comparison: the copies are taken first.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Collection, Mapping
from typing import Any

import numpy as np


def same_value(a: Any, b: Any) -> bool:
    """``a`` and ``b`` hold the same value: arrays of one dtype and equal elements, sequences and
    mappings of one type compared item by item, anything else of one type and equal."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype
                and np.array_equal(a, b))
    if type(a) is not type(b):
        return False
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, Mapping):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    return a == b


def edited_by(call: Callable[..., Any], kwargs: dict[str, Any],
              writes: Collection[str] = ()) -> tuple[list[str], Any]:
    """Run ``call(**kwargs)``; return the names of the arguments it edited (compared with deep
    copies made before the call; ``writes``, the arguments its contract lets it write, left
    out) and what it returned."""
    before = copy.deepcopy(kwargs)
    got = call(**kwargs)
    return [k for k in kwargs if k not in writes and not same_value(kwargs[k], before[k])], got
