"""Lab 02 spec, part 1 at its edges: where each check is exact, and what each function refuses.

No engine: ``reconcile``'s figures at the precision that tells formulas apart (a file off by 16
bytes fails; the delta-FLOPs figure is weighted by base FLOPs), the exact comparison of
``eval_diff``, ``sql_executes`` on two statements and failing inserts, the tags
``generate_mixed`` refuses. ``test_lab.py`` holds the rest of part 1.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
import types
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from labkit import in_worker, load_lab, load_support

pytestmark = pytest.mark.part1

LAB = Path(__file__).resolve().parent
SQL_LORA = LAB / "assets" / "sql-lora"
CAPTURE = LAB / "capture" / "demo.log"
SCHEMA = "CREATE TABLE t (a INTEGER, b TEXT)"
base_model = load_support("lab-02", "tools.base_model")


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


# --- generate_mixed: a tag is None or a LoRARequest ------------------------------------------


@dataclass(frozen=True)
class FakeLoRARequest:
    lora_name: str
    lora_int_id: int
    lora_path: str


BATCHES: list[tuple] = []  # (prompts, tags, kwargs) of each RecordingLLM.generate call, where it ran


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
        BATCHES.append((list(prompts), [None if t is None else repr(t) for t in lora_request],
                        kwargs))
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


def adapter_from(folder: Path, header: dict) -> Path:
    """``folder`` as a PEFT adapter: the shipped tenant's config beside a header-only
    safetensors of ``header``."""
    (folder / "adapter_config.json").write_text((SQL_LORA / "adapter_config.json").read_text())
    write_header(folder / "adapter_model.safetensors", header)
    return folder


def reconcile_demo(lab, adapter: Path = SQL_LORA, **changes):
    """``reconcile`` of the shipped demo capture with ``changes`` (its fields) replaced."""
    cap = lab.parse_capture(CAPTURE.read_text())
    return lab.reconcile(dataclasses.replace(cap, **changes), base_shape(), adapter)


def named(rec, word: str) -> list:
    """The checks whose figure names ``word`` (case-insensitively, as the docstring says)."""
    return [c for c in rec.checks if word in c.figure.lower()]


def adapter_bytes(rec):
    """The adapter-bytes check: its figure starts with "adapter" and is not the rank check."""
    (check,) = [c for c in named(rec, "adapter") if c.figure.lower().startswith("adapter")
                and "rank" not in c.figure.lower()]
    return check


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
    check = adapter_bytes(reconcile_demo(lab, adapter_from(tmp_path, header)))
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


# --- the second sweep's survivors: defaults, signatures, boundaries, exact file checks --------


def test_the_cpu_engine_bounds_its_kv_cache_to_one_gib(lab):
    # README: kv_cache_memory_bytes 1 GiB on CPU (23,296 tokens of SmolLM2-135M in fp32)
    kw = lab.engine_kwargs("m", max_loras=1, max_lora_rank=16, max_cpu_loras=1, cuda=False)
    assert kw["kv_cache_memory_bytes"] == lab.CPU_KV_CACHE_BYTES == 2**30, kw


def test_the_documented_arguments_can_be_passed_by_name(lab):
    kw = lab.engine_kwargs(model="m", max_loras=1, max_lora_rank=16, max_cpu_loras=1, cuda=True)
    assert kw["model"] == "m" and kw["max_loras"] == 1, kw
    rec = lab.reconcile(capture=lab.parse_capture(text=CAPTURE.read_text()), shape=base_shape(),
                        adapter=SQL_LORA)
    assert rec.checks, "reconcile(capture=..., shape=..., adapter=...) returns the checks"


@pytest.mark.parametrize("n_prompts, n_tags", [(1, 2), (2, 1)], ids=["more-tags", "fewer-tags"])
def test_generate_mixed_refuses_a_tag_count_that_is_not_the_prompt_count(lab, n_prompts, n_tags):
    with pytest.raises(ValueError, match="adapters"):
        in_worker(lab, generate_recorded, [f"p{i}" for i in range(n_prompts)], [None] * n_tags)
    assert not in_worker(lab, batches_sent), "a mismatched batch must not reach the engine"


def test_generate_mixed_takes_a_batch_of_300(lab):
    # counts compared by value, past small-int caching
    out = in_worker(lab, generate_recorded, [f"p{i}" for i in range(300)], [None] * 300)
    assert len(out) == 300 and len(in_worker(lab, batches_sent)) == 1


def test_generate_mixed_refuses_a_prompt_that_is_not_text(lab):
    with pytest.raises(TypeError, match=r"prompts\[1\]"):
        in_worker(lab, generate_recorded, ["p0", b"p1"], [None, None])
    assert not in_worker(lab, batches_sent), "a batch with a bad prompt must not reach the engine"


def test_a_figure_that_rounds_to_the_logged_value_agrees(lab):
    # 2**27 B is 0.125 GiB exactly, which prints as "0.12" (round half to even): it agrees,
    # though |0.12 - 0.125| is a hair above 0.005 in floating point
    logged = load_support("lab-02", "given.records").Logged(0.12, "0.12")
    rec = reconcile_demo(lab, kv_cache=logged, kv_cache_bytes=2**27, kv_cache_tokens=None)
    (check,) = named(rec, "kv cache")
    assert f"{check.derived:.2f}" == "0.12" and check.agrees, check


def gpu_log(gib: float, lora: bool) -> str:
    args = "'enable_lora': True, 'max_loras': 4, 'max_lora_rank': 16" if lora else "'seed': 0"
    return (f"INFO [api_utils.py:286] non-default args: {{{args}}}\n"
            "INFO [core.py:133] Initializing a V1 LLM engine (v0.32.0) with config: "
            "model='meta-llama/Llama-2-7b-hf', dtype=torch.float16, max_seq_len=4096, "
            "device_config=cuda, seed=0\n"
            f"INFO [gpu_model_runner.py:5150] Model loading took {gib:.2f} GiB memory\n")


def test_the_gpu_weight_line_with_lora_off_is_the_base_alone(lab):
    econ = load_lab("lab-03")
    base = econ.base_bytes(econ.LLAMA2_7B, 2)
    rec = lab.reconcile(lab.parse_capture(gpu_log(base / 2**30, lora=False)), econ.LLAMA2_7B,
                        SQL_LORA)
    (check,) = named(rec, "weight")
    assert check.derived == base / 2**30 and check.agrees, (
        f"LoRA off: the weight line is lab 03's base_bytes alone, no slot byte: {check}")


def test_the_gpu_weight_checks_how_shows_terms_that_sum_to_derived(lab):
    econ = load_lab("lab-03")
    gib = (econ.base_bytes(econ.LLAMA2_7B, 2) + 4 * 82_264_064) / 2**30
    rec = lab.reconcile(lab.parse_capture(gpu_log(gib, lora=True)), econ.LLAMA2_7B, SQL_LORA)
    (check,) = named(rec, "weight")
    terms = [float(x) for x in re.findall(r"\d+\.\d{3}\b", check.how)]
    assert len(terms) == 2 and sum(terms) == pytest.approx(check.derived, abs=1e-3), (
        f"how gives base and slots in GiB to three decimals, summing to derived: {check}")
    assert terms[1] == pytest.approx(4 * 82_264_064 / 2**30, abs=5e-4), check.how


@pytest.mark.parametrize("broken", ["lora_A-alone", "embedding-pair"])
def test_an_adapter_module_that_is_not_an_a_b_pair_is_refused(lab, tmp_path, broken):
    header = header_of(SQL_LORA / "adapter_model.safetensors")
    b = next(n for n in header if ".lora_B." in n)
    if broken == "lora_A-alone":
        del header[b]
    else:
        a = b.replace(".lora_B.", ".lora_A.")
        for name in (a, b):
            header[name.replace(".lora_", ".lora_embedding_")] = header.pop(name)
    module = b.partition(".lora_")[0]
    with pytest.raises(ValueError, match=re.escape(module)):
        reconcile_demo(lab, adapter_from(tmp_path, header))


def test_an_adapter_one_module_short_fails_the_exact_check(lab, tmp_path):
    header = header_of(SQL_LORA / "adapter_model.safetensors")
    a = next(n for n in header if ".lora_A." in n)
    del header[a], header[a.replace(".lora_A.", ".lora_B.")]
    check = adapter_bytes(reconcile_demo(lab, adapter_from(tmp_path, header)))
    assert check.observed < check.derived and not check.agrees, (
        f"fewer bytes than lab 03's adapter_bytes: file figures agree exactly, got {check}")


@pytest.mark.parametrize("change", [{"slot_buffer_bytes": None}, {"lora_enabled": False}],
                         ids=["no-probe-line", "lora-off"])
def test_the_slot_buffer_check_needs_the_probe_and_lora_on(lab, change):
    assert not named(reconcile_demo(lab, **change), "slot buffer"), (
        f"{change}: no slot buffers to compare, so no slot-buffer check")


@pytest.mark.parametrize("off", [-16, 16], ids=["16-bytes-under", "16-bytes-over"])
def test_slot_buffers_off_by_16_bytes_fail_the_exact_check(lab, off):
    measured = lab.parse_capture(CAPTURE.read_text()).slot_buffer_bytes
    (check,) = named(reconcile_demo(lab, slot_buffer_bytes=measured + off), "slot buffer")
    assert not check.agrees, f"the measured slot buffers agree exactly or not at all: {check}"


def test_sql_executes_is_false_when_an_insert_fails(lab):
    # an INSERT the table refuses (one value for two columns) is an sqlite3.Error
    assert lab.sql_executes(SCHEMA, "SELECT a FROM t", ["INSERT INTO t VALUES (1)"]) is False


def test_generate_mixed_asks_for_no_progress_bar(lab):
    in_worker(lab, generate_recorded, ["p0", "p1"], [None, None])
    ((_, _, kwargs),) = in_worker(lab, batches_sent)
    assert kwargs.get("use_tqdm") is False, f"one quiet generate call: use_tqdm=False, got {kwargs}"


@pytest.mark.parametrize("path", ["./no-such-adapter", "/no/such/adapter"], ids=["dot", "absolute"])
def test_generate_mixed_refuses_a_local_adapter_folder_that_is_missing(lab, path):
    with pytest.raises(FileNotFoundError, match=re.escape(path)):
        in_worker(lab, generate_recorded, ["p0"], [("sql", 1, path)])
    assert not in_worker(lab, batches_sent), "a missing adapter must not reach the engine"


def test_the_delta_flops_check_fails_when_the_file_is_not_the_config(lab, tmp_path):
    # the tensors at rank 8 while adapter_config.json says r=16: the file's ratio is half the
    # one lab 01 derives from the config, so the two must not agree
    header = header_of(SQL_LORA / "adapter_model.safetensors")
    for name, t in header.items():
        t["shape"] = [8, t["shape"][1]] if ".lora_A." in name else [t["shape"][0], 8]
    (check,) = named(reconcile_demo(lab, adapter_from(tmp_path, header)), "flops")
    assert check.observed == pytest.approx(check.derived / 2, rel=1e-9) and not check.agrees, check


@pytest.mark.parametrize("off", [-128, 128], ids=["one-block-less", "one-block-more"])
def test_the_kv_cache_tokens_agree_exactly(lab, off):
    cap = lab.parse_capture(CAPTURE.read_text())
    assert cap.kv_cache_tokens == 23_296  # README: 182 whole blocks of 128 tokens
    (good,) = named(reconcile_demo(lab), "token")
    assert good.agrees and good.derived == 23_296, good
    (check,) = named(reconcile_demo(lab, kv_cache_tokens=23_296 + off), "token")
    assert not check.agrees, f"{23_296 + off} tokens logged, 23,296 derived: {check}"


def test_no_kv_token_line_means_no_token_check(lab):
    rec = reconcile_demo(lab, kv_cache_tokens=None)
    assert not named(rec, "token"), rec.summary()


def test_base_rows_take_no_slot_in_the_demo_step(lab):
    # base + two adapters fit max_loras=2: "base" read from the log is the base model by value
    text = CAPTURE.read_text().replace("'max_loras': 3", "'max_loras': 2")
    (check,) = named(lab.reconcile(lab.parse_capture(text), base_shape(), SQL_LORA), "step")
    assert check.agrees, f"two adapters and base rows fit two slots in one step: {check}"


def test_eval_diff_compares_schemas_and_outputs_by_value(lab):
    a = rows("SELECT a FROM t", "SELECT a FROM t")
    schema, output = "".join([SCHEMA[:6], SCHEMA[6:]]), "".join(["SELECT a ", "FROM t"])
    b = [{**r, "schema": schema, "output": output} for r in a]  # equal, not the same objects
    diff = lab.eval_diff(a, b)
    assert diff.identical == 2 and not diff.differing, "equal text is the same row and output"


def test_the_step_checks_how_counts_the_distinct_adapters(lab):
    (check,) = named(reconcile_demo(lab), "step")
    assert "2 adapter(s), max_loras=3" in check.how, (
        f"the demo's rows carry two adapters (sql-lora, question-lora) and base rows: {check}")
