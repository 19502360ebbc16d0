"""Lab 03 spec, the promises a mutation tool found untested (the course's mutation sweep).

Each test states one documented sentence that the main spec (test_lab.py) left open.
"""

from __future__ import annotations

import dataclasses

import pytest

GiB = 2**30
# a GQA shape where every width differs: a reversed (d_in, d_out) shows in module_dims
SHAPE = dict(hidden=64, intermediate=160, layers=2, heads=4, kv_heads=2, vocab=100)
DIMS = {"q": (64, 64), "k": (64, 32), "v": (64, 32), "o": (64, 64),
        "gate": (64, 160), "up": (64, 160), "down": (160, 64)}


@pytest.mark.parametrize("target", list(DIMS))
def test_module_dims_are_d_in_then_d_out(lab, target):
    got = lab.module_dims(lab.ModelShape(**SHAPE), target)
    assert tuple(got) == DIMS[target], (
        f"module_dims(shape, {target!r}) = {got}, expected (d_in, d_out) = {DIMS[target]} "
        f"(hidden=64, intermediate=160, kv width 2 x 16 = 32)")


def test_o_proj_reads_the_query_width_when_head_dim_is_given(lab):
    # heads * head_dim = 4 * 8 = 32 differs from hidden = 64: o maps the query width back
    shape = lab.ModelShape(**SHAPE, head_dim=8)
    assert tuple(lab.module_dims(shape, "o")) == (32, 64)
    assert tuple(lab.module_dims(shape, "q")) == (64, 32)


@pytest.mark.parametrize("nbytes, fit", [(GiB // 2 + 1, 1), (GiB // 3 + 1, 2), (GiB, 1),
                                          (GiB + 1, 0), (3 * 2**20, 341)])
def test_adapters_per_gib_is_a_floor(lab, nbytes, fit):
    got = lab.adapters_per_gib(nbytes)
    assert got == fit and isinstance(got, int), (
        f"adapters_per_gib({nbytes}) = {got!r}: whole adapters per GiB, floor({GiB / nbytes:.4f})"
        f" = {fit}")


def test_audit_honours_rtol(lab):
    # 430 lies 0.3% from the gb_over_gib reading 431.3
    assert lab.audit_ratio_claim(430, rtol=0.001).reading is None, \
        "rtol=0.001: 430 is 0.3% from 431.3x and must match nothing"
    assert lab.audit_ratio_claim(430, rtol=0.01).reading.name == "gb_over_gib"
    assert lab.audit_ratio_claim(600, rtol=0.5).reading is not None, \
        "rtol=0.5: 600 is within 50% of a reading"


@pytest.mark.parametrize("claimed", [0.5, 1, 1e-3])
def test_any_positive_claim_is_audited(lab, claimed):
    audit = lab.audit_ratio_claim(claimed)
    assert audit.reading is None and "401.6" in audit.sentence


def test_zero_engines_have_no_blast_radius(lab):
    shape = lab.ModelShape(**SHAPE)
    assert lab.rank_blast_radius(shape, 0, 8, 16, 64) == 0, \
        "engines >= 0: a fleet of zero engines grows by zero bytes"
    assert lab.engines_needed(0, 8) == 0 and lab.gpus_saved(0, 8) == 0


@pytest.mark.structural
def test_units_and_published_shapes(lab):
    assert (lab.GB, lab.MB, lab.GiB, lab.MiB) == (10**9, 10**6, 2**30, 2**20)
    llama3_8b = lab.ModelShape(hidden=4096, intermediate=14336, layers=32, heads=32, kv_heads=8,
                               vocab=128256)  # meta-llama/Meta-Llama-3-8B config.json
    llama2_7b = lab.ModelShape(hidden=4096, intermediate=11008, layers=32, heads=32,
                               kv_heads=32, vocab=32000)  # meta-llama/Llama-2-7b-hf
    assert llama3_8b == lab.LLAMA3_8B and llama2_7b == lab.LLAMA2_7B
    with pytest.raises(dataclasses.FrozenInstanceError):
        llama2_7b.hidden = 1  # a shape is a value: fixed once read from config.json


def test_readings_and_verdicts_are_frozen(lab):
    audit = lab.audit_ratio_claim(430)
    for record in (audit, audit.reading):
        with pytest.raises(dataclasses.FrozenInstanceError):
            record.ratio = 1.0 if record is audit.reading else None
