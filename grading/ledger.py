"""The promise ledger: every sentence a lab's starter docstrings state is tied to the tests that
check it, or read as context (not a promise), in one place per lab.

    grading/promises/<lab>.toml

The reverse of ``spec_check``'s message rule (a test's wording must be in the docs): here every
documented sentence must reach a test. One table per docstring, keyed as the code spells its
owner (``"<module>"``, ``shrink``, ``"SlotCache.acquire"``), plus ``"README.md"`` for promises the
README makes; each key of a table is a short phrase quoted from that docstring, its value either
the tests that check it or a string saying why the sentence is context, not a promise::

    [shrink]
    "Returns (T, r) = x @ A.T" = ["test_shrink_projects_into_the_rank_r_bottleneck"]
    "in x's dtype" = ["test_shrink_projects_into_the_rank_r_bottleneck"]

    ["<module>"]
    "Layouts follow PEFT" = "context: names the layout the shape promises below state"

Checked both ways, statically (nothing is imported or run):

1. every sentence of every public docstring of ``starter.py`` (the module, public functions,
   classes and their public methods and properties, ``__init__``) contains at least one phrase
   of its owner's table: no sentence is left out of the ledger;
2. every phrase occurs in its owner's docstring (``README.md``: in the README), whitespace
   collapsed: the ledger cannot quote a sentence the docs no longer say;
3. every test a phrase names is a test function (or a ``Test*`` class, or a name bound to a
   state machine's ``TestCase``) in one of the lab's ``test_*.py`` files; ``file.py::name``
   picks one file;
4. every test name the README cites in backticks (``test_shrink_*`` as a glob) names a test;
5. a phrase with an empty list of tests is a promise with no test: a defect. A string value (the
   sentence is context) must say why, and a promise never hides behind one: rewording the
   sentence so that it promises nothing is the way to drop a test.

A sentence is a run of text ending in ``.``, ``!`` or ``?`` before a capital letter, a backtick,
a quote or a bracket, or a bullet (``- `` at the start of a line).
"""

from __future__ import annotations

import ast
import fnmatch
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from grading.runner import LABS_SUBDIR

LEDGERS = Path("grading/promises")  # <lab>.toml
MODULE, README = "<module>", "README.md"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z`\"'(\[])")


def collapse(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def sentences(doc: str) -> list[str]:
    """The sentences of a docstring: bullets first, then ``.``/``!``/``?`` ends."""
    out = []
    for chunk in re.split(r"\n\s*- ", "\n" + doc):
        out += [s for s in _SENTENCE_END.split(collapse(chunk)) if s]
    return out


def docstrings(source: str) -> dict[str, str]:
    """Owner -> docstring for every public docstring of a starter."""
    tree = ast.parse(source)
    found = {MODULE: ast.get_docstring(tree) or ""}

    def public(name: str) -> bool:
        return not name.startswith("_") or name == "__init__"

    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef) and public(node.name):
            if doc := ast.get_docstring(node):
                found[node.name] = doc
            if isinstance(node, ast.ClassDef):
                for sub in node.body:
                    if (isinstance(sub, ast.FunctionDef) and public(sub.name)
                            and (doc := ast.get_docstring(sub))):
                        found[f"{node.name}.{sub.name}"] = doc
    return {k: v for k, v in found.items() if v}


def test_names(folder: Path) -> dict[str, set[str]]:
    """Test file name -> the test functions and test classes it defines."""
    names: dict[str, set[str]] = {}
    for path in sorted(folder.glob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        here = names.setdefault(path.name, set())
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test") or isinstance(node, ast.ClassDef):
                here.add(node.name)
            elif isinstance(node, ast.Assign):  # TestMachine = Machine.TestCase
                here.update(t.id for t in node.targets
                            if isinstance(t, ast.Name) and t.id.startswith("Test"))
    return names


@dataclass
class Coverage:
    lab: str
    sentences: int = 0
    promises: int = 0
    with_test: int = 0
    context: int = 0
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (f"{self.lab}: promise ledger: {self.promises} promises, {self.with_test} with a "
                f"test, {self.promises - self.with_test} without; {self.context} context "
                f"phrases; {self.sentences} docstring sentences")


def ledger_path(repo: Path, lab: str) -> Path:
    return repo / LEDGERS / f"{lab}.toml"


def check(repo: Path, lab: str) -> Coverage | None:
    """The lab's ledger coverage and problems, or None when the lab has no ledger."""
    path = ledger_path(repo, lab)
    if not path.is_file():
        return None
    cov = Coverage(lab)
    rel = path.relative_to(repo)
    folder = repo / LABS_SUBDIR / lab
    try:
        ledger = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        cov.problems.append(f"{rel}: cannot parse ({err})")
        return cov
    docs = docstrings((folder / "starter.py").read_text(encoding="utf-8"))
    readme = folder / README
    texts = {owner: collapse(doc) for owner, doc in docs.items()}
    texts[README] = collapse(readme.read_text(encoding="utf-8")) if readme.is_file() else ""
    tests = test_names(folder)
    everywhere = set().union(*tests.values()) if tests else set()

    for owner, table in ledger.items():
        if owner not in texts:
            cov.problems.append(f"{rel}: [{owner}] is no public docstring of starter.py")
            continue
        if not isinstance(table, dict):
            cov.problems.append(f"{rel}: [{owner}] must be a table of phrase = tests")
            continue
        for phrase, value in table.items():
            where = f"{rel}: [{owner}] {phrase!r}"
            if collapse(phrase) not in texts[owner]:
                cov.problems.append(f"{where}: the phrase is not in {owner}'s "
                                    f"{'text' if owner == README else 'docstring'}")
            if isinstance(value, str):
                cov.context += 1
                if not value.strip():
                    cov.problems.append(f"{where}: a context phrase must say why it is no "
                                        "promise")
                continue
            cov.promises += 1
            if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
                cov.problems.append(f"{where}: expected a list of test names or a string")
                continue
            if not value:
                cov.problems.append(f"{where}: a promise with no test")
                continue
            missing = [t for t in value if not _exists(t, tests, everywhere)]
            if missing:
                cov.problems.append(f"{where}: no such test in {lab}'s test files: "
                                    f"{', '.join(missing)}")
            else:
                cov.with_test += 1

    for cited in sorted(set(re.findall(r"`(test_[\w*]*)`", texts[README]))):
        if not any(fnmatch.fnmatchcase(name, cited) for name in everywhere):
            cov.problems.append(f"{lab}/README.md cites `{cited}`, which names no test of the lab")

    for owner, doc in docs.items():
        phrases = [collapse(p) for p in ledger.get(owner, {})] \
            if isinstance(ledger.get(owner), dict) else []
        for sentence in sentences(doc):
            cov.sentences += 1
            if not any(p and p in sentence for p in phrases):
                cov.problems.append(f"{rel}: [{owner}] a docstring sentence with no phrase in "
                                    f"the ledger: {sentence[:100]!r}")
    return cov


def _exists(test: str, tests: dict[str, set[str]], everywhere: set[str]) -> bool:
    if "::" in test:
        file, name = test.split("::", 1)
        return name in tests.get(file, set())
    return test in everywhere


def lab_defects(repo: Path, lab: str) -> list[str]:
    cov = check(repo, lab)
    return [] if cov is None else [f"ledger: {p}" for p in cov.problems]
