"""Lab 02 spec, part 1: the offline engine.

One vLLM engine, one batch, three behaviours: the tag on each row (None or a LoRARequest)
decides whether the base model, the SQL tenant or the question tenant answers. In order:

- the contracts, without an engine: ``build_llm`` and ``generate_mixed`` on the stand-ins for
  vLLM (the ``stand_ins`` fixture, ``conftest.py``), ``parse_capture``, ``reconcile`` and
  ``eval_diff`` against the base's files and the shipped capture;
- part 1 at its edges: where each check is exact, and what each function refuses;
- the ``engine`` tests, on the real CPU build with SmolLM2-135M-Instruct
  (``tools/base_model.py``) and the shipped adapters: the session's engines of ``conftest.py``
  (max_loras=3: two tenants and an empty slot; one slot for the -1 finding);
- the ``gpu`` test, the 7B demo.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import re
import tempfile
import types
from pathlib import Path

import pytest

from labkit import first_mismatch, in_worker, load_lab, load_support

pytestmark = pytest.mark.part1

LAB = Path(__file__).resolve().parent
SQL_LORA = LAB / "assets" / "sql-lora"
QUESTION_LORA = LAB / "assets" / "question-lora"
CAPTURE = LAB / "capture" / "demo.log"
QUALITY = LAB / "assets" / "quality.json"
sqldata = load_support("lab-02", "tools.sqldata")
demo = load_support("lab-02", "tools.demo")
base_model = load_support("lab-02", "tools.base_model")
evaluation = load_support("lab-02", "tools.evaluation")

INPROC_ENV = "VLLM_ENABLE_V1_MULTIPROCESSING"
SMALL_MAX_MODEL_LEN = 4096  # "small": at most vLLM's chunked-prefill budget on the CPU build
MAX_CPU_KV_BYTES = 2 * 2**30  # "bounded": unset, the CPU build reserves most of the machine's RAM
VLLM_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vllm/config/lora.py MaxLoRARanks
# Quality bar, greedy through vLLM on the held-out rows (recorded in assets/quality.json by
# tools/eval_adapter.py; the engine tests re-measure a subset of rows, row by row). Every bar
# is checked on the EVALUATION split, the sets nothing was tuned on (assets/TENANTS.md):
SAME_RESULT_MIN = 0.95  # the SQL tenant's query returns the gold result on >= 95% of rows
BASE_SQL_RATE_MAX = 0.0  # the base model writes SQL on none: unmistakable behaviours
QUESTION_EXACT_MIN = 0.95  # the question tenant writes the canonical question back exactly
# paraphrases (final_paraphrase.jsonl): a floor, the templates-only tenant's 20/30 on the
# selection paraphrases; the target for the shipped tenant is 36/40 (TENANTS.md)
PARAPHRASE_SAME_RESULT_MIN = 20 / 30
# sql-create-context (final_sqlcc.jsonl, unseen domains, vLLM's rows included): a floor
# against regression, 3/4, under the shipped tenant's 34/44 (77%) measured once on this split.
# The 80% it had was set and met on the selection split, which chose the column words; on the
# evaluation split 80% is issue 31's unmet goal (assets/TENANTS.md), not a bar it passes
CC_SAME_RESULT_MIN = 0.75


# --- helpers --------------------------------------------------------------------------------


def eval_rows() -> list[dict]:
    return sqldata.load_eval()


def prompts_of(rows: list[dict]) -> list[str]:
    return [sqldata.sql_prompt(r["schema"], r["question"]) for r in rows]


def with_outputs(rows: list[dict], texts: list[str]) -> list[dict]:
    """Eval rows with each deployment's output attached, as ``eval_diff`` takes them."""
    return [{**row, "output": text} for row, text in zip(rows, texts, strict=True)]


def adapter_config(folder: Path) -> dict:
    return json.loads((folder / "adapter_config.json").read_text())


def slot_rank(folder: Path) -> int:
    """The smallest rank vLLM accepts as ``max_lora_rank`` that holds the adapter."""
    return next(k for k in VLLM_RANKS if k >= adapter_config(folder)["r"])


def base_dir() -> Path:
    """The CPU base's folder (``LAB02_CPU_BASE`` or the one ``make install`` prepared)."""
    return base_model.base_model_dir()


def base_shape():
    econ = load_lab("lab-03")
    return econ.ModelShape.from_hf_config(json.loads((base_dir() / "config.json").read_text()))


def write_safetensors(path: Path, tensors: dict[str, tuple[str, tuple[int, ...]]]) -> None:
    """A zero-filled .safetensors file: 8-byte header length, JSON header, then the data."""
    itemsize = {"F32": 4, "F16": 2, "BF16": 2}
    header, offset = {}, 0
    for name, (dtype, shape) in tensors.items():
        nbytes = itemsize[dtype]
        for dim in shape:
            nbytes *= dim
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)  # the format pads the header to 8-byte alignment
    path.write_bytes(len(blob).to_bytes(8, "little") + blob + bytes(offset))


def write_adapter(folder: Path, config: dict, layers: int, dims: dict[str, tuple[int, int]],
                  dtype: str) -> Path:
    """A PEFT adapter folder with zero weights: ``dims`` maps a PEFT target to (d_in, d_out)."""
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps(config))
    r, tensors = config["r"], {}
    for layer in range(layers):
        for target in config["target_modules"]:
            d_in, d_out = dims[target]
            stem = f"base_model.model.model.layers.{layer}.self_attn.{target}"
            tensors[f"{stem}.lora_A.weight"] = (dtype, (r, d_in))
            tensors[f"{stem}.lora_B.weight"] = (dtype, (d_out, r))
    write_safetensors(folder / "adapter_model.safetensors", tensors)
    return folder


# --- build_llm ---------------------------------------------------------------------------------


def test_build_llm_bounds_the_cpu_engine(lab, stand_ins):
    kw = stand_ins.built(False, "some/model", max_loras=2, max_lora_rank=16, max_cpu_loras=4)
    assert kw.get("enable_lora") is True, f"LoRA must be enabled, got {kw}"
    knobs = {k: kw.get(k) for k in ("max_loras", "max_lora_rank", "max_cpu_loras")}
    assert knobs == {"max_loras": 2, "max_lora_rank": 16, "max_cpu_loras": 4}, (
        f"the three knobs must reach vLLM as given, got {knobs}")
    assert kw.get("kv_cache_memory_bytes") == lab.CPU_KV_CACHE_BYTES <= MAX_CPU_KV_BYTES, (
        f"on CPU the KV cache must be bounded to CPU_KV_CACHE_BYTES "
        f"({lab.CPU_KV_CACHE_BYTES:,} B, at most {MAX_CPU_KV_BYTES:,}) by default, got "
        f"{kw.get('kv_cache_memory_bytes')}")
    assert kw.get("dtype") == "float32", f"on CPU the default dtype is float32, got {kw.get('dtype')}"
    assert isinstance(kw.get("max_model_len"), int) and kw["max_model_len"] <= SMALL_MAX_MODEL_LEN, (
        f"on CPU max_model_len must be small, got {kw.get('max_model_len')}")


def test_build_llm_lets_the_caller_override_the_cpu_defaults(stand_ins):
    kw = stand_ins.built(False, "some/model", max_loras=1, max_lora_rank=8, max_cpu_loras=1,
               kv_cache_memory_bytes=2**20, dtype="bfloat16")
    assert (kw.get("kv_cache_memory_bytes"), kw.get("dtype")) == (2**20, "bfloat16"), (
        f"engine_kw must win over the CPU defaults, got {kw}")


def test_build_llm_leaves_vllms_defaults_on_cuda(stand_ins):
    kw = stand_ins.built(True, "some/model", max_loras=4, max_lora_rank=16, max_cpu_loras=8)
    forced = sorted({"kv_cache_memory_bytes", "dtype", "max_model_len"} & kw.keys())
    assert not forced, f"on CUDA vLLM's own defaults apply; build_llm forced {forced}"
    assert kw.get("enable_lora") is True and kw.get("max_loras") == 4


def test_build_llm_rejects_a_cpu_cache_smaller_than_the_slots(stand_ins):
    stand_ins.checked_build()  # a right build first: no lookup table
    with pytest.raises(ValueError, match="max_cpu_loras"):
        stand_ins.build(False, "some/model", max_loras=4, max_lora_rank=16,
                  max_cpu_loras=2)
    assert not stand_ins.engines(), "the engine must not be built with inconsistent knobs"


def test_build_llm_runs_the_cpu_engine_core_in_process_unless_the_environment_says(stand_ins):
    if importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed: CUDA cannot be faked")
    unset = stand_ins.inproc_env_after_build(None)
    assert unset == "0", (
        f"on CPU, build_llm must run the engine core in this process: {INPROC_ENV}=0 when the "
        f"environment does not set it; got {unset!r}")
    preset = stand_ins.inproc_env_after_build("1")
    assert preset == "1", (
        f"{INPROC_ENV} set by the environment wins: it was '1' before build_llm, got {preset!r}")


# --- generate_mixed ----------------------------------------------------------------------------


def test_generate_mixed_sends_one_batch_with_one_tag_per_row(stand_ins):
    sql = ("sql", 1, str(SQL_LORA))
    prompts = ["p0", "p1", "p2", "p3"]
    tags = [None, sql, None, sql]
    texts = stand_ins.generate(prompts, tags)
    calls = stand_ins.batches()
    assert len(calls) == 1, f"expected ONE generate call for the batch, got {len(calls)}"
    sent_prompts, sent_tags, _ = calls[0]
    assert sent_prompts == prompts, first_mismatch(sent_prompts, prompts)
    assert sent_tags == tags, f"each row must carry its own tag: {first_mismatch(sent_tags, tags)}"
    expected = ["base:p0", "sql:p1", "base:p2", "sql:p3"]
    assert texts == expected, f"texts must come back in prompt order: {first_mismatch(texts, expected)}"


def test_generate_mixed_rejects_a_length_mismatch(stand_ins):
    stand_ins.checked_batch()  # a right batch first: no lookup table
    with pytest.raises(ValueError, match="adapters"):
        stand_ins.generate(["p0", "p1"], [None])
    assert not stand_ins.batches(), "a malformed batch must not reach the engine"


def test_generate_mixed_rejects_a_missing_adapter_folder(lab, stand_ins, tmp_path):
    stand_ins.checked_batch()  # a right batch first: no lookup table
    missing = tmp_path / "no-such-adapter"
    with pytest.raises((FileNotFoundError, ValueError)) as err:
        stand_ins.generate(["p0", "p1"], [None, ("gone", 7, str(missing))])
    assert str(missing) in str(err.value), f"the error must name the path, got: {err.value}"
    assert not stand_ins.batches(), "a batch with a missing adapter must not reach the engine"


# --- parse_capture and reconcile -----------------------------------------------------------


GPU_7B_LOG = """\
INFO 06-11 10:00:00 [core.py:133] Initializing a V1 LLM engine (v0.32.0) with config: \
model='meta-llama/Llama-2-7b-hf', tokenizer='meta-llama/Llama-2-7b-hf', dtype=torch.float16, \
max_seq_len=4096, device_config=cuda, seed=0
INFO 06-11 10:00:09 [gpu_model_runner.py:5150] Model loading took {gib} GiB memory and 8.412345 seconds
"""


@pytest.fixture
def adapter_7b(tmp_path) -> Path:
    """A rank-1, q_proj-only adapter shaped for Llama-2-7B: its bytes are lab 03's to derive."""
    config = {"peft_type": "LORA", "r": 1, "lora_alpha": 2, "target_modules": ["q_proj"],
              "base_model_name_or_path": "meta-llama/Llama-2-7b-hf"}
    return write_adapter(tmp_path / "sql-7b", config, 32, {"q_proj": (4096, 4096)}, "F16")


def test_parse_capture_reads_the_cpu_log(lab):
    cap = lab.parse_capture(CAPTURE.read_text())
    assert (cap.device, cap.dtype, cap.weights_kind) == ("cpu", "float32", "checkpoint"), (
        f"the CPU build logs `Checkpoint size: X GiB`, got device={cap.device} "
        f"dtype={cap.dtype} weights_kind={cap.weights_kind}")
    assert cap.weights is not None and re.fullmatch(r"0\.\d\d", cap.weights.text), (
        f"a few-MB checkpoint prints as 0.0x GiB (two decimals), got {cap.weights}")
    assert cap.lora_enabled and cap.lora == {"max_loras": demo.MAX_LORAS,
                                             "max_lora_rank": demo.MAX_LORA_RANK,
                                             "max_cpu_loras": demo.MAX_CPU_LORAS}, (
        f"the knobs the demo passed, vLLM's defaults filled in, got {cap.lora}")
    assert cap.punica_wrapper == "PunicaWrapperCPU", f"got {cap.punica_wrapper}"
    tags = [tag for tag, _ in cap.outputs]
    assert tags == list(demo.TAGS), f"the demo's rows {demo.TAGS}, got {tags}"


def test_parse_capture_reads_the_gpu_weight_line(lab):
    cap = lab.parse_capture(GPU_7B_LOG.format(gib="12.55"))
    assert cap.weights_kind == "model_loading" and cap.weights is not None, cap
    assert (cap.weights.value, cap.weights.text) == (12.55, "12.55"), cap.weights
    assert (cap.device, cap.dtype, cap.vllm_version) == ("cuda", "float16", "0.32.0"), cap


def test_parse_capture_leaves_a_figure_the_log_does_not_print_as_none(lab):
    empty = lab.parse_capture("")
    figures = ("vllm_version", "device", "dtype", "max_model_len", "weights", "weights_kind",
               "kv_cache", "kv_cache_bytes", "kv_cache_tokens", "punica_wrapper",
               "slot_buffer_bytes")
    printed = {f: getattr(empty, f) for f in figures if getattr(empty, f) is not None}
    assert not printed, f"an empty log prints no figure: each must be None, got {printed}"
    gpu = lab.parse_capture(GPU_7B_LOG.format(gib="12.55"))  # no KV, punica or slot-buffer line
    unprinted = ("kv_cache", "kv_cache_bytes", "kv_cache_tokens", "punica_wrapper",
                 "slot_buffer_bytes")
    printed = {f: getattr(gpu, f) for f in unprinted if getattr(gpu, f) is not None}
    assert not printed, f"the 7B log prints none of {unprinted}: each must be None, got {printed}"


def test_reconcile_agrees_with_labs_01_03_04_on_the_shipped_capture(lab):
    cap = lab.parse_capture(CAPTURE.read_text())
    rec = lab.reconcile(cap, base_shape(), SQL_LORA, checkpoint=base_dir())
    assert rec.ok, "the shipped capture must reconcile:\n" + rec.summary()
    figures = " | ".join(c.figure.lower() for c in rec.checks)
    for topic in ("weight", "kv cache", "checkpoint", "adapter", "flops", "step"):
        assert topic in figures, f"no check about {topic!r} among: {figures}"


def test_reconcile_counts_the_checkpoint_bytes_exactly(lab):
    rec = lab.reconcile(lab.parse_capture(CAPTURE.read_text()), base_shape(), SQL_LORA,
                        checkpoint=base_dir())
    file = base_dir() / "model.safetensors"
    with file.open("rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
    data_bytes = file.stat().st_size - 8 - header_len  # the tensors, measured by the filesystem
    (check,) = [c for c in rec.checks if "checkpoint" in c.figure.lower()]
    assert (check.observed, check.derived) == (data_bytes, data_bytes), (
        f"checkpoint bytes: the file holds {data_bytes:,} B of tensors; reconcile reports "
        f"observed {check.observed:,} and lab 03 derived {check.derived:,}")


def test_a_capture_tampered_by_a_tenth_of_a_gib_fails_reconciliation(lab):
    text = CAPTURE.read_text()
    line = re.search(r"Checkpoint size: (\d+\.\d+) GiB", text)
    assert line, "the shipped capture lost its `Checkpoint size: X GiB` line"
    tampered = f"Checkpoint size: {float(line.group(1)) + 0.1:.2f} GiB"
    cap = lab.parse_capture(text.replace(line.group(0), tampered))
    rec = lab.reconcile(cap, base_shape(), SQL_LORA, checkpoint=base_dir())
    failed = [c.figure for c in rec.failed]
    assert not rec.ok and len(failed) == 1 and "weight" in failed[0].lower(), (
        f"only the weight figure was tampered with; failed checks: {failed}\n{rec.summary()}")


def test_reconcile_fails_an_adapter_above_the_captures_max_lora_rank(lab, tmp_path):
    cap = lab.parse_capture(CAPTURE.read_text())
    shape, econ = base_shape(), load_lab("lab-03")
    too_big = 2 * cap.lora["max_lora_rank"]
    config = adapter_config(SQL_LORA) | {"r": too_big, "lora_alpha": 2 * too_big}
    dims = {t: econ.module_dims(shape, t.removesuffix("_proj")) for t in config["target_modules"]}
    folder = write_adapter(tmp_path / "too-wide", config, shape.layers, dims, "F32")
    rec = lab.reconcile(cap, shape, folder, checkpoint=base_dir())
    failed = [c.figure for c in rec.failed]
    assert len(failed) == 1 and "rank" in failed[0].lower(), (
        f"a rank-{too_big} adapter does not fit the capture's max_lora_rank="
        f"{cap.lora['max_lora_rank']} slots: exactly the rank check must fail; failed checks: "
        f"{failed}\n{rec.summary()}")


def test_reconcile_reads_the_7b_weight_line_in_gib(lab, adapter_7b):
    econ = load_lab("lab-03")
    good = lab.reconcile(lab.parse_capture(GPU_7B_LOG.format(gib="12.55")), econ.LLAMA2_7B,
                         adapter_7b)
    assert good.ok, "12.55 GiB is Llama-2-7B in fp16 (lab 03):\n" + good.summary()
    for wrong in ("13.48", "12.65"):  # the same bytes in GB; a tenth of a GiB off
        bad = lab.reconcile(lab.parse_capture(GPU_7B_LOG.format(gib=wrong)), econ.LLAMA2_7B,
                            adapter_7b)
        assert not bad.ok, f"a log claiming {wrong} GiB must not reconcile:\n{bad.summary()}"


# --- eval_diff ---------------------------------------------------------------------------------


def gold_outputs(rows: list[dict]) -> list[str]:
    return [row["gold_sql"] for row in rows]


def test_eval_diff_counts_identical_rows_and_names_the_differing_ones(lab):
    rows = eval_rows()[:5]
    a = gold_outputs(rows)
    b = list(a)
    b[3] = f"SELECT COUNT(*) FROM {rows[3]['schema'].split()[2]}"
    diff = lab.eval_diff(with_outputs(rows, a), with_outputs(rows, b))
    assert (diff.rows, diff.identical) == (5, 4), diff.summary()
    assert [d.index for d in diff.differing] == [3], diff.summary()
    assert (diff.executable_a, diff.executable_b) == (5, 5), diff.summary()


def test_eval_diff_sees_a_change_of_the_same_length(lab):
    rows = eval_rows()[:3]
    a = gold_outputs(rows)
    b = [a[0], a[1].replace("SELECT", "select"), a[2]]
    diff = lab.eval_diff(with_outputs(rows, a), with_outputs(rows, b))
    assert [d.index for d in diff.differing] == [1], (
        "outputs must be compared exactly, not by length:\n" + diff.summary())


def test_eval_diff_runs_each_side_in_sqlite_against_the_rows_table(lab):
    rows = eval_rows()[:4]
    prose = [f"The answer is in the {r['schema'].split()[2]} table." for r in rows]
    prose[0] = ""  # an empty answer runs in sqlite3 as "no statement": not executable SQL
    broken = [g.replace("SELECT", "SELECT no_such_column,", 1) for g in gold_outputs(rows)]
    diff = lab.eval_diff(with_outputs(rows, prose), with_outputs(rows, broken))
    assert (diff.executable_a, diff.executable_b) == (0, 0), (
        "prose and SQL naming a missing column must not execute:\n" + diff.summary())
    diff = lab.eval_diff(with_outputs(rows, gold_outputs(rows)), with_outputs(rows, prose))
    assert (diff.executable_a, diff.executable_b, len(diff.differing)) == (4, 0, 4), diff.summary()


def test_eval_diff_rejects_rows_that_do_not_pair_up(lab, valid_calls):
    valid_calls.checked("eval_diff")  # a right valid call first: no lookup table
    rows = eval_rows()[:3]
    a = with_outputs(rows, gold_outputs(rows))
    with pytest.raises(ValueError, match="rows_b"):
        lab.eval_diff(a, a[:2])
    with pytest.raises(ValueError, match="rows_b"):
        lab.eval_diff(a, list(reversed(a)))


def test_eval_diff_runs_each_output_with_its_rows_inserts(lab):
    schema = "CREATE TABLE t (a INTEGER, b TEXT)"
    good = {"schema": schema, "output": "SELECT a FROM t", "inserts": ["INSERT INTO t VALUES (1, 'x')"]}
    bad = {**good, "inserts": ["INSERT INTO t VALUES (1)"]}  # one value for two columns
    diff = lab.eval_diff([good, bad], [dict(good), dict(bad)])  # no ids: optional
    assert (diff.rows, diff.identical) == (2, 2), diff.summary()
    assert (diff.executable_a, diff.executable_b) == (1, 1), (
        "each output runs in sqlite3 holding its row's schema AND inserts: the row whose insert "
        "fails is not executable (sql_executes), the other is:\n" + diff.summary())


@pytest.mark.structural
def test_a_capture_names_no_path_of_the_recording_machine():
    repo = Path("/home/builder/checkout")
    log = (f"[demo] base: {repo}/labs/assets/SmolLM2\n{repo}/.venv/lib/vllm/x.py:1: Warning\n"
           "[demo] python 3.11.7, vllm 0.32.0, LAB_IMPL=solution\n")
    out = demo.redact(log, repo)
    assert str(repo) not in out and "LAB_IMPL=solution" not in out, out
    assert "<repo>/labs/assets/SmolLM2" in out and "<venv>/lib/vllm/x.py" in out, out
    shipped = CAPTURE.read_text()
    homes = re.findall(r"(?<![<\w])/(?:work|home|root|Users)/\S*", shipped)
    assert not homes and "LAB_IMPL=solution" not in shipped, (
        f"the shipped capture names the recording machine's paths: {homes[:3]}")


# === part 1 at its edges: where each check is exact, and what each function refuses =====
#
# No engine: reconcile's figures at the precision that tells formulas apart (a file off by
# 16 bytes fails; the delta-FLOPs figure is weighted by base FLOPs), eval_diff's exact
# comparison, sql_executes on two statements and failing inserts, the tags generate_mixed
# refuses.

SCHEMA = "CREATE TABLE t (a INTEGER, b TEXT)"


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
def test_sql_executes_means_one_query_that_runs(lab, valid_calls, sql, runs):
    valid_calls.checked("sql_executes")  # a query that runs first: False is no placeholder
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
def test_eval_diff_refuses_a_missing_output(lab, valid_calls, side, broken):
    valid_calls.checked("eval_diff")  # a right valid call first: no lookup table
    good = rows("SELECT a FROM t")
    bad = [{k: v for k, v in good[0].items() if k != "output"}]
    if broken == "None":
        bad[0]["output"] = None
    args = (bad, good) if side == "rows_a" else (good, bad)
    with pytest.raises(ValueError, match=side):
        lab.eval_diff(*args)


# --- generate_mixed: a tag is None or a LoRARequest ------------------------------------------


@pytest.mark.parametrize("tag", [
    "sql",  # an adapter's name is not a request
    str(SQL_LORA),  # nor is its path
    1,
    {"lora_name": "sql", "lora_int_id": 1, "lora_path": str(SQL_LORA)},
    types.SimpleNamespace(lora_name="sql", lora_path=str(SQL_LORA)),  # no lora_int_id
], ids=["name", "path", "int", "dict", "no-int-id"])
def test_generate_mixed_refuses_a_tag_that_is_not_a_lora_request(stand_ins, tag):
    stand_ins.checked_batch()  # a right batch first: no lookup table
    good = ("sql", 1, str(SQL_LORA))
    with pytest.raises(TypeError, match=r"adapters\[1\]"):
        stand_ins.generate(["p0", "p1"], [good, tag])
    assert not stand_ins.batches(), "a batch with a bad tag must not reach the engine"


def test_generate_mixed_accepts_none_and_lora_requests(lab, stand_ins):
    out = stand_ins.generate(["p0", "p1"], [None, ("sql", 1, str(SQL_LORA))])
    assert out == ["base:p0", "sql:p1"] and len(stand_ins.batches()) == 1


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
def test_generate_mixed_refuses_a_tag_count_that_is_not_the_prompt_count(stand_ins, n_prompts, n_tags):
    stand_ins.checked_batch()  # a right batch first: no lookup table
    with pytest.raises(ValueError, match="adapters"):
        stand_ins.generate([f"p{i}" for i in range(n_prompts)], [None] * n_tags)
    assert not stand_ins.batches(), "a mismatched batch must not reach the engine"


def test_generate_mixed_takes_a_batch_of_300(stand_ins):
    # counts compared by value, past small-int caching
    out = stand_ins.generate([f"p{i}" for i in range(300)], [None] * 300)
    assert len(out) == 300 and len(stand_ins.batches()) == 1


def test_generate_mixed_refuses_a_prompt_that_is_not_text(stand_ins):
    stand_ins.checked_batch()  # a right batch first: no lookup table
    with pytest.raises(TypeError, match=r"prompts\[1\]"):
        stand_ins.generate(["p0", b"p1"], [None, None])
    assert not stand_ins.batches(), "a batch with a bad prompt must not reach the engine"


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


def test_sql_executes_is_false_when_an_insert_fails(lab, valid_calls):
    valid_calls.checked("sql_executes")  # a query that runs first: False is no placeholder
    # an INSERT the table refuses (one value for two columns) is an sqlite3.Error
    assert lab.sql_executes(SCHEMA, "SELECT a FROM t", ["INSERT INTO t VALUES (1)"]) is False


def test_generate_mixed_asks_for_no_progress_bar(stand_ins):
    stand_ins.checked_batch()  # a right batch first: no lookup table
    stand_ins.generate(["p0", "p1"], [None, None])
    ((_, _, kwargs),) = stand_ins.batches()
    assert kwargs.get("use_tqdm") is False, f"one quiet generate call: use_tqdm=False, got {kwargs}"


@pytest.mark.parametrize("path", ["./no-such-adapter", "/no/such/adapter"], ids=["dot", "absolute"])
def test_generate_mixed_refuses_a_local_adapter_folder_that_is_missing(stand_ins, path):
    stand_ins.checked_batch()  # a right batch first: no lookup table
    with pytest.raises(FileNotFoundError, match=re.escape(path)):
        stand_ins.generate(["p0"], [("sql", 1, path)])
    assert not stand_ins.batches(), "a missing adapter must not reach the engine"


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


# --- the real engine (CPU build) -------------------------------------------------------------
#
# The engines (``engine``: 3 slots; ``one_slot``: 1 slot, its batch run before any test) and the
# evaluation batch (``eval_runs``) are the lab's conftest.py fixtures, shared with part 3's spec.

SCRATCH: list[tempfile.TemporaryDirectory] = []  # removed when the process ends


def write_adapter_there(name: str, config: dict, layers: int, dims: dict, dtype: str) -> str:
    """``write_adapter`` into a new temp folder where the lab's code runs (a worker does not
    see the tests' folders); it lives as long as that process."""
    SCRATCH.append(tempfile.TemporaryDirectory(prefix="lab02-"))
    return str(write_adapter(Path(SCRATCH[-1].name) / name, config, layers, dims, dtype))


@pytest.mark.engine
def test_one_batch_three_behaviours(lab, engine, engines):
    llm, row = engine.get(), eval_rows()[0]
    sql_prompt = sqldata.sql_prompt(row["schema"], row["question"])
    question_prompt = sqldata.question_prompt(row["schema"], row["gold_sql"])
    prompts = [sql_prompt, sql_prompt, question_prompt]
    tags = [None, evaluation.SQL, evaluation.QUESTION]
    base_text, sql_text, question_text = (
        t.strip() for t in engines.generate(llm, prompts, tags))
    # Three behaviours, one batch: SQL that runs against the row's table only where the tag
    # asks for it; the question tenant writes a question. Quality is tested below.
    assert sqldata.is_sql(sql_text) and sqldata.executes(row, sql_text), (
        f"the sql-lora row must answer in SQL that executes against {row['schema']!r}: "
        f"{sql_text!r}")
    assert not sqldata.is_sql(base_text) and not sqldata.executes(row, base_text), (
        f"the untagged row is the base model and must not answer in SQL: {base_text!r}")
    assert question_text.endswith("?") and not sqldata.is_sql(question_text), (
        f"the question-lora row must answer with a question: {question_text!r}")
    alone = [engines.generate(llm, [p], [t])[0].strip()
             for p, t in zip(prompts, tags, strict=True)]
    assert [base_text, sql_text, question_text] == alone, (
        "a row in a mixed batch must read exactly as the same request alone (greedy): "
        + first_mismatch([base_text, sql_text, question_text], alone))


@pytest.mark.engine
def test_quality_rows_reproduce_the_recorded_verdicts(eval_runs):
    runs = eval_runs.get()
    measured = evaluation.verdicts(runs.rows, runs.texts)
    recorded = evaluation.recorded()["per_row"]
    stale = {f"{split} row {i}": {k: (v, recorded[split][str(i)][k]) for k, v in got.items()
                                  if recorded[split][str(i)][k] != v}
             for split, per_row in measured.items() for i, got in per_row.items()}
    stale = {row: diff for row, diff in stale.items() if diff}
    assert not stale, (
        f"re-measured verdicts differ from {QUALITY.name} (measured, recorded): {stale}. "
        "Re-run `make eval-assets` after retraining the assets.")


@pytest.mark.structural  # the shipped assets' record, not the student's code
def test_recorded_quality_meets_the_bar():
    q = evaluation.recorded()
    per_row = q["per_row"]["eval"].values()
    assert q["rows"] == len(per_row) >= 50, f"at least 50 held-out rows, got {q['rows']}"
    for key in ("base_sql", "adapter_sql", "adapter_executes", "adapter_same_result",
                "question_exact"):
        assert q[key] == sum(v[key] for v in per_row), f"{key}: total != sum of its rows"
    assert q["adapter_same_result"] >= SAME_RESULT_MIN * q["rows"], (
        f"sql-lora returns the gold result on {q['adapter_same_result']}/{q['rows']} rows; "
        f"the bar is {SAME_RESULT_MIN:.0%}")
    assert q["base_sql"] <= BASE_SQL_RATE_MAX * q["rows"], (
        f"the base wrote SQL on {q['base_sql']}/{q['rows']} rows; it must write none")
    assert q["question_exact"] >= QUESTION_EXACT_MIN * q["rows"], (
        f"question-lora is exact on {q['question_exact']}/{q['rows']}; the bar is "
        f"{QUESTION_EXACT_MIN:.0%}")


@pytest.mark.structural
@pytest.mark.parametrize("style", evaluation.SQL_ONLY_SPLITS)
def test_each_recorded_style_is_the_sum_of_its_rows(style):
    q = evaluation.recorded()
    per_row = q["per_row"][style].values()
    assert q[f"{style}_rows"] == len(per_row) > 0, f"{style}: no rows recorded"
    for key in ("sql", "executes", "same_result"):
        total = q.get(f"{style}_{key}")
        if total is not None:
            assert total == sum(v[f"adapter_{key}"] for v in per_row), (
                f"{style}_{key}: total {total} != the sum of its rows")


@pytest.mark.structural
def test_recorded_styles_meet_their_bars():
    """On the evaluation split: the selection split's figures are recorded (and marked) but
    were what the settings were chosen on, so no bar reads them."""
    q = evaluation.recorded()
    assert q["splits"] == {"evaluation": ["eval", "vllm", "final_paraphrase", "final_sqlcc"],
                           "selection": ["select_paraphrase", "select_sqlcc"]}, q["splits"]
    got, rows = q["final_paraphrase_same_result"], q["final_paraphrase_rows"]
    assert got >= PARAPHRASE_SAME_RESULT_MIN * rows, (
        f"paraphrases (final_paraphrase.jsonl): {got}/{rows}, below the templates-only "
        f"tenant's 20/30")
    cc = q["final_sqlcc_same_result"] + q["vllm_same_result"]
    rows = q["final_sqlcc_rows"] + q["vllm_rows"]
    assert cc >= CC_SAME_RESULT_MIN * rows, (
        f"sql-create-context style (final_sqlcc.jsonl and vLLM's rows): {cc}/{rows} gold "
        f"results, below {CC_SAME_RESULT_MIN:.0%}")


def aliasing_expected() -> bool:
    """The CPU build 0.32.x gathers slot weights with the base rows' index -1 (the last slot):
    vllm/lora/ops/torch_ops/lora_ops.py, `lora_b_weights[lora_indices_tensor]`."""
    import vllm
    from vllm.platforms import current_platform

    return vllm.__version__.startswith("0.32.") and current_platform.is_cpu()


@pytest.mark.engine
def test_one_slot_gives_base_rows_the_adapter_on_the_cpu_build(lab, eval_runs, one_slot):
    """The finding: with max_loras=1 on vLLM 0.32's CPU build, base rows batched with adapter
    rows get the adapter's delta (torch_ops gathers `lora_b_weights[-1]`, the only slot).
    eval_diff must detect it. On another platform or a fixed release, base rows stay clean."""
    rows, base_clean = eval_runs.get().side("eval", None)
    _, adapter = eval_runs.get().side("eval", evaluation.SQL)
    rows, base_clean, adapter = (x[:len(one_slot.rows)] for x in (rows, base_clean, adapter))
    assert rows == one_slot.rows, "the one-slot batch must hold the evaluation's first rows"
    texts = one_slot.texts.get()
    base_mixed = [t.strip() for t in texts[: len(rows)]]
    diff = lab.eval_diff(with_outputs(rows, base_clean), with_outputs(rows, base_mixed))
    if aliasing_expected():
        assert len(diff.differing) == len(rows), (
            f"expected the CPU build 0.32.x to alias every base row onto the one slot, and "
            f"eval_diff to report all {len(rows)}; it reported {len(diff.differing)}. If this "
            f"vLLM fixed it, update the README's finding.\n{diff.summary()}")
        assert base_mixed == adapter, (
            "aliased base rows should read exactly as the adapter's rows: "
            + first_mismatch(base_mixed, adapter))
    else:
        assert diff.clean, "base rows changed when batched with an adapter:\n" + diff.summary()


@pytest.mark.engine
def test_merged_adapter_matches_the_served_adapter(lab, eval_runs, tmp_path):
    """Tenant migration: the adapter merged into the base (PEFT merge_and_unload), run with
    transformers, must give the same greedy outputs as the adapter served by vLLM."""
    torch = pytest.importorskip("torch")
    peft = pytest.importorskip("peft")
    transformers = pytest.importorskip("transformers")
    rows, served = eval_runs.get().side("eval", evaluation.SQL)
    base = transformers.AutoModelForCausalLM.from_pretrained(base_dir(), dtype=torch.float32)
    merged = peft.PeftModel.from_pretrained(base, SQL_LORA).merge_and_unload().eval()
    tok = transformers.AutoTokenizer.from_pretrained(base_dir(), padding_side="left")
    with torch.no_grad():  # one left-padded batch, the way tools/train_adapters.py decodes
        ids = tok(prompts_of(rows), return_tensors="pt", padding=True)
        out = merged.generate(**ids, max_new_tokens=evaluation.MAX_TOKENS, do_sample=False,
                              eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    outputs = [t.strip() for t in tok.batch_decode(out[:, ids.input_ids.shape[1]:],
                                                   skip_special_tokens=True)]
    diff = lab.eval_diff(with_outputs(rows, served), with_outputs(rows, outputs))
    assert diff.clean, "merged weights must answer as the served adapter does:\n" + diff.summary()


@pytest.mark.engine
def test_an_adapter_above_max_lora_rank_is_rejected_with_vllms_message(lab, one_slot, engines):
    """Refusing the adapter before the batch, or letting vLLM's worker reject it, both pass:
    the test runs on the one-slot engine, which no test uses after its own batch."""
    llm = one_slot.llm.get()
    config = adapter_config(SQL_LORA)
    too_big = 2 * slot_rank(SQL_LORA)
    shape = base_shape()
    econ = load_lab("lab-03")
    dims = {t: econ.module_dims(shape, econ.normalize_targets([t])[0])
            for t in config["target_modules"]}
    folder = in_worker(lab, write_adapter_there, "rank-too-big", config | {"r": too_big},
                       shape.layers, dims, "F32")
    prompt = prompts_of(eval_rows()[:1])[0]
    with pytest.raises(ValueError, match="max_lora_rank") as err:
        engines.generate(llm, [prompt, prompt], [None, ("big", 9, folder)])
    assert f"LoRA rank {too_big} is greater than max_lora_rank" in str(err.value), (
        f"vLLM's own message must reach the caller, got: {err.value}")


# --- the 7B demo (CUDA only) -----------------------------------------------------------------

BASE_7B = os.environ.get("LAB02_BASE_MODEL", "meta-llama/Llama-2-7b-hf")
SQL_LORA_7B = os.environ.get("LAB02_SQL_LORA", "yard1/llama-2-7b-sql-lora-test")


def adapter_folder(name: str) -> Path:
    """A local adapter folder as given, or the Hugging Face snapshot of a repo id (a few MB)."""
    if Path(name).is_dir():
        return Path(name)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(name))


def model_config(name: str) -> dict:
    """``config.json`` of a local model folder or a Hugging Face repo id (only that file)."""
    if Path(name).is_dir():
        return json.loads((Path(name) / "config.json").read_text())
    from huggingface_hub import hf_hub_download

    return json.loads(Path(hf_hub_download(name, "config.json")).read_text())


@pytest.mark.gpu
@pytest.mark.engine
def test_7b_demo_two_behaviours_and_its_log_reconciles(lab, capfd):
    try:
        config, lora_dir = model_config(BASE_7B), adapter_folder(SQL_LORA_7B)
        llm = lab.build_llm(BASE_7B, max_loras=1, max_lora_rank=slot_rank(lora_dir),
                            max_cpu_loras=1)
    except Exception as err:  # noqa: BLE001 - the message says what to fix
        pytest.fail(f"CUDA is present but the 7B demo could not load its weights "
                    f"({type(err).__name__}: {err}). Run `huggingface-cli login` with an account "
                    f"that accepted the meta-llama license, or point LAB02_BASE_MODEL / "
                    f"LAB02_SQL_LORA at local folders.", pytrace=False)
    from vllm.lora.request import LoRARequest

    prompt = prompts_of(eval_rows()[:1])[0]
    base_text, sql_text = lab.generate_mixed(
        llm, [prompt, prompt], [None, LoRARequest("sql", 1, str(lora_dir))],
        evaluation.greedy())
    assert "SELECT" in sql_text.upper() and "SELECT" not in base_text.upper(), (
        f"two behaviours expected: base {base_text!r}, sql {sql_text!r}")
    log = capfd.readouterr()
    cap = lab.parse_capture(log.out + log.err)
    shape = load_lab("lab-03").ModelShape.from_hf_config(config)
    rec = lab.reconcile(cap, shape, lora_dir)
    assert cap.weights_kind == "model_loading", "the GPU build logs `Model loading took X GiB`"
    assert rec.ok, "the 7B log must reconcile with labs 01/03/04:\n" + rec.summary()
