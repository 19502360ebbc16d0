"""Lab 02's tenants' data (``tools/sqldata.py``, ``tools/train_adapters.py``, ``assets/``).

The held-out sets and the training stream are the instructors' tools, not the student's code:
their specs live here, beside the other tools' (``test_lab02_base_model.py``,
``test_lab02_demo.py``), and run in ``make test``, not in the lab's fast suite. What they
promise: no two splits share a domain's column or value, each split's phrasings are its own,
the shipped sets are what the default seed draws, the training stream is a function of the
seed alone, and every gold answer fits the evaluation's token budget.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from labkit import load_support

sqldata = load_support("lab-02", "tools.sqldata")
evaluation = load_support("lab-02", "tools.evaluation")
base_model = load_support("lab-02", "tools.base_model")


def test_sql_create_context_domains_are_held_out_whole():
    overlap = sqldata.cc_overlap()
    assert set(overlap) == {("train", "select"), ("train", "final"), ("select", "final")}
    shared = {pair: names for pair, names in overlap.items() if any(names.values())}
    assert not shared, (
        f"no two splits' domains may share a column or a value (training, selection, "
        f"evaluation): {shared}")
    for split in ("select", "final"):
        rows = evaluation.load(f"{split}_sqlcc")
        assert {r["domain"] for r in rows} == set(sqldata.CC_DOMAINS[split]), (
            f"{split}_sqlcc.jsonl must cover every domain of CC_DOMAINS[{split!r}] and only those")


def test_the_evaluation_phrasings_are_used_by_no_other_split():
    """final_paraphrase.jsonl asks in templates and words that neither training nor the
    selection split (``QUESTIONS["heldout"]``) has: every row in one of its own kind's."""
    final = {t for ts in sqldata.QUESTIONS["final"].values() for t in ts}
    others = {t for pool in ("train", "heldout") for ts in sqldata.QUESTIONS[pool].values()
              for t in ts}
    assert final and not final & others, final & others
    for words in (sqldata.CMP_WORDS, sqldata.AGG_WORDS):
        used = {w for pool in ("train", "heldout") for w in words[pool].values()}
        assert not set(words["final"].values()) & used, words

    def pattern(template: str) -> str:  # the template with each {field} matching any text
        return re.sub(r"\\\{\w+\\\}", ".+", re.escape(template))

    asked = {r["id"]: [t for t in sqldata.QUESTIONS["final"][r["kind"]]
                       if re.fullmatch(pattern(t), r["question"])]
             for r in evaluation.load("final_paraphrase")}
    assert all(asked.values()), {i: t for i, t in asked.items() if not t}
    assert len({t for ts in asked.values() for t in ts}) > len(sqldata.QUESTIONS["final"]), (
        "final_paraphrase.jsonl must ask in the final phrasings, and in more than one per kind")


def test_the_shipped_sets_are_the_seeds_and_training_bans_their_column_sets():
    """Every held-out set in assets/ is what ``train_adapters.data`` draws at the default seed,
    and the training stream never yields a template row with a column set of the evaluation
    split's or the selection split's template-style rows. In a subprocess, as the tool runs:
    train_adapters imports its neighbours (and torch) from tools/."""
    code = """if True:
        import json, sys
        sys.path.insert(0, sys.argv[1])
        import sqldata, train_adapters as t
        sets, _, banned = t.data(t.SEED)
        for name in ("eval.jsonl", "select_paraphrase.jsonl", "final_paraphrase.jsonl"):
            assert {sqldata.column_set(r) for r in sets[name]} <= banned, name
        stream = t.streams(t.SEED, ["sql-lora"], banned)["sql-lora"]
        drawn = [next(stream) for _ in range(1000)]
        leaked = [r for r in drawn if r.get("style") is None and sqldata.column_set(r) in banned]
        print(json.dumps({"sets": sets, "leaked": len(leaked)}))
    """
    tools = Path(sqldata.__file__).parent
    run = subprocess.run([sys.executable, "-c", code, str(tools)], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout)
    assert out["leaked"] == 0, f"{out['leaked']} training rows have a held-out column set"
    assert sorted(Path(name).stem for name in out["sets"]) == sorted(
        evaluation.PATHS[s].stem for s in evaluation.ROLE)
    for name, rows in out["sets"].items():
        assert rows == sqldata.load_eval(evaluation.ASSETS / name), (
            f"assets/{name} is not the default seed's draw: rerun tools/train_adapters.py")


def test_every_gold_answer_fits_the_eval_token_budget():
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(base_model.base_model_dir() / "tokenizer.json"))
    rows = [r for split in evaluation.ROLE for r in evaluation.load(split)]
    longest = max(rows, key=lambda r: len(tok.encode(" " + r["gold_sql"]).ids))
    n = len(tok.encode(" " + longest["gold_sql"]).ids)
    assert n + 1 <= evaluation.MAX_TOKENS, (  # + 1: the EOS that ends the answer
        f"a gold answer of {n} tokens does not fit max_tokens={evaluation.MAX_TOKENS}: {longest}")


def test_synthetic_training_domains_hold_no_held_out_column_or_value():
    import random

    rng = random.Random(0)
    held = [sqldata.cc_names(split) for split in ("select", "final")]
    cols, vals = (set().union(*names) for names in zip(*held, strict=True))
    for _ in range(300):
        ex = sqldata.make_cc_example(rng, "train", sqldata.SYNTHETIC)
        used = set(re.findall(r"(\w+) (?:VARCHAR|INTEGER)", ex["schema"]))
        quoted = {v.lower() for v in re.findall(r'"([^"]*)"', ex["sql"])}
        assert not used & cols and not quoted & vals, f"a held-out name in training: {ex}"
    assert sqldata.cc_column("U.S. viewers (millions)") == "us_viewers__millions_"
    assert sqldata.cc_column("Women's doubles") == "womens_doubles"
    assert not sqldata._cc_usable("on") and sqldata._cc_usable("kavito"), "a keyword as a column"
    with pytest.raises(ValueError, match="domain"):
        sqldata.make_cc_example(rng, "select", sqldata.SYNTHETIC)


def test_the_training_stream_is_a_function_of_the_seed_alone():
    """Two processes under different ``PYTHONHASHSEED`` draw the same training rows: nothing
    in ``sqldata.train_stream`` iterates a set (whose order follows the hash seed)."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import sqldata; "
            "print(sqldata.stream_digest(sqldata.train_stream(11, set(), 0.6), 500))")
    runs = [subprocess.Popen([sys.executable, "-c", code, str(Path(sqldata.__file__).parent)],
                             env={**os.environ, "PYTHONHASHSEED": h}, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for h in ("1", "2")]
    out = [run.communicate(timeout=60) for run in runs]
    digests = [stdout.strip() for stdout, _ in out]
    assert all(len(d) == 64 for d in digests), f"the digest run failed: {out}"
    assert digests[0] == digests[1], (
        f"PYTHONHASHSEED=1 and =2 drew different training rows ({digests}): a set's order "
        "leaks into the stream")


def test_sql_create_context_rows_are_in_its_style_and_not_vacuous():
    rows = [r for split in ("select_sqlcc", "final_sqlcc", "vllm") for r in evaluation.load(split)]
    for r in rows:
        assert re.match(r"CREATE TABLE table_(name_)?\d+", r["schema"]), r["schema"]
        assert "'" not in r["gold_sql"] and '"' not in r["question"], (
            f"values are double-quoted in the gold and unquoted in the question: {r}")
        got = sqldata.execute(r["schema"], r["inserts"], r["gold_sql"])
        assert got and got not in ([(0,)], [(None,)]), f"vacuous gold result {got} for {r}"


def test_text_compares_case_insensitively_and_the_icao_row_scores():
    row = evaluation.load("vllm")[0]
    assert row["question"] == "Name the ICAO for lilongwe international airport"
    right = "SELECT icao FROM table_name_74 WHERE airport = 'Lilongwe International Airport'"
    wrong = "SELECT airport FROM table_name_74 WHERE icao = 'lilongwe international airport'"
    assert sqldata.same_result(row, right) and sqldata.same_result(row, right.upper())
    assert not sqldata.same_result(row, wrong)


def test_sql_create_context_values_are_unquoted_in_the_question_and_copied_in_the_gold():
    import random

    rng = random.Random(0)
    for split in sqldata.CC_SPLITS:
        for _ in range(200):
            ex = sqldata.make_cc_example(rng, split)
            synthetic = split == "train" and ex["domain"] == sqldata.SYNTHETIC
            assert synthetic or ex["domain"] in sqldata.CC_DOMAINS[split], ex
            for value in re.findall(r'"([^"]*)"', ex["sql"]):
                if split != "train":  # sql-create-context's golds: the question's, lower-cased
                    assert value == value.lower() and value in ex["question"].lower(), (
                        f"a held-out gold value is the question's, lower-cased: {value!r} in {ex}")
                else:  # training golds copy the question's spelling (sqldata.CC_TRAIN_KEEPS_CASE)
                    assert value in ex["question"], (
                        f"a training gold value is spelled as in the question: {value!r} in {ex}")
