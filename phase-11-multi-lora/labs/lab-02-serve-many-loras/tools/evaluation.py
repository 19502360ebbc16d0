"""How lab 02's tenants are judged: one mixed batch, each row checked against its gold.

Not graded: a support module (``labkit.load_support("lab-02", "tools.evaluation")``) shared by
``tools/eval_adapter.py`` (which records ``assets/quality.json``), the engine tests (which
re-measure rows of it) and the demo, so every figure is computed one way.

One batch holds, for each held-out row of ``assets/eval.jsonl``: the SQL prompt untagged (the
base), the SQL prompt tagged ``sql-lora``, and the question prompt tagged ``question-lora``;
and for each row of the other held-out sets (``SQL_ONLY_SPLITS``) the SQL prompt tagged
``sql-lora``. Greedy decoding, so a verdict is a property of the deployment.

Each set belongs to one of two splits (``ROLE``): the SELECTION split, on which the tenant's
steps, data mix and column words were chosen, and the EVALUATION split, which nothing was tuned
on and whose figures are the published ones (``assets/TENANTS.md``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from labkit import load_support

sqldata = load_support("lab-02", "tools.sqldata")

LAB = Path(__file__).resolve().parents[1]
ASSETS = LAB / "assets"
QUALITY = ASSETS / "quality.json"
# rows asked of sql-lora alone, in ``batch``'s order: each set is assets/<split>.jsonl
SQL_ONLY_SPLITS = ("select_paraphrase", "select_sqlcc", "vllm", "final_paraphrase",
                   "final_sqlcc")
SELECTION, EVALUATION = "selection", "evaluation"
ROLE = {"eval": EVALUATION, "select_paraphrase": SELECTION, "select_sqlcc": SELECTION,
        "vllm": EVALUATION, "final_paraphrase": EVALUATION, "final_sqlcc": EVALUATION}
PATHS = {split: ASSETS / f"{split}.jsonl" for split in ROLE} | {
    "vllm": ASSETS / "vllm_rows.jsonl"}  # vLLM's own four tests/lora rows
MAX_TOKENS = 48  # the longest gold answer is 40 tokens of SmolLM2 (select_sqlcc.jsonl); base rows run to it
SQL, QUESTION = "sql-lora", "question-lora"
TENANT_IDS = {SQL: 1, QUESTION: 2}  # LoRARequest's lora_int_id: unique per adapter


@dataclass(frozen=True)
class Row:
    """One request of the evaluation batch: which row, which side, which prompt."""

    split: str  # "eval" or one of SQL_ONLY_SPLITS
    row: dict
    tag: str | None  # None: the base model
    prompt: str


def tenant_folder(name: str) -> Path:
    return ASSETS / name


def load(split: str) -> list[dict]:
    """The rows of one held-out set (``PATHS``)."""
    return sqldata.load_eval(PATHS[split])


def batch(eval_rows: Sequence[dict], **sql_only: Sequence[dict]) -> list[Row]:
    """The evaluation batch for these rows, in a fixed order: ``eval_rows`` on every side,
    then the rows of each other set, by split name (``SQL_ONLY_SPLITS``), through sql-lora."""
    unknown = set(sql_only) - set(SQL_ONLY_SPLITS)
    if unknown:
        raise ValueError(f"sql_only: expected splits of {SQL_ONLY_SPLITS}, got {sorted(unknown)}")
    out = []
    for r in eval_rows:
        sql_prompt = sqldata.sql_prompt(r["schema"], r["question"])
        out += [Row("eval", r, None, sql_prompt), Row("eval", r, SQL, sql_prompt),
                Row("eval", r, QUESTION, sqldata.question_prompt(r["schema"], r["gold_sql"]))]
    for split in SQL_ONLY_SPLITS:
        out += [Row(split, r, SQL, sqldata.sql_prompt(r["schema"], r["question"]))
                for r in sql_only.get(split, ())]
    return out


def lora_requests() -> dict[str, object]:
    """One vLLM ``LoRARequest`` per tenant (imported here: vLLM is needed only to run)."""
    from vllm.lora.request import LoRARequest

    return {name: LoRARequest(name, i, str(tenant_folder(name)))
            for name, i in TENANT_IDS.items()}


def greedy(max_tokens: int = MAX_TOKENS):
    from vllm import SamplingParams

    return SamplingParams(temperature=0.0, max_tokens=max_tokens)


def run(generate: Callable, llm, rows: list[Row]) -> list[str]:
    """Send ``rows`` as ONE batch through ``generate`` (the lab's ``generate_mixed``)."""
    requests = lora_requests()
    texts = generate(llm, [r.prompt for r in rows],
                     [None if r.tag is None else requests[r.tag] for r in rows], greedy())
    return [t.strip() for t in texts]


def verdicts(rows: list[Row], texts: list[str]) -> dict[str, dict[int, dict[str, bool]]]:
    """Per split, per row id: what each side did (``base_sql``, ``adapter_sql``,
    ``adapter_executes``, ``adapter_same_result``, ``question_exact``)."""
    out: dict[str, dict[int, dict[str, bool]]] = {}
    for r, text in zip(rows, texts, strict=True):
        v = out.setdefault(r.split, {}).setdefault(r.row["id"], {})
        if r.tag is None:
            v["base_sql"] = sqldata.is_sql(text)
        elif r.tag == SQL:
            v |= {"adapter_sql": sqldata.is_sql(text),
                  "adapter_executes": sqldata.executes(r.row, text),
                  "adapter_same_result": sqldata.same_result(r.row, text)}
        else:
            v["question_exact"] = sqldata.same_question(r.row, text)
    return out


def quality(rows: list[Row], texts: list[str], vllm_version: str) -> dict:
    """``assets/quality.json``: the counts, and the per-row verdicts they are sums of."""
    per_row = verdicts(rows, texts)

    def count(split: str, key: str) -> int:
        return sum(v[key] for v in per_row.get(split, {}).values())

    return {
        "vllm": vllm_version,
        "rows": len(per_row.get("eval", {})),
        "base_sql": count("eval", "base_sql"),
        "adapter_sql": count("eval", "adapter_sql"),
        "adapter_executes": count("eval", "adapter_executes"),
        "adapter_same_result": count("eval", "adapter_same_result"),
        "question_exact": count("eval", "question_exact"),
        **{f"{split}_{key}": count(split, f"adapter_{key}") for split in SQL_ONLY_SPLITS
           for key in ("sql", "executes", "same_result")},
        **{f"{split}_rows": len(per_row.get(split, {})) for split in SQL_ONLY_SPLITS},
        # which sets the figures may be published from (evaluation) and which ones the
        # settings were chosen on (selection)
        "splits": {role: [s for s in ROLE if ROLE[s] == role] for role in (EVALUATION, SELECTION)},
        "per_row": {split: {str(i): v for i, v in rows_.items()}
                    for split, rows_ in per_row.items()},
    }


def recorded(path: Path = QUALITY) -> dict:
    return json.loads(path.read_text())
