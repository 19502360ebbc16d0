"""Lab 02 demo: one vLLM batch, three behaviours; the tag on each row decides which.

    .venv/bin/python phase-11-multi-lora/labs/lab-02-serve-many-loras/tools/demo.py [--verbose]
        [--capture PATH] [--adapter NAME=PATH]

Builds the CPU engine on SmolLM2-135M-Instruct (``tools/base_model.py``) with LoRA on
(``build_llm``), then sends ONE ``generate`` call (``generate_mixed``) of six rows: the
text-to-SQL prompt untagged (the base model), the same prompt tagged ``sql-lora``, the
query-to-question prompt tagged ``question-lora``, then ``sql-lora`` on one held-out row of
each other style (a paraphrase, a sql-create-context row of a held-out domain, and vLLM's own
"Name the ICAO for lilongwe international airport"). Prints the rows side by side with their
tags, the engine's own account of the batch (the scheduler step that admitted all six rows
together), then what each output does in sqlite3, on its own row's table. Last, the LoRA tax of
that batch: its prefill against a base-only prefill of the same prompts, on vLLM's stock CPU
ops and on part 3's (``lab_ops``), when part 3 is done. The lab code comes from ``LAB_IMPL``
(the repository's default when unset).

The engine's own log (vLLM's INFO lines) goes to a new file per run whose path is printed; ``--verbose``
shows it as it comes. ``--capture PATH`` writes the whole run, engine log and demo lines
interleaved, to PATH: that is how capture/demo.log is made (``make capture``). ``--adapter
NAME=PATH`` adds a tenant of your own (for example one retrained with
``tools/train_adapters.py --out``) as a last row on the first SQL prompt.

A capture names no path of the machine that recorded it: ``redact`` writes the repository as
``<repo>`` and the virtualenv as ``<venv>`` (``--redact PATH --repo DIR`` applies it to a log
recorded elsewhere), and the version line says which lab code ran only when it is not the
repository's default.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

LAB = Path(__file__).resolve().parents[1]
REPO = LAB.parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # run as a script: labkit lives at the repository root

ADAPTER_NAME = "sql-lora"  # the SQL tenant's tag
QUESTION_NAME = "question-lora"
EVAL_ROW = 0  # the held-out row whose prompts the first three rows share
STYLE_ROW = 0  # the row of each other style (vllm_rows.jsonl's 0: "Name the ICAO for ...")
# the demo's rows in order: base, the two tenants on the same row, then sql-lora on one row of
# each other style (paraphrase, sql-create-context, vLLM's)
TAGS = ("base", ADAPTER_NAME, QUESTION_NAME, ADAPTER_NAME, ADAPTER_NAME, ADAPTER_NAME)
MAX_LORAS = 3  # two tenants in slots, one slot left empty (see the README's -1 finding)
MAX_LORA_RANK = 16  # the shipped adapters' r, one of vLLM's allowed ranks
MAX_CPU_LORAS = 3
CHILD_ENV = "LAB02_DEMO_CHILD"
# Lines of the demo's own report; everything else a run prints is the engine's log.
HEARTBEAT_S = 30.0  # a line at least this often while nothing else is shown
OWN_LINE = re.compile(r"^(\[demo\]|== |row \d+ |$)")


def versions() -> list[str]:
    """Machine and library versions, printed at the top of every capture."""
    import torch
    import vllm

    from labkit import resolve_impl

    impl = os.environ.get("LAB_IMPL")
    chosen = f", lab code {resolve_impl().kind} (LAB_IMPL)" if impl else ""
    return [f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
            f"python {platform.python_version()}, torch {torch.__version__}, "
            f"vllm {vllm.__version__}{chosen}"]


def redact(text: str, repo: Path = REPO) -> str:
    """``text`` with the recording machine's paths replaced: the repository's virtualenv (as
    given and resolved) by ``<venv>``, then the repository by ``<repo>``."""
    venvs = {str(repo / ".venv"), os.path.realpath(repo / ".venv"), os.path.realpath(sys.prefix)}
    for venv in sorted(venvs, key=len, reverse=True):
        text = text.replace(venv + "/", "<venv>/")
    text = text.replace(str(repo) + "/", "<repo>/").replace(str(repo), "<repo>")
    return text.replace(", LAB_IMPL=solution\n", "\n")  # the default, as older captures said it


def _stacked_bytes(worker) -> int:
    """Runs inside the engine's worker: bytes of every LoRA slot buffer vLLM allocated."""
    total = 0
    for module in worker.model_runner.model.modules():
        for name in ("lora_a_stacked", "lora_b_stacked"):
            buffers = getattr(module, name, None)
            for t in buffers if isinstance(buffers, tuple | list) else [buffers]:
                total += t.numel() * t.element_size() if t is not None else 0
    return total


def slot_buffer_bytes(llm) -> int | None:
    """The LoRA slot buffers of the running engine, summed (vLLM 0.32 internals; None if the
    engine is laid out differently)."""
    try:
        return llm.llm_engine.engine_core.engine_core.model_executor.collective_rpc(
            _stacked_bytes)[0]
    except Exception:  # noqa: BLE001 - an internal probe: report "not measured", not a crash
        return None


def style_rows(evaluation) -> list[tuple[str, dict]]:
    """One held-out row of each other style, asked of the SQL tenant: a paraphrase, a
    sql-create-context row of a held-out domain (both of the selection split,
    assets/TENANTS.md), and vLLM's own ICAO row."""
    return [("paraphrase", evaluation.load("select_paraphrase")[STYLE_ROW]),
            ("sql-create-context", evaluation.load("select_sqlcc")[STYLE_ROW]),
            ("vLLM tests/lora", evaluation.load("vllm")[STYLE_ROW])]


def record_steps(llm) -> list[dict]:
    """Record every engine step the in-process scheduler plans from now on: how many requests
    and tokens it scheduled together, and the tag of each request it admitted."""
    scheduler = llm.llm_engine.engine_core.engine_core.scheduler
    steps, plan = [], scheduler.schedule

    def schedule(*args, **kwargs):
        out = plan(*args, **kwargs)
        if out.total_num_scheduled_tokens:
            steps.append({"requests": len(out.num_scheduled_tokens),
                          "tokens": out.total_num_scheduled_tokens,
                          "admitted": [r.lora_request.lora_name if r.lora_request else "base"
                                       for r in out.scheduled_new_reqs]})
        return out

    scheduler.schedule = schedule
    return steps


def print_steps(steps: list[dict], rows: int) -> None:
    """The engine's own account of the batch: which step admitted which rows."""
    first = steps[0] if steps else None
    if first is None:
        print("[demo] the scheduler planned no step")
        return
    together = "all rows in ONE step" if len(first["admitted"]) == rows else "over several steps"
    print(f"[demo] engine step 1 scheduled {first['requests']} requests, "
          f"{first['tokens']} prompt tokens ({together}): {', '.join(first['admitted'])}")
    decode = steps[1:]
    if decode:
        print(f"[demo] then {len(decode)} decode steps of up to "
              f"{max(s['requests'] for s in decode)} requests each")


OPS_REPEATS = 3  # prefill timings per (ops, batch): the median is printed


def lab_ops_ready(lab) -> str | None:
    """None when part 3's ops run on a tiny batch (``try_ops``); else why not (its TODO)."""
    try:
        lab.try_ops(lab.lab_ops())
    except Exception as err:  # noqa: BLE001 - reported, not raised: parts 1-2 still demo
        return f"{type(err).__name__}: {err}"
    return None


def print_ops_tax(lab, llm, prompts: list[str], tags: list, greedy) -> None:
    """The six rows' prefill (one new token), mixed and base-only, on vLLM's stock ops and on
    part 3's: the ratio each gives. ``make bench-engine`` measures it properly."""
    import statistics

    why = lab_ops_ready(lab)
    if why is not None:
        print(f"[demo] part 3 (your ops in the engine): not yet ({why})")
        return
    one_token = greedy(max_tokens=1)
    ratios = {}
    for name, ops in (("stock", lab.stock_ops()), ("yours", lab.lab_ops())):
        lab.install_ops(ops)
        seconds = {}
        for batch, batch_tags in (("base", [None] * len(tags)), ("mixed", tags)):
            runs = []
            for _ in range(OPS_REPEATS):
                t0 = time.perf_counter()
                lab.generate_mixed(llm, prompts, batch_tags, one_token)
                runs.append(time.perf_counter() - t0)
            seconds[batch] = statistics.median(runs)
        ratios[name] = seconds["mixed"] / seconds["base"]
    lab.install_ops(lab.stock_ops())
    print(f"[demo] the six rows' prefill, mixed / base-only (medians of {OPS_REPEATS}): "
          f"vLLM's stock CPU ops {ratios['stock']:.2f}x, your part-3 ops {ratios['yours']:.2f}x "
          f"(make bench-engine measures it on 24 prompts)")


def run_demo(extra: dict[str, str]) -> None:
    from vllm.lora.request import LoRARequest

    from labkit import load_lab, load_support

    base_model, evaluation, sqldata = (load_support("lab-02", m)
                                       for m in ("tools.base_model", "tools.evaluation", "tools.sqldata"))

    lab = load_lab("lab-02")
    for line in versions():
        print(f"[demo] {line}", flush=True)
    row = sqldata.load_eval()[EVAL_ROW]
    styles = style_rows(evaluation)
    model = base_model.base_model()
    print(f"[demo] base: {model}", flush=True)
    llm = lab.build_llm(model, max_loras=MAX_LORAS + len(extra), max_lora_rank=MAX_LORA_RANK,
                        max_cpu_loras=MAX_CPU_LORAS + len(extra))
    tenants = evaluation.lora_requests()
    sql_prompt = sqldata.sql_prompt(row["schema"], row["question"])
    question_prompt = sqldata.question_prompt(row["schema"], row["gold_sql"])
    # (tag, what the row asks, its data row, prompt, LoRARequest or None)
    rows = [("base", "templates", row, sql_prompt, None),
            (ADAPTER_NAME, "templates", row, sql_prompt, tenants[ADAPTER_NAME]),
            (QUESTION_NAME, "templates", row, question_prompt, tenants[QUESTION_NAME])]
    rows += [(ADAPTER_NAME, style, r, sqldata.sql_prompt(r["schema"], r["question"]),
              tenants[ADAPTER_NAME]) for style, r in styles]
    rows += [(name, "templates", row, sql_prompt, LoRARequest(name, 100 + i, path))
             for i, (name, path) in enumerate(extra.items())]
    steps = record_steps(llm)
    t0 = time.monotonic()
    texts = [t.strip() for t in lab.generate_mixed(
        llm, [r[3] for r in rows], [r[4] for r in rows], evaluation.greedy())]
    seconds = time.monotonic() - t0
    print(f"\n== one generate() call: {len(rows)} rows, {len(rows)} tags ({seconds:.1f} s) ==")
    print_steps(list(steps), len(rows))
    steps.clear()
    print(f"[demo] sql prompt:      {sql_prompt!r}")
    print(f"[demo] question prompt: {question_prompt!r}")
    print(f"[demo] gold query:      {row['gold_sql']!r}")
    print(f"[demo] gold question:   {row['canonical']!r}")
    for i, (_, style, r, _, _) in enumerate(rows):
        if r is not row:
            print(f"[demo] row {i} ({style}): {r['schema']} | {r['question']!r} "
                  f"| gold {r['gold_sql']!r}")
    width = max(len(r[0]) for r in rows)
    for i, (r, text) in enumerate(zip(rows, texts, strict=True)):
        print(f"row {i}  tag={r[0]:<{width}}  -> {text!r}")
    measured = slot_buffer_bytes(llm)
    shape = load_lab("lab-03").ModelShape.from_hf_config(
        json.loads((base_model.base_model_dir() / "config.json").read_text()))
    dtype_bytes = llm.llm_engine.vllm_config.model_config.dtype.itemsize
    derived = lab.lora_slot_bytes(shape, MAX_LORAS + len(extra), MAX_LORA_RANK, dtype_bytes)
    seen = "not measured" if measured is None else f"{measured:,} B"
    print(f"\n[demo] LoRA slot buffers ({MAX_LORAS + len(extra)} slots, rank {MAX_LORA_RANK}): "
          f"{seen} in the engine's lora_a/b_stacked; lora_slot_bytes derives {derived:,} B")
    print("\n== what each row does ==")
    for i, ((tag, style, r, _, _), text) in enumerate(zip(rows, texts, strict=True)):
        runs = lab.sql_executes(r["schema"], text, r["inserts"])
        verdict = (f"looks like SQL: {sqldata.is_sql(text)!s:<5} executes: {runs!s:<5} "
                   f"gold result: {sqldata.same_result(r, text)}")
        if tag == QUESTION_NAME:
            verdict += f" gold question: {sqldata.same_question(r, text)}"
        print(f"row {i}  tag={tag:<{width}}  {verdict}  ({style})")
    print("\n== the LoRA tax of this batch ==")
    print_ops_tax(lab, llm, [r[3] for r in rows], [r[4] for r in rows], evaluation.greedy)


def run_log() -> Path:
    """A new log file for this run (concurrent demos never share one)."""
    fd, name = tempfile.mkstemp(prefix="lab02-demo-", suffix=".log")
    os.close(fd)
    return Path(name)


def run_child(argv: list[str], log_path: Path, verbose: bool, *, cmd: list[str] | None = None,
              heartbeat_s: float = HEARTBEAT_S) -> int:
    """Run the demo in a child; its whole output goes to ``log_path``, the demo's own lines (or
    everything, ``verbose``) to the terminal, and a line with the elapsed time after every
    ``heartbeat_s`` seconds with nothing shown (the engine's build and batches are silent).
    ``cmd``: the child's command, this script by default."""
    # one BLAS thread: part 3's numpy matmuls share the cores torch's OpenMP threads are bound to
    env = {"OPENBLAS_NUM_THREADS": "1"} | os.environ | {"PYTHONUNBUFFERED": "1", CHILD_ENV: "1"}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    child = subprocess.Popen([*(cmd or [sys.executable, __file__]), *argv], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, env=env)
    assert child.stdout is not None
    start = time.monotonic()
    shown, lock, stop = [start], threading.Lock(), threading.Event()

    def show(chunk: bytes) -> None:
        with lock:
            sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
            shown[0] = time.monotonic()

    def heartbeat() -> None:
        while not stop.wait(min(1.0, heartbeat_s)):
            now = time.monotonic()
            if now - shown[0] >= heartbeat_s:
                show(f"[demo] still running after {now - start:.0f} s\n".encode())

    beat = threading.Thread(target=heartbeat, name="demo-heartbeat", daemon=True)
    beat.start()
    try:
        with log_path.open("wb") as log:
            for chunk in iter(child.stdout.readline, b""):
                log.write(chunk)
                if verbose or OWN_LINE.match(chunk.decode(errors="replace").rstrip("\n")):
                    show(chunk)
        return child.wait()
    finally:
        stop.set()
        beat.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--capture", type=Path, metavar="PATH",
                        help="write the full run (vLLM's log included) to PATH")
    parser.add_argument("--verbose", action="store_true", help="show vLLM's log as it comes")
    parser.add_argument("--adapter", action="append", default=[], metavar="NAME=PATH",
                        help="serve another PEFT adapter folder as an extra row")
    parser.add_argument("--redact", type=Path, metavar="PATH",
                        help="rewrite the log at PATH without machine paths, then exit")
    parser.add_argument("--repo", type=Path, default=REPO,
                        help="with --redact: the repository the log was recorded in")
    args = parser.parse_args()
    if args.redact:
        args.redact.write_text(redact(args.redact.read_text(), args.repo))
        return
    extra = dict(item.split("=", 1) for item in args.adapter)
    if os.environ.get(CHILD_ENV):
        run_demo(extra)
        return
    log_path = args.capture or run_log()
    print(f"[demo] starting vLLM's CPU engine; its log: {log_path}"
          + ("" if args.verbose else " (--verbose shows it here)"), flush=True)
    passthrough = [f"--adapter={item}" for item in args.adapter]
    code = run_child(passthrough, log_path, args.verbose)
    if args.capture:
        log_path.write_text(redact(log_path.read_text(errors="replace")))
    if code:
        print(f"[demo] the run failed (exit {code}); the last lines of {log_path}:")
        print("\n".join(log_path.read_text(errors="replace").splitlines()[-15:]))
    sys.exit(code)


if __name__ == "__main__":
    main()
