"""A class graded at scale gives the summary one serial run gives: ``--jobs 2`` on one machine,
and ``--shard I/N`` runs merged with ``grade merge``. Four fake submissions, graded four times
(about a minute on two cores)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from grading import grade, merge
from grading.tests import fakes

pytestmark = pytest.mark.slow

SUMMARY = ("summary.csv", "summary.md")


@pytest.fixture(scope="module")
def cohort(fake_repo: Path, tmp_path_factory: pytest.TempPathFactory, sandbox_works) -> Path:
    """Submissions whose outcome does not depend on timing (no timeouts)."""
    root = tmp_path_factory.mktemp("cohort")
    fakes.make_submission(root / "solved", fakes.LAB1_SOLUTION, fakes.LAB2_SOLUTION)
    fakes.make_submission(root / "pristine", fakes.LAB1_STARTER, fakes.LAB2_STARTER)
    fakes.make_submission(root / "cheat", fakes.cheat_lab1(fake_repo), fakes.CHEAT_LAB2)
    fakes.make_submission(root / "broken", "raise RuntimeError('boom')\n", None)
    return root


def run(fake_repo: Path, cohort: Path, out: Path, *extra: str) -> Path:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRADING_HIDDEN_SEEDS", "12345")
        assert grade.main([str(cohort), "--repo", str(fake_repo), "--out", str(out),
                           *extra]) == 0
    return out


@pytest.fixture(scope="module")
def serial(fake_repo, cohort, tmp_path_factory) -> Path:
    return run(fake_repo, cohort, tmp_path_factory.mktemp("serial"))


def summaries(out: Path) -> dict[str, str]:
    return {name: (out / name).read_text(encoding="utf-8") for name in SUMMARY}


def test_the_serial_summary_is_what_it_should_be(serial):
    # cheat's lab 02 appends to a test file: refused in the read-only tree, so it fails there
    csv = (serial / "summary.csv").read_text()
    assert csv.splitlines()[1:] == [
        "broken,0.0,100.0,0.0,0.0,,0",
        "cheat,60.0,100.0,60.0,0.0,fails_hidden_seed; reads_solution; tampers_tests,0",
        "pristine,0.0,100.0,0.0,0.0,,0",
        "solved,100.0,100.0,60.0,40.0,,0"], csv


def test_two_jobs_give_the_serial_summary(fake_repo, cohort, serial, tmp_path):
    parallel = run(fake_repo, cohort, tmp_path / "jobs2", "--jobs", "2")
    assert summaries(parallel) == summaries(serial)
    assert sorted(p.name for p in parallel.iterdir() if p.is_dir()) == [
        "broken", "cheat", "pristine", "solved"]


@pytest.fixture(scope="module")
def shards(fake_repo, cohort, tmp_path_factory) -> list[Path]:
    """Two shards, each with its own --out: a CI matrix that uploads artifacts."""
    return [run(fake_repo, cohort, tmp_path_factory.mktemp(f"shard{i}"), "--shard", f"{i}/2")
            for i in range(2)]


def test_each_shard_grades_its_slice_and_writes_no_summary(shards):
    graded = [sorted(json.loads((s / f"shard-{i}-of-2.json").read_text())["submissions"])
              for i, s in enumerate(shards)]
    assert graded == [["broken", "pristine"], ["cheat", "solved"]]
    assert not any((s / name).exists() for s in shards for name in SUMMARY)


def test_merged_shards_give_the_serial_summary(shards, serial, tmp_path):
    out = tmp_path / "merged"
    assert grade.main(["merge", str(out), *map(str, shards)]) == 0
    assert summaries(out) == summaries(serial)
    assert (out / "cheat" / "report.md").is_file(), "the reports are gathered too"


def test_merge_refuses_an_incomplete_set_of_shards(shards, tmp_path):
    with pytest.raises(merge.MergeError, match="missing shard"):
        merge.merge(tmp_path / "m", [shards[0]])
