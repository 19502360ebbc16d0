"""Given: the records lab 02's functions return (not graded, nothing to implement here).

A support module (``labkit.load_support("lab-02", "given.records")``); the lab's ``starter.py``
imports every name from here, so tests and callers write ``lab.Capture``,
``lab.Reconciliation``, ``lab.AdapterRequestError``. Each record is plain data plus a summary
to print; the lab's functions decide what goes into them.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Logged", "Capture", "Check", "Reconciliation", "RowDiff", "EvalDiff",
           "AdapterRequestError", "LatencySummary", "ColdSlotSignature"]  # the lab's order
GIB_DECIMALS = 2  # vLLM prints GiB with at most two decimals ("%.2f" or round(x, 2))


@dataclass(frozen=True)
class Logged:
    """One figure as the engine printed it: ``value`` parsed from ``text``."""

    value: float
    text: str

    @property
    def half_unit(self) -> float:
        """Half the last printed digit, at least vLLM's two decimals: the rounding slack."""
        decimals = len(self.text.partition(".")[2])
        return 0.5 * 10.0 ** -max(decimals, GIB_DECIMALS)



@dataclass(frozen=True)
class Capture:
    """What one engine log says, figure by figure; None where the log does not say it.

    weights: the weight figure, ``weights_kind`` "checkpoint" (CPU build: ``Checkpoint size:
    0.00 GiB``, the safetensors files on disk) or "model_loading" (GPU: ``Model loading took
    12.55 GiB``, device memory after loading, LoRA slots included). lora: the resolved knobs
    (``max_loras``, ``max_lora_rank``, ``max_cpu_loras``), vLLM's defaults filled in for those
    the log's ``non-default args`` omit. outputs: ``(tag, text)`` per demo row, in order.
    slot_buffer_bytes: the engine's LoRA slot buffers as the demo measured them (its
    ``LoRA slot buffers (...): N B`` line), None when the log has no such line.
    """

    vllm_version: str | None
    device: str | None
    dtype: str | None
    max_model_len: int | None
    weights: Logged | None
    weights_kind: str | None
    kv_cache: Logged | None
    kv_cache_bytes: int | None
    kv_cache_tokens: int | None
    lora_enabled: bool
    lora: dict[str, int]
    punica_wrapper: str | None
    outputs: list[tuple[str, str]]
    slot_buffer_bytes: int | None = None



@dataclass(frozen=True)
class Check:
    """One figure: what a source says beside what labs 01/03/04 derive, and whether they agree.

    source: where ``observed`` comes from ("engine log", "safetensors header", ...);
    how: the derivation of ``derived``, with the lab function it calls.
    """

    figure: str
    source: str
    observed: float
    derived: float
    agrees: bool
    how: str



@dataclass(frozen=True)
class Reconciliation:
    """Every check of ``reconcile``; ``ok`` when all agree."""

    checks: list[Check]

    @property
    def ok(self) -> bool:
        return all(check.agrees for check in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [check for check in self.checks if not check.agrees]

    def summary(self) -> str:
        def show(x: float) -> str:
            return f"{x:,}" if isinstance(x, int) else f"{x:.6g}"

        lines = [f"{'figure':<32} {'source':<20} {'observed':>12} {'derived':>12}  ok   how"]
        for c in self.checks:
            lines.append(f"{c.figure:<32} {c.source:<20} {show(c.observed):>12} "
                         f"{show(c.derived):>12}  {'yes' if c.agrees else 'NO '}  {c.how}")
        return "\n".join(lines)



@dataclass(frozen=True)
class RowDiff:
    """One eval row whose outputs differ between deployments a and b."""

    index: int
    row_id: object
    output_a: str
    output_b: str
    executes_a: bool
    executes_b: bool



@dataclass(frozen=True)
class EvalDiff:
    """``eval_diff``'s verdict: how many rows match exactly, which differ, what executes.

    executable_a / executable_b: rows whose output runs in sqlite3 against the row's table.
    """

    rows: int
    identical: int
    differing: list[RowDiff]
    executable_a: int
    executable_b: int

    @property
    def clean(self) -> bool:
        return not self.differing

    def summary(self) -> str:
        head = (f"{self.identical}/{self.rows} rows identical; {len(self.differing)} differ; "
                f"SQL executes: a {self.executable_a}/{self.rows}, b {self.executable_b}/{self.rows}")
        lines = [head]
        for d in self.differing[:5]:
            lines.append(f"  row {d.index} (id {d.row_id}): a={d.output_a!r} "
                         f"[{'runs' if d.executes_a else 'fails'}] b={d.output_b!r} "
                         f"[{'runs' if d.executes_b else 'fails'}]")
        if len(self.differing) > 5:
            lines.append(f"  ... and {len(self.differing) - 5} more")
        return "\n".join(lines)



class AdapterRequestError(RuntimeError):
    """A non-2xx answer from a LoRA route: ``status`` and the server's own ``message``."""

    def __init__(self, url: str, status: int, message: str) -> None:
        super().__init__(f"POST {url} -> HTTP {status}: {message}")
        self.url = url
        self.status = status
        self.message = message



@dataclass(frozen=True)
class LatencySummary:
    """Latency of one group of requests, in milliseconds; p50/p99 are NaN for an empty group."""

    count: int
    p50_ms: float
    p99_ms: float



@dataclass(frozen=True)
class ColdSlotSignature:
    """Hot vs cold latency of a trace, and how much of its tail the cold requests make up.

    ``labels[i]`` is "hot" or "cold" for request i. ``tail_count`` requests have a latency at
    or above the overall p99; ``tail_cold_share`` is the fraction of them that are cold.
    """

    labels: tuple[str, ...]
    hot: LatencySummary
    cold: LatencySummary
    overall: LatencySummary
    tail_count: int
    tail_cold_share: float

