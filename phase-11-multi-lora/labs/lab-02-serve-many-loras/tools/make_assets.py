"""Regenerate lab 02's assets: tiny Llama base, SQL LoRA adapter, held-out eval set, MANIFEST.

    .venv/bin/python phase-11-multi-lora/labs/lab-02-serve-many-loras/tools/make_assets.py [--quick]

Pipeline (seeded end to end, CPU only):
  1. data       held-out eval + dev rows from the eval pools (sqldata.py); training rows are
                drawn on the fly from the training pools, never with an eval/dev column set.
  2. tokenizer  byte-level BPE trained on the word pools and templates (never on rows).
  3. drill      the base's first stage: copy drill only (`words: a b c. again: a b c.`), batch
                64, constant lr, until the teacher-forced copy accuracy of held-back drills
                passes --drill-until. Induction heads form here, abruptly, after a few hundred
                steps; mixed thinly into the prose data from step 0 they never formed in 3,000
                steps (assets/MANIFEST.md).
  4. base       LlamaForCausalLM pre-trained with LM loss on the whole sequence: the SQL prompt
                followed by a PROSE answer naming the same table, columns and values, mixed with
                copy-heavy word lists. The base learns to copy from context and never sees SQL.
  5. adapter    PEFT LoRA (r=16 on q/k/v/o) on the frozen base, same prompts, SQL answers, loss on
                the answer only; the checkpoint with the best dev execution accuracy is kept.
  6. save       assets/tiny-llama/, assets/sql-lora/, assets/eval.jsonl, assets/MANIFEST.md.

`--quick` runs a few steps of each stage: assets in their final format, not yet useful.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

LAB = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(LAB))
import sqldata  # noqa: E402

SEED = 20240611
BASE_DIR_NAME = "tiny-llama"
SPECIALS = ("<pad>", "<s>", "</s>")  # ids 0, 1, 2
PRETOKENIZE = r" ?[A-Za-z_]+| ?[0-9]| ?[^\sA-Za-z0-9_]+|\s+(?!\S)|\s+"


# --------------------------------------------------------------------------- data


def eval_rows(n: int, seed: int) -> list[dict]:
    """n held-out rows (eval pools), each a dict ready for eval.jsonl plus kind/prose."""
    rng = random.Random(seed)
    rows = [sqldata.make_example(rng, "eval") for _ in range(n)]
    return [{"gold_sql" if k == "sql" else k: v for k, v in r.items()} for r in rows]


def train_stream(seed: int, banned_columns: set[frozenset[str]]):
    """Endless training examples whose column set never equals a held-out one."""
    rng = random.Random(seed)
    while True:
        ex = sqldata.make_example(rng, "train")
        if column_set(ex) not in banned_columns:
            yield ex


def column_set(example: dict) -> frozenset[str]:
    body = example["schema"].split("(", 1)[1].rstrip(")")
    return frozenset(part.split()[0] for part in body.split(", "))


def all_words() -> list[str]:
    pools = [*sqldata.TABLES.values(), sqldata.TEXT_COLUMNS, sqldata.INT_COLUMNS,
             *sqldata.STRINGS.values()]
    return sorted({w for pool in pools for w in pool})


# SQL's keywords and operators join the copy drill only: their embeddings get trained (so the
# adapter can write them), yet the base never sees them as an answer.
SQL_TOKENS = ["SELECT", "FROM", "WHERE", "AND", "COUNT(*)", "MAX(age)", "MIN(age)", "=", ">", "<"]


def copy_text(rng: random.Random, words: list[str], quoted: float = 0.25) -> str:
    """A word list followed by its verbatim repeat: the induction-head drill.

    A `quoted` share of words are written `'copper'`, the way string values appear in questions
    and SQL. That tokenizes as ` '` + `copper` + `'`: the bare token `copper`, another id than
    the spaced ` copper` of a schema or an unquoted drill word. Without quoted items the bare
    form of a held-out value is an embedding nothing ever trains.
    """
    def item() -> str:
        if rng.random() < 0.2:
            return str(rng.randint(*sqldata.INT_RANGE))
        word = rng.choice(words)
        return f"'{word}'" if word.isalpha() and rng.random() < quoted else word

    seq = " ".join(item() for _ in range(rng.randint(4, 12)))
    return f"words: {seq}. again: {seq}."


# --------------------------------------------------------------------------- tokenizer


def train_tokenizer():
    """Byte-level BPE over the word pools and the fixed template text; digits stay single."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    words = all_words()
    templates = [sqldata.PROMPT, *(t for ts in sqldata.PROSE.values() for t in ts),
                 "What is the when is and greater than less than largest smallest? "
                 "How many rows have equal to? words: again:",
                 "SELECT COUNT(*) FROM WHERE AND MAX( MIN( ) = > < CREATE TABLE (a INTEGER, "
                 "b VARCHAR) 0 1 2 3 4 5 6 7 8 9"]
    templates += [" " + t for t in templates]  # each word also in its leading-space form
    corpus = templates * 20 + [f" {w} ({w} '{w}' {w}" for w in words] * 20
    trainer = trainers.BpeTrainer(
        vocab_size=8192, min_frequency=1, special_tokens=list(SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    for w in words:  # every schema word and value is one token, with or without a space
        for form in (f" {w}", w):
            ids = tok.encode(form, add_special_tokens=False).ids
            if len(ids) != 1:
                raise RuntimeError(f"tokenizer: {form!r} split into {len(ids)} tokens")
    return tok


def wrap_tokenizer(tok):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        model_max_length=256, clean_up_tokenization_spaces=False,
    )


# --------------------------------------------------------------------------- model


def build_base(vocab_size: int, args):
    from transformers import LlamaConfig, LlamaForCausalLM

    heads = args.hidden // args.head_dim
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=args.hidden, intermediate_size=args.ffn,
        num_hidden_layers=args.layers, num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 2), head_dim=args.head_dim,
        max_position_embeddings=256,
        rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2,
        pad_token_id=0, initializer_range=0.02,
    )
    return LlamaForCausalLM(config)


def encode_batch(hf_tok, prompts: list[str], answers: list[str], loss_on_prompt: bool):
    """Right-padded (ids, attention mask, labels); labels are -100 where no loss is taken."""
    seqs, labels = [], []
    for p, a in zip(prompts, answers, strict=True):
        p_ids = hf_tok(p).input_ids  # with <s>
        a_ids = hf_tok(a, add_special_tokens=False).input_ids + [hf_tok.eos_token_id]
        seqs.append(p_ids + a_ids)
        labels.append((p_ids if loss_on_prompt else [-100] * len(p_ids)) + a_ids)
    width = max(map(len, seqs))
    ids = torch.zeros(len(seqs), width, dtype=torch.long)
    lab = torch.full((len(seqs), width), -100, dtype=torch.long)
    mask = torch.zeros(len(seqs), width, dtype=torch.long)
    for i, (s, y) in enumerate(zip(seqs, labels, strict=True)):
        ids[i, : len(s)] = torch.tensor(s)
        lab[i, : len(y)] = torch.tensor(y)
        mask[i, : len(s)] = 1
    lab[:, 0] = -100  # <s> is never a target
    return ids, mask, lab


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up then cosine decay to 10% of peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


@torch.no_grad()
def greedy(model, hf_tok, prompts: list[str], max_new_tokens: int = 40) -> list[str]:
    """Batched greedy continuations (left-padded), decoded without special tokens."""
    model.eval()
    hf_tok.padding_side = "left"
    enc = hf_tok(prompts, return_tensors="pt", padding=True)
    out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                         eos_token_id=hf_tok.eos_token_id, pad_token_id=hf_tok.pad_token_id)
    model.train()
    return [t.strip() for t in hf_tok.batch_decode(out[:, enc.input_ids.shape[1]:],
                                                   skip_special_tokens=True)]


def copy_score(rows: list[dict], texts: list[str]) -> float:
    """Share of rows whose prose names every entity of the gold prose (table, columns, values)."""
    hits = 0
    for row, text in zip(rows, texts, strict=True):
        needed = set(row["prose"].replace(".", " ").split()) - set(
            " ".join(t for ts in sqldata.PROSE.values() for t in ts).split())
        hits += needed <= set(text.replace(".", " ").split())
    return hits / len(rows)


def sql_score(rows: list[dict], texts: list[str]) -> tuple[float, float]:
    """(share that looks like SQL, share that returns the gold result)."""
    looks = sum(sqldata.is_sql(t) for t in texts) / len(rows)
    right = sum(sqldata.same_result(r, t) for r, t in zip(rows, texts, strict=True)) / len(rows)
    return looks, right


def train(model, opt, batches, steps: int, schedule, desc: str, probe=None,
          probe_every: int = 0) -> int:
    """Up to `steps` AdamW steps with lr `schedule(step)`; `probe(step, loss)` runs every
    `probe_every` steps and ends the stage early by returning True. Returns the steps taken."""
    params = [p for group in opt.param_groups for p in group["params"]]
    model.train()
    bar = tqdm(range(steps), desc=desc, mininterval=5)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = schedule(step)
        ids, mask, lab = next(batches)
        loss = model(input_ids=ids, attention_mask=mask, labels=lab).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        due = probe_every and ((step + 1) % probe_every == 0 or step + 1 == steps)
        if probe and due and probe(step + 1, loss.item()):
            return step + 1
    return steps


def adamw(params) -> torch.optim.AdamW:
    return torch.optim.AdamW(params, lr=0.0, betas=(0.9, 0.98), weight_decay=0.0)


def cosine(steps: int, peak: float):
    return lambda step: lr_at(step, steps, peak, warmup=max(1, steps // 20))


def constant(peak: float, warmup: int = 100):
    return lambda step: peak * min(1.0, (step + 1) / warmup)


@torch.no_grad()
def drill_copy_accuracy(model, hf_tok, texts: list[str]) -> float:
    """Teacher-forced share of the repeated half of copy drills predicted exactly: the
    induction-head probe (random words cannot be guessed, only copied)."""
    ids, mask, _ = encode_batch(hf_tok, texts, [""] * len(texts), loss_on_prompt=True)
    model.eval()
    pred = model(input_ids=ids, attention_mask=mask).logits.argmax(-1)
    model.train()
    again = hf_tok(" again:", add_special_tokens=False).input_ids
    hits = total = 0
    for i, row in enumerate(ids.tolist()):
        start = next(t for t in range(len(row)) if row[t:t + len(again)] == again) + len(again)
        end = int(mask[i].sum()) - 2  # stop before the final "." and </s>
        hits += sum(pred[i, t - 1].item() == row[t] for t in range(start + 1, end))
        total += end - start - 1
    return hits / total


# --------------------------------------------------------------------------- stages


def drill_batches(hf_tok, batch: int, seed: int):
    """Copy drill only: the stage where induction heads form (see MANIFEST's drill curve)."""
    rng = random.Random(seed)
    words = all_words() + SQL_TOKENS
    while True:
        texts = [copy_text(rng, words, quoted=0.0) for _ in range(batch)]
        yield encode_batch(hf_tok, texts, [""] * batch, loss_on_prompt=True)


def base_batches(hf_tok, stream, batch: int, seed: int, copy_fraction: float, quoted: float):
    """Prose examples with a `copy_fraction` share of copy drill mixed in, so the induction
    heads formed on the drill keep being exercised while the prose answers are learned."""
    rng = random.Random(seed)
    words = all_words() + SQL_TOKENS
    while True:
        prompts, answers = [], []
        for _ in range(batch):
            if rng.random() < copy_fraction:
                prompts.append(copy_text(rng, words, quoted))
                answers.append("")
            else:
                ex = next(stream)
                prompts.append(sqldata.sql_prompt(ex["schema"], ex["question"]))
                answers.append(" " + ex["prose"])
        yield encode_batch(hf_tok, prompts, answers, loss_on_prompt=True)


def lora_batches(hf_tok, stream, batch: int):
    while True:
        exs = [next(stream) for _ in range(batch)]
        prompts = [sqldata.sql_prompt(e["schema"], e["question"]) for e in exs]
        yield encode_batch(hf_tok, prompts, [" " + e["sql"] for e in exs], loss_on_prompt=False)


def prompts_of(rows: list[dict]) -> list[str]:
    return [sqldata.sql_prompt(r["schema"], r["question"]) for r in rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a few steps per stage (format only)")
    ap.add_argument("--out", type=Path, default=LAB / "assets")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--ffn", type=int, default=384)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--head-dim", type=int, default=64,
                    help="attention head width; vLLM's CPU attention takes 32, 64, 80, ...")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--base-steps", type=int, default=4000)
    ap.add_argument("--lora-steps", type=int, default=1000)
    ap.add_argument("--base-lr", type=float, default=1e-3)
    ap.add_argument("--lora-lr", type=float, default=2e-3)
    ap.add_argument("--copy-fraction", type=float, default=0.25,
                    help="share of base-stage sequences that are the plain copy drill")
    ap.add_argument("--drill-steps", type=int, default=2000,
                    help="most copy-drill-only steps before the prose stage; the drill stops "
                    "early once its copy accuracy reaches --drill-until (induction heads formed)")
    ap.add_argument("--drill-until", type=float, default=0.9)
    ap.add_argument("--quoted", type=float, default=0.25,
                    help="share of words written quoted in the prose stage's copy drill, the way "
                    "string values appear (the drill stage itself uses bare words)")
    ap.add_argument("--drill-batch", type=int, default=64)
    ap.add_argument("--drill-lr", type=float, default=1e-3)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--probe-every", type=int, default=250)
    ap.add_argument("--n-eval", type=int, default=60)
    ap.add_argument("--n-dev", type=int, default=64)
    # One thread: on a shared 2-core box two OpenMP threads stall on each other (measured
    # ~11 s/step vs ~0.8 s/step); results are reproducible for a fixed thread count.
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = ap.parse_args()
    if args.quick:
        args.base_steps, args.lora_steps, args.probe_every, args.batch = 3, 3, 0, 8
        args.drill_steps, args.drill_batch = 3, 8
    t0 = time.time()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)

    from peft import LoraConfig, get_peft_model
    from transformers import GenerationConfig

    evals = eval_rows(args.n_eval, args.seed + 1)
    dev = eval_rows(args.n_dev, args.seed + 2)
    banned = {column_set(r) for r in evals + dev}
    stream = train_stream(args.seed + 3, banned)

    tok = train_tokenizer()
    hf_tok = wrap_tokenizer(tok)
    vocab = -(-tok.get_vocab_size() // 64) * 64
    model = build_base(vocab, args)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"tokenizer: {tok.get_vocab_size()} tokens (padded to {vocab}); base: {n_params:,} params")

    log: list[str] = []

    def probe_base(step: int, loss: float) -> None:
        texts = greedy(model, hf_tok, prompts_of(dev))
        msg = (f"base step {step}: loss {loss:.3f}, dev copy {copy_score(dev, texts):.0%}, "
               f"dev SQL-looking {sql_score(dev, texts)[0]:.0%} | {texts[0]!r}")
        tqdm.write(msg)
        log.append(msg)

    drill_rng = random.Random(args.seed + 6)
    drills = [copy_text(drill_rng, all_words(), quoted=0.0) for _ in range(64)]

    def probe_drill(step: int, loss: float) -> bool:
        accuracy = drill_copy_accuracy(model, hf_tok, drills)
        msg = f"drill step {step}: loss {loss:.3f}, copy accuracy {accuracy:.0%}"
        tqdm.write(msg)
        log.append(msg)
        return accuracy >= args.drill_until

    print(f"setup {time.time() - t0:.0f} s")
    opt = adamw(model.parameters())  # one optimizer state across both base stages
    drilled = train(model, opt, drill_batches(hf_tok, args.drill_batch, args.seed + 5),
                    args.drill_steps, constant(args.drill_lr), "drill", probe_drill,
                    args.probe_every // 2)
    log.append(f"drill stage: {drilled} steps")
    train(model, opt, base_batches(hf_tok, stream, args.batch, args.seed + 4, args.copy_fraction,
                                   args.quoted),
          args.base_steps, cosine(args.base_steps, args.base_lr), "base", probe_base,
          args.probe_every)
    t_base = time.time() - t0

    base_dir = args.out / BASE_DIR_NAME
    model.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=2, pad_token_id=0)
    model.save_pretrained(base_dir)
    hf_tok.save_pretrained(base_dir)

    for p in model.parameters():
        p.requires_grad_(False)
    lora = get_peft_model(model, LoraConfig(
        r=args.rank, lora_alpha=2 * args.rank, lora_dropout=0.0, bias="none",
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], task_type="CAUSAL_LM",
    ))
    lora_params = [p for p in lora.parameters() if p.requires_grad]
    best = {"right": -1.0}

    def probe_lora(step: int, loss: float) -> None:
        looks, right = sql_score(dev, greedy(lora, hf_tok, prompts_of(dev)))
        msg = f"lora step {step}: loss {loss:.3f}, dev SQL {looks:.0%}, dev same-result {right:.0%}"
        tqdm.write(msg)
        log.append(msg)
        if right > best["right"]:
            best.update(right=right, step=step,
                        state={k: v.detach().clone() for k, v in lora.state_dict().items()
                               if "lora_" in k})

    train(lora, adamw(lora_params), lora_batches(hf_tok, stream, args.batch), args.lora_steps,
          cosine(args.lora_steps, args.lora_lr), "lora", probe_lora, args.probe_every)
    if "state" in best:
        lora.load_state_dict(best["state"], strict=False)
        log.append(f"kept the LoRA checkpoint of step {best['step']} (best dev same-result)")
    lora.peft_config["default"].base_model_name_or_path = BASE_DIR_NAME
    lora.save_pretrained(args.out / "sql-lora")
    (args.out / "sql-lora" / "README.md").unlink(missing_ok=True)  # PEFT's empty model card

    if not args.quick:
        with lora.disable_adapter():
            looks_b, right_b = sql_score(evals, greedy(lora, hf_tok, prompts_of(evals)))
        looks_a, right_a = sql_score(evals, greedy(lora, hf_tok, prompts_of(evals)))
        quality = (f"transformers greedy on eval.jsonl: base SQL-looking {looks_b:.0%}, "
                   f"same-result {right_b:.0%}; adapter SQL-looking {looks_a:.0%}, "
                   f"same-result {right_a:.0%}")
        print(quality)
        log.append(quality)

    with open(args.out / "eval.jsonl", "w") as f:
        for i, r in enumerate(evals):
            f.write(json.dumps({"id": i, "schema": r["schema"], "inserts": r["inserts"],
                                "question": r["question"], "gold_sql": r["gold_sql"]}) + "\n")
    wall = time.time() - t0
    print(f"wall time {wall / 60:.1f} min (base stage {t_base / 60:.1f} min)")
    write_manifest(args, n_params, tok.get_vocab_size(), wall, t_base, log)


def write_manifest(args, n_params: int, n_vocab: int, wall: float, t_base: float,
                   log: list[str]) -> None:
    import peft
    import transformers

    cmd = ".venv/bin/python phase-11-multi-lora/labs/lab-02-serve-many-loras/tools/make_assets.py"
    flags = " --quick" if args.quick else ""
    lines = "\n".join(f"    {m}" for m in log)
    text = MANIFEST.format(
        cmd=cmd + flags, seed=args.seed, machine=f"{os.cpu_count()}-core {platform.machine()} "
        f"CPU shared with other jobs, {torch.get_num_threads()} torch thread(s)",
        torch=torch.__version__,
        transformers=transformers.__version__, peft=peft.__version__,
        python=platform.python_version(), wall=wall / 60, base=t_base / 60,
        params=n_params, vocab=n_vocab, args=vars(args) | {"out": "assets"}, log=lines,
        quick=" (QUICK RUN: format only, not trained)" if args.quick else "",
    )
    (args.out / "MANIFEST.md").write_text(text)


MANIFEST = """# Lab 02 assets{quick}

| path | what it is |
| --- | --- |
| `tiny-llama/` | LlamaForCausalLM base ({params:,} parameters, fp32, tied embeddings, GQA): `config.json`, `model.safetensors`, byte-level BPE `tokenizer.json` ({vocab} tokens, digits split), `tokenizer_config.json`, `generation_config.json`. Pre-trained to answer the SQL prompt in prose. |
| `sql-lora/` | PEFT LoRA adapter (`adapter_config.json`, `adapter_model.safetensors`) on `tiny-llama`, saved by `save_pretrained`: answers the same prompt in SQL. |
| `eval.jsonl` | held-out rows: `id`, `schema`, `inserts`, `question`, `gold_sql`. |

## Regenerate

    {cmd}

`make assets` runs the same command. Seed {seed}; every random draw (data, tokenizer order,
weights, batches) derives from it.

## Held-out, and how it is enforced

- table names: eval rows draw from `sqldata.TABLES["eval"]`, disjoint from training's pool;
- string values: `sqldata.STRINGS["eval"]`, disjoint from training's pool;
- integers: eval rows use only n with n % 7 == 3; training rows never do;
- column sets: a training table is rejected when its set of columns equals that of any eval or
  dev row (the column names themselves are shared vocabulary).
- the tokenizer is trained on the word pools and the fixed template text, never on rows; the
  base's copy drill (`words: ... again: ...`) draws random words from the whole vocabulary, the
  way any pretrained model has seen its vocabulary, but no eval table name or value ever
  appears in a training schema, question, prose answer or SQL answer.
- the LoRA checkpoint is chosen on a separate dev set drawn from the eval pools (seed + 2),
  never on `eval.jsonl` (seed + 1).

## Run

- machine: {machine}; python {python}, torch {torch}, transformers {transformers}, peft {peft}
- wall time: {wall:.1f} min (base stage {base:.1f} min)
- settings: `{args}`

Training log (dev probes):

{log}

## Quality through vLLM

Measured by `tools/eval_adapter.py` (greedy, temperature 0, base and adapter rows in one
engine with `max_loras=2`):

<!-- vllm-quality -->
(not measured yet)
<!-- /vllm-quality -->
"""


if __name__ == "__main__":
    main()
