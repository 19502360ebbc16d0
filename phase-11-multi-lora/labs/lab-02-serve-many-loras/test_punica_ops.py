"""Lab 02 spec, part 3: lab 01 inside the engine.

vLLM's CPU build computes every LoRA delta with six punica ops (``sgmv_``/``bgmv_`` x
``shrink``/``expand``/``expand_slice``). Part 3 writes them on lab 01's grouping, shrink and
expand, and installs them in the real engine. What is proven here, each claim able to fail:

- **grouping** (numpy only): ``prefill_groups`` lists each slot's tokens from vLLM's segments,
  stable, base segments in no group; ``decode_groups`` is lab 01's ``group_by_adapter``;
- **each op computes vLLM's definition** (``reference_op``, itself checked against vLLM's stock
  op), on integer-valued inputs (exact: bit for bit) and on random floats, with EVERY slot
  holding an adapter: adapter rows get their slot's delta, base rows (-1) and the columns outside
  the op's slice are untouched, ``add_inputs`` adds or writes;
- **in the engine**: on the one-slot engine (its only slot is also the last), part 3's ops give
  the base rows of a mixed batch exactly the clean base outputs (``eval_diff``: 0 rows differ,
  where the stock ops alias every one, part 1's finding) and the adapter rows exactly the stock
  ops' outputs; on the three-slot engine, a mixed batch reads the same on both ops;
- **in a server process**: ``LAB02_PUNICA_OPS=lab`` makes vLLM's plugin loader install them.

The engine's tax, stock against part 3's ops, is measured by ``make bench-engine``
(``tools/bench_engine.py``), never asserted here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from labkit import (
    assert_bitwise_equal,
    assert_close,
    first_mismatch,
    in_worker,
    load_lab,
)

pytestmark = pytest.mark.part3

LAB = Path(__file__).resolve().parent
SMALL_INT = 3  # integer-valued inputs in [-3, 3]: every sum below is exact in float32
SENTINEL = 7.0  # what the output holds before the call: untouched rows must still hold it
# Random floats: the same products as vLLM's einsum, summed by another kernel
RTOL = ATOL = 1e-5
PLUGIN_TIMEOUT_S = 120  # a fresh process importing vLLM, then the lab: seconds on 2 cores

# Shapes of one draw: T tokens in S segments, L slots of rank r, d_in -> d_out
T, D_IN, D_OUT, R, L = 37, 24, 20, 4, 3


def with_outputs(rows: list[dict], texts: list[str]) -> list[dict]:
    return [{**row, "output": text} for row, text in zip(rows, texts, strict=True)]


# --- draws: segments and slot stacks with every slot occupied --------------------------------


def draw_segments(rng: np.random.Generator, tokens: int, slots: int) -> dict[str, np.ndarray]:
    """vLLM's prefill metadata for ``tokens`` tokens: segments of 1..6 tokens, each on a slot
    in [-1, slots), neighbours never on the same slot (vLLM merges those), every slot and the
    base present, a slot owning several segments."""
    lens, left = [], tokens
    while left:
        lens.append(int(min(left, rng.integers(1, 7))))
        left -= lens[-1]
    ids = [-1, *range(slots)]
    seg_slots: list[int] = []
    for i in range(len(lens)):
        choices = [s for s in ids if not seg_slots or s != seg_slots[-1]]
        forced = ids[i] if i < len(ids) and ids[i] in choices else None
        seg_slots.append(forced if forced is not None else int(rng.choice(choices)))
    lens_a = np.array(lens, dtype=np.int64)
    return {"b_seq_start_loc": np.concatenate(([0], np.cumsum(lens_a)[:-1])).astype(np.int64),
            "seq_len_tensor": lens_a, "lora_indices_tensor": np.array(seg_slots, dtype=np.int64)}


def per_token(seg: dict[str, np.ndarray]) -> np.ndarray:
    """The slot of each token: the segments expanded (vLLM's ``token_lora_indices``)."""
    return np.repeat(seg["lora_indices_tensor"], seg["seq_len_tensor"])


def draw_values(rng: np.random.Generator, shape, integer: bool) -> np.ndarray:
    if integer:  # never zero: every slot's weights are full, so the last slot's delta shows
        v = rng.integers(1, SMALL_INT + 1, size=shape) * rng.choice([-1, 1], size=shape)
        return v.astype(np.float32)
    return (rng.standard_normal(shape) / np.sqrt(shape[-1])).astype(np.float32)


def draw_case(seed: int, op: str, integer: bool, add_inputs: bool) -> dict:
    """Every argument of one call of ``op``, as numpy arrays and Python scalars."""
    rng = np.random.default_rng([seed, OP_NAMES.index(op), integer, add_inputs])
    seg = draw_segments(rng, T, L)
    shrink = op.endswith("shrink")
    if shrink:
        inputs, weights = draw_values(rng, (T, D_IN), integer), draw_values(rng, (L, 1, R, D_IN), integer)
        out_width = R
    else:
        inputs, weights = draw_values(rng, (T, R), integer), draw_values(rng, (L, 1, D_OUT, R), integer)
        out_width = 3 * D_OUT if op.endswith("slice") else D_OUT
    output = np.full((T, out_width), SENTINEL, dtype=np.float32)
    return {"inputs": inputs, "weights": weights, "output": output, "seg": seg,
            "scaling": 0.5, "slice": (D_OUT + 1, D_OUT), "add_inputs": add_inputs}


OP_NAMES = ("sgmv_shrink", "sgmv_expand", "sgmv_expand_slice",
            "bgmv_shrink", "bgmv_expand", "bgmv_expand_slice")


def op_args(op: str, case: dict, tensor) -> tuple[list, object]:
    """The positional arguments vLLM's punica wrapper passes ``op``, each array made by
    ``tensor`` from a copy of the case's (a torch tensor for vLLM's op; for the lab's, a numpy
    array, which its ops take too), and the output they write to."""
    t = {k: tensor(case[k].copy()) for k in ("inputs", "weights", "output")}
    seg = {k: tensor(v.copy()) for k, v in case["seg"].items()}
    args = [t["inputs"], t["weights"], t["output"]]
    if op.startswith("sgmv"):
        lens = case["seg"]["seq_len_tensor"]
        args += [seg["b_seq_start_loc"], seg["seq_len_tensor"], seg["lora_indices_tensor"],
                 len(lens), int(lens.max()), int(lens.sum())]
    else:
        args.append(tensor(per_token(case["seg"])))
    if op.endswith("shrink"):
        args.append(case["scaling"])
    elif op.endswith("slice"):
        args += [*case["slice"], case["add_inputs"]]
    else:
        args.append(case["add_inputs"])
    return args, t["output"]


def run_op(which: str, op: str, case: dict) -> np.ndarray:
    """Call ``op`` ("stock": vLLM's, on torch tensors; "lab": part 3's, on numpy arrays) where
    the lab's code runs; its output."""
    lab = load_lab(LAB.name)
    if which == "stock":
        import torch

        args, output = op_args(op, case, torch.from_numpy)
        lab.stock_ops()[op](*args)
        return output.numpy()
    args, output = op_args(op, case, np.asarray)
    lab.lab_ops()[op](*args)
    return output


def touched_columns(op: str, case: dict) -> slice:
    if op.endswith("slice"):
        offset, size = case["slice"]
        return slice(offset, offset + size)
    return slice(0, case["output"].shape[1])


# --- grouping: numpy only --------------------------------------------------------------------


def test_prefill_groups_list_each_slots_tokens_in_order(lab, seed):
    rng = np.random.default_rng(seed)
    seg = draw_segments(rng, T, L)
    tokens = per_token(seg)
    before = {k: v.copy() for k, v in seg.items()}
    order, slots, offsets = lab.prefill_groups(*seg.values())
    want_slots = sorted(set(tokens.tolist()) - {-1})
    assert list(slots) == want_slots, f"the distinct slots present, ascending: {want_slots}, got {list(slots)}"
    assert list(offsets) == [0, *np.cumsum([np.sum(tokens == s) for s in want_slots])], (
        f"offsets: each group's token count, cumulated; got {list(offsets)}")
    for g, s in enumerate(want_slots):
        got = list(order[offsets[g]:offsets[g + 1]])
        want = list(np.flatnonzero(tokens == s))
        assert got == want, f"slot {s}: its tokens, in order, are {want}; got {got}"
    for k, v in seg.items():
        assert_bitwise_equal(v, before[k], why=f"prefill_groups must not edit {k}")


def test_prefill_groups_read_the_segment_starts(lab, seed):
    """Segments are located by ``b_seq_start_loc``, not by counting: a batch whose first tokens
    belong to no segment (a start offset) keeps its rows where the starts put them."""
    rng = np.random.default_rng(seed)
    seg = draw_segments(rng, T, L)
    shifted = dict(seg, b_seq_start_loc=seg["b_seq_start_loc"] + 5)
    order, _, _ = lab.prefill_groups(*seg.values())
    order5, _, _ = lab.prefill_groups(*shifted.values())
    assert list(order5) == [i + 5 for i in order], (
        "every segment starts 5 tokens later, so every grouped token row must be 5 larger")


def groups_after_refills(steps: list[dict[str, np.ndarray]]) -> list[list[list[int]]]:
    """Group each step's segments the way vLLM hands them over: the SAME three buffers, refilled
    in place for every step (``PunicaWrapperBase._update_prefill_metadata``), each step grouped
    twice (the ops of one step share its segments). Each grouping as lists, in call order."""
    lab = load_lab(LAB.name)
    size = max(len(step["seq_len_tensor"]) for step in steps)
    buffers = {k: np.zeros(size, dtype=np.int64) for k in steps[0]}
    out = []
    for step in steps:
        n = len(step["seq_len_tensor"])
        for k, v in step.items():
            buffers[k][:n] = v
        for _ in range(2):
            out.append([list(map(int, a)) for a in lab.prefill_groups(
                *(buffers[k][:n] for k in ("b_seq_start_loc", "seq_len_tensor",
                                           "lora_indices_tensor")))])
    return out


def test_prefill_groups_follow_buffers_refilled_in_place(lab, seed):
    """A result may be reused for the same contents only: vLLM refills its segment buffers in
    place every step, so a grouping remembered by object answers with the last step's groups."""
    rng = np.random.default_rng(seed)
    steps = [draw_segments(rng, T, L) for _ in range(3)]
    steps[1]["lora_indices_tensor"] = steps[1]["lora_indices_tensor"][::-1].copy()
    got = in_worker(lab, groups_after_refills, steps)
    for i, step in enumerate(steps):
        tokens = per_token(step)
        slots = sorted(set(tokens.tolist()) - {-1})
        want_order = [int(t) for s_ in slots for t in np.flatnonzero(tokens == s_)]
        for call in (2 * i, 2 * i + 1):
            assert got[call][0] == want_order and got[call][1] == slots, (
                f"step {i} (call {call + 1}): the buffers were refilled in place with new "
                f"segments; the grouping must be this step's, slots {slots}, got {got[call][1]}")


def test_an_all_base_prefill_forms_no_group(lab):
    seg = {"b_seq_start_loc": np.array([0, 4]), "seq_len_tensor": np.array([4, 3]),
           "lora_indices_tensor": np.array([-1, -1])}
    order, slots, offsets = lab.prefill_groups(*seg.values())
    assert (len(order), len(slots), list(offsets)) == (0, 0, [0]), (
        f"base segments form no group: expected no rows, no slots, offsets [0]; got "
        f"{list(order)}, {list(slots)}, {list(offsets)}")


def test_decode_groups_are_lab_01s_grouping(lab, seed):
    rng = np.random.default_rng(seed)
    idx = per_token(draw_segments(rng, T, L))
    want = load_lab("lab-01").group_by_adapter(idx.copy())
    got = lab.decode_groups(idx)
    for name, a, b in zip(("order", "adapter_ids", "offsets"), got, want, strict=True):
        assert list(a) == list(b), f"decode_groups' {name} must be group_by_adapter's: {list(b)}, got {list(a)}"


def decode_groups_after_refills(steps: list[np.ndarray]) -> list[tuple[list[list[int]], list[int]]]:
    """Group each step's per-token indices through ONE buffer refilled in place (as vLLM
    refills ``token_lora_indices``), twice per step: each grouping as lists, and the buffer's
    contents after the call."""
    lab = load_lab(LAB.name)
    buffer = np.zeros(len(steps[0]), dtype=np.int64)
    out = []
    for step in steps:
        buffer[:] = step
        for _ in range(2):
            groups = [list(map(int, a)) for a in lab.decode_groups(buffer)]
            out.append((groups, buffer.tolist()))
    return out


def test_decode_groups_follow_a_buffer_refilled_in_place_and_leave_it_unchanged(lab, seed):
    rng = np.random.default_rng(seed)
    steps = [per_token(draw_segments(rng, T, L)) for _ in range(3)]
    steps[1] = steps[1][::-1].copy()
    group_by_adapter = load_lab("lab-01").group_by_adapter
    got = in_worker(lab, decode_groups_after_refills, steps)
    for i, step in enumerate(steps):
        want = [list(map(int, a)) for a in group_by_adapter(step.copy())]
        for call in (2 * i, 2 * i + 1):
            groups, after = got[call]
            assert after == step.tolist(), (
                f"step {i} (call {call + 1}): decode_groups must leave the indices unchanged")
            assert groups == want, (
                f"step {i} (call {call + 1}): the buffer was refilled in place with new indices; "
                f"the grouping must be this step's (lab 01's group_by_adapter): order "
                f"{first_mismatch(groups[0], want[0])}")


def group_op(name: str, inputs: np.ndarray, weights: np.ndarray, output: np.ndarray,
             idx: np.ndarray) -> np.ndarray:
    """``shrink_groups`` (scaling 0.5) or ``expand_groups`` (columns ``[0, d_out)``, adding) of
    ``decode_groups(idx)``, where the lab's code runs; the output it wrote."""
    lab = load_lab(LAB.name)
    groups = lab.decode_groups(idx)
    if name == "shrink_groups":
        lab.shrink_groups(inputs, weights, output, groups, 0.5)
    else:
        lab.expand_groups(inputs, weights, output, groups, 0, weights.shape[-2], True)
    return output


GROUP_OPS = ("shrink_groups", "expand_groups")


def group_case(rng: np.random.Generator, name: str, integer: bool):
    """Inputs, slots (max_loras, 1, a, b) and the output width of one group op's call."""
    if name == "shrink_groups":
        return draw_values(rng, (T, D_IN), integer), draw_values(rng, (L, 1, R, D_IN), integer), R
    return draw_values(rng, (T, R), integer), draw_values(rng, (L, 1, D_OUT, R), integer), D_OUT + 4


@pytest.mark.parametrize("name", GROUP_OPS)
def test_the_group_ops_take_slot_stacks_without_the_1(lab, seed, name):
    rng = np.random.default_rng(seed)
    idx = per_token(draw_segments(rng, T, L))
    inputs, weights, width = group_case(rng, name, True)
    output = np.full((T, width), SENTINEL, dtype=np.float32)
    four = in_worker(lab, group_op, name, inputs.copy(), weights.copy(), output.copy(), idx.copy())
    three = in_worker(lab, group_op, name, inputs.copy(), weights[:, 0].copy(), output.copy(),
                      idx.copy())
    assert_bitwise_equal(three, four, why=(
        f"{name}: slots of shape (max_loras, a, b), without the 1, are the same slots as "
        f"(max_loras, 1, a, b)"))


@pytest.mark.parametrize("name", GROUP_OPS)
def test_the_group_ops_compute_in_the_outputs_dtype(lab, seed, name):
    rng = np.random.default_rng(seed)
    idx = per_token(draw_segments(rng, T, L))
    inputs, weights, width = group_case(rng, name, False)
    inputs, weights = inputs * 4, weights * 4  # float16 rounds these products visibly
    output = np.zeros((T, width), dtype=np.float16)
    mixed = in_worker(lab, group_op, name, inputs.copy(), weights.copy(), output.copy(), idx.copy())
    same = in_worker(lab, group_op, name, inputs.astype(np.float16), weights.astype(np.float16),
                     output.copy(), idx.copy())
    assert_bitwise_equal(mixed, same, why=(
        f"{name}: inputs and slots are computed in the output's dtype (float16 here), as vLLM's "
        f"ops do: float32 inputs and slots give what their float16 copies give"))


COMMON_LEN_OPS = ("sgmv_expand", "bgmv_expand")


@pytest.mark.parametrize("extra", [-3, 3], ids=["output-narrower", "output-wider"])
@pytest.mark.parametrize("op", COMMON_LEN_OPS)
def test_expand_writes_the_columns_both_the_slot_and_the_output_have(lab, seed, op, extra):
    case = draw_case(seed, op, True, True)
    width = D_OUT + extra
    case["output"] = np.full((T, width), SENTINEL, dtype=np.float32)
    common = min(D_OUT, width)
    want = case["output"].copy()
    for i, slot in enumerate(per_token(case["seg"])):
        if slot != -1:
            want[i, :common] += (case["weights"][slot, 0] @ case["inputs"][i])[:common]
    got = in_worker(lab, run_op, "lab", op, case)
    assert_bitwise_equal(got, want, why=(
        f"{op} into a {width}-column output from {D_OUT}-row slots: the first "
        f"min(d_out, output width) = {common} columns get the delta (vLLM's common_len), the "
        f"rest keep {SENTINEL}"))


def as_array_writes() -> tuple[float, bool]:
    """Where the lab's code runs: a write through ``as_array`` of a torch tensor, read back from
    the tensor; and whether ``as_array`` of a numpy array is that array."""
    import torch

    lab = load_lab(LAB.name)
    t = torch.zeros(3, 2)
    lab.as_array(t)[1, 0] = 5.0
    a = np.zeros(2)
    return t[1, 0].item(), lab.as_array(a) is a


@pytest.mark.engine  # torch comes with the engine install; importing it costs seconds
@pytest.mark.structural  # the given as_array, not the student's code
def test_as_array_views_a_tensor_without_a_copy(lab):
    pytest.importorskip("torch")
    written, same = in_worker(lab, as_array_writes)
    assert written == 5.0, "as_array(tensor) is a view: a write through it lands in the tensor"
    assert same, "as_array(numpy array) is the array itself"


TRIED: list[str] = []


def _tried(name: str):
    def op(*args) -> None:
        TRIED.append(name)
    return op


def _todo(*args) -> None:
    raise NotImplementedError("TODO(lab-02)")


def try_recorded_ops(raising: str | None) -> list[str]:
    """``try_ops`` on six recording ops (``raising``: that one raises a TODO instead), where the
    lab's code runs: the ops called, in order."""
    TRIED.clear()
    ops = {n: _todo if n == raising else _tried(n) for n in OP_NAMES}
    load_lab(LAB.name).try_ops(ops)
    return list(TRIED)


@pytest.mark.structural  # the given try_ops, not the student's code
def test_try_ops_calls_each_op_once_and_raises_what_an_op_raises(lab):
    called = in_worker(lab, try_recorded_ops, None)
    assert called == list(OP_NAMES), f"each of the six ops, once: got {called}"
    with pytest.raises(NotImplementedError, match="TODO"):
        in_worker(lab, try_recorded_ops, "bgmv_shrink")


# --- each op against vLLM's stock op ---------------------------------------------------------


def reference_op(op: str, case: dict) -> np.ndarray:
    """What ``op`` computes, by vLLM's definition, one token at a time: a token on slot s gets
    ``scaling * A[s] @ x`` (shrink, into the first r columns) or ``B[s] @ h`` (expand, added
    to or written over the op's columns); a base token (-1) and every other column keep what the
    output held."""
    out = case["output"].copy()
    weights = case["weights"][:, 0]
    cols = touched_columns(op, case)
    for i, slot in enumerate(per_token(case["seg"])):
        if slot == -1:
            continue
        v = weights[slot] @ case["inputs"][i]
        if op.endswith("shrink"):
            out[i, :len(v)] = np.float32(case["scaling"]) * v
        else:
            v = v[:cols.stop - cols.start]
            out[i, cols] = out[i, cols] + v if case["add_inputs"] else v
    return out


OP_CASES = [(op, add) for op in OP_NAMES  # a shrink writes: it has no add_inputs
            for add in ((False,) if op.endswith("shrink") else (False, True))]
OP_IDS = [f"{op}-{'add' if add else 'write'}" for op, add in OP_CASES]


@pytest.mark.parametrize("integer", [True, False], ids=["integer", "random"])
@pytest.mark.parametrize(("op", "add_inputs"), OP_CASES, ids=OP_IDS)
def test_each_op_computes_its_definition_and_leaves_base_rows_alone(
        lab, seed, op, integer, add_inputs):
    case = draw_case(seed, op, integer, add_inputs)
    want = reference_op(op, case)
    got = in_worker(lab, run_op, "lab", op, case)
    cols = touched_columns(op, case)
    what = (f"{op} ({'add_inputs' if add_inputs else 'writes'}, every slot occupied): adapter "
            f"rows in columns {cols.start}:{cols.stop} get their slot's delta; base rows (slot "
            f"-1) and every other column keep what the output held ({SENTINEL})")
    if integer:
        assert_bitwise_equal(got, want, why=what)
    else:
        assert_close(got, want, rtol=RTOL, atol=ATOL, why=what)


@pytest.mark.engine
@pytest.mark.structural  # checks the oracle above against vLLM, not the student's code
@pytest.mark.parametrize(("op", "add_inputs"), OP_CASES, ids=OP_IDS)
def test_the_definition_is_what_vllms_stock_op_computes(lab, seed, op, add_inputs):
    case = draw_case(seed, op, True, add_inputs)
    want = reference_op(op, case)
    stock = in_worker(lab, run_op, "stock", op, case)
    adapter = per_token(case["seg"]) != -1
    cols = touched_columns(op, case)
    assert_bitwise_equal(stock[adapter, cols], want[adapter, cols],
                         why=f"vLLM's {op} on adapter rows is the definition (exact inputs)")


@pytest.mark.engine
@pytest.mark.structural  # install_ops and lab_ops are given code
def test_install_ops_swaps_the_six_names_the_engine_calls(lab):
    assert in_worker(lab, installed_names) == {
        "lab": ["lab"] * len(OP_NAMES), "stock": ["stock"] * len(OP_NAMES)}, (
        "install_ops(ops) must set each of the six names on punica_cpu, and return the ones "
        "it replaced so that they can be put back")


def installed_names() -> dict[str, list[str]]:
    """Install the lab's ops, then the ones install_ops returned; which ops punica_cpu held."""
    import importlib

    lab = load_lab(LAB.name)
    module = importlib.import_module(lab.PUNICA_CPU)
    stock, ours = lab.stock_ops(), lab.lab_ops()

    def held() -> list[str]:
        return ["lab" if getattr(module, n) is ours[n] else
                "stock" if getattr(module, n) is stock[n] else "other" for n in OP_NAMES]

    replaced = lab.install_ops(ours)
    after_install = held()
    lab.install_ops(replaced)
    return {"lab": after_install, "stock": held()}


@pytest.mark.engine
@pytest.mark.structural  # install_ops and lab_ops are given code
def test_install_ops_refuses_a_partial_set(lab):
    with pytest.raises(ValueError, match="ops: expected all six"):
        in_worker(lab, install_partial)


def install_partial() -> None:
    lab = load_lab(LAB.name)
    ops = lab.lab_ops()
    ops.pop("bgmv_expand_slice")
    lab.install_ops(ops)


# --- in the engine ----------------------------------------------------------------------------


@pytest.mark.engine
def test_lab_ops_keep_base_rows_clean_when_every_slot_is_full(lab, eval_runs, one_slot):
    """The -1 bug, fixed: the one-slot engine's only slot is its last, so the stock ops give its
    base rows the adapter (part 1's finding); part 3's ops must give them the clean outputs."""
    rows, base_clean = eval_runs.get().side("eval", None)
    rows, base_clean = rows[:len(one_slot.rows)], base_clean[:len(one_slot.rows)]
    texts = one_slot.lab_texts.get()
    base_lab = [t.strip() for t in texts[:len(rows)]]
    diff = lab.eval_diff(with_outputs(rows, base_clean), with_outputs(rows, base_lab))
    assert diff.clean, (
        "with part 3's ops, base rows batched with the one-slot adapter must read exactly as "
        "clean base rows (eval_diff reports 0 differing):\n" + diff.summary())


@pytest.mark.engine
def test_lab_ops_answer_adapter_rows_as_the_stock_ops_do(one_slot):
    n = len(one_slot.rows)
    stock = [t.strip() for t in one_slot.texts.get()[n:]]
    ours = [t.strip() for t in one_slot.lab_texts.get()[n:]]
    assert ours == stock, ("the sql-lora rows must read exactly as on vLLM's stock ops (greedy): "
                           + first_mismatch(ours, stock))


MIXED_ROWS = 4  # held-out rows, each as a base, a sql-lora and a question-lora request


@pytest.mark.engine
def test_a_mixed_batch_reads_the_same_on_both_ops(eval_runs, engine, engines):
    """Three slots, both tenants resident, base rows between them: the evaluation batch's first
    rows (each as base, sql-lora and question-lora), re-run on part 3's ops, read exactly as the
    evaluation batch read them on vLLM's stock ops."""
    runs = eval_runs.get()
    rows, stock = runs.rows[:3 * MIXED_ROWS], runs.texts[:3 * MIXED_ROWS]  # the batch's first
    assert {r.split for r in rows} == {"eval"}, "the evaluation batch starts with its eval rows"
    tags = [r.tag for r in rows]
    ours = [t.strip() for t in engines.generate_with_ops("lab", engine.get(),
                                                         [r.prompt for r in rows], tags)]
    assert ours == stock, ("a mixed batch must read exactly as on vLLM's stock ops, row by row "
                           "(greedy): " + first_mismatch(ours, stock))


# --- in a server process: vLLM's plugin entry point ------------------------------------------


def ops_in_a_fresh_process(value: str | None) -> str:
    """In a new Python process with ``LAB02_PUNICA_OPS=value`` (unset: None), run vLLM's plugin
    loader as every vLLM process does at start-up, then call the six ops punica_cpu now holds
    on a tiny batch (the lab's ``try_ops``); the module that defines them (printed by the
    child). The ops run here first, so a TODO fails before a process starts."""
    lab = load_lab(LAB.name)
    lab.try_ops(lab.lab_ops())
    env = {k: v for k, v in os.environ.items() if k != "LAB02_PUNICA_OPS"}
    if value is not None:
        env["LAB02_PUNICA_OPS"] = value
    code = ("from vllm.plugins import load_general_plugins; load_general_plugins(); "
            "from vllm.lora.punica_wrapper import punica_cpu; from labkit import load_lab; "
            "lab = load_lab('lab-02'); "
            "lab.try_ops({n: getattr(punica_cpu, n) for n in lab.OP_NAMES}); "
            "print('OPS', punica_cpu.sgmv_shrink.__module__)")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=PLUGIN_TIMEOUT_S)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("OPS ")), None)
    if line is None:
        raise RuntimeError(f"the child printed no OPS line (exit {done.returncode}):\n"
                           f"{done.stderr[-1500:]}")
    return line.split(" ", 1)[1]


def lab_module_name() -> str:
    return load_lab(LAB.name).sgmv_shrink.__module__


@pytest.mark.engine
def test_the_plugin_installs_the_lab_ops_in_a_server_process(lab):
    """``LAB02_PUNICA_OPS=lab``: vLLM's ``vllm.general_plugins`` hook (labkit/vllm_plugin.py,
    declared in pyproject.toml) installs the lab's ops in every process vLLM starts."""
    module = in_worker(lab, ops_in_a_fresh_process, "lab")
    assert module == in_worker(lab, lab_module_name), (
        f"with LAB02_PUNICA_OPS=lab, punica_cpu.sgmv_shrink must be the lab's, got {module}")


@pytest.mark.structural  # the given hook, not the student's code
def test_the_plugin_leaves_vllms_ops_alone_unless_asked():
    from labkit import vllm_plugin

    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(vllm_plugin.OPS_ENV, raising=False)
        vllm_plugin.register()  # nothing to install: returns without loading the lab
        mp.setenv(vllm_plugin.OPS_ENV, "mine")
        with pytest.raises(ValueError, match="LAB02_PUNICA_OPS: expected one of"):
            vllm_plugin.register()
