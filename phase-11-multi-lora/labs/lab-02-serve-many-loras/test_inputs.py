"""Lab 02 spec, input checks (CPU side): every documented refusal, one row per argument and
bad value.

The docstrings promise a ``TypeError`` for a wrong type (a non-int or bool count or port, a
non-str log, a row that is not a dict) and a ``ValueError`` for a wrong value (a count below 1,
``max_cpu_loras < max_loras``, a port outside [1, 65535], mismatched or empty inputs), each
naming the argument. This table is that promise: the valid call, one argument replaced, the
error, the name the message must carry.
"""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path

import numpy as np
import pytest

from labkit import in_worker, load_lab
from labkit.parts import part_marks
from labkit.unchanged import edited_by

LAB = Path(__file__).resolve().parent

SCHEMA = "CREATE TABLE t (a INTEGER)"
KNOBS = dict(max_loras=2, max_lora_rank=16, max_cpu_loras=4)


def calls(lab) -> dict:
    def kwargs_(**kw):
        return lab.engine_kwargs("m", **(KNOBS | {"cuda": False} | kw))

    def argv(**kw):
        args = dict(model="m", adapters={"a": "p"}, port=8123) | KNOBS | kw
        return lab.serve_argv(**args)

    def diff(**kw):
        row = {"id": 0, "schema": SCHEMA, "output": "SELECT a FROM t"}
        args = dict(rows_a=[row], rows_b=[dict(row)]) | kw
        return lab.eval_diff(**args)

    def signature(**kw):
        args = dict(trace=["x", None, "y"], latencies_ms=[1.0, 2.0, 3.0], num_slots=1) | kw
        return lab.cold_slot_signature(**args)

    return {"engine_kwargs": kwargs_, "serve_argv": argv, "eval_diff": diff,
            "cold_slot_signature": signature,
            "parse_capture": lambda **kw: lab.parse_capture(**(dict(text="") | kw))}


def _count(fn, arg):
    return [(fn, arg, "float", 2.0, TypeError), (fn, arg, "bool", True, TypeError),
            (fn, arg, "str", "2", TypeError), (fn, arg, "zero", 0, ValueError),
            (fn, arg, "negative", -4, ValueError)]


ROW = {"id": 0, "schema": SCHEMA, "output": "SELECT a FROM t"}
CASES = [
    *[row for fn in ("engine_kwargs", "serve_argv")
      for arg in ("max_loras", "max_lora_rank", "max_cpu_loras") for row in _count(fn, arg)],
    ("engine_kwargs", "max_cpu_loras", "below-max_loras", 1, ValueError),
    ("serve_argv", "max_cpu_loras", "below-max_loras", 1, ValueError),
    ("serve_argv", "max_lora_rank", "not-a-vllm-rank", 12, ValueError),
    ("serve_argv", "port", "str", "8000", TypeError),
    ("serve_argv", "port", "bool", True, TypeError),
    ("serve_argv", "port", "float", 8000.0, TypeError),
    ("serve_argv", "port", "zero", 0, ValueError),
    ("serve_argv", "port", "above-65535", 65536, ValueError),
    ("serve_argv", "kv_cache_bytes", "zero", 0, ValueError),
    ("serve_argv", "kv_cache_bytes", "float", 2.0**30, TypeError),
    ("serve_argv", "max_model_len", "zero", 0, ValueError),
    ("serve_argv", "max_model_len", "bool", True, TypeError),
    ("serve_argv", "host", "empty", "", ValueError),
    ("serve_argv", "served_model_name", "blank", "my model", ValueError),
    ("serve_argv", "adapters", "none", {}, ValueError),
    ("serve_argv", "adapters", "the-base-name", {"m": "p"}, ValueError),
    ("serve_argv", "adapters", "name-with-equals", {"a=b": "p"}, ValueError),
    ("parse_capture", "text", "bytes", b"log", TypeError),
    ("parse_capture", "text", "None", None, TypeError),
    ("eval_diff", "rows_a", "not-a-dict", [("schema", "output")], TypeError),
    ("eval_diff", "rows_b", "not-a-dict", ["SELECT a FROM t"], TypeError),
    ("eval_diff", "rows_b", "one-row-short", [], ValueError),
    ("eval_diff", "rows_b", "one-row-more", [ROW, {**ROW, "id": 1}], ValueError),
    ("eval_diff", "rows_b", "another-row", [{**ROW, "id": 1}], ValueError),
    ("eval_diff", "rows_b", "an-earlier-id", [{**ROW, "id": -1}], ValueError),
    ("eval_diff", "rows_b", "a-schema-sorting-before", [{**ROW, "schema": "CREATE TABLE s (a INTEGER)"}],
     ValueError),
    ("eval_diff", "rows_b", "a-schema-sorting-after", [{**ROW, "schema": "CREATE TABLE u (a INTEGER)"}],
     ValueError),
    ("eval_diff", "rows_b", "schema-missing", [{"id": 0, "output": "x"}], ValueError),
    ("eval_diff", "rows_a", "output-not-str", [{**ROW, "output": 3}], ValueError),
    *[row for row in _count("cold_slot_signature", "num_slots")],
    ("cold_slot_signature", "latencies_ms", "one-short", [1.0, 2.0], ValueError),
    ("cold_slot_signature", "latencies_ms", "one-more", [1.0, 2.0, 3.0, 4.0], ValueError),
    ("cold_slot_signature", "latencies_ms", "scalar", 1.0, ValueError),
    ("cold_slot_signature", "latencies_ms", "2d", [[1.0], [2.0], [3.0]], ValueError),
    ("cold_slot_signature", "latencies_ms", "negative", [1.0, -2.0, 3.0], ValueError),
    ("cold_slot_signature", "latencies_ms", "inf", [1.0, math.inf, 3.0], ValueError),
    ("cold_slot_signature", "latencies_ms", "nan", [1.0, math.nan, 3.0], ValueError),
]


def by_part(rows: list[tuple], ids: list[str] | None = None) -> list:
    """Each row (its function first) marked with that function's part (``pytest -m part2``)."""
    return [pytest.param(*row, marks=part_marks(LAB, row[0]), id=None if ids is None else ids[i])
            for i, row in enumerate(rows)]


@pytest.mark.parametrize("fn, arg, bad, value, error",
                         by_part(CASES, ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in CASES]))
def test_bad_argument_is_refused_naming_it(lab, fn, arg, bad, value, error):
    call = calls(lab)[fn]
    call()  # the valid call goes through
    with pytest.raises(error) as err:
        call(**{arg: value})
    assert re.search(rf"\b{arg}\b", str(err.value)), (
        f"{fn}: a {bad} {arg} must raise a {error.__name__} that names {arg}, got: {err.value}")


@pytest.mark.part2
def test_an_empty_trace_is_refused_naming_trace(lab):
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


def edited_arguments(fn: str, seed: int) -> list[str]:
    """Where the lab runs: ``fn`` on seeded valid arguments; the names of those it edited, the
    one it writes to left out (``labkit.unchanged.edited_by``)."""
    call, kwargs, writes = unchanged_calls(load_lab("lab-02"), seed)[fn]
    return edited_by(call, kwargs, writes=(writes,))[0]


@pytest.mark.parametrize("fn", by_part([
    ("serve_argv",), ("eval_diff",), ("sql_executes",), ("cold_slot_signature",),
    ("percentile_ms",), ("prefill_groups",), ("shrink_groups",), ("expand_groups",)]))
def test_no_function_changes_its_inputs(lab, seed, fn):
    edited = in_worker(lab, edited_arguments, fn, seed)
    assert not edited, (
        f"{fn} edited its argument(s) {edited}: no function changes its inputs (part 3's ops "
        "write into output_tensor only)")
