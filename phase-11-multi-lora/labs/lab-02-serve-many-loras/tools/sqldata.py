"""Synthetic text-to-SQL data for lab 02: prompt template, generator, eval set, sqlite helpers.

Not graded. Pure standard library, so tests and tools can load it anywhere
(`labkit.load_support("lab-02", "tools.sqldata")`).

Every example is one table: a `CREATE TABLE` schema, the `INSERT` statements that fill it,
a question that names the schema's columns verbatim, and its gold `sql`. Two tenants are
trained on these rows (`tools/train_adapters.py`): the SQL tenant answers the question with
the query, the question tenant turns the query back into the canonical question.

Held-out by construction (`split="eval"`): table names and string values come from pools
disjoint from training's, integers from a disjoint residue class, and `train_stream` never
yields a row whose column set a held-out row has.

Seeded end to end: every draw goes through one `random.Random`, never through a set's order
(which follows `PYTHONHASHSEED`); `stream_digest` hashes a stream so two runs can be compared.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import sqlite3
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

PROMPT = (
    "[user] Write a SQL query to answer the question based on the table schema.\n\n"
    " context: {schema}\n\n question: {question} [/user] [assistant]"
)
QUESTION_PROMPT = (
    "[user] Write the question that this SQL query answers.\n\n"
    " context: {schema}\n\n query: {sql} [/user] [assistant]"
)
EVAL_PATH = Path(__file__).resolve().parents[1] / "assets" / "eval.jsonl"
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
    # the evaluation split's phrasings (final_paraphrase.jsonl): written after the tenant's
    # settings were chosen, in words neither training nor the selection set ("heldout") uses
    "final": {
        "eq": ("Show the {col} that goes with {c} {v}.",
               "Looking up {c} {v}, what {col} do we find?"),
        "count": ("Report how many {table} rows list {v} under {c}.",
                  "How often does {c} read {v}?"),
        "agg": ("Show the {ext} {col} that goes with {c} {v}.",
                "Looking up {c} {v}, what {ext} {col} do we find?"),
        "and": ("Show the {col} that goes with {c} {v} plus {c2} {v2}.",
                "Looking up {c} {v} together with {c2} {v2}, what {col} do we find?"),
        "cmp_count": ("Report how many {table} rows list a {c} {cmp} {v}.",
                      "How many times is {c} {cmp} {v} in {table}?"),
        "cmp_col": ("Show each {col} that goes with a {c} {cmp} {v}.",
                    "Looking up {c} {cmp} {v}, what {col} values do we find?"),
    },
}
PHRASINGS = ("canonical", "train", "heldout", "final")
CMP_WORDS = {"train": {">": "greater than", "<": "less than"},
             "heldout": {">": "above", "<": "below"},
             "final": {">": "over", "<": "under"}}
AGG_WORDS = {"train": {"MAX": "largest", "MIN": "smallest"},
             "heldout": {"MAX": "highest", "MIN": "lowest"},
             "final": {"MAX": "maximum", "MIN": "minimum"}}


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
        db.execute(nocase(schema))
        for statement in inserts:
            db.execute(statement)
        cursor = db.execute(sql)
        rows = cursor.fetchall()
        if cursor.description is None:
            raise sqlite3.OperationalError("sql: not a query (no result set)")
        return rows


def nocase(schema: str) -> str:
    """The schema with every VARCHAR column ``COLLATE NOCASE``: text compares case-insensitively.

    sql-create-context's golds are lower-cased ("lilongwe international airport") while a
    table (and a person) writes "Lilongwe International Airport"; the lab's own template
    values are lower-case already, so their verdicts are the same either way.
    """
    return re.sub(r"\bVARCHAR\b", "VARCHAR COLLATE NOCASE", schema)


def _folded(rows: list[tuple]) -> Counter:
    return Counter(tuple(v.casefold() if isinstance(v, str) else v for v in r) for r in rows)


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
    Text compares case-insensitively, in the table (``nocase``) and in the rows (case-folded).
    """
    gold = _folded(execute(row["schema"], row["inserts"], row["gold_sql"]))
    try:
        got = execute(row["schema"], row["inserts"], sql)
    except (sqlite3.Error, sqlite3.Warning):
        return False
    return _folded(got) == gold


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
    "train" (any training phrasing), "heldout" (phrasings and words training never uses: the
    selection split) or "final" (neither training nor the selection split uses them: the
    evaluation split).
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
        asked = question(phrasing, rng.choice(QUESTIONS[phrasing][kind]))
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


# --------------------------------------------------------------------------- sql-create-context
#
# The second style: questions as sql-create-context (the WikiSQL-derived dataset of vLLM's SQL
# LoRA examples and tests) writes them. A `table_name_NN` table whose schema lists only the
# columns the query uses (as that dataset does; sometimes one more), real-world snake_case
# columns, a value unquoted and in any case in the question, lower-case and double-quoted in
# the gold; columns named by paraphrase ("from X" -> college, "after week 10" -> week > 10),
# aggregates by their words ("largest", "earliest", "total", "average", "how many").
#
# Held out by DOMAIN: the domains of `CC_DOMAINS["select"]` (the selection split) and of
# `CC_DOMAINS["final"]` (the evaluation split) share no column and no value with training's
# nor with each other's (`cc_overlap` checks every pair). Scored by execution: text columns are created
# `COLLATE NOCASE` and text in results compares case-folded (`execute`, `same_result`), so
# "Lilongwe International Airport" in the table matches "lilongwe international airport" in
# the gold, as sql-create-context's lower-cased golds intend.

# A column: (words naming it, kind, values) where kind is "text" or "int" and values is a
# tuple of strings or an inclusive (low, high) range. Optional 4th item: the condition
# phrases that name the column by paraphrase ("from {v}"), used instead of its words.
def _c(words, kind, values, phrases=()):
    return (words, kind, values, phrases)


_NAMES = ("John Smith", "Mario Rossi", "Anna Berg", "Luis Ortega", "Kim Lee", "Omar Haddad",
          "Sara Novak", "Tom Brady", "Ken Sato", "Ivan Petrov")
CC_DOMAINS = {
    "train": {
        "nfl_draft": {
            "player": _c("player", "text", _NAMES),
            "position": _c("position", "text", ("Quarterback", "Linebacker", "Tight End",
                                                "Cornerback", "Wide Receiver", "Guard")),
            "college": _c("college", "text", ("Ohio State", "Notre Dame", "Alabama", "Texas A&M",
                                              "Michigan", "Stanford"), ("from {v}",)),
            "round": _c("round", "int", (1, 12)),
            "overall": _c("overall", "int", (1, 320)),
        },
        "nfl_schedule": {
            "week": _c("week", "int", (1, 17), ("after week {n}:>", "before week {n}:<",
                                                 "in week {n}:=")),
            "opponent": _c("opponent", "text", ("Chicago Bears", "Dallas Cowboys", "Miami Dolphins",
                                                "Detroit Lions", "New York Jets"),
                           ("against {v}", "against the {v}")),
            "result": _c("result", "text", ("W 24-17", "L 10-13", "W 31-7", "L 3-20", "T 14-14")),
            "attendance": _c("attendance", "int", (20000, 80000)),
        },
        "football_matches": {
            "home_team": _c("home team", "text", ("Carlton", "Essendon", "Geelong", "Hawthorn",
                                                  "Collingwood", "Fitzroy")),
            "away_team": _c("away team", "text", ("Richmond", "Melbourne", "St Kilda", "Footscray",
                                                  "South Melbourne", "North Melbourne")),
            "venue": _c("venue", "text", ("Princes Park", "Windy Hill", "Kardinia Park", "Mcg",
                                          "Victoria Park", "Lake Oval"), ("at {v}", "played at {v}")),
            "crowd": _c("crowd", "int", (5000, 60000)),
        },
        "films": {
            "title": _c("title", "text", ("The Long Road", "Night Train", "Blue Harbor",
                                          "Silent Hills", "Paper Moon", "Iron Sky"), ("titled {v}",)),
            "director": _c("director", "text", _NAMES, ("directed by {v}",)),
            "studio": _c("studio", "text", ("Paramount", "Universal", "Columbia", "Mgm", "Pixar")),
            "year": _c("year", "int", (1950, 2020), ("after {n}:>", "before {n}:<", "in {n}:=")),
        },
        "tv_episodes": {
            "episode_title": _c("episode title", "text", ("Pilot", "The Return", "Lost Souls",
                                                          "Homecoming", "Endgame"), ("titled {v}",)),
            "written_by": _c("writer", "text", _NAMES, ("written by {v}",)),
            "season": _c("season", "int", (1, 12)),
            "us_viewers": _c("us viewers", "int", (1, 30)),
        },
        "elections": {
            "district": _c("district", "text", ("Ohio 1", "Texas 4", "Iowa 2", "Utah 3", "Maine 1")),
            "incumbent": _c("incumbent", "text", _NAMES),
            "party": _c("party", "text", ("Democratic", "Republican", "Whig", "Independent")),
            "first_elected": _c("first elected", "int", (1950, 2010)),
        },
        "golf": {
            "player": _c("player", "text", _NAMES),
            "country": _c("country", "text", ("United States", "Scotland", "South Africa", "Spain",
                                              "Australia", "Japan"), ("from {v}",)),
            "score": _c("score", "int", (260, 300)),
            "money": _c("money", "int", (1000, 900000)),
        },
        "formula_one": {
            "driver": _c("driver", "text", _NAMES, ("driven by {v}",)),
            "constructor": _c("constructor", "text", ("Ferrari", "Williams", "Lotus", "Brabham",
                                                      "Tyrrell", "Mclaren")),
            "laps": _c("laps", "int", (10, 80)),
            "grid": _c("grid", "int", (1, 26)),
        },
        "medals": {
            "nation": _c("nation", "text", ("Norway", "Kenya", "Brazil", "Canada", "Poland", "Chile")),
            "gold": _c("gold medals", "int", (0, 40)),
            "silver": _c("silver medals", "int", (0, 40)),
            "bronze": _c("bronze medals", "int", (0, 40)),
        },
        "universities": {
            "institution": _c("institution", "text", ("Lake College", "Hill University",
                                                      "Bay Institute", "Rivers College")),
            "location": _c("location", "text", ("Springfield", "Riverside", "Fairview", "Georgetown",
                                                "Salem"), ("located in {v}", "in {v}")),
            "nickname": _c("nickname", "text", ("Tigers", "Eagles", "Bulldogs", "Wildcats", "Owls")),
            "enrollment": _c("enrollment", "int", (500, 40000)),
            "founded": _c("founded", "int", (1800, 1990), ("founded after {n}:>",
                                                           "founded before {n}:<")),
        },
        "songs": {
            "song": _c("song", "text", ("Blue Sky", "Hold On", "River Song", "Wild Heart",
                                        "Golden Days"), ("titled {v}",)),
            "artist": _c("artist", "text", ("The Rovers", "Mia Grey", "Echo Park", "Red Lane"),
                         ("by {v}",)),
            "album": _c("album", "text", ("First Light", "Northbound", "Open Road", "Neon")),
            "peak_position": _c("peak position", "int", (1, 100)),
        },
        "players_roster": {
            "player": _c("player", "text", _NAMES),
            "nationality_code": _c("country code", "text", ("Usa", "Can", "Fra", "Ger", "Ita")),
            "school_club_team": _c("school/club team", "text", ("Duke", "Kansas", "Ucla", "Syracuse",
                                                                "Kentucky"), ("who played for {v}",)),
            "years_in_toronto": _c("years in toronto", "text", ("1995-96", "2001-03", "1999", "2010")),
            "jersey_number": _c("jersey number", "int", (1, 55)),
        },
        "buildings": {
            "building": _c("building", "text", ("Tower One", "City Hall", "Grand Plaza", "Bank House")),
            "city": _c("city", "text", ("Chicago", "Houston", "Toronto", "Sydney", "Dubai"),
                       ("in {v}",)),
            "floors": _c("floors", "int", (5, 120)),
            "height_m": _c("height", "int", (20, 800)),
        },
    },
    # the selection split (select_sqlcc.jsonl): the forms of training's column words were
    # chosen knowing these domains' misses, so they measure nothing blind any more
    "select": {
        "airports": {
            "airport": _c("airport", "text", ("Lilongwe International Airport", "Kamuzu Airport",
                                              "Entebbe Airport", "Harare Airport", "Lusaka Airport")),
            "icao": _c("ICAO", "text", ("FWKI", "HUEN", "FVHA", "FLKK", "FWCL")),
            "iata": _c("IATA", "text", ("LLW", "EBB", "HRE", "LUN", "BLZ")),
            "passengers": _c("passengers", "int", (1000, 900000)),
        },
        "conclaves": {
            "elector": _c("elector", "text", ("Anchero Pantaleone", "Guido Fulcodi", "Simon Paltineri",
                                              "Odo Tusculum", "Riccardo Annibaldi")),
            "nationality": _c("nationality", "text", ("French", "Roman", "Milanese", "Neapolitan")),
            "faction": _c("faction", "text", ("Guelph", "Ghibelline", "Angevin")),
            "elevated": _c("elevated", "int", (1200, 1300), ("elevated after {n}:>",
                                                             "elevated before {n}:<")),
        },
        "wnba_draft": {
            "pick": _c("pick", "int", (1, 40)),
            "former_wnba_team": _c("former WNBA team", "text", ("Minnesota Lynx", "Seattle Storm",
                                                                "Phoenix Mercury", "Atlanta Dream"),
                                   ("that previously played for the {v}",)),
            "college_hometown": _c("college/hometown", "text", ("Baylor", "Uconn", "Rutgers", "Tulane")),
        },
        "table_tennis": {
            "mens_singles": _c("men's singles", "text", ("Werner Schlager", "Jan Ove Waldner",
                                                         "Ma Lin", "Timo Boll")),
            "womens_doubles": _c("women's doubles", "text", ("Li Ju Wang Nan", "Tie Ya Na Zhang Yi",
                                                             "Guo Yue Li Xiaoxia")),
            "edition": _c("edition", "int", (1, 60)),
        },
        "ships": {
            "ship": _c("ship", "text", ("Hms Victory", "Uss Maine", "Ss Atlantic", "Rms Celtic"),
                       ("named {v}",)),
            "builder": _c("builder", "text", ("Harland And Wolff", "John Brown", "Vickers", "Cammell"),
                          ("built by {v}",)),
            "launched": _c("launched", "int", (1850, 1950), ("launched after {n}:>",
                                                              "launched before {n}:<")),
            "tonnage": _c("tonnage", "int", (500, 50000)),
        },
    },
    # the evaluation split (final_sqlcc.jsonl): written after the settings were chosen, and
    # measured once per shipped tenant; no column and no value of another split's
    "final": {
        "cycling_stages": {
            "stage": _c("stage", "int", (1, 21), ("in stage {n}:=", "after stage {n}:>",
                                                  "before stage {n}:<")),
            "stage_winner": _c("stage winner", "text", ("Eddy Merckx", "Bernard Hinault",
                                                        "Miguel Indurain", "Fausto Coppi"),
                               ("won by {v}",)),
            "mountains_classification": _c("mountains classification", "text",
                                           ("Lucien Van Impe", "Federico Bahamontes",
                                            "Richard Virenque", "Charly Gaul")),
            "distance__km_": _c("distance (km)", "int", (90, 260)),
        },
        "lighthouses": {
            "lighthouse": _c("lighthouse", "text", ("Bell Rock", "Eddystone", "Fastnet",
                                                    "Skerryvore", "Bishop Rock")),
            "county": _c("county", "text", ("Cornwall", "Argyll", "Angus", "Kerry",
                                            "Pembrokeshire"), ("in {v}",)),
            "focal_height__m_": _c("focal height (m)", "int", (10, 120)),
            "first_lit": _c("first lit", "int", (1700, 1950), ("first lit after {n}:>",
                                                               "first lit before {n}:<")),
        },
        "boxing": {
            "boxer": _c("boxer", "text", ("Ezzard Charles", "Sonny Liston", "Jersey Joe Walcott",
                                          "Floyd Patterson", "Ingemar Johansson")),
            "division": _c("division", "text", ("Heavyweight", "Flyweight", "Bantamweight",
                                                 "Welterweight")),
            "knockouts": _c("knockouts", "int", (0, 60)),
            "title_defences": _c("title defences", "int", (0, 25)),
        },
        "recordings": {
            "conductor": _c("conductor", "text", ("Herbert Von Karajan", "Georg Solti",
                                                  "Seiji Ozawa", "Claudio Abbado"),
                            ("conducted by {v}",)),
            "orchestra": _c("orchestra", "text", ("Berlin Philharmonic", "Concertgebouw Orchestra",
                                                  "Vienna Philharmonic", "Boston Symphony")),
            "record_company": _c("record company", "text", ("Deutsche Grammophon", "Decca",
                                                            "Philips", "Sony Classical")),
            "recording_year": _c("recording year", "int", (1950, 2000),
                                 ("recorded after {n}:>", "recorded before {n}:<",
                                  "recorded in {n}:=")),
        },
        "volcanoes": {
            "volcano": _c("volcano", "text", ("Mount Etna", "Krakatoa", "Stromboli", "Mauna Loa",
                                              "Popocatepetl")),
            "volcano_type": _c("volcano type", "text", ("Stratovolcano", "Shield Volcano",
                                                        "Caldera", "Cinder Cone")),
            "elevation__m_": _c("elevation (m)", "int", (500, 6000)),
            "last_eruption": _c("last eruption", "int", (1800, 2020),
                                ("that last erupted after {n}:>", "that last erupted before {n}:<")),
        },
    },
}
CC_SPLITS = tuple(CC_DOMAINS)  # train, select (selection), final (evaluation)
# Aggregates by their words: (word, SQL function, only for these columns or None: any int).
CC_AGGS = (("largest", "MAX", None), ("highest", "MAX", None), ("most", "MAX", None),
           ("smallest", "MIN", None), ("lowest", "MIN", None), ("fewest", "MIN", None),
           ("earliest", "MIN", ("round", "year", "week", "season", "founded", "first_elected",
                                "elevated", "launched", "edition", "pick", "overall",
                                "stage", "first_lit", "recording_year", "last_eruption")),
           ("latest", "MAX", ("year", "week", "season", "founded", "first_elected", "elevated",
                              "launched", "edition", "stage", "first_lit", "recording_year",
                              "last_eruption")),
           ("total", "SUM", None), ("average", "AVG", None))
CC_ASK = ("What is the {t} {conds}?", "Name the {t} {conds}", "Which {t} is listed {conds}?",
          "Tell me the {t} {conds}", "What {t} is there {conds}?")
CC_ASK_AGG = ("What is the {agg} {t} {conds}?", "Name the {agg} {t} {conds}",
              "Tell me the {agg} {t} {conds}")
CC_ASK_COUNT = ("How many {t} have {conds}?", "What is the total number of {t} {conds}?",
                "How many {t} are there {conds}?")


# Synthetic training domains (split "train" only): made-up columns and values, so the tenant
# must copy them from the schema and the question, as it must on a domain it never saw. Column
# words take sql-create-context's punctuation ("women's doubles", "college/hometown", "no. of
# x", "x (y)") and the column is named from them as that dataset names it (`cc_column`).
# Nothing drawn here is a column or a value of a held-out domain (`_cc_is_held_out`).
SYNTHETIC = "synthetic"
# Training golds spell a value as the question does ("Minnesota Lynx"), held-out golds as
# sql-create-context does ("minnesota lynx"): scoring compares text case-insensitively, so both
# are right, and a small tenant copies a value far more reliably than it re-cases it.
CC_TRAIN_KEEPS_CASE = True
SYNTHETIC_SHARE = 0.5  # of the training rows in this style, the share from synthetic domains
_CC_NOUNS = _words(
    "team coach club league stadium captain manager owner sponsor engine chassis circuit race "
    "winner runner margin score record date region label format station frequency class status "
    "city county state province river mountain lake island bridge road route line stop "
    "company product brand model price series season episode chapter book author publisher "
    "singer band genre award category nominee result rank points goals assists wins losses "
    "draws games minutes height weight age position number code name title host guest judge "
    "school mascot colors conference division stage round leg tie partner surface "
    "opponent venue crowd attendance year month day time distance speed lap grid pole")
_SYLLABLES = _words("ka ri to ma ne lo sa vi du re ba mi go te la zo fe ni ku sho an el "
                    "or un is ar ven tor mal dis kel bran wik hol pen"
                    )


def cc_column(words: str) -> str:
    """The column sql-create-context names for ``words``: lower case, ``.`` and ``'`` dropped,
    any other character but a letter or digit made ``_`` ("U.S. viewers (millions)" ->
    ``us_viewers__millions_``)."""
    kept = words.lower().replace(".", "").replace("'", "")
    return "".join(ch if ch.isalnum() else "_" for ch in kept)


def cc_names(split: str) -> tuple[set[str], set[str]]:
    """The columns and the (lower-cased) text values of ``CC_DOMAINS[split]``'s domains."""
    cols = {c for d in CC_DOMAINS[split].values() for c in d}
    vals = {v.lower() for d in CC_DOMAINS[split].values() for spec in d.values()
            if spec[1] == "text" for v in spec[2]}
    return cols, vals


def _cc_is_held_out(column: str, values) -> bool:
    """Whether a column or a value is one of a held-out split's (selection or evaluation)."""
    for split in CC_SPLITS[1:]:
        cols, vals = cc_names(split)
        if column in cols or any(isinstance(v, str) and v.lower() in vals for v in values):
            return True
    return False


# possessives as sql-create-context's columns spell them ("men's singles" -> mens_singles)
_POSSESSORS = _words("men's women's boys' girls' children's people's players' owners' "
                     "city's team's")


def _made_up_word(rng: random.Random) -> str:
    """Two or three of ``_SYLLABLES`` run together ("kavito"): a word only copying finds."""
    return "".join(rng.sample(_SYLLABLES, rng.randint(2, 3)))


def _synthetic_words(rng: random.Random) -> str:
    """Words naming a made-up column: real nouns in sql-create-context's punctuation, a
    possessive, a made-up word, or an acronym the question writes in capitals ("KRT")."""
    a, b = rng.sample(_CC_NOUNS, 2)
    made_up = _made_up_word(rng)
    acronym = "".join(rng.sample("ABCDEFGHIKLMNOPRSTUVWXZ", rng.randint(2, 4)))
    form = rng.choice(("{a}", "{a} {b}", "{a}'s {b}" if a[-1] != "s" else "{a}' {b}",
                       "{p} {b}", "{p} {b}", "{a}/{b}", "{a} ({b})", "no. of {a}", "{a}-{b}",
                       "u.s. {a}", "{a} {b} (km)", "{m}", "{m} {b}", "{c}"))
    return form.format(a=a, b=b, p=rng.choice(_POSSESSORS), m=made_up, c=acronym)


_VALUE_WORDS = STRINGS["train"] + _CC_NOUNS + tuple(w.lower() for n in _NAMES for w in n.split())


def _synthetic_value(rng: random.Random, shape: str) -> str:
    """A code ("FWK"), a name of 1 to 4 words, or a made-up word: values only copying finds."""
    if shape == "code":
        letters = "ABCDEFGHIJKLMNOPRSTUVWXYZ"
        return "".join(rng.choice(letters) for _ in range(rng.randint(2, 4)))
    if shape == "made-up":
        return _made_up_word(rng).capitalize()
    words = rng.sample(_VALUE_WORDS, rng.randint(1, 4))
    return " ".join(w.capitalize() for w in words)


def _cc_usable(column: str) -> bool:
    """Whether sqlite takes ``column`` as a bare column name (a made-up "on" or "is" is a
    keyword)."""
    try:
        sqlite3.connect(":memory:").execute(f"CREATE TABLE t ({column} INTEGER)")
    except sqlite3.Error:
        return False
    return True


def synthetic_domain(rng: random.Random) -> dict:
    """A made-up domain in ``CC_DOMAINS``'s format: 2 to 5 columns, text ones with 4 to 6
    values (names of 1 to 4 made-up words, or codes), int ones with a range; none held out."""
    cols: dict = {}
    n = rng.randint(2, 5)
    while len(cols) < n or not any(s[1] == "text" for s in cols.values()):
        words = _synthetic_words(rng)
        column = cc_column(words)
        if rng.random() < 0.35:
            lo = rng.randint(0, 2000)
            spec = _c(words, "int", (lo, lo + rng.randint(10, 5000)))
        else:
            shape = rng.choice(("name", "name", "name", "code", "made-up"))
            # dict.fromkeys, not a set: a set's order follows PYTHONHASHSEED, so the training
            # stream would not be a function of the seed alone
            values = dict.fromkeys(_synthetic_value(rng, shape) for _ in range(6))
            spec = _c(words, "text", tuple(values))
        if column not in cols and _cc_usable(column) and not _cc_is_held_out(column, spec[2]):
            cols[column] = spec
    return cols


def cc_overlap() -> dict[tuple[str, str], dict[str, set]]:
    """For every pair of ``CC_SPLITS`` (train/select, train/final, select/final), the columns
    and text values their domains share: all empty, each split's domains are held out whole."""
    out = {}
    for i, a in enumerate(CC_SPLITS):
        for b in CC_SPLITS[i + 1:]:
            (ac, av), (bc, bv) = cc_names(a), cc_names(b)
            out[(a, b)] = {"columns": ac & bc, "values": av & bv}
    return out


def _cc_case(rng: random.Random, value: str) -> str:
    """The value as a person might type it: as stored, lower case, or capitalised."""
    return rng.choice((value, value.lower(), value.lower(), value.title()))


def _cc_condition(rng, col, spec, value, cmp_ok, lone, keep_case=False):
    """(question phrase, SQL condition) for one condition on ``col`` about ``value``; the gold
    value is lower case, or with ``keep_case`` spelled as the question spells it."""
    words, kind, _, phrases = spec
    if kind == "text":
        shown = _cc_case(rng, value)
        gold = shown if keep_case else value.lower()
        forms = [p.format(v=shown) for p in phrases]
        forms += [f"when the {words} is {shown}", f"with a {words} of {shown}",
                  f"when {shown} was the {words}", f"with {words} {shown}"]
        if lone:
            forms.append(f"for {shown}")  # the value alone names the only other column
            if not value.lower().startswith("the "):
                forms.append(f"for the {shown}")  # an article the gold leaves out
        return rng.choice(forms), f'{col} = "{gold}"'
    forms = [(f"with a {words} of {{n}}", "="), (f"when the {words} is {{n}}", "=")]
    if cmp_ok:
        forms += [(f"with a {words} larger than {{n}}", ">"),
                  (f"with a {words} smaller than {{n}}", "<"),
                  (f"with more than {{n}} {words}", ">"), (f"with less than {{n}} {words}", "<")]
        forms += [tuple(p.split(":")) for p in phrases]
    else:
        forms += [tuple(p.split(":")) for p in phrases if p.endswith(":=")]
    form, op = rng.choice(forms)
    return form.format(n=value), f"{col} {op} {value}"


def make_cc_example(rng: random.Random, split: str, domain: str | None = None) -> dict:
    """One sql-create-context style example whose gold result is not empty (nor 0, nor NULL):
    drafts from ``_cc_draft`` until one is (``_cc_draft`` explains the keys)."""
    while True:
        ex = _cc_draft(rng, split, domain)
        got = execute(ex["schema"], ex["inserts"], ex["sql"])
        if got and got not in ([(0,)], [(None,)]):
            return ex


def _cc_draft(rng: random.Random, split: str, domain: str | None = None) -> dict:
    """One sql-create-context style example from a domain of ``CC_DOMAINS[split]`` (in
    training, a ``SYNTHETIC_SHARE`` of them from a fresh ``synthetic_domain``, ``domain``
    "synthetic"; ``domain=SYNTHETIC`` asks for one).

    Keys as ``make_example``'s (``kind``, ``schema``, ``inserts``, ``question``, ``sql``) plus
    ``domain`` and ``style`` ("sql-create-context"); ``canonical`` is the question itself.
    At least one table row satisfies an equality condition; a comparison threshold splits
    the rows, so no gold result is vacuous by construction.
    """
    if split not in CC_SPLITS:
        raise ValueError(f"split: expected one of {CC_SPLITS}, got {split!r}")
    domains = CC_DOMAINS[split]
    if domain is None and split == "train" and rng.random() < SYNTHETIC_SHARE:
        domain = SYNTHETIC
    domain = domain or rng.choice(sorted(domains))
    if domain == SYNTHETIC and split == "train":
        cols = synthetic_domain(rng)
    elif domain in domains:
        cols = domains[domain]
    else:
        raise ValueError(f"domain: expected one of {sorted(domains)}, got {domain!r}")
    ints = [c for c, s in cols.items() if s[1] == "int"]
    kind = rng.choice(("eq", "eq", "eq", "and", "agg", "count"))
    if kind == "agg" and not ints:
        kind = "eq"
    target = rng.choice(ints) if kind == "agg" else rng.choice(sorted(cols))
    others = [c for c in cols if c != target]
    n_cond = 2 if kind == "and" or (kind != "eq" and rng.random() < 0.3) else 1
    n_cond = min(n_cond, len(others))
    conds = rng.sample(others, n_cond)
    used = [target, *conds]
    extra = [c for c in cols if c not in used]
    if extra and rng.random() < 0.25:
        used.append(rng.choice(extra))
    rng.shuffle(used)

    def value(col):
        spec = cols[col]
        return rng.randint(*spec[2]) if spec[1] == "int" else rng.choice(spec[2])

    rows = [{c: value(c) for c in used} for _ in range(rng.randint(4, 7))]
    match = rng.choice(rows)
    phrases, wheres = [], []
    for i, c in enumerate(conds):
        v = match[c]
        cmp_ok = cols[c][1] == "int" and i == len(conds) - 1
        phrase, where = _cc_condition(rng, c, cols[c], v, cmp_ok, lone=len(used) == 2,
                                      keep_case=split == "train" and CC_TRAIN_KEEPS_CASE)
        if " > " in where or " < " in where:  # a threshold strictly inside the column's values
            vals = sorted(r[c] for r in rows)
            n = rng.randint(vals[0], vals[-1] - 1) if vals[0] < vals[-1] else vals[0]
            phrase = phrase.replace(str(v), str(n), 1)
            where = where.rsplit(" ", 1)[0] + f" {n}"
        phrases.append(phrase)
        wheres.append(where)
    t_words = cols[target][0]
    if kind == "agg":
        word, fn, only = rng.choice([a for a in CC_AGGS if a[2] is None or target in a[2]])
        ask = rng.choice(CC_ASK_AGG).format(agg=word, t=t_words, conds=" and ".join(phrases))
        what = f"{fn}({target})"
    elif kind == "count":
        ask = rng.choice(CC_ASK_COUNT).format(t=t_words, conds=" and ".join(phrases))
        what = f"COUNT({target})"
    else:
        ask = rng.choice(CC_ASK).format(t=t_words, conds=" and ".join(phrases))
        what = target
    ask = ask[0].upper() + ask[1:]
    table = f"table_name_{rng.randint(1, 99)}"
    types = ", ".join(f"{c} {'INTEGER' if cols[c][1] == 'int' else 'VARCHAR'}" for c in used)

    def lit(v):
        return str(v) if isinstance(v, int) else "'" + v.replace("'", "''") + "'"

    return {
        "kind": kind, "style": "sql-create-context", "domain": domain,
        "schema": f"CREATE TABLE {table} ({types})",
        "inserts": [f"INSERT INTO {table} VALUES ({', '.join(lit(r[c]) for c in used)})"
                    for r in rows],
        "question": ask, "canonical": ask,
        "sql": f"SELECT {what} FROM {table} WHERE {' AND '.join(wheres)}",
    }


# vLLM's own SQL-LoRA rows (tests/lora/test_llama_tp.py, the single-table ones; their expected
# outputs there are yard1/llama-2-7b-sql-lora-test's), given a populated table here so they
# score by execution. Golds in sql-create-context's form: lower-case, double-quoted.
VLLM_ROWS = (
    ("CREATE TABLE table_name_74 (icao VARCHAR, airport VARCHAR)",
     "Name the ICAO for lilongwe international airport",
     'SELECT icao FROM table_name_74 WHERE airport = "lilongwe international airport"',
     [("FWKI", "Lilongwe International Airport"), ("FWCL", "Chileka International Airport"),
      ("FVHA", "Harare International Airport")]),
    ("CREATE TABLE table_name_11 (nationality VARCHAR, elector VARCHAR)",
     "When Anchero Pantaleone was the elector what is under nationality?",
     'SELECT nationality FROM table_name_11 WHERE elector = "anchero pantaleone"',
     [("French", "Guy de Bourgogne"), ("Roman", "Anchero Pantaleone"),
      ("Milanese", "Ottobono Fieschi")]),
    ("CREATE TABLE table_name_60 (pick INTEGER, former_wnba_team VARCHAR)",
     "What pick was a player that previously played for the Minnesota Lynx?",
     'SELECT pick FROM table_name_60 WHERE former_wnba_team = "minnesota lynx"',
     [(3, "Minnesota Lynx"), (7, "Seattle Storm"), (12, "Phoenix Mercury")]),
    ("CREATE TABLE table_28138035_4 (womens_doubles VARCHAR, mens_singles VARCHAR)",
     "Name the women's doubles for werner schlager",
     'SELECT womens_doubles FROM table_28138035_4 WHERE mens_singles = "werner schlager"',
     [("Li Ju Wang Nan", "Werner Schlager"), ("Guo Yue Li Xiaoxia", "Wang Liqin"),
      ("Tie Ya Na Zhang Yi", "Ma Lin")]),
)


def vllm_rows() -> list[dict]:
    """vLLM's four single-table test rows as held-out rows (``id``, ``gold_sql``, ...)."""
    out = []
    for i, (schema, question, gold, values) in enumerate(VLLM_ROWS):
        table = schema.split()[2]
        inserts = [f"INSERT INTO {table} VALUES ("
                   + ", ".join(str(v) if isinstance(v, int) else "'" + v.replace("'", "''") + "'"
                               for v in row) + ")" for row in values]
        out.append({"id": i, "kind": "eq", "style": "vllm", "domain": "vllm-tests-lora",
                    "schema": schema, "inserts": inserts, "question": question,
                    "canonical": question, "gold_sql": gold})
    return out


# --- the held-out sets and the training stream (tools/train_adapters.py) --------------------

STREAM_DIGEST_ROWS = 3000  # rows of a training stream hashed into MANIFEST.md's "Run"


def held_out(n: int, seed: int, phrasing: str) -> list[dict]:
    """``n`` rows from the eval pools, numbered, with the gold query under ``gold_sql``."""
    rng = random.Random(seed)
    rows = [make_example(rng, "eval", phrasing=phrasing) for _ in range(n)]
    return [{"id": i, **{("gold_sql" if k == "sql" else k): v for k, v in r.items()}}
            for i, r in enumerate(rows)]


def held_out_cc(n: int, seed: int, split: str = "select") -> list[dict]:
    """``n`` sql-create-context style rows from a held-out split's domains ("select": the
    selection split, "final": the evaluation split), cycling through them."""
    if split == "train":
        raise ValueError("split: training domains are not held out")
    rng = random.Random(seed)
    domains = sorted(CC_DOMAINS[split])
    rows = [make_cc_example(rng, split, domains[i % len(domains)]) for i in range(n)]
    return [{"id": i, **{("gold_sql" if k == "sql" else k): v for k, v in r.items()}}
            for i, r in enumerate(rows)]


def column_set(example: dict) -> frozenset[str]:
    """The column names of ``example``'s one-table schema."""
    body = example["schema"].split("(", 1)[1].rstrip(")")
    return frozenset(part.split()[0] for part in body.split(", "))


def train_stream(seed: int, banned: set[frozenset[str]], cc_share: float = 0.0) -> Iterator[dict]:
    """Endless training rows, in any training phrasing, never with a held-out column set;
    a ``cc_share`` of them in the sql-create-context style, from the training domains only.
    A function of its arguments alone: nothing in it depends on ``PYTHONHASHSEED``."""
    rng = random.Random(seed)
    while True:
        if cc_share and rng.random() < cc_share:
            yield make_cc_example(rng, "train")
            continue
        ex = make_example(rng, "train", phrasing="train")
        if column_set(ex) not in banned:
            yield ex


def stream_digest(rows: Iterable[dict], n: int = STREAM_DIGEST_ROWS) -> str:
    """sha256 of the first ``n`` rows (one sorted-key JSON line each): two runs drew the same
    training data exactly when their digests agree."""
    h = hashlib.sha256()
    taken = 0
    for row in rows:
        if taken == n:
            break
        h.update((json.dumps(row, sort_keys=True) + "\n").encode())
        taken += 1
    if taken < n:
        raise ValueError(f"rows: expected at least n={n} rows, got {taken}")
    return h.hexdigest()
