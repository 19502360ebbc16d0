"""A lab in parts lists every function the student writes, once per part, in its README.

    - **Part 1**, what it is, specified by `test_x.py`: `f`, `g`,
      `h`.

The starter marks where each part starts with a ``# === part N: ... ===`` line, and each function
the student writes with a ``TODO(lab-0N)`` in its body. For each part, the README's names must be
exactly the starter's TODO functions below that marker: a function moved, renamed, added or
dropped in one place and not the other is named. A lab whose README has no part bullets has
nothing to check. The README's reader is ``labkit.parts`` (the tests mark each part with it);
``python -m grading.spec_check`` and ``check_starters`` run this check.

The README also lists, in a table, the files a student opens for each part:

    | part 1 | `README.md`, `starter.py`, `test_x.py`, `given/m.py`, `../lab-03-x/starter.py` |

At most ``MAX_FILES`` a part, each one there, and none missing that the part needs: the README,
the starter, the spec file its marker names (``# === part 1: ... (test_x.py) ===``), the input
table ``test_inputs.py``, each given module the part's code uses (by its alias or a name it
re-exports) and each earlier lab it loads (``load_lab("lab-03")``: that lab's starter).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from labkit.parts import readme_parts

MARKER = re.compile(r"^# === part (\d+)\b")
MAX_FILES = 8  # minitorch's module 0 needs 3; a part of lab 02 may ask for no more than this
FILES_ROW = re.compile(r"^\| part (\d+) \| (.*) \|\s*$")
SPEC = re.compile(r"\((test_\w+\.py)\)")
LOADS = re.compile(r"load_lab\(\"(lab-\d+)\"\)")


def starter_parts(starter: str) -> dict[int, list[str]]:
    """Part number -> the top-level functions with a TODO below that part's marker."""
    markers = [(i + 1, int(m.group(1))) for i, line in enumerate(starter.splitlines())
               if (m := MARKER.match(line))]
    parts: dict[int, list[str]] = {part: [] for _, part in markers}
    for node in ast.parse(starter).body:
        if isinstance(node, ast.FunctionDef) and "TODO(lab-" in ast.get_source_segment(starter,
                                                                                     node):
            above = [part for line, part in markers if line < node.lineno]
            parts.setdefault(above[-1] if above else 0, []).append(node.name)
    return parts


def part_problems(lab_dir: Path) -> list[str] | None:
    """Each disagreement between the README's part lists and the starter's TODO functions, then
    each problem of its table of files by part (``part_file_problems``); None for a lab whose
    README lists no parts, or that has no README."""
    readme = lab_dir / "README.md"
    if not readme.is_file():
        return None
    listed = readme_parts(readme.read_text(encoding="utf-8"))
    if not listed:
        return None
    todo = starter_parts((lab_dir / "starter.py").read_text(encoding="utf-8"))
    problems = []
    for part in sorted(set(listed) | set(todo)):
        docs, code = listed.get(part, []), todo.get(part, [])
        where = f"part {part}" if part else "above the first part marker"
        if missing := [f for f in code if f not in docs]:
            problems.append(f"{where}: starter.py's TODO functions {missing} are not in the "
                            f"README's part list")
        if extra := [f for f in docs if f not in code]:
            problems.append(f"{where}: the README lists {extra}, which are not TODO functions "
                            f"below the starter's part marker")
    return problems + (part_file_problems(lab_dir) or [])


def readme_part_files(readme: str) -> dict[int, list[str]]:
    """Part number -> the files its row of the README's table lists."""
    return {int(m.group(1)): re.findall(r"`([^`]+)`", m.group(2))
            for line in readme.splitlines() if (m := FILES_ROW.match(line))}


def starter_sections(starter: str) -> dict[int, str]:
    """Part number -> the starter's text from that part's marker to the next one."""
    lines = starter.splitlines(keepends=True)
    starts = [(i, int(m.group(1))) for i, line in enumerate(lines) if (m := MARKER.match(line))]
    return {part: "".join(lines[i:(starts[k + 1][0] if k + 1 < len(starts) else len(lines))])
            for k, (i, part) in enumerate(starts)}


def given_names(starter: str) -> dict[str, str]:
    """Each name the starter binds to a given module, or to a name of one, -> that module's file:
    ``records = load_support(..., "given.records")`` and ``Capture = records.Capture``."""
    tree, names = ast.parse(starter), {}
    for node in tree.body:
        if not isinstance(node, ast.Assign) or len(node.targets) != 1:
            continue
        target = node.targets[0]
        targets = target.elts if isinstance(target, ast.Tuple) else [target]
        segment = ast.get_source_segment(starter, node.value) or ""
        if "load_support(" in segment:
            modules = re.findall(r"\"((?:\w+\.)?\w+)\"", segment.split("for m in", 1)[-1])
            modules = [m for m in modules if not m.startswith("lab-")]
            for t, module in zip(targets, modules, strict=False):
                names[t.id] = module.replace(".", "/") + ".py"
            continue
        values = node.value.elts if isinstance(node.value, ast.Tuple) else [node.value]
        for t, v in zip(targets, values, strict=False):
            if (isinstance(t, ast.Name) and isinstance(v, ast.Attribute)
                    and isinstance(v.value, ast.Name) and v.value.id in names):
                names[t.id] = names[v.value.id]
    return names


def part_file_problems(lab_dir: Path) -> list[str] | None:
    """What the README's table of files by part gets wrong; None for a lab without parts."""
    readme = lab_dir / "README.md"
    if not readme.is_file() or not readme_parts(text := readme.read_text(encoding="utf-8")):
        return None
    starter = (lab_dir / "starter.py").read_text(encoding="utf-8")
    listed, sections, given = readme_part_files(text), starter_sections(starter), given_names(starter)
    labs = {p.name[:len("lab-01")]: p.name for p in lab_dir.parent.iterdir() if p.is_dir()}
    problems = []
    for part in sorted(readme_parts(text)):
        files = listed.get(part)
        if files is None:
            problems.append(f"part {part}: no row `| part {part} | ... |` in the README's table "
                            f"of the files a student opens")
            continue
        section = sections.get(part, "")
        need = {"README.md", "starter.py", *SPEC.findall(section.splitlines()[0] if section else "")}
        need |= {"test_inputs.py"} if (lab_dir / "test_inputs.py").is_file() else set()
        need |= {file for name, file in given.items() if re.search(rf"\b{name}\b", section)}
        need |= {f"../{labs[lab]}/starter.py" for lab in LOADS.findall(section) if lab in labs}
        if len(files) > MAX_FILES:
            problems.append(f"part {part}: the README lists {len(files)} files to open, expected "
                            f"at most {MAX_FILES}: {files}")
        if absent := [f for f in files if not (lab_dir / f).is_file()]:
            problems.append(f"part {part}: the README lists {absent}, which do not exist")
        if missing := sorted(need - set(files)):
            problems.append(f"part {part}: the part needs {missing}, which its row of the "
                            f"README's table does not list")
    return problems
