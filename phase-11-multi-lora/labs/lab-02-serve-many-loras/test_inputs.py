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
import random
from pathlib import Path

import numpy as np
import pytest

from labkit import in_worker, load_lab
from labkit.parts import part_marks
from labkit.refusals import assert_refused
from labkit.unchanged import edited_by

LAB = Path(__file__).resolve().parent

SCHEMA = "CREATE TABLE t (a INTEGER)"
KNOBS = dict(max_loras=2, max_lora_rank=16, max_cpu_loras=4)  # the inputs-unchanged calls below
VLLM_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vllm/config/lora.py MaxLoRARanks
# outputs that run on SCHEMA, and one that does not: each row's verdict is the test's to know
RUNS, FAILS = ("SELECT a FROM t", "SELECT a + 1 FROM t", "SELECT count(*) FROM t"), "SELECT b FROM t"


def seeded(seed: int) -> dict:
    """The numbers of every valid call, drawn from the seed: a lookup table cannot know them."""
    rng = random.Random(seed * 1013 + 2)
    max_loras = rng.randint(2, 6)  # below-max_loras stays a positive count
    n = rng.randint(3, 9)
    return dict(
        model=f"base-{rng.randint(0, 999)}", max_loras=max_loras,
        max_cpu_loras=max_loras + rng.randint(0, 5), rank=rng.choice(VLLM_RANKS[1:]),
        port=rng.randint(1024, 65535), adapters=rng.randint(1, 3), version=rng.randint(1, 99),
        max_len=rng.randint(64, 8192), n=n, at=rng.randrange(n),
        outputs_a=[rng.choice((*RUNS, FAILS)) for _ in range(n)],
        outputs_b=[rng.choice((*RUNS, FAILS)) for _ in range(n)],
        trace=[rng.choice((None, "t0", "t1", "t2")) for _ in range(n)],
        latencies=[round(rng.uniform(1.0, 90.0), 3) for _ in range(n)],
    )


def valid(seed: int) -> dict[str, dict]:
    """Each function's valid keyword arguments, fresh on every call (the same draw)."""
    s = seeded(seed)
    knobs = dict(max_loras=s["max_loras"], max_lora_rank=s["rank"], max_cpu_loras=s["max_cpu_loras"])
    rows = [{"id": 10 * i + 3, "schema": SCHEMA, "inserts": [f"INSERT INTO t VALUES ({i})"]}
            for i in range(s["n"])]
    log = (f"INFO 06-11 10:00:00 [core.py:133] Initializing a V1 LLM engine (v0.{s['version']}.0) "
           f"with config: model='{s['model']}', dtype=torch.float32, max_seq_len={s['max_len']}, "
           f"device_config=cpu, seed=0\n")
    return {
        "engine_kwargs": dict(model=s["model"], cuda=False, **knobs),
        "serve_argv": dict(model=s["model"], port=s["port"], **knobs,
                           adapters={f"t{i}": f"/adapters/t{i}" for i in range(s["adapters"])}),
        "parse_capture": dict(text=log),
        "eval_diff": dict(rows_a=[{**r, "output": o} for r, o in zip(rows, s["outputs_a"], strict=True)],
                          rows_b=[{**r, "output": o} for r, o in zip(rows, s["outputs_b"], strict=True)]),
        "cold_slot_signature": dict(trace=list(s["trace"]), latencies_ms=list(s["latencies"]),
                                    num_slots=1),
    }


def flag(argv: list, name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv and argv.index(name) + 1 < len(argv) else None


def oracle(lab, fn: str, seed: int):
    """A check of the valid call's result, computed here from the seed: a placeholder fails."""
    s, kw = seeded(seed), valid(seed)[fn]

    def engine_kwargs(got):
        want = {"enable_lora": True, "max_loras": s["max_loras"], "max_lora_rank": s["rank"],
                "max_cpu_loras": s["max_cpu_loras"], "kv_cache_memory_bytes": lab.CPU_KV_CACHE_BYTES}
        seen = {k: got.get(k) for k in want} if isinstance(got, dict) else got
        assert seen == want, f"engine_kwargs{kw}: expected the knobs {want}, got {seen}"

    def serve_argv(got):
        want = {"--port": str(s["port"]), "--max-loras": str(s["max_loras"]),
                "--max-lora-rank": str(s["rank"]), "--max-cpu-loras": str(s["max_cpu_loras"]),
                "--model": s["model"], "--host": "127.0.0.1"}
        seen = {k: flag(got, k) for k in want} if isinstance(got, list) else got
        assert seen == want, f"serve_argv: expected {want}, got {seen}"
        modules = [f"{name}={path}" for name, path in kw["adapters"].items()]
        assert all(m in got for m in modules), f"serve_argv: expected {modules} in {got}"

    def parse_capture(got):
        seen = (getattr(got, "vllm_version", None), getattr(got, "max_model_len", None))
        want = (f"0.{s['version']}.0", s["max_len"])
        assert seen == want, f"parse_capture: (vllm_version, max_model_len) {want}, got {seen}"

    def eval_diff(got):
        a, b = s["outputs_a"], s["outputs_b"]
        want = (s["n"], sum(x == y for x, y in zip(a, b, strict=True)),
                [i for i in range(s["n"]) if a[i] != b[i]], sum(x != FAILS for x in a),
                sum(x != FAILS for x in b))
        seen = (got.rows, got.identical, [d.index for d in got.differing], got.executable_a,
                got.executable_b)
        assert seen == want, f"eval_diff: (rows, identical, differing, executable a/b) {want}, got {seen}"

    def cold_slot_signature(got):
        slot, labels = None, []  # one slot: a request is cold when its adapter is not the one held
        for t in s["trace"]:
            labels.append("hot" if t is None or t == slot else "cold")
            slot = slot if t is None else t
        assert tuple(got.labels) == tuple(labels), (
            f"cold_slot_signature: one slot over {s['trace']}: {labels}, got {got.labels}")

    return locals()[fn]


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
def test_bad_argument_is_refused_naming_it(lab, seed, fn, arg, bad, breaks, error, shows):
    s = seeded(seed)
    value = breaks(valid(seed)[fn], s)
    assert_refused(getattr(lab, fn), lambda: valid(seed)[fn], oracle(lab, fn, seed), arg, value,
                   error, what=f"{fn}: a {bad} {arg}", shows=None if shows is None else shows(value, s))


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
