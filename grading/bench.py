"""What the sandbox and the parallel grader cost, measured in one run.

    python -m grading.bench overhead SUBMISSION [--labs lab-01 ...] [-m EXPR] [--repeat N]
    python -m grading.bench jobs SUBMISSION [--copies 20] [--jobs 1 2] [--labs ...] [-m EXPR]

``overhead`` grades SUBMISSION N times with the sandbox and N times without, interleaved (the
order alternates, so a machine that gets busier mid-run does not favour one side), and prints
the median wall time per submission and per lab for each, and their ratio. ``jobs`` grades a
folder of ``--copies`` copies of SUBMISSION once per ``--jobs`` value and prints the wall time
and the time per submission. Both print the command lines they ran and the machine's load.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from grading import grade


def timed_grade(args: list[str], out: Path) -> tuple[float, dict]:
    """Wall seconds of one ``grade`` run (its output swallowed) and its report(s)."""
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        rc = grade.main([*args, "--out", str(out)])
    wall = time.perf_counter() - start
    if rc != 0:
        raise SystemExit(f"grade {' '.join(args)} exited {rc}")
    reports = {p.parent.name: json.loads(p.read_text()) for p in out.rglob("report.json")}
    return wall, reports


def lab_walls(report: dict) -> dict[str, float]:
    return {lab["lab"]: lab["wall_s"] for lab in report["labs"]}


def overhead(args: argparse.Namespace, common: list[str]) -> None:
    a, b = "sandbox", "no sandbox"
    options = {a: [], b: ["--no-sandbox"]}
    walls: dict[str, list[float]] = {a: [], b: []}
    labs: dict[str, dict[str, list[float]]] = {a: {}, b: {}}
    for i in range(args.repeat):
        order = [a, b] if i % 2 == 0 else [b, a]
        for mode in order:
            extra = options[mode]
            with tempfile.TemporaryDirectory(prefix="phase11-bench-") as out:
                wall, reports = timed_grade([str(args.submission), *common, *extra], Path(out))
            walls[mode].append(wall)
            (report,) = reports.values()
            for lab, seconds in lab_walls(report).items():
                labs[mode].setdefault(lab, []).append(seconds)
            print(f"  run {i + 1} {mode:>10}: {wall:7.1f} s  total {report['total']:.1f}",
                  flush=True)
    print(f"\n| | {a} | {b} | ratio |\n|---|---|---|---|")
    med = {m: statistics.median(v) for m, v in walls.items()}
    print(f"| per submission (grade, all labs, hidden seeds) | {med[a]:.1f} s | "
          f"{med[b]:.1f} s | {med[a] / med[b]:.2f} |")
    for lab in labs[a]:
        x, y = (statistics.median(labs[m][lab]) for m in (a, b))
        print(f"| {lab} (visible run) | {x:.1f} s | {y:.1f} s | {x / y:.2f} |")


def jobs(args: argparse.Namespace, common: list[str]) -> None:
    with tempfile.TemporaryDirectory(prefix="phase11-cohort-") as tmp:
        cohort = Path(tmp) / "cohort"
        for i in range(args.copies):
            shutil.copytree(args.submission, cohort / f"student-{i:03d}")
        results = {}
        for n in args.jobs:
            with tempfile.TemporaryDirectory(prefix="phase11-bench-") as out:
                wall, reports = timed_grade([str(cohort), *common, "--jobs", str(n)],
                                            Path(out))
                summary = (Path(out) / "summary.csv").read_text()
            results[n] = (wall, summary)
            print(f"  --jobs {n}: {wall:7.1f} s for {len(reports)} submissions", flush=True)
    print("\n| --jobs | wall | per submission | speed-up |\n|---|---|---|---|")
    base = results[args.jobs[0]][0]
    for n, (wall, _) in results.items():
        print(f"| {n} | {wall:.1f} s | {wall / args.copies:.1f} s | {base / wall:.2f} |")
    same = len({summary for _, summary in results.values()}) == 1
    print(f"\nsummaries identical across --jobs values: {same}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grading.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["overhead", "jobs"])
    parser.add_argument("submission", type=Path)
    parser.add_argument("--labs", nargs="*", default=[])
    parser.add_argument("-m", dest="marker_expr", default="not gpu and not engine")
    parser.add_argument("--repeat", type=int, default=3, help="overhead: runs per mode")
    parser.add_argument("--copies", type=int, default=20, help="jobs: submissions in the folder")
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2], help="jobs: values")
    args = parser.parse_args(argv)
    common = ["-m", args.marker_expr] + (["--labs", *args.labs] if args.labs else [])
    print(f"python -m grading.bench {' '.join(argv if argv is not None else sys.argv[1:])}")
    print(f"cpus {os.cpu_count()}, load average {os.getloadavg()[0]:.2f} at the start",
          flush=True)
    (overhead if args.what == "overhead" else jobs)(args, common)
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
