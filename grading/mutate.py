"""Mutants and patch-sized alternatives as edits of a lab's solution, applied at check time.

    python -m grading.mutate --check [--labs lab-01 ...]   # every edit still applies (no pytest)
    python -m grading.mutate --show lab-01/missing_scale    # the variant's diff against solution.py

``grading/mutants/<lab>.toml`` holds one lab's variants, each an edit of its ``solution.py``::

    [[mutant]]
    name = "missing_scale"
    bug = "the forward never applies scale = lora_alpha / r to the expanded delta"
    function = "batched_lora_forward"     # a top-level function, "Class.method", or "<module>"
    old = '...'                           # must occur exactly once inside that function
    new = '...'

A bug that needs several edits lists them as ``[[mutant.edit]]`` tables, each with its own
``function``/``old``/``new``. ``[[alternative]]`` (a different but correct implementation, with
``idea`` instead of ``bug``) takes edits the same way; genuinely different alternatives stay whole
files in ``grading/alternatives/<lab>/*.py``.

An edit is applied by locating the function with ``ast`` and replacing ``old``, which must occur
exactly once inside it (``<module>``: once in the file, outside every function and class); the
result must parse and its AST must differ. Anything else is an error naming the lab, the variant
and the function, so a change to a solution can never silently turn a mutant into a copy.

Forced fail (mutmut's idea), generated and never stored: every function or method that the lab's
``starter.py`` leaves as a TODO (its body raises ``NotImplementedError``: the student's surface;
given code is not graded) gets a variant whose body, docstring kept, is
``raise RuntimeError("forced fail: <name>")``; some test must fail against it. A callable no test
can reach is exempted by name, with the reason, in the lab's ``[forced_fail_exempt]`` table.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import functools
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from grading.runner import LABS_SUBDIR, TOOLING_ROOT, lab_names
from labkit.loader import names_lab

SPECS = Path("grading/mutants")  # <lab>.toml, inside the course repository
ALTERNATIVES = Path("grading/alternatives")  # <lab>/<name>.py: whole-file alternatives
MODULE = "<module>"
MUTANT, ALTERNATIVE, FORCED_FAIL = "mutant", "alternative", "forced-fail"
SUMMARY_KEY = {MUTANT: "bug", ALTERNATIVE: "idea"}
EDIT_KEYS = {"function", "old", "new"}


class SpecError(Exception):
    """A variant that cannot be built; the message names the lab, the variant and the function."""


@dataclass(frozen=True)
class Edit:
    function: str  # "name", "Class.method" or MODULE
    old: str
    new: str


@dataclass(frozen=True)
class Spec:
    lab: str
    kind: str  # MUTANT | ALTERNATIVE | FORCED_FAIL
    name: str
    summary: str  # the bug, the idea, or what is forced to fail
    edits: tuple[Edit, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.kind} {short(self.lab)}/{self.name}"


@dataclass(frozen=True)
class LabSpecs:
    lab: str
    path: Path  # the TOML file, relative to the repository
    mutants: tuple[Spec, ...] = ()
    alternatives: tuple[Spec, ...] = ()
    forced_fail_exempt: dict[str, str] | None = None  # callable -> why no test can catch it


@dataclass(frozen=True)
class Built:
    """A variant ready to run: the text of its ``starter.py`` and, per edit, a small diff."""

    spec: Spec
    source: str
    diffs: tuple[str, ...] = ()


def short(lab: str) -> str:
    """``lab-01-batched-lora-matmul`` -> ``lab-01``."""
    return "-".join(lab.split("-")[:2])


# --- reading the specs -------------------------------------------------------------------------


def _text(where: str, table: dict, key: str) -> str:
    value = table.get(key)
    if not isinstance(value, str) or (key != "new" and not value.strip()):
        raise SpecError(f"{where}: needs {key} = '...' (a non-empty string), got {value!r}")
    return value


def _edits(where: str, entry: dict) -> tuple[Edit, ...]:
    inline = EDIT_KEYS & entry.keys()
    if "edit" in entry:
        if inline:
            raise SpecError(f"{where}: give either function/old/new or [[...edit]] tables, "
                            f"not both")
        tables = entry["edit"]
        if not isinstance(tables, list) or not tables:
            raise SpecError(f"{where}: edit must be a non-empty array of tables")
    else:
        tables = [{k: entry[k] for k in inline}]
    edits = []
    for i, table in enumerate(tables, start=1):
        at = where if len(tables) == 1 else f"{where} edit {i}"
        unknown = sorted(set(table) - EDIT_KEYS)
        if unknown:
            raise SpecError(f"{at}: unknown keys {unknown}; an edit has {sorted(EDIT_KEYS)}")
        edits.append(Edit(_text(at, table, "function"), _text(at, table, "old"),
                          _text(at, table, "new")))
    return tuple(edits)


def _entries(lab: str, rel: Path, data: dict, kind: str) -> tuple[Spec, ...]:
    entries = data.get(kind, [])
    if not isinstance(entries, list):
        raise SpecError(f"{rel}: {kind} must be written [[{kind}]]")
    summary_key = SUMMARY_KEY[kind]
    allowed = {"name", summary_key, "edit"} | EDIT_KEYS
    specs = []
    for i, entry in enumerate(entries, start=1):
        name = entry.get("name")
        where = f"{kind} {short(lab)}/{name}" if isinstance(name, str) else f"{rel}: {kind} #{i}"
        if not isinstance(name, str) or not name.isidentifier():
            raise SpecError(f"{where}: needs name = '<identifier>', got {name!r}")
        unknown = sorted(set(entry) - allowed)
        if unknown:
            raise SpecError(f"{where}: unknown keys {unknown}; allowed {sorted(allowed)}")
        specs.append(Spec(lab, kind, name, _text(where, entry, summary_key).strip(),
                          _edits(where, entry)))
    return tuple(specs)


def load_lab_specs(repo: Path, lab: str) -> LabSpecs:
    """The variants of ``lab`` from ``grading/mutants/<lab>.toml`` (none when it is absent)."""
    rel = SPECS / f"{lab}.toml"
    path = repo / rel
    if not path.is_file():
        return LabSpecs(lab, rel, forced_fail_exempt={})
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise SpecError(f"{rel}: cannot read ({err})") from None
    unknown = sorted(set(data) - {MUTANT, ALTERNATIVE, "forced_fail_exempt"})
    if unknown:
        raise SpecError(f"{rel}: unknown top-level keys {unknown}")
    exempt = data.get("forced_fail_exempt", {})
    if not all(isinstance(v, str) and v.strip() for v in exempt.values()):
        raise SpecError(f"{rel}: [forced_fail_exempt] maps a function to the reason, as text")
    specs = LabSpecs(lab, rel, _entries(lab, rel, data, MUTANT),
                     _entries(lab, rel, data, ALTERNATIVE), dict(exempt))
    names = [s.name for s in specs.mutants + specs.alternatives]
    names += [p.stem for p in sorted((repo / ALTERNATIVES / lab).glob("*.py"))]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise SpecError(f"{rel}: variant names must be unique in the lab, repeated: {twice}")
    return specs


# --- locating a function and applying an edit --------------------------------------------------

Defs = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef


def _children(body: list[ast.stmt]) -> list[Defs]:
    return [n for n in body if isinstance(n, Defs)]


def qualnames(tree: ast.Module) -> list[str]:
    """Every function, class and method, ``Class.method`` style, in source order."""
    found = []

    def walk(body: list[ast.stmt], prefix: str) -> None:
        for node in _children(body):
            found.append(prefix + node.name)
            if isinstance(node, ast.ClassDef):
                walk(node.body, f"{prefix}{node.name}.")

    walk(tree.body, "")
    return found


def locate(tree: ast.Module, qualname: str) -> Defs:
    """The definition named ``qualname`` (``f``, ``Class.method``); ``SpecError`` otherwise."""
    body, node = tree.body, None
    for part in qualname.split("."):
        matches = [n for n in _children(body) if n.name == part]
        if len(matches) != 1:
            if matches:
                raise SpecError(f"{qualname} is defined {len(matches)} times in solution.py")
            close = difflib.get_close_matches(qualname, qualnames(tree), n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise SpecError(f"function {qualname} is not defined in solution.py (renamed or "
                            f"moved?){hint}")
        node = matches[0]
        body = node.body
    return node


def _first_line(node: Defs) -> int:
    return min([node.lineno] + [d.lineno for d in node.decorator_list])


def _span(source: str, tree: ast.Module, function: str) -> tuple[int, int, str]:
    """Character offsets ``[start, end)`` of ``function``'s source, and a description."""
    if function == MODULE:
        return 0, len(source), "the module"
    node = locate(tree, function)
    starts = [0]
    for line in source.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    first, last = _first_line(node), node.end_lineno or node.lineno
    return starts[first - 1], starts[last], f"{function} (solution.py lines {first}-{last})"


@functools.lru_cache(maxsize=16)
def _tree(source: str) -> ast.Module:
    """Parsed once per text: a solution is the base of dozens of variants (never mutated)."""
    return ast.parse(source)


def _parse(source: str, what: str) -> ast.Module:
    try:
        return _tree(source)
    except SyntaxError as err:
        raise SpecError(f"{what} does not parse: {err.msg} at line {err.lineno}") from None


def _show(text: str) -> str:
    lines = text.strip().splitlines()
    more = len(lines) - 1
    return repr(lines[0].strip()) + (f" (+{more} more line{'s' * (more > 1)})" if more else "")


def _not_found(source: str, tree: ast.Module, edit: Edit, where: str) -> str:
    """Why ``edit.old`` is not in its function, with the evidence that helps fix the anchor."""
    msg = f"its old text is not in {where}: {_show(edit.old)}"
    elsewhere = [q for q in qualnames(tree) if q != edit.function
                 and isinstance(locate(tree, q), ast.FunctionDef | ast.AsyncFunctionDef)
                 and edit.old in source[slice(*_span(source, tree, q)[:2])]]
    if elsewhere:
        return msg + f"; it occurs in {', '.join(elsewhere)} (the code moved?)"
    start, end, _ = _span(source, tree, edit.function)
    first = edit.old.strip().splitlines()[0].strip()
    lines = [line.strip() for line in source[start:end].splitlines()]
    close = difflib.get_close_matches(first, lines, n=1, cutoff=0.5)
    return msg + (f"; the closest line there is {close[0]!r}" if close else "")


def apply_edit(source: str, edit: Edit) -> str:
    """``source`` with ``edit`` applied; ``SpecError`` (naming the function) when it cannot be."""
    tree = _parse(source, "solution.py")
    start, end, where = _span(source, tree, edit.function)
    segment = source[start:end]
    count = segment.count(edit.old)
    if count == 0:
        raise SpecError(_not_found(source, tree, edit, where))
    if count > 1:
        raise SpecError(f"its old text occurs {count} times in {where}, expected exactly once: "
                        f"{_show(edit.old)}; lengthen it until it is unique")
    at = start + segment.index(edit.old)
    if edit.function == MODULE:
        line = source.count("\n", 0, at) + 1
        inside = [n.name for n in _children(tree.body)
                  if _first_line(n) <= line <= (n.end_lineno or n.lineno)]
        if inside:
            raise SpecError(f"its old text lies inside {inside[0]}, not at module level: "
                            f"name that function instead of {MODULE}")
    edited = source[:at] + edit.new + source[at + len(edit.old):]
    if _same_ast(tree, _parse(edited, "the edited solution"), edit.function):
        raise SpecError(f"the edit in {where} leaves the AST unchanged (a comment or "
                        f"whitespace is no mutation)")
    return edited


def _same_ast(before: ast.Module, after: ast.Module, function: str) -> bool:
    """Whether an edit of ``function`` left the module's AST as it was. The edited function's
    node differing settles it cheaply; otherwise the whole module is compared."""
    if function != MODULE:
        try:
            if ast.dump(locate(before, function)) != ast.dump(locate(after, function)):
                return False
        except SpecError:
            return False  # the edit renamed or removed it
    return ast.dump(before) == ast.dump(after)


def _segment_diff(before: str, after: str, function: str) -> str:
    """The hunks of a unified diff of one function (or the module) before and after its edits,
    headed by the function's name instead of line numbers, so they do not churn."""
    if function != MODULE:
        before = before[slice(*_span(before, _tree(before), function)[:2])]
        after = after[slice(*_span(after, _tree(after), function)[:2])]
    lines = list(difflib.unified_diff(before.splitlines(), after.splitlines(), n=2,
                                      lineterm=""))[2:]  # no ---/+++ file header
    return "\n".join(f"@@ {function} @@" if line.startswith("@@") else line for line in lines)


def apply(solution: str, spec: Spec) -> Built:
    """The variant's source and one diff per run of edits in the same function; ``SpecError``
    names the spec and the function."""
    source, diffs = solution, []
    group_start, edits = solution, spec.edits
    for i, edit in enumerate(edits, start=1):
        which = f" (edit {i} of {len(edits)})" if len(edits) > 1 else ""
        try:
            source = apply_edit(source, edit)
        except SpecError as err:
            raise SpecError(f"{spec.label}{which}: {err}") from None
        if i == len(edits) or edits[i].function != edit.function:
            diffs.append(_segment_diff(group_start, source, edit.function))
            group_start = source
    return Built(spec, source, tuple(diffs))


# --- forced fail -------------------------------------------------------------------------------


def _raises_not_implemented(node: ast.stmt) -> bool:
    if not isinstance(node, ast.Raise) or node.exc is None:
        return False
    exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
    return isinstance(exc, ast.Name) and exc.id == "NotImplementedError"


def graded_callables(starter: str) -> list[str]:
    """The functions and methods ``starter.py`` leaves to the student: a body statement raises
    ``NotImplementedError`` (the TODO). Given code (validated helpers, dataclasses' own methods)
    is implemented in the starter and not graded."""
    tree = _tree(starter)
    return [q for q in qualnames(tree)
            if isinstance(node := locate(tree, q), ast.FunctionDef | ast.AsyncFunctionDef)
            and any(_raises_not_implemented(s) for s in node.body)]


def force_fail(lab: str, solution: str, function: str) -> Built:
    """``solution`` with ``function``'s body, docstring kept, replaced by a raise."""
    spec = Spec(lab, FORCED_FAIL, function, f"{function} raises")
    tree = _tree(solution)
    try:
        node = locate(tree, function)
    except SpecError as err:
        raise SpecError(f"{spec.label}: {err}") from None
    body = node.body[1:] if ast.get_docstring(node, clean=False) is not None else node.body
    if not body or body[0].lineno == node.lineno:
        raise SpecError(f"{spec.label}: {function} has no body on lines of its own to "
                        f"replace")
    lines = solution.splitlines(keepends=True)
    first, last = body[0].lineno, body[-1].end_lineno or body[-1].lineno
    raise_line = " " * body[0].col_offset + f'raise RuntimeError("forced fail: {function}")\n'
    source = "".join(lines[:first - 1] + [raise_line] + lines[last:])
    _parse(source, f"{spec.label}: the forced solution")
    return Built(spec, source, (_segment_diff(solution, source, function),))


# --- everything at once ------------------------------------------------------------------------


@dataclass
class LabVariants:
    lab: str
    mutants: list[Built]
    alternatives: list[Built]  # edit alternatives; whole-file ones are read by check_suite
    forced_fail: list[Built]
    exempt: dict[str, str]  # callable -> reason
    errors: list[str]


def whole_file_mutants(repo: Path) -> list[str]:
    """Errors for ``.py`` files under ``grading/mutants/``: mutants are edits, not copies."""
    return [f"{p.relative_to(repo)}: a whole-file mutant; mutants are edits now: add it as a "
            f"[[mutant]] to {SPECS / p.parent.name}.toml (name, bug, function, old, new) and "
            f"delete the file" for p in sorted((repo / SPECS).glob("**/*.py"))]


def build_lab(repo: Path, lab: str) -> LabVariants:
    """Every variant of ``lab`` built against its current ``solution.py``, errors collected."""
    out = LabVariants(lab, [], [], [], {}, [])
    folder = repo / LABS_SUBDIR / lab
    try:
        specs = load_lab_specs(repo, lab)
        solution = (folder / "solution.py").read_text(encoding="utf-8")
        starter = (folder / "starter.py").read_text(encoding="utf-8")
    except (SpecError, OSError) as err:
        out.errors.append(str(err))
        return out
    for spec in specs.mutants + specs.alternatives:
        try:
            built = apply(solution, spec)
        except SpecError as err:
            out.errors.append(f"{err}  [fix it in {specs.path}]")
            continue
        (out.mutants if spec.kind == MUTANT else out.alternatives).append(built)
    graded = graded_callables(starter)
    out.exempt = specs.forced_fail_exempt or {}
    out.errors += [f"{specs.path}: [forced_fail_exempt] names {name}, which is not a TODO of "
                   f"{short(lab)}'s starter.py (graded: {', '.join(graded)})"
                   for name in out.exempt if name not in graded]
    for function in graded:
        if function in out.exempt:
            continue
        try:
            out.forced_fail.append(force_fail(lab, solution, function))
        except SpecError as err:
            out.errors.append(f"{err}  [a TODO of {short(lab)}'s starter.py]")
    return out


def build(repo: Path, labs: list[str]) -> tuple[list[LabVariants], list[str]]:
    """Every lab's variants and every error (whole-file mutants included)."""
    built = [build_lab(repo, lab) for lab in labs]
    return built, whole_file_mutants(repo) + [e for b in built for e in b.errors]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grading.mutate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--check", action="store_true",
                        help="apply every variant's edits to the current solutions")
    action.add_argument("--show", metavar="LAB/NAME",
                        help="print one variant's diffs (e.g. lab-01/missing_scale)")
    parser.add_argument("--labs", nargs="+", metavar="LAB", help="only these labs")
    parser.add_argument("--repo", type=Path, default=TOOLING_ROOT,
                        help="the course repository (default: this one)")
    args = parser.parse_args(argv)
    labs = [lab for lab in lab_names(args.repo)
            if not args.labs or any(names_lab(w, lab) for w in args.labs)]
    built, errors = build(args.repo, labs)
    if args.show:
        lab, _, name = args.show.partition("/")
        found = [v for b in built if short(b.lab) == short(lab)
                 for v in b.mutants + b.alternatives + b.forced_fail if v.spec.name == name]
        for v in found:
            print(f"{v.spec.label}: {v.spec.summary}\n\n" + "\n\n".join(v.diffs))
        if not found:
            print(f"no variant {args.show} (or it does not apply: run --check)", file=sys.stderr)
            return 1
        return 0
    for b in built:
        print(f"{b.lab}: {len(b.mutants)} mutants, {len(b.alternatives)} edit alternatives and "
              f"{len(b.forced_fail)} forced fails apply ({len(b.exempt)} exempt)")
    for e in errors:
        print(f"ERROR {e}")
    print(f"{'FAIL' if errors else 'OK'}: {len(errors)} broken variant(s)"
          + (" (each names the lab, the variant and the function)" if errors else ""))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
