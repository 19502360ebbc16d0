"""``grading.mutation`` (``make mutation``) and the hand-maintained part of docs/MUTANTS.md:
no cosmic-ray run, only the pieces that decide what runs and what is reported."""

from __future__ import annotations

import shlex
import sqlite3
import tomllib
from pathlib import Path

from grading import check_suite, mutation

LAB = "lab-01-batched-lora-matmul"


def test_the_hand_section_survives_a_rewrite():
    old = f"# stale table\n\n{check_suite.HAND_MARKER}\n## Machine-made\nrows\n"
    new = check_suite.with_hand_section("# fresh table\n", old)
    assert new.startswith("# fresh table\n") and "stale" not in new
    assert new.endswith(f"{check_suite.HAND_MARKER}\n## Machine-made\nrows\n")
    assert check_suite.with_hand_section("# t\n", None) == "# t\n"
    assert check_suite.with_hand_section("# t\n", "no marker") == "# t\n"


def test_the_committed_table_has_the_hand_section():
    text = (mutation.ROOT / check_suite.TABLE_FILE).read_text()
    assert check_suite.HAND_MARKER in text, "docs/MUTANTS.md lost its machine-made section"


def test_config_mutates_the_copy_and_runs_the_cpu_tests(tmp_path):
    tree = tmp_path / "tree"
    cfg = tomllib.loads(mutation._config(LAB, tree))["cosmic-ray"]
    assert cfg["module-path"] == str(tree / mutation.LABS_SUBDIR / LAB / "solution.py")
    argv = shlex.split(cfg["test-command"])  # as cosmic-ray splits it
    marker = argv.index("-m", argv.index("pytest"))
    assert argv[marker + 1] == "not gpu and not engine"
    assert str(mutation.LABS_SUBDIR / LAB) in argv and "-x" in argv
    assert cfg["filters"]["operators-filter"]["exclude-operators"] == mutation.EXCLUDE_OPERATORS


def test_the_copy_holds_the_tests_and_never_the_repository(tmp_path):
    tree = tmp_path / "tree"
    mutation._copy_tree(LAB, tree)
    solution = tree / mutation.LABS_SUBDIR / LAB / "solution.py"
    assert solution.is_file() and not solution.is_symlink()
    assert solution.read_text() == (mutation.ROOT / mutation.LABS_SUBDIR / LAB
                                    / "solution.py").read_text()
    assert (tree / "conftest.py").is_file() and (tree / "labkit" / "loader.py").is_file()
    assert not solution.samefile(mutation.ROOT / mutation.LABS_SUBDIR / LAB / "solution.py")


def test_the_test_side_digest_leaves_out_the_mutated_file():
    files = mutation._test_side(LAB)
    assert mutation.ROOT / mutation.LABS_SUBDIR / LAB / "solution.py" not in files
    assert mutation.ROOT / mutation.LABS_SUBDIR / LAB / "test_lab.py" in files


def _session(path: Path, rows: list[tuple[str, str | None, str | None]]) -> Path:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE work_items (job_id TEXT)")
    con.execute("CREATE TABLE work_results (worker_outcome TEXT, output TEXT, "
                "test_outcome TEXT, diff TEXT, job_id TEXT)")
    for job, worker, test in rows:
        con.execute("INSERT INTO work_items VALUES (?)", (job,))
        if worker is not None:
            con.execute("INSERT INTO work_results VALUES (?, '', ?, '', ?)", (worker, test, job))
    con.commit()
    con.close()
    return path


def test_tally_counts_each_outcome(tmp_path):
    s = _session(tmp_path / "s.sqlite", [("a", "NORMAL", "KILLED"), ("b", "NORMAL", "SURVIVED"),
                                         ("c", "SKIPPED", None), ("d", None, None),
                                         ("e", "NORMAL", "INCOMPETENT")])
    assert mutation.tally(s) == {"total": 5, "pending": 1, "skipped": 1, "killed": 1,
                                 "survived": 1, "other": 1}
    assert mutation._rerun_survivors(s) == 1
    assert mutation.tally(s)["pending"] == 2, "a survivor re-runs; the killed one stays killed"
