"""Every error-message fragment a test matches, and every literal it compares a returned field
with, is written where the student reads it.

    python -m grading.spec_check [--labs lab-01 ...] [--repo DIR]

A student who writes a correct, clearly-erroring implementation must not fail a test because its
message lacks a word that only ``test_*.py`` states. This check reads each lab's test files with
``ast`` (nothing is imported or run) and reports every message pattern that neither the lab's
``starter.py`` nor its ``README.md`` states. ``check_starters`` (and so ``check_suite``) counts
each one as a defect of its lab.

The other way round, each lab's promise ledger (``grading/promises/<lab>.toml``, read by
``grading/ledger.py``) ties every sentence of the starter's docstrings to the tests that check it;
this check prints each lab's coverage (promises, promises with a test, none without) and fails on
a promise with no test, a sentence missing from the ledger, or a test that does not exist.
A lab in parts must also list, once per part in its README, exactly the functions its starter
leaves as TODOs below that part's marker (``grading/parts.py``).

The rule, precisely:

1. **Which patterns.** In every ``test_*.py`` of a lab folder: the ``match=`` of
   ``pytest.raises(...)``; the pattern of ``excinfo.match(...)`` on a name bound by
   ``with pytest.raises(...) as excinfo``; and the pattern of ``re.search|match|fullmatch(
   pattern, message)`` where ``message`` is a ``str(...)`` call or a name bound to one in the same
   function (``message = str(err.value)``). Other regular expressions (parsing a log) are not
   messages and are left alone.
2. **Resolving a pattern**, statically. A string constant is itself; ``+`` and f-strings are
   resolved part by part. A name takes every value it can hold: a local assignment (including a
   tuple unpacked from a module-level dict, ``call, name = BAD_CALLS[case]``: every entry), a
   ``@pytest.mark.parametrize`` argument (every case), a helper function's parameter (the
   argument of every call to the helper in that file), a module-level constant. A part that is a
   number, or that cannot be resolved, is the test's own *value*, and so is a run of literal
   digits in the pattern (``row 3``, ``load\\(0\\)``): each becomes a placeholder.
3. **What the docs must contain.** The anchors ``^ $ \\A \\Z`` are dropped and each placeholder
   becomes ``\\S+`` (the docs name a value with a stand-in such as ``N``, ``R`` or
   ``<adapter_id>``, or with an example number). The result is a regular expression; it must
   ``re.search`` the lab's ``starter.py`` or ``README.md``, each read with every run of whitespace
   collapsed to one space (a docstring may wrap a message across lines).
4. **Skipped.** A pattern with no letter left outside placeholders, escapes and character
   classes (``match="9"``, ``rf"(?<![\\d-]){value}(?!\\d)"``) states no wording: it is counted as
   a value check, not looked up.
5. **Literals a returned field is compared with.** The same reading applies to the strings a
   test compares a field of a returned record with: ``cap.dtype == "float16"`` (also element
   by element, ``(cap.device, cap.dtype) == ("cuda", "float16")``), ``"weight" in
   c.figure.lower()``, ``topic in figures`` with ``topic`` looping over a tuple of strings and
   ``figures`` bound to an expression that reads a field. A field is an attribute read that is
   not a method called (``sql_text.upper()`` is not one). Each such literal (an f-string's
   values become ``\\S+``) must occur in the starter or README, ignoring case (a test that
   lower-cases a field names its words in any case); a literal with no letter or digit
   (``""``) is skipped, and so are a literal the test itself passes to a call (an echo of its
   own input, ``pin("ghost")`` then ``"ghost" in message``) and a text that must be absent
   (``"None" not in message``). This is how a format (``0.32.0``, not ``v0.32.0``) or a word a test
   finds a record by (a ``Check.figure`` containing "rank") reaches the student.
"""

from __future__ import annotations

import argparse
import ast
import itertools
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from grading import ledger, parts
from grading.runner import LABS_SUBDIR, TOOLING_ROOT, lab_names
from labkit.loader import names_lab

VALUE = "\x00"  # placeholder for a value the test computes; becomes \S+ in the docs' pattern
DOC_VALUE = r"\S+"
MAX_CASES = 256  # resolving stops multiplying cases past this many (a pathological test file)
MAX_DEPTH = 8  # helper -> caller -> ... chains followed at most this deep
RE_FUNCS = ("search", "match", "fullmatch")


@dataclass(frozen=True)
class Fragment:
    """One message pattern a test matches, resolved: ``pattern`` is the regex the docs need."""

    lab: str
    file: str  # the test file's name
    line: int
    source: str  # the pattern as the test writes it
    pattern: str | None  # None: only the test's own values, nothing to look up
    kind: str = "message"  # "message": an error-message pattern; "field": a compared literal

    def where(self) -> str:
        return f"{self.file}:{self.line}"


# --- resolving expressions to the strings they can hold -------------------------------------


def _callee(node: ast.Call) -> tuple[str | None, str]:
    """``(owner, name)`` of a call: ``pytest.raises(...)`` -> ("pytest", "raises"),
    ``helper(...)`` -> (None, "helper"), ``f().g(...)`` -> ("?", "g")."""
    func = node.func
    if isinstance(func, ast.Attribute):
        return (func.value.id if isinstance(func.value, ast.Name) else "?"), func.attr
    return None, func.id if isinstance(func, ast.Name) else ""


def _params_of(decorators: list[ast.expr]) -> dict[str, list[ast.expr]]:
    """Argument name -> one expression per case, from ``@pytest.mark.parametrize`` decorators."""
    found: dict[str, list[ast.expr]] = {}
    for dec in decorators:
        if not (isinstance(dec, ast.Call) and _callee(dec)[1] == "parametrize" and len(dec.args) >= 2):
            continue
        names_node, values_node = dec.args[0], dec.args[1]
        if isinstance(names_node, ast.Constant) and isinstance(names_node.value, str):
            names = [n.strip() for n in names_node.value.split(",") if n.strip()]
        elif isinstance(names_node, ast.List | ast.Tuple):
            names = [n.value for n in names_node.elts if isinstance(n, ast.Constant)]
        else:
            continue
        if not isinstance(values_node, ast.List | ast.Tuple):
            continue
        for case in values_node.elts:
            if isinstance(case, ast.Call) and _callee(case)[1] == "param":
                case = ast.Tuple(elts=case.args) if len(names) > 1 else case.args[0]
            elements = case.elts if len(names) > 1 and isinstance(case, ast.Tuple) else [case]
            for name, element in zip(names, elements, strict=False):
                found.setdefault(name, []).append(element)
    return found


class Module:
    """One test file: its constants, functions and the call sites of each function."""

    def __init__(self, tree: ast.Module) -> None:
        self.consts: dict[str, list[ast.expr]] = {}
        self.functions: dict[str, ast.FunctionDef] = {}
        for node in tree.body:
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    for name, value in _unpack(target, node.value, self.consts):
                        self.consts.setdefault(name, []).extend(value)
            elif isinstance(node, ast.FunctionDef):
                self.functions[node.name] = node
        self.calls: dict[str, list[tuple[ast.Call, ast.FunctionDef]]] = {}
        for caller in self.functions.values():
            for node in ast.walk(caller):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                        and node.func.id in self.functions):
                    self.calls.setdefault(node.func.id, []).append((node, caller))


def _unpack(target: ast.expr, value: ast.expr,
            consts: dict[str, list[ast.expr]]) -> list[tuple[str, list[ast.expr]]]:
    """What each name of an assignment target can hold: ``a = v``, ``a, b = x, y`` and
    ``a, b = TABLE[key]`` with ``TABLE`` a module-level dict of tuples (every entry)."""
    if isinstance(target, ast.Name):
        return [(target.id, [value])]
    if not isinstance(target, ast.Tuple):
        return []
    if isinstance(value, ast.Tuple) and len(value.elts) == len(target.elts):
        return [pair for t, v in zip(target.elts, value.elts, strict=True)
                for pair in _unpack(t, v, consts)]
    if isinstance(value, ast.Subscript) and isinstance(value.value, ast.Name):
        rows = [row for table in consts.get(value.value.id, []) if isinstance(table, ast.Dict)
                for row in table.values if isinstance(row, ast.Tuple)]
        return [(t.id, [row.elts[i] for row in rows if i < len(row.elts)])
                for i, t in enumerate(target.elts) if isinstance(t, ast.Name)]
    return []


def _locals(func: ast.FunctionDef, consts: dict[str, list[ast.expr]]) -> dict[str, list[ast.expr]]:
    found: dict[str, list[ast.expr]] = {}
    for node in ast.walk(func):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                for name, values in _unpack(target, node.value, consts):
                    found.setdefault(name, []).extend(values)
    return found


def resolve(expr: ast.expr, func: ast.FunctionDef | None, mod: Module,
            depth: int = 0) -> list[str | None]:
    """Every string ``expr`` can be, ``None`` for a value (a number, or unresolvable)."""
    if depth > MAX_DEPTH:
        return [None]
    if isinstance(expr, ast.Constant):
        return [expr.value] if isinstance(expr.value, str) else [None]
    if isinstance(expr, ast.JoinedStr):
        parts = [_formatted(v, func, mod, depth) for v in expr.values]
        return _joined(parts)
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Add):
        left, right = resolve(expr.left, func, mod, depth), resolve(expr.right, func, mod, depth)
        if all(v is not None for v in left + right):
            return _joined([left, right])
        return [None]
    if isinstance(expr, ast.Name):
        return _resolve_name(expr.id, func, mod, depth)
    return [None]


def _formatted(value: ast.expr, func, mod: Module, depth: int) -> list[str]:
    if isinstance(value, ast.Constant):
        return [value.value]
    inner = resolve(value.value, func, mod, depth) if isinstance(value, ast.FormattedValue) \
        else [None]
    return [VALUE if v is None else v for v in inner]


def _joined(parts: list[list[str | None]]) -> list[str | None]:
    out: list[str | None] = []
    for combo in itertools.product(*parts):
        out.append("".join(combo))  # type: ignore[arg-type]
        if len(out) >= MAX_CASES:
            break
    return out


def _resolve_name(name: str, func: ast.FunctionDef | None, mod: Module,
                  depth: int) -> list[str | None]:
    if func is not None:
        local = _locals(func, mod.consts).get(name)
        if local:
            return _flat(resolve(e, func, mod, depth + 1) for e in local)
        params = _params_of(func.decorator_list).get(name)
        if params:
            return _flat(resolve(e, func, mod, depth + 1) for e in params)
        args = [a.arg for a in func.args.args]
        if name in args:
            index, found = args.index(name), []
            for call, caller in mod.calls.get(func.name, []):
                given = [k.value for k in call.keywords if k.arg == name]
                given += call.args[index:index + 1]
                found += [resolve(g, caller, mod, depth + 1) for g in given[:1]]
            if found:
                return _flat(found)
    if name in mod.consts:
        return _flat(resolve(e, None, mod, depth + 1) for e in mod.consts[name])
    return [None]


def _flat(lists) -> list[str | None]:
    return list(dict.fromkeys(v for values in lists for v in values))[:MAX_CASES]


# --- finding the message patterns -----------------------------------------------------------


def _str_names(func: ast.FunctionDef) -> set[str]:
    """Names bound to ``str(...)`` in ``func``: ``message = str(err.value)``."""
    return {t.id for node in ast.walk(func) if isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Call) and _callee(node.value) == (None, "str")
            for t in node.targets if isinstance(t, ast.Name)}


def _raises_names(func: ast.FunctionDef) -> set[str]:
    """Names bound by ``with pytest.raises(...) as name``."""
    return {item.optional_vars.id for node in ast.walk(func) if isinstance(node, ast.With)
            for item in node.items if isinstance(item.context_expr, ast.Call)
            and _callee(item.context_expr)[1] == "raises"
            and isinstance(item.optional_vars, ast.Name)}


def message_patterns(func: ast.FunctionDef) -> list[tuple[int, ast.expr]]:
    """(line, pattern expression) of every error-message match in ``func``."""
    strs, excinfos = _str_names(func), _raises_names(func)
    found = []
    for node in ast.walk(func):
        if not isinstance(node, ast.Call):
            continue
        owner, name = _callee(node)
        if name == "raises" and owner in ("pytest", None):
            found += [(node.lineno, k.value) for k in node.keywords if k.arg == "match"]
        elif owner == "re" and name in RE_FUNCS and len(node.args) >= 2:
            message = node.args[1]
            if (isinstance(message, ast.Call) and _callee(message) == (None, "str")) or (
                    isinstance(message, ast.Name) and message.id in strs):
                found.append((node.lineno, node.args[0]))
        elif name == "match" and owner in excinfos and node.args:
            found.append((node.lineno, node.args[0]))
    return found


# --- from a test's pattern to what the docs must contain ------------------------------------

_TOKEN = re.compile(r"\\.|\[(?:\\.|[^\]\\])*\]|\{\d*,?\d*\}|\d+|.", re.DOTALL)


def doc_pattern(pattern: str) -> str | None:
    """The regex the docs must match for a test's message pattern, or None when it states no
    wording (only values). Literal digit runs and placeholders become ``\\S+``; anchors go."""
    out = []
    for token in _TOKEN.findall(pattern):
        if token in ("^", "$", r"\A", r"\Z"):
            continue
        out.append(DOC_VALUE if token == VALUE or token.isdigit() else token)
    regex = "".join(out)
    literals = "".join(t for t in _TOKEN.findall(regex) if len(t) == 1)  # no escapes, classes
    return regex if re.search(r"[A-Za-z]", literals) else None


def collapse(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def _reads_field(expr: ast.expr, assigned: dict[str, list[ast.expr]], depth: int = 0) -> bool:
    """``expr`` reads a field (an attribute that is not a method called), itself or through a
    local name bound to such an expression."""
    called = {id(n.func) for n in ast.walk(expr) if isinstance(n, ast.Call)}
    for node in ast.walk(expr):
        if isinstance(node, ast.Attribute) and id(node) not in called:
            return True
        if (isinstance(node, ast.Name) and depth < MAX_DEPTH
                and any(_reads_field(v, assigned, depth + 1) for v in assigned.get(node.id, []))):
            return True
    return False


def _is_text(expr: ast.expr) -> bool:
    return (isinstance(expr, ast.Constant) and isinstance(expr.value, str)) \
        or isinstance(expr, ast.JoinedStr)


def _loop_strings(func: ast.FunctionDef) -> dict[str, list[ast.expr]]:
    """``for name in ("a", "b"):`` -> name: the string constants it takes."""
    found: dict[str, list[ast.expr]] = {}
    for node in ast.walk(func):
        if (isinstance(node, ast.For) and isinstance(node.target, ast.Name)
                and isinstance(node.iter, ast.Tuple | ast.List)
                and node.iter.elts and all(_is_text(e) for e in node.iter.elts)):
            found.setdefault(node.target.id, []).extend(node.iter.elts)
    return found


def field_literals(func: ast.FunctionDef, consts: dict[str, list[ast.expr]]
                   ) -> list[tuple[int, ast.expr]]:
    """(line, literal) of every string a returned field is compared with in ``func`` (rule 5)."""
    assigned, loops = _locals(func, consts), _loop_strings(func)
    echoed = _passed_strings(func)
    found = []
    for node in ast.walk(func):
        if not (isinstance(node, ast.Compare) and len(node.ops) == 1):
            continue
        left, op, right = node.left, node.ops[0], node.comparators[0]
        if isinstance(op, ast.Eq | ast.NotEq):
            pairs = [(left, right)]
            if isinstance(left, ast.Tuple) and isinstance(right, ast.Tuple) \
                    and len(left.elts) == len(right.elts):
                pairs = list(zip(left.elts, right.elts, strict=True))
            for a, b in pairs:
                for lit, other in ((a, b), (b, a)):
                    if _is_text(lit) and not _is_text(other) and _reads_field(other, assigned):
                        found.append((node.lineno, lit))
        elif isinstance(op, ast.In) and _reads_field(right, assigned):
            lits = [left] if _is_text(left) else (
                loops.get(left.id, []) if isinstance(left, ast.Name) else [])
            found += [(node.lineno, lit) for lit in lits]
    return [(line, lit) for line, lit in found
            if not (isinstance(lit, ast.Constant) and lit.value in echoed)]


def _passed_strings(func: ast.FunctionDef) -> set[str]:
    """Strings the test itself passes to a call: finding one back in a field is an echo of the
    test's own input, not a wording the docs must state."""
    return {arg.value for node in ast.walk(func) if isinstance(node, ast.Call)
            for arg in [*node.args, *(k.value for k in node.keywords)]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str)}


def literal_pattern(value: str) -> str | None:
    """The regex the docs must match for a compared literal: the text itself, escaped, each of
    the test's own values ``\\S+``; None when nothing but values and punctuation is left."""
    parts = value.split(VALUE)
    if not re.search(r"[A-Za-z0-9]", "".join(parts)):
        return None
    return DOC_VALUE.join(re.escape(collapse(p)) for p in parts)


def lab_fragments(repo: Path, lab: str) -> list[Fragment]:
    """Every message pattern in ``lab``'s test files, resolved."""
    fragments = []
    for test_file in sorted((repo / LABS_SUBDIR / lab).glob("test_*.py")):
        tree = ast.parse(test_file.read_text(encoding="utf-8"), filename=str(test_file))
        mod = Module(tree)
        for func in mod.functions.values():
            for line, expr in message_patterns(func):
                source = ast.unparse(expr)
                for value in resolve(expr, func, mod):
                    pattern = None if value is None else doc_pattern(value)
                    fragments.append(Fragment(lab, test_file.name, line, source, pattern))
            for line, expr in field_literals(func, mod.consts):
                source = ast.unparse(expr)
                for value in resolve(expr, func, mod):
                    pattern = None if value is None else literal_pattern(value)
                    fragments.append(Fragment(lab, test_file.name, line, source, pattern,
                                              "field"))
    return list(dict.fromkeys(fragments))


def lab_problems(repo: Path, lab: str) -> tuple[list[Fragment], list[str]]:
    """The lab's fragments, and one line per fragment its starter and README do not state."""
    folder = repo / LABS_SUBDIR / lab
    docs = [folder / "starter.py", folder / "README.md"]
    text = collapse("\n".join(p.read_text(encoding="utf-8") for p in docs if p.is_file()))
    try:
        fragments = lab_fragments(repo, lab)
    except SyntaxError as err:
        return [], [f"{Path(err.filename or '?').name}:{err.lineno}: cannot parse ({err.msg})"]
    problems = []
    for f in fragments:
        if f.pattern is None:
            continue
        if f.kind == "field":
            if not re.search(f.pattern, text, re.IGNORECASE):
                problems.append(f"{f.where()}: a test compares a returned field with "
                                f"{f.source}, but neither starter.py nor README.md states it "
                                f"(looked for r'{f.pattern}', any case); write it in the "
                                f"starter's docstring")
            continue
        try:
            found = re.search(f.pattern, text)
        except re.error as err:
            problems.append(f"{f.where()}: cannot read the message pattern {f.source} "
                            f"({err})")
            continue
        if not found:
            problems.append(f"{f.where()}: a test matches {f.source} in an error message, but "
                            f"neither starter.py nor README.md states it (looked for "
                            f"r'{f.pattern}'); write it in the starter's docstring")
    return fragments, problems


def lab_defects(repo: Path, lab: str) -> list[str]:
    """``check_starters``' view: one defect per undocumented message fragment, one per
    problem of the lab's promise ledger (``grading/ledger.py``: a promise with no test), and one
    per disagreement of its README's part lists with the starter (``grading/parts.py``)."""
    listed = parts.part_problems(repo / LABS_SUBDIR / lab) or []
    return ([f"spec: {p}" for p in lab_problems(repo, lab)[1]] + ledger.lab_defects(repo, lab)
            + [f"parts: {p}" for p in listed])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grading.spec_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--labs", nargs="*", help="only these labs (folder names or lab-0N)")
    parser.add_argument("--repo", type=Path, default=TOOLING_ROOT,
                        help="the course repository (default: this one)")
    args = parser.parse_args(argv)
    labs = [lab for lab in lab_names(args.repo)
            if not args.labs or any(names_lab(w, lab) for w in args.labs)]
    if not labs:
        parser.error(f"--labs: expected some of {lab_names(args.repo)}, got {args.labs}")
    missing = unledgered = unlisted = 0
    for lab in labs:
        fragments, problems = lab_problems(args.repo, lab)
        values = sum(f.pattern is None for f in fragments)
        fields = sum(f.kind == "field" for f in fragments)
        print(f"{lab}: {len(fragments) - fields} message patterns and {fields} compared literals "
              f"({values} values only), {len(problems)} not stated in starter.py or README.md")
        for p in problems:
            print(f"  {p}")
        missing += len(problems)
        listed = parts.part_problems(args.repo / LABS_SUBDIR / lab)
        if listed is not None:
            print(f"{lab}: README's per-part function lists and files, {len(listed)} disagreeing "
                  f"with starter.py")
            for p in listed:
                print(f"  {p}")
            unlisted += len(listed)
        cov = ledger.check(args.repo, lab)
        if cov is None:
            print(f"{lab}: no promise ledger ({ledger.ledger_path(args.repo, lab).relative_to(args.repo)})")
            continue
        print(cov.line())
        for p in cov.problems:
            print(f"  {p}")
        unledgered += len(cov.problems)
    failed = missing or unledgered or unlisted
    print(f"\n{'FAIL' if failed else 'OK'}: {missing} undocumented patterns or literals, "
          f"{unledgered} promise-ledger problems, {unlisted} part-list problems")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
