"""Measure the SQL adapter against the base through vLLM on the held-out set.

    .venv/bin/python phase-11-multi-lora/labs/lab-02-serve-many-loras/tools/eval_adapter.py [--manifest]

One offline engine, one `generate` call: every eval row twice, once untagged (base) and once
tagged with the SQL adapter, greedy (temperature 0). Reports, for each side, the share of rows
whose output looks like SQL, executes in sqlite3 against the row's table, and returns the gold
query's result. `max_loras=2`: with one slot the CPU build gives base rows in a mixed batch the
adapter's delta, which would corrupt the base column. `--manifest` writes the numbers into
assets/MANIFEST.md.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

LAB = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(LAB))
import sqldata  # noqa: E402

MAX_NEW_TOKENS = 64  # the longest gold SQL is ~30 tokens
MAX_MODEL_LEN = 256  # prompt (~100 tokens) + answer, with room to spare


def run(assets: Path) -> tuple[list[dict], list[str], list[str], float]:
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest

    rows = sqldata.load_eval(assets / "eval.jsonl")
    llm = LLM(model=str(assets / "tiny-llama"), enable_lora=True, max_loras=2, max_lora_rank=16,
              max_cpu_loras=2, kv_cache_memory_bytes=64 * 2**20, max_model_len=MAX_MODEL_LEN,
              dtype="float32", seed=0)
    sql = LoRARequest("sql", 1, str(assets / "sql-lora"))
    prompts = [sqldata.sql_prompt(r["schema"], r["question"]) for r in rows]
    sampling = SamplingParams(temperature=0.0, max_tokens=MAX_NEW_TOKENS)
    t0 = time.time()
    outs = llm.generate(prompts + prompts, sampling,
                        lora_request=[None] * len(rows) + [sql] * len(rows))
    seconds = time.time() - t0
    texts = [o.outputs[0].text.strip() for o in outs]
    return rows, texts[: len(rows)], texts[len(rows):], seconds


def report(rows: list[dict], base: list[str], adapter: list[str], seconds: float) -> str:
    import vllm

    n = len(rows)
    b, a = (
        {k: 100 * v / n for k, v in sqldata.side_counts(rows, texts).items()}
        for texts in (base, adapter)
    )
    lines = [
        f"vLLM {vllm.__version__}, {len(rows)} held-out rows, greedy, one mixed batch of "
        f"{2 * len(rows)} requests ({seconds:.1f} s)",
        "",
        "| side | SQL-looking | executes | same result as gold |",
        "| --- | --- | --- | --- |",
        f"| base (untagged) | {b['sql']:.0f}% | {b['executes']:.0f}% | {b['same_result']:.0f}% |",
        f"| sql-lora | {a['sql']:.0f}% | {a['executes']:.0f}% | {a['same_result']:.0f}% |",
        "",
        f"Example (row {rows[0]['id']}): question `{rows[0]['question']}`",
        f"- base: `{base[0]}`",
        f"- sql-lora: `{adapter[0]}`",
        f"- gold: `{rows[0]['gold_sql']}`",
    ]
    return "\n".join(lines)


def counts(rows: list[dict], base: list[str], adapter: list[str]) -> dict[str, int | str]:
    """The raw counts behind the table, recorded in assets/quality.json for the lab's tests."""
    import vllm

    b, a = sqldata.side_counts(rows, base), sqldata.side_counts(rows, adapter)
    return {"vllm": vllm.__version__, "rows": len(rows), "base_sql": b["sql"],
            "adapter_sql": a["sql"], "adapter_executes": a["executes"],
            "adapter_same_result": a["same_result"]}


def write_manifest(assets: Path, text: str) -> None:
    path = assets / "MANIFEST.md"
    block = f"<!-- vllm-quality -->\n{text}\n<!-- /vllm-quality -->"
    new = re.sub(r"<!-- vllm-quality -->.*<!-- /vllm-quality -->", lambda _: block,
                 path.read_text(), flags=re.DOTALL)
    path.write_text(new)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--assets", type=Path, default=LAB / "assets")
    ap.add_argument("--manifest", action="store_true", help="write the numbers into MANIFEST.md and quality.json")
    ap.add_argument("--show", type=int, default=0, help="print the first N rows' outputs")
    args = ap.parse_args()
    rows, base, adapter, seconds = run(args.assets)
    for r, b, a in list(zip(rows, base, adapter, strict=True))[: args.show]:
        print(f"[{r['id']}] {r['question']}\n  base: {b}\n  lora: {a}\n  gold: {r['gold_sql']}")
    text = report(rows, base, adapter, seconds)
    print(text)
    if args.manifest:
        write_manifest(args.assets, text)
        quality = json.dumps(counts(rows, base, adapter), indent=2) + "\n"
        (args.assets / "quality.json").write_text(quality)
        print(f"wrote {args.assets / 'quality.json'}")


if __name__ == "__main__":
    main()
