"""Lab 04 bench: ``simulate`` on 100,000 requests, against a generous bound (not a test).

A linear walk (one dict lookup and at most one eviction per request) takes a fraction of a
second; a walk that scans the resident adapters, or re-sorts them, per request grows with the
number of distinct adapters. The bench times 80/20 traces over 16 and over 2,000 adapters, at 4
and at 256 slots, and prints each time beside the bound. It runs the implementation
``LAB_IMPL`` selects, so ``LAB_IMPL=starter`` benches your own file.

    python phase-11-multi-lora/labs/lab-04-adapter-slot-cache/bench.py [--requests 100000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO_ROOT))  # this checkout's labkit first

from labkit import load_impl  # noqa: E402

BOUND_S = 1.0  # "well under a second" for 100,000 requests, generous for a shared machine


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100_000)
    args = parser.parse_args(argv)
    lab = load_impl("lab-04")
    slow = 0
    print(f"lab-04 bench: simulate on {args.requests:,} requests, bound {BOUND_S:.1f} s")
    for adapters in (16, 2000):
        trace = lab.zipf_80_20_trace(adapters, args.requests, seed=0)
        for slots in (4, 256):
            start = time.perf_counter()
            stats = lab.simulate(trace, slots)
            took = time.perf_counter() - start
            slow += took > BOUND_S
            print(f"  {adapters:>5} adapters, {slots:>3} slots: {took:6.3f} s, hit rate "
                  f"{stats.hit_rate:.1%}{'  SLOWER THAN THE BOUND' if took > BOUND_S else ''}")
    return 1 if slow else 0


if __name__ == "__main__":
    sys.exit(main())
