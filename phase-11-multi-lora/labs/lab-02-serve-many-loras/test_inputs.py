"""Lab 02 spec, input checks (CPU side): every documented refusal, one row per argument and
bad value.

The docstrings promise a ``TypeError`` for a wrong type (a non-int or bool count or port, a
non-str log, a row that is not a dict) and a ``ValueError`` for a wrong value (a count below 1,
``max_cpu_loras < max_loras``, a port outside [1, 65535], mismatched or empty inputs), each
naming the argument and carrying the offending value. This table is that promise, run by
``labkit.refusals.assert_refused``: the valid call on arguments drawn from the seed, its result
checked against the test's own oracle, then one argument replaced, the error, the name and the
value the message must carry.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest

from labkit import in_worker, load_lab
from labkit.parts import part_marks
from labkit.unchanged import edited_by

LAB = Path(__file__).resolve().parent

SCHEMA = "CREATE TABLE t (a INTEGER)"
KNOBS = dict(max_loras=2, max_lora_rank=16, max_cpu_loras=4)  # the inputs-unchanged calls below
def at(kw: dict, arg: str, i: int, row) -> list:
    """``kw[arg]`` with its row ``i`` replaced."""
    return [row if j == i else r for j, r in enumerate(kw[arg])]


def _count(fn, arg):
    return [(fn, arg, "float", lambda kw, s: 2.0, TypeError, None),
            (fn, arg, "bool", lambda kw, s: True, TypeError, None),
            (fn, arg, "str", lambda kw, s: "2", TypeError, None),
            (fn, arg, "zero", lambda kw, s: 0, ValueError, None),
            (fn, arg, "negative", lambda kw, s: -1 - s["max_loras"], ValueError, None)]


def _row(arg: str, bad: str, row, error):
    """A bad row at the seeded position: the message names the argument at that position."""
    return ("eval_diff", arg, bad, lambda kw, s: at(kw, arg, s["at"], row(kw[arg][s["at"]])), error,
            lambda value, s: (f"[{s['at']}]",))


# (function, argument, case, bad value from the valid kwargs and the draw, error, the texts of
# which the message must carry one, from the bad value and the draw: None for its own forms)
CASES = [
    *[row for fn in ("engine_kwargs", "serve_argv")
      for arg in ("max_loras", "max_lora_rank", "max_cpu_loras") for row in _count(fn, arg)],
    *[(fn, "max_cpu_loras", "below-max_loras", lambda kw, s: kw["max_loras"] - 1,
       ValueError, None) for fn in ("engine_kwargs", "serve_argv")],
    ("serve_argv", "max_lora_rank", "not-a-vllm-rank", lambda kw, s: kw["max_lora_rank"] - 4,
     ValueError, None),
    ("serve_argv", "port", "str", lambda kw, s: str(kw["port"]), TypeError, None),
    ("serve_argv", "port", "bool", lambda kw, s: True, TypeError, None),
    ("serve_argv", "port", "float", lambda kw, s: float(kw["port"]), TypeError, None),
    ("serve_argv", "port", "zero", lambda kw, s: 0, ValueError, None),
    ("serve_argv", "port", "above-65535", lambda kw, s: 65536 + kw["port"], ValueError, None),
    ("serve_argv", "kv_cache_bytes", "zero", lambda kw, s: 0, ValueError, None),
    ("serve_argv", "kv_cache_bytes", "float", lambda kw, s: 2.0**30, TypeError, None),
    ("serve_argv", "max_model_len", "zero", lambda kw, s: 0, ValueError, None),
    ("serve_argv", "max_model_len", "bool", lambda kw, s: True, TypeError, None),
    ("serve_argv", "host", "empty", lambda kw, s: "", ValueError, lambda v, s: ("''", '""')),
    ("serve_argv", "served_model_name", "blank", lambda kw, s: f"my {kw['model']}", ValueError,
     None),
    ("serve_argv", "adapters", "none", lambda kw, s: {}, ValueError,
     lambda v, s: ("none", "empty", "{}")),
    ("serve_argv", "adapters", "the-base-name", lambda kw, s: {kw["model"]: "/adapters/b"},
     ValueError, lambda v, s: tuple(v)),
    ("serve_argv", "adapters", "name-with-equals", lambda kw, s: {f"t{s['at']}=x": "/adapters/x"},
     ValueError, lambda v, s: tuple(v)),
    ("parse_capture", "text", "bytes", lambda kw, s: kw["text"].encode(), TypeError,
     lambda v, s: ("bytes",)),
    ("parse_capture", "text", "None", lambda kw, s: None, TypeError, None),
    _row("rows_a", "not-a-dict", lambda r: (r["schema"], r["output"]), TypeError),
    _row("rows_b", "not-a-dict", lambda r: r["output"], TypeError),
    ("eval_diff", "rows_b", "one-row-short", lambda kw, s: kw["rows_b"][:-1], ValueError,
     lambda v, s: (str(len(v)),)),
    ("eval_diff", "rows_b", "one-row-more",
     lambda kw, s: [*kw["rows_b"], {**kw["rows_b"][-1], "id": 10 * s["n"] + 3}], ValueError,
     lambda v, s: (str(len(v)),)),
    _row("rows_b", "another-row", lambda r: {**r, "id": r["id"] + 1}, ValueError),
    _row("rows_b", "an-earlier-id", lambda r: {**r, "id": r["id"] - 4}, ValueError),
    _row("rows_b", "a-schema-sorting-before",
         lambda r: {**r, "schema": "CREATE TABLE s (a INTEGER)"}, ValueError),
    _row("rows_b", "a-schema-sorting-after",
         lambda r: {**r, "schema": "CREATE TABLE u (a INTEGER)"}, ValueError),
    _row("rows_b", "schema-missing", lambda r: {k: v for k, v in r.items() if k != "schema"},
         ValueError),
    _row("rows_a", "output-not-str", lambda r: {**r, "output": len(r["output"])}, ValueError),
    *_count("cold_slot_signature", "num_slots"),
    *[("cold_slot_signature", "latencies_ms", bad, breaks, ValueError,
       lambda v, s: (str(np.shape(v)), str(len(v)) if np.ndim(v) else "()"))
      for bad, breaks in (("one-short", lambda kw, s: kw["latencies_ms"][:-1]),
                          ("one-more", lambda kw, s: [*kw["latencies_ms"], 1.0]),
                          ("2d", lambda kw, s: [[x] for x in kw["latencies_ms"]]))],
    ("cold_slot_signature", "latencies_ms", "scalar", lambda kw, s: kw["latencies_ms"][0],
     ValueError, lambda v, s: ("()", "scalar", "0-d")),
    *[("cold_slot_signature", "latencies_ms", bad,
       lambda kw, s, x=x: at(kw, "latencies_ms", s["at"], x(kw["latencies_ms"][s["at"]])),
       ValueError, lambda v, s: (f"position {s['at']}", f"[{s['at']}]"))
      for bad, x in (("negative", lambda v: -v), ("inf", lambda v: math.inf),
                     ("nan", lambda v: math.nan))],
]


def by_part(rows: list[tuple], ids: list[str] | None = None) -> list:
    """Each row (its function first) marked with that function's part (``pytest -m part2``)."""
    return [pytest.param(*row, marks=part_marks(LAB, row[0]), id=None if ids is None else ids[i])
            for i, row in enumerate(rows)]


@pytest.mark.parametrize("fn, arg, bad, breaks, error, shows",
                         by_part(CASES, ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in CASES]))
def test_bad_argument_is_refused_naming_it(valid_calls, fn, arg, bad, breaks, error, shows):
    value = breaks(valid_calls.kwargs(fn), valid_calls.draw)
    valid_calls.refused(fn, arg, value, error, what=f"{fn}: a {bad} {arg}",
                        shows=None if shows is None else shows(value, valid_calls.draw))


@pytest.mark.part2
def test_an_empty_trace_is_refused_naming_trace(lab, valid_calls):
    valid_calls.checked("cold_slot_signature")  # a right valid call first: no lookup table
    with pytest.raises(ValueError, match="trace"):
        lab.cold_slot_signature([], [], 1)


@pytest.mark.part1
def test_reconcile_refuses_an_adapter_folder_without_its_config(lab, tmp_path):
    econ = load_lab("lab-03")
    (tmp_path / "adapter_model.safetensors").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        lab.reconcile(lab.parse_capture(""), econ.LLAMA2_7B, tmp_path)


# --- inputs are read, never edited ------------------------------------------------------------


def unchanged_calls(lab, seed: int) -> dict[str, tuple]:
    """Each function that takes a container, with seeded valid arguments: name -> (function,
    keyword arguments, the argument it may write to or None)."""
    rng = np.random.default_rng([seed, 202])
    n = int(rng.integers(3, 7))
    rows = [{"id": i, "schema": SCHEMA, "inserts": [f"INSERT INTO t VALUES ({i})"],
             "output": "SELECT a FROM t"} for i in range(n)]
    trace = [None if k < 0 else f"t{k}" for k in rng.integers(-1, 3, size=n)]
    T, L, r, d = n + 3, 2, 2, 4
    lens = np.array([2, 1, T - 3]) if T > 3 else np.array([T])
    seg = (np.concatenate(([0], np.cumsum(lens)[:-1])), lens, np.arange(len(lens)) % (L + 1) - 1)
    tokens = np.repeat(seg[2], seg[1])  # the test's own grouping: the lab's is not called here
    slots = np.unique(tokens[tokens >= 0])
    groups = (np.concatenate([np.flatnonzero(tokens == s) for s in slots]), slots,
              np.concatenate(([0], np.cumsum([np.sum(tokens == s) for s in slots]))))
    f32 = np.float32
    return {
        "serve_argv": (lab.serve_argv, dict(model="m", adapters={"a": "p"}, port=8123,
                                            extra_args=["--seed", str(seed)]) | KNOBS, None),
        "eval_diff": (lab.eval_diff, dict(rows_a=rows, rows_b=copy.deepcopy(rows)), None),
        "sql_executes": (lab.sql_executes, dict(schema=SCHEMA, sql="SELECT a FROM t",
                                                inserts=list(rows[0]["inserts"])), None),
        "cold_slot_signature": (lab.cold_slot_signature,
                                dict(trace=trace, latencies_ms=list(rng.uniform(1, 9, size=n)),
                                     num_slots=1), None),
        "percentile_ms": (lab.percentile_ms, dict(latencies_ms=rng.uniform(1, 9, size=n), q=99.0),
                          None),
        "prefill_groups": (lab.prefill_groups, dict(zip(("b_seq_start_loc", "seq_len_tensor",
                                                         "lora_indices_tensor"), seg, strict=True)), None),
        "shrink_groups": (lab.shrink_groups,
                          dict(inputs=rng.standard_normal((T, d)).astype(f32),
                               lora_a_weights=rng.standard_normal((L, 1, r, d)).astype(f32),
                               output_tensor=np.zeros((T, r), f32), groups=groups, scaling=0.5),
                          "output_tensor"),
        "expand_groups": (lab.expand_groups,
                          dict(inputs=rng.standard_normal((T, r)).astype(f32),
                               lora_b_weights=rng.standard_normal((L, 1, d, r)).astype(f32),
                               output_tensor=np.zeros((T, d), f32), groups=groups,
                               slice_offset=0, slice_size=d, add_inputs=True), "output_tensor"),
    }


def edited_arguments(fn: str, seed: int) -> tuple[list[str], object]:
    """Where the lab runs: ``fn`` on seeded valid arguments; the names of those it edited, the
    one it writes to left out (``labkit.unchanged.edited_by``), and its result (for an op, what
    it wrote)."""
    call, kwargs, writes = unchanged_calls(load_lab("lab-02"), seed)[fn]
    edited, got = edited_by(call, kwargs, writes=(writes,))
    return edited, kwargs[writes] if writes else got


def expected_result(fn: str, kwargs: dict, seed: int, one_slot_labels):
    """The test's own result of the unchanged call (None: the op's spec file checks its values)."""
    if fn == "serve_argv":
        return lambda got: got[got.index("--port") + 1:got.index("--port") + 2] == ["8123"] \
            and got[-2:] == ["--seed", str(seed)]
    if fn == "eval_diff":
        n = len(kwargs["rows_a"])
        return lambda got: (got.rows, got.identical, got.executable_a) == (n, n, n)
    if fn == "sql_executes":
        return lambda got: got is True
    if fn == "cold_slot_signature":
        return lambda got: list(got.labels) == one_slot_labels(kwargs["trace"])
    if fn == "percentile_ms":
        x = sorted(kwargs["latencies_ms"])
        return lambda got: got == x[math.ceil(kwargs["q"] / 100 * len(x)) - 1]
    return None


@pytest.mark.parametrize("fn", by_part([
    ("serve_argv",), ("eval_diff",), ("sql_executes",), ("cold_slot_signature",),
    ("percentile_ms",), ("prefill_groups",), ("shrink_groups",), ("expand_groups",)]))
def test_no_function_changes_its_inputs(valid_calls, fn):
    lab, seed = valid_calls.lab, valid_calls.seed
    edited, got = in_worker(lab, edited_arguments, fn, seed)
    assert not edited, (
        f"{fn} edited its argument(s) {edited}: no function changes its inputs (part 3's ops "
        "write into output_tensor only)")
    right = expected_result(fn, unchanged_calls(lab, seed)[fn][1], seed, valid_calls.one_slot_labels)
    assert right is None or right(got), f"{fn} on the seeded valid call: wrong result {got!r}"
