"""Lab 03 spec, input checks: every documented refusal, one row per argument and bad value.

The module docstring promises a ``TypeError`` for a wrong type (a non-int or bool count, size
or rank, a non-number claim, a bare string of targets other than ``"all-linear"``) and a
``ValueError`` for a wrong value (unknown, repeated or no targets, rank <= 0, negative tenants
or engines, max_loras <= 0, a claim <= 0), each naming the argument. This table is that promise,
function by function: the valid call, one argument replaced, the error, the name it must carry.
"""

from __future__ import annotations

import math
import random
import re

import pytest

from labkit import in_worker, load_lab
from labkit.refusals import assert_refused, shows_value
from labkit.unchanged import edited_by

SHAPE = dict(hidden=64, intermediate=160, layers=2, heads=4, kv_heads=2, vocab=100)
ALL = ("q", "k", "v", "o", "gate", "up", "down")
ALIASES = {t: (t, f"{t}_proj") for t in ALL}


def seeded(seed: int) -> dict:
    """The numbers of every valid call, drawn from the seed: a table cannot know them.

    Drawn so that no valid call's result is a placeholder's (0, 0.0, False, an empty list): at
    least two slots, tenants and one engine, a rank that changes, an adapter under half a GiB. The
    edges (no engines or tenants, one slot, an adapter over a GiB) have tests in test_lab.py.
    """
    rng = random.Random(seed * 1009 + 3)
    heads = rng.choice([2, 4, 8])
    head_dim = rng.choice([4, 8, 12])
    targets = rng.sample(ALL, rng.randint(1, 7))
    rank = rng.randint(1, 70)
    return dict(
        shape=dict(hidden=heads * head_dim * rng.choice([1, 2]), intermediate=rng.randint(20, 400),
                   layers=rng.randint(1, 6), heads=heads,
                   kv_heads=rng.choice([d for d in (1, 2, heads) if heads % d == 0]),
                   vocab=rng.randint(50, 900), head_dim=head_dim),
        targets=targets, names=[rng.choice(ALIASES[t]) for t in targets],
        target=rng.choice(ALL), rank=rank, dtype_bytes=rng.choice([1, 2, 4]),
        max_loras=rng.randint(2, 12), new_rank=rng.choice([r for r in range(1, 71) if r != rank]),
        engines=rng.randint(1, 40), tenants=rng.randint(2, 10**6),
        adapter_nbytes=rng.randint(1, 2**29),
    )


def dims(s: dict, target: str) -> tuple[int, int]:
    """(d_in, d_out) from first principles: k and v project to kv_heads * head_dim."""
    q, kv, h, i = s["heads"] * s["head_dim"], s["kv_heads"] * s["head_dim"], s["hidden"], \
        s["intermediate"]
    return {"q": (h, q), "k": (h, kv), "v": (h, kv), "o": (q, h), "gate": (h, i), "up": (h, i),
            "down": (i, h)}[target]


def lora(s: dict, rank: int, targets) -> int:
    return s["layers"] * sum(rank * sum(dims(s, t)) for t in targets)


def base(s: dict) -> int:
    per_layer = sum(a * b for a, b in (dims(s, t) for t in ALL)) + 2 * s["hidden"]
    return 2 * s["vocab"] * s["hidden"] + s["layers"] * per_layer + s["hidden"]


def valid(lab, seed: int) -> dict[str, dict]:
    n = seeded(seed)
    shape = lab.ModelShape(**n["shape"])
    return {
        "normalize_targets": dict(targets=list(n["names"])),
        "module_dims": dict(shape=shape, target=n["target"]),
        "base_bytes": dict(shape=shape, dtype_bytes=n["dtype_bytes"]),
        "lora_params": dict(shape=shape, rank=n["rank"], targets=tuple(n["names"])),
        "adapter_bytes": dict(shape=shape, rank=n["rank"], targets=tuple(n["names"]),
                              dtype_bytes=n["dtype_bytes"]),
        "size_ratio": dict(shape=shape, rank=n["rank"], targets=tuple(n["names"]),
                           dtype_bytes=n["dtype_bytes"]),
        "adapters_per_gib": dict(adapter_nbytes=n["adapter_nbytes"]),
        "audit_ratio_claim": dict(claimed=base(n["shape"]) / lora(n["shape"], n["rank"],
                                                                  ("q", "k", "v", "o")) * 1.001,
                                  shape=shape, rank=n["rank"]),
        "slot_reservation_bytes": dict(shape=shape, max_loras=n["max_loras"],
                                       max_lora_rank=n["rank"], dtype_bytes=n["dtype_bytes"]),
        "rank_blast_radius": dict(shape=shape, engines=n["engines"], max_loras=n["max_loras"],
                                  old_rank=n["rank"], new_rank=n["new_rank"]),
        "engines_needed": dict(tenants=n["tenants"], max_loras=n["max_loras"]),
        "gpus_saved": dict(tenants=n["tenants"], max_loras=n["max_loras"]),
    }


def oracle(fn: str, seed: int):
    """A check of the valid call's result, from the test's own arithmetic."""
    n = seeded(seed)
    s, r, t, b, m = n["shape"], n["rank"], n["targets"], n["dtype_bytes"], n["max_loras"]
    engines = -(-n["tenants"] // m)
    want = {
        "normalize_targets": tuple(x for x in ALL if x in t),
        "module_dims": dims(s, n["target"]),
        "base_bytes": base(s) * b,
        "lora_params": lora(s, r, t),
        "adapter_bytes": lora(s, r, t) * b,
        "size_ratio": base(s) / lora(s, r, t),
        "adapters_per_gib": 2**30 // n["adapter_nbytes"],
        "slot_reservation_bytes": m * lora(s, r, ALL) * b,
        "rank_blast_radius": n["engines"] * m * (lora(s, n["new_rank"], ALL)
                                                 - lora(s, r, ALL)) * 2,
        "engines_needed": engines,
        "gpus_saved": n["tenants"] - engines,
    }.get(fn)
    if fn == "audit_ratio_claim":
        def check(got):
            assert got.reading is not None and got.reading.name == "consistent" and \
                got.consistent == pytest.approx(base(s) / lora(s, r, ("q", "k", "v", "o")),
                                                rel=1e-12), (
                f"audit_ratio_claim of 1.001 x the consistent ratio must match the consistent "
                f"reading, got {got!r}")
        return check

    def check(got):
        if isinstance(want, float):
            assert got == pytest.approx(want, rel=1e-12), f"{fn}: got {got!r}, expected {want!r}"
        else:
            assert tuple(got) == want if isinstance(want, tuple) else got == want, (
                f"{fn} on seeded inputs: got {got!r}, expected {want!r}")
    return check


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
    ("audit_ratio_claim", "claimed", "inf", lambda v: math.inf, ValueError),
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
def test_bad_argument_is_refused_naming_it(lab, seed, fn, arg, bad, breaks, error):
    value = breaks(valid(lab, seed)[fn][arg])
    shows = shows_value(value)
    if isinstance(value, list | tuple) and value:  # a bad name in a list: the name itself
        shows = tuple(repr(v) for v in value) + tuple(value)
    elif isinstance(value, list | tuple):  # no names at all
        shows += ("none", "empty", "no ")
    assert_refused(getattr(lab, fn), lambda: valid(lab, seed)[fn], oracle(fn, seed), arg, value,
                   error, what=f"{fn}: a {bad} {arg}", names=NAMES.get(arg), shows=shows)


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


# --- inputs are read, never edited ------------------------------------------------------------

FUNCTIONS = ("normalize_targets", "module_dims", "base_bytes", "lora_params", "adapter_bytes",
             "size_ratio", "adapters_per_gib", "audit_ratio_claim", "slot_reservation_bytes",
             "rank_blast_radius", "engines_needed", "gpus_saved")


def edited_arguments(fn: str, seed: int) -> tuple[list[str], object]:
    """Where the lab runs: ``fn`` on its seeded valid arguments, a list of targets included; the
    names of those it edited (compared with deep copies made before the call), and what it
    returned."""
    lab = load_lab("lab-03")
    kwargs = valid(lab, seed)[fn]
    if "targets" in kwargs:
        kwargs["targets"] = list(kwargs["targets"])  # a mutable form the docs admit
    return edited_by(getattr(lab, fn), kwargs)


@pytest.mark.parametrize("fn", FUNCTIONS)
def test_every_function_leaves_its_inputs_unchanged(lab, seed, fn):
    edited, got = in_worker(lab, edited_arguments, fn, seed)
    oracle(fn, seed)(got)  # the call was a real one: its result is checked too
    assert not edited, (
        f"{fn} edited its argument(s) {edited}: every function leaves its inputs unchanged "
        "(a list of targets is read, never edited)")
