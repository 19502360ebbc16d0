"""One refusal case, checked so that a lookup table cannot answer it.

Every lab's input table (``test_inputs.py``) runs its rows through ``assert_refused``:

1. the valid call, on inputs drawn from the test's seed, must return what the test's oracle
   computed from copies made before the call (a placeholder result fails here);
2. the same call with one argument replaced must raise the documented error type;
3. whose message names the argument as the signature spells it (a word, ``\\bname\\b``);
4. and carries the offending value (one of ``shows``: its repr, its type name, its shape or
   dtype as numpy prints them), so that one message naming every argument cannot pass.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pytest


def shows_value(value: Any) -> tuple[str, ...]:
    """How a message may carry an offending value: the forms a reader recognises it by."""
    if isinstance(value, np.ndarray):
        forms = [str(value.shape), str(value.dtype)]
        if value.ndim == 0:
            forms.append(str(value.item()))
        return tuple(forms)
    if isinstance(value, list | tuple | set | dict) or value is None:
        return (type(value).__name__, repr(value))
    return (repr(value), str(value), type(value).__name__)


def assert_refused(call: Callable[..., Any], valid: Callable[[], dict], check: Callable[[Any], None],
                   arg: str, bad: Any, error: type[BaseException], *, what: str,
                   names: str | None = None, shows: Iterable[str] | None = None) -> None:
    """Check one refusal row.

    call: the function under test; valid: returns fresh valid keyword arguments (seeded, the
    same draw each time: the student's code may change what it is handed); check: raises
    ``AssertionError`` unless the valid call's result is right (an oracle computed by the test);
    arg / bad: the argument replaced and its bad value; error: the documented type; what: the
    case in words, for the failure line; names: a regex for the argument's name (default the
    argument itself); shows: the texts of which the message must carry one (default
    ``shows_value(bad)``).
    """
    check(call(**valid()))
    kwargs = valid()
    kwargs[arg] = bad
    with pytest.raises(error) as err:
        call(**kwargs)
    message = str(err.value)
    name = names or re.escape(arg)
    assert re.search(rf"\b({name})\b", message), (
        f"{what}: the {error.__name__} must name the argument {arg}, got: {message}")
    forms = tuple(shows) if shows is not None else shows_value(bad)
    assert any(f and f in message for f in forms), (
        f"{what}: the {error.__name__} must carry the offending value (one of "
        f"{', '.join(repr(f) for f in forms)}), got: {message}")
