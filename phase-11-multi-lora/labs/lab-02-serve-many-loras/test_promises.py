"""Lab 02 spec, CPU side: the promises a mutation tool and a held-out review found untested.

No engine, no server: the reconcile figure at the precision that tells formulas apart, the
exact comparison of ``eval_diff``, ``sql_executes`` on two statements, the ranks ``serve_argv``
accepts, the tags ``generate_mixed`` refuses.
"""

from __future__ import annotations

import json
import sys
import types
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from labkit import in_worker, load_lab, load_support

LAB = Path(__file__).resolve().parent
SQL_LORA = LAB / "assets" / "sql-lora"
CAPTURE = LAB / "capture" / "demo.log"
VLLM_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vllm/config/lora.py MaxLoRARanks
ARGV_KW = dict(max_loras=2, max_lora_rank=16, max_cpu_loras=4, port=8123)
SCHEMA = "CREATE TABLE t (a INTEGER, b TEXT)"
base_model = load_support("lab-02", "base_model")


def base_shape():
    cfg = json.loads((base_model.base_model_dir() / "config.json").read_text())
    return load_lab("lab-03").ModelShape.from_hf_config(cfg)


# --- reconcile: the delta-FLOPs figure is the weighted ratio, not a mean of ratios ----------


def test_delta_flops_figure_is_weighted_by_base_flops(lab):
    rec = lab.reconcile(lab.parse_capture(CAPTURE.read_text()), base_shape(), SQL_LORA)
    (check,) = [c for c in rec.checks if "flops" in c.figure.lower()]
    shape, cfg = base_shape(), json.loads((SQL_LORA / "adapter_config.json").read_text())
    econ = load_lab("lab-03")
    dims = [econ.module_dims(shape, t) for t in econ.normalize_targets(cfg["target_modules"])]
    weighted = (sum(cfg["r"] * (i + o) for i, o in dims) / sum(i * o for i, o in dims))
    mean = sum(cfg["r"] * (i + o) / (i * o) for i, o in dims) / len(dims)
    assert abs(weighted - mean) > 1e-3  # 0.0694 and 0.0833 on SmolLM2's q,k,v,o
    for side in ("observed", "derived"):
        got = getattr(check, side)
        assert got == pytest.approx(weighted, rel=1e-9), (
            f"delta FLOPs / base FLOPs ({side}) = {got}: the sum of delta FLOPs over the sum of "
            f"base FLOPs is {weighted:.7f}; an unweighted mean of per-target ratios gives "
            f"{mean:.7f}")
    assert check.agrees


@pytest.mark.parametrize("capture", [None, "a log as text", {"lora": {}}],
                         ids=["None", "str", "dict"])
def test_reconcile_refuses_a_capture_that_is_not_a_capture(lab, capture):
    with pytest.raises(TypeError, match="capture"):
        lab.reconcile(capture, base_shape(), SQL_LORA)


# --- sql_executes and eval_diff --------------------------------------------------------------


@pytest.mark.parametrize("sql, runs", [
    ("SELECT a FROM t", True),
    ("SELECT a FROM t;", True),
    ("SELECT a FROM t; DROP TABLE t", False),  # two statements: sqlite3 refuses to run them
    ("SELECT a FROM t; SELECT b FROM t", False),
    ("DROP TABLE t", False),  # runs, but queries nothing
    ("INSERT INTO t VALUES (1, 'x')", False),
    ("", False),
    ("   ", False),
    ("SELECT nope FROM t", False),
])
def test_sql_executes_means_one_query_that_runs(lab, sql, runs):
    assert lab.sql_executes(SCHEMA, sql, ["INSERT INTO t VALUES (1, 'x')"]) is runs, (
        f"sql_executes({sql!r}) must be {runs}")


def rows(*outputs, **extra):
    return [{"id": i, "schema": SCHEMA, "output": out, **extra} for i, out in enumerate(outputs)]


@pytest.mark.parametrize("a, b", [("SELECT a FROM t", "SELECT a FROM t "),
                                  ("SELECT a FROM t", " SELECT a FROM t"),
                                  ("SELECT a FROM t", "SELECT a FROM t\n"),
                                  ("SELECT a  FROM t", "SELECT a FROM t")],
                         ids=["trailing-space", "leading-space", "newline", "inner-space"])
def test_eval_diff_compares_outputs_exactly_whitespace_included(lab, a, b):
    diff = lab.eval_diff(rows(a), rows(b))
    assert len(diff.differing) == 1, (
        f"{a!r} vs {b!r}: outputs are compared exactly, so whitespace is a difference")


@pytest.mark.parametrize("side", ["rows_a", "rows_b"])
@pytest.mark.parametrize("broken", ["missing", "None"])
def test_eval_diff_refuses_a_missing_output(lab, side, broken):
    good = rows("SELECT a FROM t")
    bad = [{k: v for k, v in good[0].items() if k != "output"}]
    if broken == "None":
        bad[0]["output"] = None
    args = (bad, good) if side == "rows_a" else (good, bad)
    with pytest.raises(ValueError, match=side):
        lab.eval_diff(*args)


# --- serve_argv: exactly vLLM's ranks ----------------------------------------------------------


@pytest.mark.parametrize("rank", VLLM_RANKS)
def test_serve_argv_accepts_every_rank_vllm_accepts(lab, rank):
    argv = lab.serve_argv("m", {"a": "p"}, **ARGV_KW | {"max_lora_rank": rank})
    assert argv[argv.index("--max-lora-rank") + 1] == str(rank)


@pytest.mark.parametrize("rank", [2, 4, 7, 9, 15, 17, 24, 48, 100, 384, 511, 513, 1024])
def test_serve_argv_refuses_every_rank_vllm_refuses(lab, rank):
    with pytest.raises(ValueError, match="max_lora_rank"):
        lab.serve_argv("m", {"a": "p"}, **ARGV_KW | {"max_lora_rank": rank})


# --- generate_mixed: a tag is None or a LoRARequest ------------------------------------------


@dataclass(frozen=True)
class FakeLoRARequest:
    lora_name: str
    lora_int_id: int
    lora_path: str


BATCHES: list[tuple] = []  # (prompts, tags) of each RecordingLLM.generate call, where it ran


@contextmanager
def fake_lora_request():
    """``vllm.lora.request.LoRARequest`` is the record above (as test_lab.py's stand-ins),
    where the lab's code runs; restored afterwards."""
    with pytest.MonkeyPatch.context() as mp:
        root, lora, request = (types.ModuleType(n) for n in ("vllm", "vllm.lora", "vllm.lora.request"))
        request.LoRARequest = FakeLoRARequest
        root.lora, lora.request = lora, request
        for name, module in (("vllm", root), ("vllm.lora", lora), ("vllm.lora.request", request)):
            mp.setitem(sys.modules, name, module)
        yield


class RecordingLLM:
    def generate(self, prompts, sampling=None, lora_request=None, **kwargs):
        BATCHES.append((list(prompts), [None if t is None else repr(t) for t in lora_request]))
        return [types.SimpleNamespace(outputs=[types.SimpleNamespace(text="x")])
                for _ in prompts]


def generate_recorded(prompts: list, tags: list) -> list[str]:
    """``lab.generate_mixed(RecordingLLM(), prompts, tags, None)`` with ``fake_lora_request``, run
    with ``in_worker``; a (name, id, path) tuple is that FakeLoRARequest."""
    BATCHES.clear()
    requests = [FakeLoRARequest(*t) if isinstance(t, tuple) else t for t in tags]
    with fake_lora_request():
        return load_lab(LAB.name).generate_mixed(RecordingLLM(), prompts, requests, None)


def batches_sent() -> list[tuple]:
    return list(BATCHES)


@pytest.mark.parametrize("tag", [
    "sql",  # an adapter's name is not a request
    str(SQL_LORA),  # nor is its path
    1,
    {"lora_name": "sql", "lora_int_id": 1, "lora_path": str(SQL_LORA)},
    types.SimpleNamespace(lora_name="sql", lora_path=str(SQL_LORA)),  # no lora_int_id
], ids=["name", "path", "int", "dict", "no-int-id"])
def test_generate_mixed_refuses_a_tag_that_is_not_a_lora_request(lab, tag):
    good = ("sql", 1, str(SQL_LORA))
    with pytest.raises(TypeError, match=r"adapters\[1\]"):
        in_worker(lab, generate_recorded, ["p0", "p1"], [good, tag])
    assert not in_worker(lab, batches_sent), "a batch with a bad tag must not reach the engine"


def test_generate_mixed_accepts_none_and_lora_requests(lab):
    out = in_worker(lab, generate_recorded, ["p0", "p1"], [None, ("sql", 1, str(SQL_LORA))])
    assert out == ["x", "x"] and len(in_worker(lab, batches_sent)) == 1


# --- reconcile: file figures agree exactly; the demo batch is read tag by tag ----------------


def test_a_checkpoint_with_extra_bytes_fails_the_exact_check(lab, tmp_path):
    real = base_model.base_model_dir() / "model.safetensors"
    with real.open("rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    header.pop("__metadata__", None)
    end = max(t["data_offsets"][1] for t in header.values())
    header["extra.weight"] = {"dtype": "F32", "shape": [4], "data_offsets": [end, end + 16]}
    raw = json.dumps(header).encode()
    (tmp_path / "model.safetensors").write_bytes(len(raw).to_bytes(8, "little") + raw)
    rec = lab.reconcile(lab.parse_capture(CAPTURE.read_text()), base_shape(), SQL_LORA,
                        checkpoint=tmp_path)
    (check,) = [c for c in rec.checks if "checkpoint" in c.figure.lower()]
    assert check.observed == check.derived + 16 and not check.agrees, (
        f"16 bytes more than lab 03 derives: file figures agree exactly, got {check}")


def test_every_demo_tag_but_base_is_an_adapter(lab):
    # adapters named to sort before "base": the one-step check must still see two adapters
    text = (CAPTURE.read_text().replace("tag=sql-lora     ", "tag=alpha        ")
            .replace("tag=question-lora", "tag=aardvark     ")
            .replace("'max_loras': 3", "'max_loras': 1"))
    cap = lab.parse_capture(text)
    assert [t for t, _ in cap.outputs] == ["base", "alpha", "aardvark"]
    rec = lab.reconcile(cap, base_shape(), SQL_LORA)
    (check,) = [c for c in rec.checks if "step" in c.figure.lower()]
    assert not check.agrees, (
        f"two adapters (alpha, aardvark) with max_loras=1 do not fit one step: {check}")


@pytest.mark.parametrize("printed", ["'dtype': torch.float32", "'cls': <class 'x.Y'>"],
                         ids=["non-literal-value", "unparsable"])
def test_a_non_literal_args_line_reads_as_defaults(lab, printed):
    log = f"INFO [api_utils.py:286] non-default args: {{'max_loras': 3, {printed}}}\n"
    cap = lab.parse_capture(log)  # vLLM printed an object: no knob can be trusted from it
    assert cap.lora == {"max_loras": 1, "max_lora_rank": 16, "max_cpu_loras": 1}
    assert cap.lora_enabled is False


def test_eval_diff_pairs_rows_by_equal_ids_not_identical_objects(lab):
    a = [{"id": "-".join(["row", str(i)]), "schema": SCHEMA, "output": "SELECT a FROM t"}
         for i in range(3)]
    b = [{**row, "id": "".join(["row-", str(i)])} for i, row in enumerate(a)]
    assert lab.eval_diff(a, b).identical == 3


@pytest.mark.parametrize("flag, key, value", [
    ("--kv-cache-memory-bytes", "kv_cache_bytes", 2**29), ("--dtype", "dtype", "float32"),
    ("--max-model-len", "max_model_len", 512)])
def test_serve_argv_passes_an_optional_setting_only_when_given(lab, flag, key, value):
    given = lab.serve_argv("m", {"a": "p"}, **ARGV_KW | {key: value})
    assert given[given.index(flag) + 1] == str(value), f"{key}={value!r} must pass {flag}"
    unset = lab.serve_argv("m", {"a": "p"}, **ARGV_KW | {key: None})
    assert flag not in unset, f"{key}=None leaves vLLM's default: no {flag}"
