"""Lab 03 spec, input checks: every documented refusal, one row per argument and bad value.

The module docstring promises a ``TypeError`` for a wrong type (a non-int or bool count, size
or rank, a non-number claim, a bare string of targets other than ``"all-linear"``) and a
``ValueError`` for a wrong value (unknown, repeated or no targets, rank <= 0, negative tenants
or engines, max_loras <= 0, a claim <= 0), each naming the argument. This table is that promise,
function by function: the valid call, one argument replaced, the error, the name it must carry.
"""

from __future__ import annotations

import math
import re

import pytest

SHAPE = dict(hidden=64, intermediate=160, layers=2, heads=4, kv_heads=2, vocab=100)


def valid(lab) -> dict[str, dict]:
    shape = lab.ModelShape(**SHAPE)
    return {
        "normalize_targets": dict(targets=["q_proj", "v"]),
        "module_dims": dict(shape=shape, target="down"),
        "base_bytes": dict(shape=shape, dtype_bytes=2),
        "lora_params": dict(shape=shape, rank=8, targets=("q", "v")),
        "adapter_bytes": dict(shape=shape, rank=8, targets=("q", "v"), dtype_bytes=2),
        "size_ratio": dict(shape=shape, rank=8, targets=("q", "v"), dtype_bytes=2),
        "adapters_per_gib": dict(adapter_nbytes=3 * 2**20),
        "audit_ratio_claim": dict(claimed=430),
        "slot_reservation_bytes": dict(shape=shape, max_loras=4, max_lora_rank=8),
        "rank_blast_radius": dict(shape=shape, engines=3, max_loras=4, old_rank=8,
                                  new_rank=16),
        "engines_needed": dict(tenants=10, max_loras=4),
        "gpus_saved": dict(tenants=10, max_loras=4),
    }


def _count_cases(fn, arg, minimum=1):
    """A count: float, bool and str are wrong types; below ``minimum`` a wrong value."""
    rows = [(fn, arg, "float", lambda v: float(v), TypeError),
            (fn, arg, "bool", lambda v: True, TypeError),
            (fn, arg, "str", lambda v: str(v), TypeError),
            (fn, arg, f"{minimum - 1}", lambda v: minimum - 1, ValueError)]
    if minimum > 0:
        rows.append((fn, arg, "negative", lambda v: -v, ValueError))
    return rows


CASES = [
    ("normalize_targets", "targets", "bare-string", lambda v: "q_proj", TypeError),
    # bare strings that sort before "all-linear": only that exact string is the shorthand
    ("normalize_targets", "targets", "bare-all", lambda v: "all", TypeError),
    ("normalize_targets", "targets", "bare-empty", lambda v: "", TypeError),
    ("normalize_targets", "targets", "empty", lambda v: [], ValueError),
    ("normalize_targets", "targets", "unknown", lambda v: ["q", "qproj"], ValueError),
    ("normalize_targets", "targets", "repeated", lambda v: ["q", "q_proj"], ValueError),
    ("normalize_targets", "targets", "packed-overlap", lambda v: ["qkv_proj", "k"], ValueError),
    ("module_dims", "target", "unknown", lambda v: "mlp", ValueError),
    ("lora_params", "targets", "bare-string", lambda v: "q", TypeError),
    ("lora_params", "targets", "empty", lambda v: (), ValueError),
    ("audit_ratio_claim", "claimed", "str", lambda v: "430", TypeError),
    ("audit_ratio_claim", "claimed", "None", lambda v: None, TypeError),
    ("audit_ratio_claim", "claimed", "bool", lambda v: True, TypeError),
    ("audit_ratio_claim", "claimed", "zero", lambda v: 0, ValueError),
    ("audit_ratio_claim", "claimed", "negative", lambda v: -v, ValueError),
    ("audit_ratio_claim", "claimed", "nan", lambda v: math.nan, ValueError),
    *_count_cases("base_bytes", "dtype_bytes"),
    *_count_cases("lora_params", "rank"),
    *_count_cases("adapter_bytes", "rank"),
    *_count_cases("adapter_bytes", "dtype_bytes"),
    *_count_cases("size_ratio", "rank"),
    *_count_cases("adapters_per_gib", "adapter_nbytes"),
    *_count_cases("slot_reservation_bytes", "max_loras"),
    *_count_cases("slot_reservation_bytes", "max_lora_rank"),
    *_count_cases("rank_blast_radius", "engines", minimum=0),
    *_count_cases("rank_blast_radius", "max_loras"),
    *_count_cases("rank_blast_radius", "old_rank"),
    *_count_cases("rank_blast_radius", "new_rank"),
    *_count_cases("engines_needed", "tenants", minimum=0),
    *_count_cases("engines_needed", "max_loras"),
    *_count_cases("gpus_saved", "tenants", minimum=0),
    *_count_cases("gpus_saved", "max_loras"),
]
# the message names the argument; lab 03 counts are checked under their own names, except the
# rank of a slot and the old/new rank of a blast radius, "checked like rank": any *rank name
NAMES = {"max_lora_rank": r"\w*rank", "old_rank": r"\w*rank", "new_rank": r"\w*rank"}


@pytest.mark.parametrize("fn, arg, bad, breaks, error", CASES,
                         ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in CASES])
def test_bad_argument_is_refused_naming_it(lab, fn, arg, bad, breaks, error):
    kwargs = valid(lab)[fn]
    getattr(lab, fn)(**kwargs)  # the valid call goes through
    kwargs[arg] = breaks(kwargs[arg])
    with pytest.raises(error) as err:
        getattr(lab, fn)(**kwargs)
    name = NAMES.get(arg, arg)
    assert re.search(rf"\b({name})\b", str(err.value)), (
        f"{fn}: a {bad} {arg} must raise a {error.__name__} that names {arg}, got: {err.value}")


# --- the given ModelShape: structural (its checks are given code, not a TODO) -----------------

SHAPE_CASES = [(arg, bad, breaks, error)
               for arg in ("hidden", "intermediate", "layers", "heads", "kv_heads", "vocab")
               for _, _, bad, breaks, error in _count_cases("ModelShape", arg)]
SHAPE_CASES += [("tie_word_embeddings", "int", lambda v: 1, TypeError),
                ("kv_heads", "not-dividing-heads", lambda v: 3, ValueError),
                ("head_dim", "zero", lambda v: 0, ValueError)]


@pytest.mark.structural
@pytest.mark.parametrize("arg, bad, breaks, error", SHAPE_CASES,
                         ids=[f"{c[0]}-{c[1]}" for c in SHAPE_CASES])
def test_model_shape_refuses_bad_fields(lab, arg, bad, breaks, error):
    fields = {**SHAPE, "tie_word_embeddings": False, "head_dim": 16}
    lab.ModelShape(**fields)
    fields[arg] = breaks(fields[arg])
    with pytest.raises(error) as err:
        lab.ModelShape(**fields)
    assert re.search(rf"\b{arg}\b", str(err.value)), (
        f"ModelShape: a {bad} {arg} must raise a {error.__name__} naming it, got: {err.value}")
