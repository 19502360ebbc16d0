"""Lab 04: adapter slots, an honest LRU, and a scheduler that defers.

An engine keeps only ``num_slots`` adapters on the device, in buffers allocated once:
``A (num_slots, max_rank, d_in)`` and ``B (num_slots, d_out, max_rank)``. Serving an adapter that
is not resident costs a load into a slot (a miss), and evicts the least recently used adapter
that no running request holds. The scheduler keeps the running batch within ``max_loras``
distinct adapters by *deferring* requests it cannot admit, never by stopping its walk. Every
function and method leaves its arguments unchanged (``waiting`` too): state lives in the objects.

Read README.md first; test_lab.py is the spec. The dataclasses and ``_int_at_least`` are given;
every TODO is yours. Production counterparts: ``vllm/lora/model_manager.py``
(``LRUCacheLoRAModelManager``, ``activate_adapter``, ``lora_index_to_id``) and the ``max_loras``
gate in ``vllm/v1/core/sched/scheduler.py``.
"""

from __future__ import annotations

from collections import OrderedDict  # noqa: F401 - the LRU order lives in an OrderedDict
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

AdapterId = Hashable
Loader = Callable[[AdapterId], tuple[np.ndarray, np.ndarray]]

HOT_FRACTION = 0.2  # the "20%" of 80/20: the hottest round(0.2 * num_adapters) adapters ...
HOT_SHARE = 0.8  # ... draw exactly this share of the requests in expectation


# --- input checks ------------------------------------------------------------------------------


def _int_at_least(name: str, value: object, low: int) -> int:
    """Validate an int argument (bools rejected): TypeError for a non-int, ValueError below ``low``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__} {value!r}")
    if value < low:
        raise ValueError(f"{name}: expected an int >= {low}, got {value}")
    return int(value)


# --- the slot cache ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CacheStats:
    """Cache accounting, one lookup per request (never per token, never per retry).

    Compulsory (first-touch) misses count as misses; an eviction is a miss that displaced a
    resident adapter (a miss that fills an empty slot evicts nothing).
    """

    lookups: int
    hits: int
    misses: int
    evictions: int

    @property
    def hit_rate(self) -> float:
        """hits / lookups; 0.0 before the first lookup."""
        raise NotImplementedError("TODO(lab-04): hits / lookups, 0.0 when there were no lookups")


class SlotCache:
    """``num_slots`` pre-allocated adapter slots with LRU replacement and counted pins.

    ``A``: (num_slots, max_rank, d_in) and ``B``: (num_slots, d_out, max_rank), allocated once
    in ``__init__``; their identity, shape and data pointer never change, because kernels and
    captured CUDA graphs are built against fixed shapes and addresses. An adapter of rank r
    occupies ``A[s, :r]`` and ``B[s, :, :r]``; the rest of the slot is zero after every load, so a
    smaller adapter never inherits its predecessor's weights. ``ranks``: (num_slots,) int, the
    rank loaded in each slot (0 = empty).
    """

    def __init__(self, num_slots: int, max_rank: int, d_in: int, d_out: int,
                 dtype=np.float32) -> None:
        """Validate the sizes and allocate the buffers once.

        ``num_slots``, ``max_rank``, ``d_in``, ``d_out``: ints >= 1 (a non-int or a bool raises
        ``TypeError``, a value below 1 ``ValueError``, each naming the argument); ``dtype``: a
        floating numpy dtype (else ``TypeError``).
        """
        raise NotImplementedError("TODO(lab-04): validate the sizes, allocate zeroed A, B and "
                                  "ranks once, and set up the slot layout (all None), an "
                                  "OrderedDict for LRU order, pin counts and counters")

    # -- views ---------------------------------------------------------------------------------

    @property
    def resident(self) -> list[AdapterId | None]:
        """Adapter id held by each slot, in slot order; None for an empty slot (a copy)."""
        raise NotImplementedError("TODO(lab-04): the slot layout, as a new list")

    def slot_of(self, adapter_id: AdapterId) -> int | None:
        """The slot holding ``adapter_id``, or None when it is not resident.

        A lookup only: unlike ``acquire`` it leaves ``lru_order()`` as it was.
        """
        raise NotImplementedError("TODO(lab-04): look the adapter up without touching LRU order")

    def __contains__(self, adapter_id: AdapterId) -> bool:
        raise NotImplementedError("TODO(lab-04): is the adapter resident?")

    def lru_order(self) -> list[AdapterId]:
        """Resident adapters, least recently used first (the eviction order, pins aside)."""
        raise NotImplementedError("TODO(lab-04): the OrderedDict's keys, oldest first")

    def pin_count(self, adapter_id: AdapterId) -> int:
        """How many holders currently pin ``adapter_id`` (0 when unpinned)."""
        raise NotImplementedError("TODO(lab-04): the adapter's pin count")

    @property
    def stats(self) -> CacheStats:
        """A snapshot of the counters."""
        raise NotImplementedError("TODO(lab-04): a CacheStats from the counters")

    # -- the cache -----------------------------------------------------------------------------

    def acquire(self, adapter_id: AdapterId, load: Loader) -> int:
        """Make ``adapter_id`` resident and most recently used; return its slot.

        A hit only refreshes the LRU order. A miss calls ``load(adapter_id) -> (A, B)`` with
        ``A: (r, d_in)``, ``B: (d_out, r)``, ``1 <= r <= max_rank``, and copies it into the first
        empty slot, else into the slot of the least recently used unpinned adapter, which is
        evicted. A refused miss changes nothing: the slots, ``resident``, ``lru_order()`` and
        ``stats`` stay as they were, even when the cache is full (check the loaded weights
        before you evict). It is refused when
        - every slot is pinned: ``RuntimeError`` whose message says the slots are ``pinned``
          (``load`` is not called);
        - the loaded rank is above ``max_rank``: ``ValueError("LoRA rank R is greater than
          max_lora_rank M.")``, vLLM's wording, nothing before or after it;
        - the loaded shapes are wrong: ``ValueError`` whose message starts with
          ``load(<adapter_id>)`` and gives the shapes it got.
        """
        raise NotImplementedError("TODO(lab-04): hit -> move_to_end; miss -> pick a victim (free "
                                  "slot first, else LRU unpinned), load and check, copy into the "
                                  "slot zero-padding the rest, count")

    # -- pins ----------------------------------------------------------------------------------

    def pin(self, adapter_id: AdapterId) -> None:
        """Hold a resident adapter in its slot; pins are counted, one per holder.

        A non-resident adapter raises ``ValueError`` naming it.
        """
        raise NotImplementedError("TODO(lab-04): count one more pin on a resident adapter")

    def unpin(self, adapter_id: AdapterId) -> None:
        """Release one pin; the adapter becomes evictable when its last pin goes.

        An adapter that is not pinned raises ``ValueError`` naming it.
        """
        raise NotImplementedError("TODO(lab-04): drop one pin; forget the adapter at zero")


# --- traces and the cache model ----------------------------------------------------------------


def zipf_80_20_weights(num_adapters: int) -> np.ndarray:
    """Request probabilities for adapters 0..n-1: ``p_i ∝ 1 / (i + 1)**s``, hottest first.

    The exponent ``s`` is fitted (bisection) so the hottest ``max(1, round(0.2 * n))`` adapters
    draw exactly 80% of the requests. Returns a float64 array of shape (n,) summing to 1.
    """
    raise NotImplementedError("TODO(lab-04): bisect on s until the hot set's share is 0.8")


def zipf_80_20_trace(num_adapters: int, num_requests: int, seed: int) -> list[int]:
    """A seeded request trace: ``num_requests`` adapter ids in ``[0, num_adapters)``.

    Draws i.i.d. from ``zipf_80_20_weights(num_adapters)`` with
    ``np.random.default_rng(seed).choice``, so the same arguments give the same trace.
    Adapter 0 is the hottest. Returns Python ints.
    """
    raise NotImplementedError("TODO(lab-04): sample the weights with a seeded default_rng")


def simulate(trace: Iterable[AdapterId | None], num_slots: int) -> CacheStats:
    """Serve ``trace`` one request at a time through a ``num_slots`` LRU cache; return its stats.

    ``trace``: any iterable, walked once (a list, a generator, a numpy array). Items are adapter
    ids (any hashable; ids that compare equal are one adapter, as dict keys are, however they
    were built); ``None`` is a base-model request, which needs no slot and is left out of the
    accounting (``lookups`` counts adapter requests only). An unhashable item raises
    ``TypeError`` as in ``replay``. ``bench.py`` times it on 100,000 requests; one dict lookup
    per request keeps that well under a second.
    """
    raise NotImplementedError("TODO(lab-04): acquire each adapter request in a SlotCache")


def replay(trace: Iterable[AdapterId | None], num_slots: int) -> list[bool]:
    """Per-request hot/cold labels for ``trace``: one bool per item, True = hit (hot).

    An item that is neither None nor hashable raises ``TypeError`` naming the item's type and
    its index in the trace as ``position N`` (counting every item, base requests included).
    Same cache model as ``simulate``: the False entries are exactly its misses. A base-model
    request (``None``) is labelled True: it never waits for an adapter load.
    """
    raise NotImplementedError("TODO(lab-04): like simulate, but record hit/miss per item")


# --- sizing max_loras from traffic and memory ---------------------------------------------------


@dataclass(frozen=True)
class SlotSizing:
    """The answer of ``size_slots``.

    ``meets_target`` False is the "cannot" answer: ``num_slots`` is then the most slots that can
    help, those the budget affords capped at the trace's number of distinct adapters (0 when not
    even one slot fits), and ``hit_rate`` the best rate they achieve.
    """

    num_slots: int
    hit_rate: float
    reserved_bytes: int
    meets_target: bool
    reason: str


def size_slots(trace: Sequence[AdapterId | None], slot_bytes: int, memory_budget_bytes: int,
               target_hit_rate: float) -> SlotSizing:
    """The smallest slot count whose simulated LRU hit rate on ``trace`` reaches the target,
    within ``memory_budget_bytes`` at ``slot_bytes`` per slot (lab 03's
    ``slot_reservation_bytes`` for one slot). ``reserved_bytes = num_slots * slot_bytes``.

    ``trace`` is read like ``simulate``'s: ``None`` items are base requests, which neither count
    as an adapter nor as a lookup. ``target_hit_rate`` must be a real number, a numpy one
    included (else ``TypeError``), in (0, 1] (else ``ValueError``), each error naming
    ``target_hit_rate``. Hint: LRU's hit rate never decreases with more
    slots, and slots beyond the number of distinct adapters cannot help.
    """
    raise NotImplementedError("TODO(lab-04): slots the budget affords; the best rate within them; "
                              "the smallest count that reaches the target, or the 'cannot' answer")


# --- the scheduler -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One request: ``adapter`` is an adapter id, or None for the base model.

    ``tokens``: decode steps it stays in the running batch (>= 1).
    """

    rid: int
    adapter: AdapterId | None
    tokens: int = 1


def schedule_step(waiting: Sequence[Request], running_adapters: Iterable[AdapterId | None],
                  max_loras: int, max_batch: int) -> tuple[list[Request], list[Request]]:
    """One walk over ``waiting`` in order: admit, defer, or stop when the batch is full.

    ``running_adapters``: adapters of requests already running (they count towards
    ``max_loras``; a running base request's ``None`` counts for nothing). ``max_batch``: seats left in the batch this step (>= 0). A base request is
    always admissible; an adapter request is admitted if its adapter is already in the batch or
    the batch holds fewer than ``max_loras`` distinct adapters; otherwise it is deferred (keeps
    its place in the queue) and the walk goes on. Returns ``(scheduled, still_waiting)``, both
    in queue order. ``max_loras`` (>= 1) and ``max_batch`` (>= 0) are ints: a non-int raises
    ``TypeError``, a value below the minimum ``ValueError``, each naming the argument.
    ``running_adapters`` holding more distinct adapters than ``max_loras`` is a batch that
    already breaks the limit: ``ValueError`` naming ``running_adapters`` and saying it exceeds
    ``max_loras``.
    """
    raise NotImplementedError("TODO(lab-04): walk the queue once; admit or defer each request; "
                              "stop when full")


# --- the engine loop: scheduler + cache ---------------------------------------------------------


@dataclass(frozen=True)
class StepRecord:
    """What one engine step ran.

    ``batch``: ``(rid, adapter, slot)`` per running request (slot -1 for base requests). An
    adapter request's slot is an int, the same at every step of the request's life, and
    ``resident[slot]`` is its adapter: a running adapter is never evicted, however many other
    adapters pass through the other slots. ``resident``: the cache's slot layout while the
    batch ran; ``finished``: rids that completed.
    """

    batch: tuple[tuple[int, AdapterId | None, int], ...]
    resident: tuple[AdapterId | None, ...]
    finished: tuple[int, ...]


class Engine:
    """A toy continuous-batching loop wiring ``schedule_step`` to a ``SlotCache``.

    Each step: schedule from the waiting queue; for each newly admitted adapter request, acquire
    its slot (one lookup per request) and pin it; run one decode step for the whole batch; unpin
    the adapters of requests that finished. A request holds its pin from admission until it
    finishes, so no later admission can evict its adapter. ``max_loras`` and ``max_batch`` are
    ints >= 1 (``TypeError`` for a non-int, ``ValueError`` below 1, naming the argument), and
    ``max_loras <= cache.num_slots`` (else ``ValueError`` naming ``max_loras``), so the admitted
    adapters always fit beside the pinned ones.
    """

    def __init__(self, cache: SlotCache, max_loras: int, max_batch: int, load: Loader) -> None:
        """Keep the cache and limits; start with empty ``waiting`` (list) and ``running``."""
        raise NotImplementedError("TODO(lab-04): validate the limits; empty queues")

    def submit(self, requests: Iterable[Request]) -> None:
        """Append requests to the waiting queue (``tokens >= 1`` each)."""
        raise NotImplementedError("TODO(lab-04): queue the requests")

    def idle(self) -> bool:
        """Nothing waiting and nothing running."""
        raise NotImplementedError("TODO(lab-04): are both queues empty?")

    def step(self) -> StepRecord:
        """Schedule, acquire and pin, run one decode step, unpin what finished."""
        raise NotImplementedError("TODO(lab-04): schedule_step with the running adapters and the "
                                  "free seats; acquire + pin each admitted adapter request; "
                                  "record the batch; retire finished requests")

    def run(self, requests: Iterable[Request], max_steps: int) -> list[StepRecord]:
        """Submit ``requests`` (through ``submit``, with its checks) and step until idle;
        ``RuntimeError`` past ``max_steps``."""
        raise NotImplementedError("TODO(lab-04): submit, then step until idle")


# --- exercise: defer against barrier, measured --------------------------------------------------

POLICIES = ("defer", "barrier")  # drain's policies: schedule_step, and the barrier strawman


def barrier_step(waiting: Sequence[Request], running_adapters: Iterable[AdapterId | None],
                 max_loras: int, max_batch: int) -> tuple[list[Request], list[Request]]:
    """The strawman: ``schedule_step``'s walk, stopped at the first request it does not admit.

    Admits the longest prefix of ``waiting`` that ``schedule_step`` admits; the first request it
    leaves waiting (one that does not fit, or the first one past a full batch) and everything
    behind it wait, even base requests that need no slot: a barrier, head-of-line blocking.
    Same arguments, checks and return value as ``schedule_step``: ``(scheduled,
    still_waiting)``, both in queue order.
    """
    raise NotImplementedError("TODO(lab-04): the prefix of the queue that schedule_step admits; "
                              "from the first request it leaves waiting, everything waits")


@dataclass(frozen=True)
class DrainReport:
    """One policy's run of a workload, from all requests queued until idle.

    ``policy``: "defer" or "barrier". ``steps``: engine steps until nothing waits or runs.
    ``waits``: one int per request, in the order the requests were given: the steps it spent in
    the waiting queue before admission (0 = admitted at the first step); its head-of-line wait.
    A request admitted after waiting ``w`` steps runs its ``tokens`` steps and is done, so
    ``steps == max(w + tokens)`` over the requests (0 for no requests).
    """

    policy: str
    steps: int
    waits: tuple[int, ...]


def drain(requests: Iterable[Request], max_loras: int, max_batch: int,
          policy: str = "defer") -> DrainReport:
    """Run ``requests``, all queued before the first step, through one policy until idle.

    Each step: schedule from the waiting queue with ``schedule_step`` (``policy="defer"``) or
    ``barrier_step`` (``"barrier"``), given the running requests' adapters and the seats left
    (``max_batch`` minus the running requests); run one decode step for the batch; retire the
    requests whose ``tokens`` are done. No slot cache: this measures the policy alone (with
    ``max_loras <= num_slots`` the cache never changes who runs). A policy other than the two
    raises ``ValueError`` naming ``policy``; repeated rids raise ``ValueError`` naming
    ``requests``; ``max_loras`` and ``max_batch`` are ints >= 1 and each request's ``tokens`` an
    int >= 1, checked as in ``Engine`` (``TypeError`` / ``ValueError`` naming them).
    """
    raise NotImplementedError("TODO(lab-04): step the chosen scheduler over the queue until idle; "
                              "record each request's steps in the queue and the step count")


def defer_vs_barrier(requests: Iterable[Request], max_loras: int,
                     max_batch: int) -> tuple[DrainReport, DrainReport]:
    """The same workload drained under both policies: ``(defer, barrier)`` reports.

    Measures section 4's claim instead of asserting it. Where a request that fits sits behind
    one that does not, deferral admits it at once and the barrier makes it wait; where no
    request is ever deferred (the queue never holds more distinct adapters than fit), both
    walks are the same and the reports tie in ``steps`` and ``waits``. ``requests`` may be any
    iterable (a generator is read once). Arguments are checked as in ``drain``.
    """
    raise NotImplementedError("TODO(lab-04): drain one copy of the workload with each policy")
