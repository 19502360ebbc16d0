"""Measure lab 02's tenants against the base through vLLM, on every held-out row.

    .venv/bin/python phase-11-multi-lora/labs/lab-02-serve-many-loras/tools/eval_adapter.py [--manifest]

`make eval-assets` runs it with `--manifest`. One CPU engine (`build_llm` of the lab code `LAB_IMPL` selects,
max_loras=3: both tenants and an empty slot, see the README's `-1` finding), ONE
`generate_mixed` call holding `evaluation.batch` over every held-out set of both splits
(`evaluation.ROLE`: the evaluation split, whose figures are published, and the selection
split, on which the settings were chosen), greedy. Prints the table, one row per set with its
split; `--manifest` writes the counts and per-row verdicts to assets/quality.json (the engine
tests re-measure rows of it) and the table into assets/MANIFEST.md.
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
sys.path.insert(0, str(LAB.parents[2]))  # the repository root: this checkout's labkit
import base_model  # noqa: E402
import evaluation  # noqa: E402
import sqldata  # noqa: E402

MAX_LORAS = 3  # two tenants resident, one slot left empty for the base rows' index -1


def measure() -> tuple[list, list[str], float, str]:
    import vllm

    from labkit import load_lab

    lab = load_lab("lab-02")
    llm = lab.build_llm(base_model.base_model(), max_loras=MAX_LORAS, max_lora_rank=16,
                        max_cpu_loras=MAX_LORAS)
    rows = evaluation.batch(sqldata.load_eval(), **{
        split: evaluation.load(split) for split in evaluation.SQL_ONLY_SPLITS})
    t0 = time.monotonic()
    texts = evaluation.run(lab.generate_mixed, llm, rows)
    return rows, texts, time.monotonic() - t0, vllm.__version__


def pct(n: int, d: int) -> str:
    return f"{n}/{d} ({100 * n / d:.0f}%)" if d else "-"


# the sets asked of sql-lora alone, as the table names them, evaluation split first
SQL_ONLY_NAMES = {
    "final_paraphrase": "final_paraphrase.jsonl (phrasings no other split uses)",
    "final_sqlcc": "final_sqlcc.jsonl (sql-create-context, unseen domains)",
    "vllm": "vllm_rows.jsonl (vLLM's tests/lora)",
    "select_paraphrase": "select_paraphrase.jsonl (phrasings training never uses)",
    "select_sqlcc": "select_sqlcc.jsonl (sql-create-context, selection domains)",
}


def report(q: dict, seconds: float, rows: list, texts: list[str]) -> str:
    n = q["rows"]
    first = {(r.split, r.tag): t for r, t in zip(rows, texts, strict=True) if r.row["id"] == 0}
    row0 = sqldata.load_eval()[0]
    return "\n".join([
        f"vLLM {q['vllm']} (CPU build), base {base_model.NAME}, greedy, one mixed batch of "
        f"{len(rows)} requests ({seconds:.0f} s)",
        "",
        "| split | rows | side | answers in SQL | SQL executes | gold result | exact question |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: |",
        f"| evaluation | eval.jsonl | base (untagged) | {pct(q['base_sql'], n)} | | | |",
        f"| evaluation | eval.jsonl | sql-lora | {pct(q['adapter_sql'], n)} | "
        f"{pct(q['adapter_executes'], n)} | {pct(q['adapter_same_result'], n)} | |",
        f"| evaluation | eval.jsonl | question-lora (query -> question) | | | | "
        f"{pct(q['question_exact'], n)} |",
        *(f"| {evaluation.ROLE[s]} | {name} | sql-lora | {pct(q[f'{s}_sql'], q[f'{s}_rows'])} | "
          f"{pct(q[f'{s}_executes'], q[f'{s}_rows'])} | {pct(q[f'{s}_same_result'], q[f'{s}_rows'])}"
          " | |" for s, name in SQL_ONLY_NAMES.items()),
        "",
        *(f"- vLLM row {r.row['id']}: `{r.row['question']}` -> `{t}` (gold `{r.row['gold_sql']}`)"
          for r, t in zip(rows, texts, strict=True) if r.split == "vllm"),
        "",
        f"Row 0: `{row0['question']}`",
        f"- base: `{first[('eval', None)]}`",
        f"- sql-lora: `{first[('eval', evaluation.SQL)]}` (gold `{row0['gold_sql']}`)",
        f"- question-lora, given the gold query: `{first[('eval', evaluation.QUESTION)]}`",
    ])


def write_manifest(text: str) -> None:
    path = evaluation.ASSETS / "MANIFEST.md"
    block = f"<!-- vllm-quality -->\n{text}\n<!-- /vllm-quality -->"
    new = re.sub(r"<!-- vllm-quality -->.*<!-- /vllm-quality -->", lambda _: block,
                 path.read_text(), flags=re.DOTALL)
    path.write_text(new)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--manifest", action="store_true",
                    help="write assets/quality.json and the table into assets/MANIFEST.md")
    ap.add_argument("--show", type=int, default=0, help="print the first N requests' outputs")
    args = ap.parse_args()
    rows, texts, seconds, version = measure()
    for r, t in list(zip(rows, texts, strict=True))[: args.show]:
        print(f"[{r.split} {r.row['id']} {r.tag or 'base'}] {t}")
    q = evaluation.quality(rows, texts, version)
    text = report(q, seconds, rows, texts)
    print(text)
    print("\nsql-lora's misses (not written to the manifest):")
    for r, t in zip(rows, texts, strict=True):
        if r.tag == evaluation.SQL and not sqldata.same_result(r.row, t):
            print(f"- {r.split} row {r.row['id']}: `{r.row['question']}` -> `{t}` "
                  f"(gold `{r.row['gold_sql']}`)")
    if args.manifest:
        write_manifest(text)
        evaluation.QUALITY.write_text(json.dumps(q, indent=1) + "\n")
        print(f"wrote {evaluation.QUALITY} and the table in assets/MANIFEST.md")


if __name__ == "__main__":
    main()
