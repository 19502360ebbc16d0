"""A lookup-table submission scores at most a tenth of a lab's points.

The grader issue's submission pasted the handout's tables: a valid call returned a placeholder
whose value no refusal test checked, and a bad call raised the listed error type with one
message naming every argument. Here it is as generous as such a submission can be: it knows
exactly which calls are bad and which type each gets (it wraps the reference and keeps only the
error type), yet computes nothing. Every refusal test now starts from a seeded valid call whose
result is checked, and every message must carry the offending value, so it fails nearly all of
them. One real grading run per lab (unsandboxed, a seed the handout does not show).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from grading.runner import LABS_SUBDIR, TOOLING_ROOT, RunOptions, run_lab

pytestmark = pytest.mark.slow

HIDDEN_LIKE_SEED = 424242  # any seed but the handout's 1101
MAX_SHARE = 0.1  # "at most 3/30": a tenth of the lab's points

# (lab folder, the public functions a table answers for, every argument name for the message)
LABS = {
    "lab-01-batched-lora-matmul": (
        ("shrink", "expand", "lora_delta_loop", "group_by_adapter", "batched_lora_forward",
         "lora_overhead", "gather_shrink", "gather_expand"),
        "x W A B h A_stack B_stack idx scale d_in d_out r"),
    "lab-02-serve-many-loras": (
        ("engine_kwargs", "build_llm", "generate_mixed", "parse_capture", "lora_slot_bytes",
         "kv_bytes_per_token", "reconcile", "sql_executes", "eval_diff", "serve_argv",
         "percentile_ms", "cold_slot_signature", "load_adapter", "unload_adapter", "prefill_groups",
         "decode_groups",
         "shrink_groups", "expand_groups", "sgmv_shrink", "sgmv_expand", "sgmv_expand_slice",
         "bgmv_shrink", "bgmv_expand", "bgmv_expand_slice"),
        "model max_loras max_lora_rank max_cpu_loras cuda llm prompts adapters sampling text "
        "capture shape adapter schema sql inserts rows_a rows_b port host served_model_name "
        "kv_cache_bytes max_model_len trace latencies_ms num_slots q inputs lora_a_weights "
        "lora_b_weights output_tensor groups scaling slice_offset slice_size add_inputs "
        "b_seq_start_loc seq_len_tensor lora_indices_tensor base_url name path timeout_s"),
    "lab-03-lora-economics": (
        ("to_gib", "to_mib", "to_gb", "normalize_targets", "module_dims", "base_params",
         "base_bytes", "lora_params", "adapter_bytes", "size_ratio", "adapters_per_gib",
         "ratio_readings", "audit_ratio_claim", "slot_reservation_bytes", "rank_blast_radius",
         "engines_needed", "gpus_saved", "moe_base_params", "sharded_slot_bytes",
         "model_loading_bytes", "engine_kv_tokens", "fleet_hit_rate", "size_fleet"),
        "shape rank targets target dtype_bytes claimed tenants engines max_loras max_lora_rank "
        "old_rank new_rank adapter_nbytes tp layout attention_layout expert_layout "
        "memory_budget_bytes kv_bytes_per_token trace tenant_ranks min_kv_tokens "
        "target_hit_rate"),
}

TABLE = '''

# --- a lookup table: the reference's refusals, but no computation --------------------------
_MSG = {message!r}


def _placeholder(out):
    import numpy as _np
    if isinstance(out, tuple):
        return tuple(_np.zeros_like(o) if isinstance(o, _np.ndarray) else o for o in out)
    if isinstance(out, _np.ndarray):
        return _np.zeros_like(out)
    for kind, value in ((bool, False), (int, 0), (float, 0.0), (list, [])):
        if isinstance(out, kind):
            return value
    return None


def _table(f):
    def answer(*args, **kwargs):
        import copy as _copy
        try:  # on copies: an op that writes into its output tensor writes nothing here
            out = f(*_copy.deepcopy(args), **_copy.deepcopy(kwargs))
        except TypeError:
            raise TypeError(_MSG) from None
        except ValueError:
            raise ValueError(_MSG) from None
        return _placeholder(out)
    return answer


for _name in {names!r}:
    globals()[_name] = _table(globals()[_name])
'''


def lookup_table(lab: str, dst: Path) -> Path:
    names, message = LABS[lab]
    source = (TOOLING_ROOT / LABS_SUBDIR / lab / "solution.py").read_text(encoding="utf-8")
    (dst / lab).mkdir(parents=True)
    (dst / lab / "starter.py").write_text(
        source + TABLE.format(message=f"{message}: bad input", names=names), encoding="utf-8")
    return dst


# Measured on 2026-12-06 with this seed: lab 01, 4%; lab 03, 13 of 247 graded tests (5.3%), down
# from 60 (24%) before its sections 6-7 refusal rows, its inputs-unchanged tests and three
# relation-only tests checked their results (issue 29). What lab 03's table still passes is what
# it computes in effect: module_dims and normalize_targets return tuples of plain values, which
# _placeholder keeps; adapters_per_gib of an adapter over a GiB is 0; and a packed-overlap row
# whose bad target "k" is a substring of the message's "rank".
# Lab 02 (its CPU side, parts 1-3): 3 of 265 (1.1%), down from 59 (22%) once every refusal test
# started from a valid call drawn from the seed and checked (conftest.py's valid_calls and
# stand_ins): what passes is the adapter routes' error path (the server stub answers with an
# error, which the table passes through) and load_adapter's timeout.


@pytest.mark.parametrize("lab", list(LABS))
def test_a_lookup_table_scores_at_most_a_tenth(lab, tmp_path):
    if not (TOOLING_ROOT / LABS_SUBDIR / lab / "solution.py").is_file():
        pytest.skip("needs the reference solutions")
    submission = lookup_table(lab, tmp_path / "submission")
    run = run_lab(TOOLING_ROOT, lab, str(submission), tmp_path / "run",
                  RunOptions(marker_expr="not gpu and not engine", seed=HIDDEN_LIKE_SEED))
    graded = [t for t in run.tests if t.graded]
    passed = [t.name for t in graded if t.outcome == "passed"]
    assert graded and not run.problems, f"{lab}: the run did not grade ({run.problems})"
    share = len(passed) / len(graded)
    assert share <= MAX_SHARE, (
        f"{lab}: a lookup table passes {len(passed)} of {len(graded)} graded tests "
        f"({share:.0%} of the points), more than {MAX_SHARE:.0%}: {sorted(set(passed))[:10]}")
