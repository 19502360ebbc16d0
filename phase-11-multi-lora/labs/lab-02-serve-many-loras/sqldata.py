"""Synthetic text-to-SQL data for lab 02: prompt template, generator, eval set, sqlite helpers.

Not graded. Pure standard library, so tests and tools can load it anywhere
(`labkit.load_support("lab-02", "sqldata")`).

Every example is one table: a `CREATE TABLE` schema, the `INSERT` statements that fill it,
a question that names the schema's columns verbatim, and two answers for the same question:
`sql` (what the SQL adapter is trained to write) and `prose` (what the base model is
pre-trained to write, naming the same table, columns and values, with no SQL keyword).

Held-out by construction (`split="eval"`): table names and string values come from pools
disjoint from training's, integers from a disjoint residue class, and column sets are
checked against the training sets by the caller (`tools/make_assets.py`).
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
# Prose answers: several phrasings per question kind; none contains an SQL keyword.
PROSE = {
    "eq": (
        "The answer is the {col} of the row in the {table} table whose {c} is {v}.",
        "Look up the row of {table} with {c} {v} and read its {col}.",
        "It is the {col} listed in {table} for the row whose {c} is {v}.",
    ),
    "count": (
        "The answer is the number of rows in the {table} table whose {c} is {v}.",
        "Count the rows of {table} that have {c} equal to {v}.",
    ),
    "agg": (
        "The answer is the {ext} {col} among rows of the {table} table whose {c} is {v}.",
        "Take the rows of {table} with {c} {v} and report the {ext} {col}.",
    ),
    "and": (
        "The answer is the {col} of the row in the {table} table whose {c} is {v} "
        "and whose {c2} is {v2}.",
        "Look up the row of {table} with {c} {v} and {c2} {v2} and read its {col}.",
    ),
    "cmp_count": (
        "The answer is the number of rows in the {table} table whose {c} is {cmp} {v}.",
        "Count the rows of {table} that have {c} {cmp} {v}.",
    ),
    "cmp_col": (
        "The answer is the {col} of each row in the {table} table whose {c} is {cmp} {v}.",
        "Read the {col} of the rows of {table} that have {c} {cmp} {v}.",
    ),
}
CMP_WORDS = {">": "greater than", "<": "less than"}
AGG_WORDS = {"MAX": "largest", "MIN": "smallest"}


def sql_prompt(schema: str, question: str) -> str:
    """The prompt the SQL adapter was trained on (vLLM's multi-LoRA example format)."""
    return PROMPT.format(schema=schema, question=question)


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
    """Run `sql` against a fresh in-memory sqlite3 database built from schema + inserts.

    Returns the fetched rows; raises sqlite3.Error (or sqlite3.Warning, which Python
    raises for a multi-statement string) when the SQL does not execute.
    """
    if not sql.strip():
        raise sqlite3.OperationalError("sql: empty statement")
    with sqlite3.connect(":memory:") as db:
        db.execute(schema)
        for statement in inserts:
            db.execute(statement)
        return db.execute(sql).fetchall()


def executes(row: dict, sql: str) -> bool:
    """True when `sql` runs against the row's table (whatever it returns)."""
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
    rng: random.Random, split: str, table: str | None = None, columns: tuple[str, ...] | None = None
) -> dict:
    """One example: schema, inserts, question, sql, prose (and its kind).

    `table` and `columns` default to fresh draws from the split's pools; at least one
    table row satisfies every equality condition, so the gold result is never vacuous.
    """
    _check_split(split)
    table = table or rng.choice(TABLES[split])
    columns = columns or sample_columns(rng)
    ints = [c for c in columns if c in INT_COLUMNS]

    def value(col: str) -> int | str:
        return sample_int(rng, split) if col in INT_COLUMNS else rng.choice(STRINGS[split])

    rows = [{c: value(c) for c in columns} for _ in range(rng.randint(4, 7))]
    kind = rng.choice(("eq", "count", "agg", "and", "cmp_count", "cmp_col"))
    col, c, c2 = rng.sample(columns, 3)
    fill: dict[str, str] = {"table": table, "col": col, "c": c, "c2": c2}
    if kind == "agg":
        col = rng.choice(ints)
        c = rng.choice([x for x in columns if x != col])
        fill.update(col=col, c=c)
    if kind.startswith("cmp"):
        c = rng.choice(ints)
        col = rng.choice([x for x in columns if x != c])
        fill.update(col=col, c=c)
    match = rng.choice(rows)
    v, v2 = _literal(match[c]), _literal(match[c2])
    fill.update(v=v, v2=v2)
    if kind == "eq":
        question = f"What is the {col} when {c} is {v}?"
        sql = f"SELECT {col} FROM {table} WHERE {c} = {v}"
    elif kind == "count":
        question = f"How many rows have {c} equal to {v}?"
        sql = f"SELECT COUNT(*) FROM {table} WHERE {c} = {v}"
    elif kind == "agg":
        agg = rng.choice(tuple(AGG_WORDS))
        fill["ext"] = AGG_WORDS[agg]
        question = f"What is the {AGG_WORDS[agg]} {col} when {c} is {v}?"
        sql = f"SELECT {agg}({col}) FROM {table} WHERE {c} = {v}"
    elif kind == "and":
        question = f"What is the {col} when {c} is {v} and {c2} is {v2}?"
        sql = f"SELECT {col} FROM {table} WHERE {c} = {v} AND {c2} = {v2}"
    else:
        op = rng.choice(tuple(CMP_WORDS))
        v = _literal(_threshold(rng, split, sorted(r[c] for r in rows)))
        fill.update(cmp=CMP_WORDS[op], v=v)
        if kind == "cmp_count":
            question = f"How many rows have {c} {CMP_WORDS[op]} {v}?"
            sql = f"SELECT COUNT(*) FROM {table} WHERE {c} {op} {v}"
        else:
            question = f"What is the {col} when {c} is {CMP_WORDS[op]} {v}?"
            sql = f"SELECT {col} FROM {table} WHERE {c} {op} {v}"
    types = ", ".join(f"{x} {'INTEGER' if x in INT_COLUMNS else 'VARCHAR'}" for x in columns)
    return {
        "kind": kind,
        "schema": f"CREATE TABLE {table} ({types})",
        "inserts": [
            f"INSERT INTO {table} VALUES ({', '.join(_literal(r[x]) for x in columns)})"
            for r in rows
        ],
        "question": question,
        "sql": sql,
        "prose": rng.choice(PROSE[kind]).format(**fill),
    }
