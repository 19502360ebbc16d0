"""Synthetic text-to-SQL data for lab 02: prompt template, generator, eval set, sqlite helpers.

Not graded. Pure standard library, so tests and tools can load it anywhere
(`labkit.load_support("lab-02", "sqldata")`).

Every example is one table: a `CREATE TABLE` schema, the `INSERT` statements that fill it,
a question that names the schema's columns verbatim, and its gold `sql`. Two tenants are
trained on these rows (`tools/train_adapters.py`): the SQL tenant answers the question with
the query, the question tenant turns the query back into the canonical question.

Held-out by construction (`split="eval"`): table names and string values come from pools
disjoint from training's, integers from a disjoint residue class, and column sets are
checked against the training sets by the caller (`tools/train_adapters.py`).
"""

from __future__ import annotations

import json
import random
import re
import sqlite3
from collections import Counter
from pathlib import Path

PROMPT = (
    "[user] Write a SQL query to answer the question based on the table schema.\n\n"
    " context: {schema}\n\n question: {question} [/user] [assistant]"
)
QUESTION_PROMPT = (
    "[user] Write the question that this SQL query answers.\n\n"
    " context: {schema}\n\n query: {sql} [/user] [assistant]"
)
EVAL_PATH = Path(__file__).resolve().parent / "assets" / "eval.jsonl"
SPLITS = ("train", "eval")


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


TABLES = {
    "train": _words(
        "people orders players cities books movies songs teams stores products employees "
        "students courses flights hotels cars ships planets rivers mountains museums parks "
        "schools clubs bands games awards events matches races tracks farms shops banks "
        "markets lakes islands bridges towers trains stations airports ports roads villages "
        "castles gardens theaters libraries hospitals factories mines festivals concerts "
        "albums artists authors drivers pilots doctors"
    ),
    "eval": _words(
        "singers lawyers nurses chefs sailors farmers painters dancers actors coaches judges "
        "tenants vendors clients patients voters donors members guests visitors buyers "
        "sellers workers rangers riders hikers divers miners bakers tailors"
    ),
}
TEXT_COLUMNS = _words(
    "name city country team color owner status brand genre region language category "
    "street title style club label state school venue"
)
INT_COLUMNS = _words(
    "age year price score rank floor weight points height size length rating goals wins "
    "seats pages speed stock salary votes"
)
STRINGS = {
    "train": _words(
        "amber azure coral ivory olive pearl ruby scarlet silver violet maple cedar birch "
        "willow aspen pine oak elm lotus tulip daisy iris jasmine orchid poppy rose lily "
        "falcon eagle hawk raven robin sparrow heron crane swan otter badger beaver fox wolf "
        "bear lynx tiger lion panther jaguar cobra viper python dragon phoenix griffin comet "
        "meteor nova nebula galaxy orbit lunar solar arctic tropic desert canyon glacier "
        "harbor meadow prairie summit valley delta lagoon reef tundra alpine coastal rapid "
        "quiet bright swift brave noble royal golden frozen hidden silent rustic urban "
        "paris lyon rome milan oslo berlin vienna prague dublin lisbon madrid athens cairo "
        "tokyo osaka seoul delhi lima quito bogota"
    ),
    "eval": _words(
        "indigo crimson copper bronze cobalt emerald jade onyx topaz garnet hazel sage "
        "thistle clover fern moss ember flint granite marble basalt quartz slate timber "
        "kestrel osprey condor pelican puffin walrus bison moose hyena gecko iguana "
        "toronto denver austin boston chicago"
    ),
}
# Integers: eval values are exactly those with n % 7 == 3; training never uses them.
INT_RANGE = (1, 999)
INT_EVAL_RESIDUE = (7, 3)

SQL_KEYWORDS = ("SELECT", "FROM", "WHERE", "AND", "COUNT", "MAX", "MIN")
# Question phrasings, per kind. The first is canonical (the eval set and the question tenant's
# target); training draws among all of "train"; "heldout" phrasings, with their own words for
# comparisons and extremes, never appear in training: they test the task, not the template.
QUESTIONS = {
    "train": {
        "eq": ("What is the {col} when {c} is {v}?", "Which {col} has {c} {v}?",
               "Give the {col} for {c} {v}.", "Find the {col} of the {table} row whose {c} is {v}."),
        "count": ("How many rows have {c} equal to {v}?", "Count the rows where {c} is {v}.",
                  "How many {table} have {c} {v}?", "What is the number of rows with {c} {v}?"),
        "agg": ("What is the {ext} {col} when {c} is {v}?",
                "Find the {ext} {col} among rows with {c} {v}.",
                "Which is the {ext} {col} for {c} {v}?"),
        "and": ("What is the {col} when {c} is {v} and {c2} is {v2}?",
                "Which {col} has {c} {v} and {c2} {v2}?",
                "Give the {col} where {c} is {v} and {c2} is {v2}."),
        "cmp_count": ("How many rows have {c} {cmp} {v}?", "Count the rows whose {c} is {cmp} {v}.",
                      "What is the number of {table} with {c} {cmp} {v}?"),
        "cmp_col": ("What is the {col} when {c} is {cmp} {v}?",
                    "List the {col} of rows whose {c} is {cmp} {v}.",
                    "Which {col} values have {c} {cmp} {v}?"),
    },
    "heldout": {
        "eq": ("Tell me the {col} for the entry with {c} {v}.",
               "For the record where {c} equals {v}, what {col} is recorded?"),
        "count": ("In {table}, how many entries show {c} as {v}?",
                  "Tell me how many records have {v} as their {c}."),
        "agg": ("Among the entries with {c} {v}, which {col} is the {ext}?",
                "Tell me the {ext} value of {col} for records where {c} equals {v}."),
        "and": ("Tell me the {col} for the entry whose {c} is {v} and whose {c2} is {v2}.",
                "For the record with {c} equal to {v} and {c2} equal to {v2}, what {col} is listed?"),
        "cmp_count": ("Tell me how many records have a {c} {cmp} {v}.",
                      "In {table}, how many entries have {c} {cmp} {v}?"),
        "cmp_col": ("Tell me the {col} for every record whose {c} is {cmp} {v}.",
                    "For entries with {c} {cmp} {v}, which {col} values are listed?"),
    },
}
PHRASINGS = ("canonical", "train", "heldout")
CMP_WORDS = {"train": {">": "greater than", "<": "less than"},
             "heldout": {">": "above", "<": "below"}}
AGG_WORDS = {"train": {"MAX": "largest", "MIN": "smallest"},
             "heldout": {"MAX": "highest", "MIN": "lowest"}}


def sql_prompt(schema: str, question: str) -> str:
    """The prompt the SQL adapter was trained on (vLLM's multi-LoRA example format)."""
    return PROMPT.format(schema=schema, question=question)


def question_prompt(schema: str, sql: str) -> str:
    """The question tenant's prompt: the same format, the query in place of the question."""
    return QUESTION_PROMPT.format(schema=schema, sql=sql)


def same_question(row: dict, text: str) -> bool:
    """True when ``text`` is the row's canonical question, exactly (surrounding blanks aside)."""
    return text.strip() == row["canonical"]


def load_eval(path: str | Path | None = None) -> list[dict]:
    """Rows of the held-out set: dicts with id, schema, inserts, question, gold_sql."""
    text = Path(path or EVAL_PATH).read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


_SQL_RE = re.compile(
    r"^\s*SELECT\s+\S.*?\s+FROM\s+\w+(\s+WHERE\s+\S.*)?\s*;?\s*$", re.IGNORECASE | re.DOTALL
)


def is_sql(text: str) -> bool:
    """True when `text` is shaped like `SELECT ... FROM table [WHERE ...]`, nothing else."""
    return _SQL_RE.match(text) is not None


def execute(schema: str, inserts: list[str], sql: str) -> list[tuple]:
    """Run the query `sql` against a fresh in-memory sqlite3 database of schema + inserts.

    Returns the fetched rows; raises sqlite3.Error (or sqlite3.Warning, which Python raises
    for a multi-statement string) when the SQL does not execute or is not a query (empty
    text, DDL, DML: no result set), the same meaning as the lab's ``sql_executes``.
    """
    if not sql.strip():
        raise sqlite3.OperationalError("sql: empty statement")
    with sqlite3.connect(":memory:") as db:
        db.execute(schema)
        for statement in inserts:
            db.execute(statement)
        cursor = db.execute(sql)
        rows = cursor.fetchall()
        if cursor.description is None:
            raise sqlite3.OperationalError("sql: not a query (no result set)")
        return rows


def executes(row: dict, sql: str) -> bool:
    """True when the query `sql` runs against the row's table (whatever rows it returns)."""
    try:
        execute(row["schema"], row["inserts"], sql)
    except (sqlite3.Error, sqlite3.Warning):
        return False
    return True


def same_result(row: dict, sql: str) -> bool:
    """True when `sql` executes on the row's table and returns the gold query's rows.

    Rows compare as a multiset: neither query has ORDER BY, so order is not part of the answer.
    """
    gold = Counter(execute(row["schema"], row["inserts"], row["gold_sql"]))
    try:
        got = execute(row["schema"], row["inserts"], sql)
    except (sqlite3.Error, sqlite3.Warning):
        return False
    return Counter(got) == gold


def side_counts(rows: list[dict], texts: list[str]) -> dict[str, int]:
    """How many of one side's outputs are SQL-shaped, execute, and return the gold result."""
    pairs = list(zip(rows, texts, strict=True))
    return {
        "sql": sum(is_sql(t) for _, t in pairs),
        "executes": sum(executes(r, t) for r, t in pairs),
        "same_result": sum(same_result(r, t) for r, t in pairs),
    }


# --------------------------------------------------------------------------- generator


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")


def sample_int(rng: random.Random, split: str) -> int:
    """An integer from the split's pool: eval ints are n % 7 == 3, training ints are not."""
    _check_split(split)
    mod, res = INT_EVAL_RESIDUE
    while True:
        n = rng.randint(*INT_RANGE)
        if (n % mod == res) == (split == "eval"):
            return n


def sample_columns(rng: random.Random) -> tuple[str, ...]:
    """3-5 distinct columns, at least one text and one integer column, in random order."""
    n = rng.randint(3, 5)
    n_int = rng.randint(1, n - 1)
    cols = rng.sample(TEXT_COLUMNS, n - n_int) + rng.sample(INT_COLUMNS, n_int)
    rng.shuffle(cols)
    return tuple(cols)


def _threshold(rng: random.Random, split: str, values: list[int]) -> int:
    """A pool integer that splits `values` when possible, so a comparison is never vacuous."""
    n = sample_int(rng, split)
    for _ in range(100):
        if values[0] < n < values[-1]:
            return n
        n = sample_int(rng, split)
    return n


def _literal(value: int | str) -> str:
    return str(value) if isinstance(value, int) else f"'{value}'"


def make_example(
    rng: random.Random, split: str, table: str | None = None,
    columns: tuple[str, ...] | None = None, phrasing: str = "canonical",
) -> dict:
    """One example: kind, schema, inserts, question, sql (and ``canonical``, the question in
    its canonical phrasing, which the question tenant is trained to write).

    ``table`` and ``columns`` default to fresh draws from the split's pools; at least one
    table row satisfies every equality condition, so the gold result is never vacuous.
    ``phrasing``: "canonical" (the first phrasing of each kind, no extra draw: the eval set),
    "train" (any training phrasing) or "heldout" (phrasings and words training never uses).
    """
    _check_split(split)
    if phrasing not in PHRASINGS:
        raise ValueError(f"phrasing: expected one of {PHRASINGS}, got {phrasing!r}")
    table = table or rng.choice(TABLES[split])
    columns = columns or sample_columns(rng)
    ints = [c for c in columns if c in INT_COLUMNS]

    def value(col: str) -> int | str:
        return sample_int(rng, split) if col in INT_COLUMNS else rng.choice(STRINGS[split])

    rows = [{c: value(c) for c in columns} for _ in range(rng.randint(4, 7))]
    kind = rng.choice(tuple(QUESTIONS["train"]))
    col, c, c2 = rng.sample(columns, 3)
    if kind == "agg":
        col = rng.choice(ints)
        c = rng.choice([x for x in columns if x != col])
    if kind.startswith("cmp"):
        c = rng.choice(ints)
        col = rng.choice([x for x in columns if x != c])
    match = rng.choice(rows)
    v, v2 = _literal(match[c]), _literal(match[c2])
    op = agg = None
    if kind == "eq":
        sql = f"SELECT {col} FROM {table} WHERE {c} = {v}"
    elif kind == "count":
        sql = f"SELECT COUNT(*) FROM {table} WHERE {c} = {v}"
    elif kind == "agg":
        agg = rng.choice(tuple(AGG_WORDS["train"]))
        sql = f"SELECT {agg}({col}) FROM {table} WHERE {c} = {v}"
    elif kind == "and":
        sql = f"SELECT {col} FROM {table} WHERE {c} = {v} AND {c2} = {v2}"
    else:
        op = rng.choice(tuple(CMP_WORDS["train"]))
        v = _literal(_threshold(rng, split, sorted(r[c] for r in rows)))
        what = "COUNT(*)" if kind == "cmp_count" else col
        sql = f"SELECT {what} FROM {table} WHERE {c} {op} {v}"
    fill = {"table": table, "col": col, "c": c, "c2": c2, "v": v, "v2": v2}

    def question(pool: str, template: str) -> str:
        words = {"cmp": CMP_WORDS[pool].get(op, ""), "ext": AGG_WORDS[pool].get(agg, "")}
        return template.format(**fill, **words)

    canonical = question("train", QUESTIONS["train"][kind][0])
    if phrasing == "canonical":
        asked = canonical
    else:
        pool = "train" if phrasing == "train" else "heldout"
        asked = question(pool, rng.choice(QUESTIONS[pool][kind]))
    types = ", ".join(f"{x} {'INTEGER' if x in INT_COLUMNS else 'VARCHAR'}" for x in columns)
    return {
        "kind": kind,
        "schema": f"CREATE TABLE {table} ({types})",
        "inserts": [
            f"INSERT INTO {table} VALUES ({', '.join(_literal(r[x]) for x in columns)})"
            for r in rows
        ],
        "question": asked,
        "canonical": canonical,
        "sql": sql,
    }
