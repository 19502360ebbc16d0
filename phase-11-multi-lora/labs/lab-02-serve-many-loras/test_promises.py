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
    assert abs(weighted - mean) > 1e-3  # 0.0460 and 0.0640 on SmolLM2's seven linears
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


def header_of(path: Path) -> dict:
    with path.open("rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    header.pop("__metadata__", None)
    return header


def write_header(path: Path, header: dict) -> None:
    """A safetensors file of header only: reconcile reads shapes and dtypes, not data."""
    raw = json.dumps(header).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw)


@pytest.mark.parametrize("change", ["16-bytes-more", "one-tensor-less"])
def test_a_checkpoint_off_by_any_bytes_fails_the_exact_check(lab, tmp_path, change):
    header = header_of(base_model.base_model_dir() / "model.safetensors")
    end = max(t["data_offsets"][1] for t in header.values())
    if change == "16-bytes-more":
        header["extra.weight"] = {"dtype": "F32", "shape": [4], "data_offsets": [end, end + 16]}
    else:
        header.pop(next(n for n in header if n.endswith("norm.weight")))
    write_header(tmp_path / "model.safetensors", header)
    rec = lab.reconcile(lab.parse_capture(CAPTURE.read_text()), base_shape(), SQL_LORA,
                        checkpoint=tmp_path)
    (check,) = [c for c in rec.checks if "checkpoint" in c.figure.lower()]
    assert check.observed != check.derived and not check.agrees, (
        f"{change} than lab 03 derives: file figures agree exactly, got {check}")


def test_an_adapter_with_extra_bytes_fails_the_exact_check(lab, tmp_path):
    header = {n: t for n, t in header_of(SQL_LORA / "adapter_model.safetensors").items()}
    a = next(n for n in header if ".lora_A." in n)
    for name in (a, a.replace(".lora_A.", ".lora_B.")):  # one more module's A and B
        header[name.replace(".lora_", ".extra.lora_")] = header[name]
    (tmp_path / "adapter_config.json").write_text((SQL_LORA / "adapter_config.json").read_text())
    write_header(tmp_path / "adapter_model.safetensors", header)
    rec = lab.reconcile(lab.parse_capture(CAPTURE.read_text()), base_shape(), tmp_path)
    (check,) = [c for c in rec.checks if c.figure.lower().startswith("adapter")
                and "rank" not in c.figure.lower()]
    assert check.observed > check.derived and not check.agrees, (
        f"more bytes than lab 03's adapter_bytes: file figures agree exactly, got {check}")


@pytest.mark.parametrize("names", [("sql-lora", "question-lora"), ("alpha", "aardvark")],
                         ids=["shipped-names", "names-before-base"])
def test_every_demo_tag_but_base_is_an_adapter(lab, names):
    # the shipped names sort after "base", the others before it: both are two adapters
    text = (CAPTURE.read_text().replace("tag=sql-lora     ", f"tag={names[0]:<13}")
            .replace("tag=question-lora", f"tag={names[1]:<13}")
            .replace("'max_loras': 3", "'max_loras': 1"))
    cap = lab.parse_capture(text)
    tags = [t for t, _ in cap.outputs]
    assert tags[:3] == ["base", *names] and set(tags) == {"base", *names}, tags
    rec = lab.reconcile(cap, base_shape(), SQL_LORA)
    (check,) = [c for c in rec.checks if "step" in c.figure.lower()]
    assert not check.agrees, (
        f"two adapters {names} with max_loras=1 do not fit one step: {check}")


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


# --- reconcile: every figure the docstring lists is checked -------------------------------------


def test_the_kv_cache_gib_line_is_checked(lab):
    text = CAPTURE.read_text()
    assert "Explicitly set (1.0/" in text
    rec = lab.reconcile(lab.parse_capture(text.replace("Explicitly set (1.0/",
                                                       "Explicitly set (1.1/")),
                        base_shape(), SQL_LORA)
    failed = [c.figure for c in rec.failed]
    assert len(failed) == 1 and "kv cache" in failed[0].lower(), (
        f"1.1 GiB logged for kv_cache_memory_bytes=1 GiB: the KV cache (GiB) check fails, "
        f"alone; failed: {failed}")


def test_the_demos_slot_buffer_bytes_are_checked(lab):
    cap = lab.parse_capture(CAPTURE.read_text())
    assert cap.lora_enabled and cap.slot_buffer_bytes == 77_709_312  # README: three slots
    rec = lab.reconcile(cap, base_shape(), SQL_LORA)
    found = [c for c in rec.checks if c.observed == cap.slot_buffer_bytes]
    assert len(found) == 1 and found[0].derived == 77_709_312 and found[0].agrees, (
        f"the LoRA slot buffers the demo measured, against lora_slot_bytes: {rec.summary()}")


def test_the_gpu_weight_line_with_lora_on_adds_the_slots(lab):
    econ = load_lab("lab-03")
    slot_bytes = 82_264_064  # README: one rank-16 slot of Llama-2-7B in fp16
    gib = (econ.base_bytes(econ.LLAMA2_7B, 2) + 4 * slot_bytes) / 2**30
    log = (f"INFO [api_utils.py:286] non-default args: {{'enable_lora': True, 'max_loras': 4, "
           f"'max_lora_rank': 16}}\n"
           "INFO [core.py:133] Initializing a V1 LLM engine (v0.32.0) with config: "
           "model='meta-llama/Llama-2-7b-hf', dtype=torch.float16, max_seq_len=4096, "
           "device_config=cuda, seed=0\n"
           f"INFO [gpu_model_runner.py:5150] Model loading took {gib:.2f} GiB memory\n")
    rec = lab.reconcile(lab.parse_capture(log), econ.LLAMA2_7B, SQL_LORA)
    (check,) = [c for c in rec.checks if "weight" in c.figure.lower()]
    assert check.agrees and check.derived == pytest.approx(gib, abs=1e-9), (
        f"{gib:.2f} GiB = lab 03's base_bytes + 4 slots of lora_slot_bytes: {check}")


def test_the_weight_kind_is_compared_by_value(lab):
    import dataclasses
    cap = lab.parse_capture(CAPTURE.read_text())
    kind = "".join(["check", "point"])  # equal to "checkpoint", not the same object
    rec = lab.reconcile(dataclasses.replace(cap, weights_kind=kind), base_shape(), SQL_LORA)
    (check,) = [c for c in rec.checks if "weight" in c.figure.lower()]
    assert check.agrees, f"weights_kind {kind!r} is the CPU build's checkpoint line: {check}"


def test_the_cpu_engine_keeps_256_tokens(lab):
    # README: on CPU, max_model_len 256 (the longest lab prompt is 85 tokens)
    kw = lab.engine_kwargs("m", max_loras=1, max_lora_rank=16, max_cpu_loras=1, cuda=False)
    assert kw["max_model_len"] == lab.CPU_MAX_MODEL_LEN == 256, kw


def test_eval_diff_pairs_more_than_256_rows(lab):
    # lengths past small-int caching: "the same rows" compares counts by value
    many = rows(*["SELECT a FROM t"] * 300)
    assert lab.eval_diff(many, [dict(r) for r in many]).identical == 300
