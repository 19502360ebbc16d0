"""Static honesty checks on a submission's files (the runtime half lives in ``grading.plugin``).

Each finding is a flag for an instructor to review, not a verdict: ``kind`` says which rule,
``detail`` names the file, the line and what was seen. The kinds:

- ``reads_solution``: imports a ``solution`` module, names ``solution.py`` or ``LAB_IMPL``, or
  reaches into the loader (``load_impl``, ``resolve_impl``, ...) that can load the reference;
- ``tampers_tests``: imports the test machinery (``pytest``, ``conftest``, any ``test_*`` module:
  ``test_lab``, ``test_serving``, ...), names a test file (``test_*``, ``conftest.py``) or a
  ``GRADING_*`` setting, or assigns attributes of an imported module (monkeypatching ``labkit``,
  ``numpy``, ``builtins``, ...), ``setattr`` on one, or writes ``sys.modules``;
- ``inspects_tests``: walks the caller's frames (``sys._getframe``, ``inspect.stack``,
  ``f_locals``, ...), where a test's expected values live, or reads ``LAB_SEED``;
- ``fails_hidden_seed`` (from ``grading.grade``): one per lab, passes the visible seed, fails
  under a hidden one (never which test, never which seed);
- ``unsafe_submission`` (from ``grading.grade.stage``): a starter that is not a plain file;
- ``malformed_record`` (from ``grading.schema``): a flag whose fields do not have their types.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

LOADER_INTERNALS = {"load_impl", "resolve_impl", "Impl", "LABS_DIR", "REPO_ROOT", "_CACHE",
                    "_exec_file", "DEFAULT_IMPL", "NAMED_IMPLS"}
TEST_MACHINERY = {"pytest", "_pytest", "conftest", "grading", "pluggy"}  # and every test_* module
TEST_MODULE = re.compile(r"test_\w*")  # a module name pytest collects: test_lab, test_serving
FRAME_ACCESS = {"_getframe", "currentframe", "getouterframes", "extract_stack", "f_back",
                "f_locals", "f_globals", "get_referrers"}  # plus inspect.stack
TEST_NAMES = ("conftest.py", "grading/")
TEST_FILE = re.compile(r"(?<![A-Za-z0-9])test_\w*")  # test_lab, test_serving.py, .../test_x.py


def flag(kind: str, path: Path, node: ast.AST, what: str) -> dict:
    return {"kind": kind, "detail": f"{path.name}:{getattr(node, 'lineno', '?')}: {what}"}


def docstring_nodes(tree: ast.Module) -> list[ast.Constant]:
    """The module, class and function docstrings of a parsed file."""
    found = []
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)):
            found.append(body[0].value)
    return found


def _module_aliases(tree: ast.Module) -> set[str]:
    """Names bound to modules by ``import x`` / ``import x.y as z`` anywhere in the file."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.asname or a.name.split(".")[0] for a in node.names}
    return names


def _root_name(node: ast.AST) -> str | None:
    while isinstance(node, ast.Attribute | ast.Subscript):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _check_import(path: Path, node: ast.Import | ast.ImportFrom) -> list[dict]:
    found = []
    modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
    for module in modules:
        parts = set(module.split("."))
        if "solution" in parts:
            found.append(flag("reads_solution", path, node, f"imports {module}"))
        if parts & TEST_MACHINERY or any(TEST_MODULE.fullmatch(p) for p in parts):
            found.append(flag("tampers_tests", path, node, f"imports the test machinery {module}"))
    if isinstance(node, ast.ImportFrom):
        for alias in node.names:
            if alias.name in FRAME_ACCESS or (node.module, alias.name) == ("inspect", "stack"):
                found.append(flag("inspects_tests", path, node,
                                  f"imports {alias.name} from {node.module}: reads the caller's "
                                  f"frames"))
            if alias.name in LOADER_INTERNALS or alias.name == "loader":
                found.append(flag("reads_solution", path, node,
                                  f"imports {alias.name} from {node.module}: it can load the "
                                  f"reference solution"))
    return found


def _check_string(path: Path, node: ast.Constant) -> list[dict]:
    text = node.value
    if "solution.py" in text or text.strip() == "solution" or "LAB_IMPL" in text:
        return [flag("reads_solution", path, node, f"names {text[:60]!r}")]
    if "GRADING_" in text:
        return [flag("tampers_tests", path, node, f"names the grader's settings: {text[:60]!r}")]
    if "LAB_SEED" in text:
        return [flag("inspects_tests", path, node, f"reads the tests' seed: {text[:60]!r}")]
    if any(name in text for name in TEST_NAMES) or TEST_FILE.search(text):
        return [flag("tampers_tests", path, node, f"names a test file: {text[:60]!r}")]
    return []


def _assigned_module_attr(node: ast.AST, modules: set[str]) -> str | None:
    targets = []
    if isinstance(node, ast.Assign):
        targets = node.targets
    elif isinstance(node, ast.AugAssign | ast.AnnAssign):
        targets = [node.target]
    elif isinstance(node, ast.Delete):
        targets = node.targets
    for target in targets:
        if isinstance(target, ast.Attribute | ast.Subscript) and _root_name(target) in modules:
            return ast.unparse(target)
    return None


def _check_call(path: Path, node: ast.Call, modules: set[str]) -> list[dict]:
    func = node.func
    if (isinstance(func, ast.Name) and func.id in ("setattr", "delattr") and node.args
            and _root_name(node.args[0]) in modules):
        return [flag("tampers_tests", path, node, f"{func.id}() on module "
                                                  f"{ast.unparse(node.args[0])}")]
    return []


def scan_source(text: str, path: Path) -> list[dict]:
    """Flags for one source file; a file that does not parse yields none (the tests say so)."""
    try:
        tree = ast.parse(text, filename=str(path))
    except (SyntaxError, ValueError):
        return []
    docstrings = {id(node) for node in docstring_nodes(tree)}
    modules = _module_aliases(tree)
    found: list[dict] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            found += _check_import(path, node)
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
              and id(node) not in docstrings):
            found += _check_string(path, node)
        elif isinstance(node, ast.Call):
            found += _check_call(path, node, modules)
        elif isinstance(node, ast.Attribute):
            if node.attr in FRAME_ACCESS or ast.unparse(node) == "inspect.stack":
                found.append(flag("inspects_tests", path, node,
                                  f"uses {ast.unparse(node)}: reads the caller's frames"))
            elif node.attr in LOADER_INTERNALS:
                found.append(flag("reads_solution", path, node, f"uses {ast.unparse(node)}"))
        if (target := _assigned_module_attr(node, modules)) is not None:
            found.append(flag("tampers_tests", path, node, f"assigns {target} on an imported "
                                                           f"module"))
    return _dedupe(found)


def _dedupe(flags: list[dict]) -> list[dict]:
    seen, unique = set(), []
    for f in flags:
        key = (f["kind"], f["detail"])
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique


def scan_file(path: Path) -> list[dict]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return scan_source(text, path)
