"""How many cores should lab 02's CPU engine use? Measured side by side, in one run.

    .venv/bin/python phase-11-multi-lora/labs/lab-02-serve-many-loras/tools/bench_threads.py [--repeats 2]

vLLM's in-process engine logs "Reducing Torch threads from N to 1 for serving" unless
OMP_NUM_THREADS is set outside it. This bench runs the same work under each setting, each in a
fresh child process, interleaved (A B C A B C ...) so load drift on the machine hits all alike:
build the engine (``build_llm`` of the lab code ``LAB_IMPL`` selects, 3 slots), then one ``generate_mixed`` batch of
the evaluation rows (``evaluation.batch`` over the first 8 held-out and 4 paraphrased rows: 28
requests, greedy). It prints each setting's median start-up and generation time and the ratio
to the first setting. Machine-dependent: read the ratios on your machine, not a promised figure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

LAB = Path(__file__).resolve().parents[1]
REPO = LAB.parents[2]
SETTINGS = {  # name -> environment overrides (None: unset)
    "vLLM default": {"OMP_NUM_THREADS": None},
    "OMP_NUM_THREADS=1": {"OMP_NUM_THREADS": "1"},
    f"OMP_NUM_THREADS={os.cpu_count()}": {"OMP_NUM_THREADS": str(os.cpu_count())},
}
ROWS, PARAPHRASES = 8, 4


def child() -> None:
    """One measurement, printed as a JSON line."""
    sys.path.insert(0, str(REPO))
    from labkit import load_lab, load_support
    evaluation, sqldata = (load_support("lab-02", m) for m in ("tools.evaluation", "tools.sqldata"))
    base_model = load_support("lab-02", "tools.base_model")
    lab = load_lab("lab-02")
    t0 = time.monotonic()
    llm = lab.build_llm(base_model.base_model(), max_loras=3, max_lora_rank=16, max_cpu_loras=3)
    start_s = time.monotonic() - t0
    rows = evaluation.batch(sqldata.load_eval()[:ROWS],
                            select_paraphrase=evaluation.load("select_paraphrase")[:PARAPHRASES])
    t0 = time.monotonic()
    evaluation.run(lab.generate_mixed, llm, rows)
    print("RESULT " + json.dumps({"start_s": start_s, "generate_s": time.monotonic() - t0,
                                  "requests": len(rows)}), flush=True)


def measure(overrides: dict[str, str | None]) -> dict:
    env = dict(os.environ)
    for key, value in overrides.items():
        env.pop(key, None) if value is None else env.__setitem__(key, value)
    done = subprocess.run([sys.executable, __file__, "--child"], env=env, capture_output=True,
                          text=True, timeout=1800)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"child failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads(line.removeprefix("RESULT "))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child()
        return
    runs: dict[str, list[dict]] = {name: [] for name in SETTINGS}
    for r in range(args.repeats):
        for name, overrides in SETTINGS.items():
            runs[name].append(measure(overrides))
            print(f"[bench] round {r + 1}/{args.repeats} {name}: "
                  f"{runs[name][-1]['generate_s']:.1f} s", flush=True)
    median = {name: {k: statistics.median(x[k] for x in rs) for k in ("start_s", "generate_s")}
              for name, rs in runs.items()}
    first = next(iter(median.values()))
    requests = next(iter(runs.values()))[0]["requests"]
    print(f"\n{os.cpu_count()} CPUs, {args.repeats} interleaved rounds, {requests} requests per "
          "batch; medians, and the ratio to the first setting (< 1: faster)")
    print(f"{'setting':<22} {'start-up s':>10} {'generate s':>10} {'generate ratio':>15}")
    for name, m in median.items():
        print(f"{name:<22} {m['start_s']:>10.1f} {m['generate_s']:>10.1f} "
              f"{m['generate_s'] / first['generate_s']:>15.2f}")


if __name__ == "__main__":
    main()
