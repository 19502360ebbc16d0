"""Fast unit tests: outcome classification, the static honesty scan, the weights file."""

from __future__ import annotations

from pathlib import Path

import pytest

from grading.config import ConfigError, hidden_seeds, load_weights
from grading.honesty import scan_source
from grading.runner import classify

PATH = Path("starter.py")


def phase(outcome: str, exc: str = "", message: str = "") -> dict:
    return {"outcome": outcome, "exc": exc, "message": message, "duration": 0.5}


@pytest.mark.parametrize(("phases", "expected"), [
    ({"setup": phase("passed"), "call": phase("passed"), "teardown": phase("passed")},
     ("passed", "")),
    ({"setup": phase("passed"), "call": phase("failed", "NotImplementedError", "TODO")},
     ("failed", "not_implemented")),
    ({"setup": phase("failed", "Failed", "Failed: lab-01-x: syntax error in /s.py:3: bad")},
     ("error", "import_error")),
    ({"setup": phase("failed", "Failed", "lab-02-x: /s/lab-02-x/starter.py not found (LAB_IMPL "
                                         "selects starter.py)")},
     ("error", "import_error")),
    ({"setup": phase("skipped", message="gpu: torch.cuda.is_available() is False")},
     ("skipped", "no_gpu")),
    ({"setup": phase("skipped", message="engine: vLLM is not installed")},
     ("skipped", "no_engine")),
    ({"setup": phase("passed"), "call": phase("failed", "TestTimeout", "ran past")},
     ("failed", "timeout")),
    ({"setup": phase("passed"), "call": phase("failed", "SystemExit", "SystemExit: 0")},
     ("failed", "exited")),
    ({"setup": phase("passed"), "call": phase("failed", "AssertionError", "x != y")},
     ("failed", "assertion")),
    ({"setup": phase("passed"), "call": phase("passed"), "teardown": phase("failed", "OSError")},
     ("error", "error")),
])
def test_classify_names_outcome_and_reason(phases, expected):
    assert classify(phases)[:2] == expected


def kinds_of(source: str) -> list[str]:
    return sorted({f["kind"] for f in scan_source(source, PATH)})


@pytest.mark.parametrize(("source", "expected"), [
    ("import solution\n", ["reads_solution"]),
    ("from labkit.loader import load_impl\n", ["reads_solution"]),
    ("import importlib\nm = importlib.import_module('solution')\n", ["reads_solution"]),
    ("p = 'labs/lab-01/solution.py'\n", ["reads_solution"]),
    ("import os\nos.environ['LAB_IMPL'] = 'solution'\n", ["reads_solution", "tampers_tests"]),
    ("import pytest\n", ["tampers_tests"]),
    ("import labkit\nlabkit.assert_close = lambda *a, **k: None\n", ["tampers_tests"]),
    ("import numpy as np\nsetattr(np, 'allclose', len)\n", ["tampers_tests"]),
    ("import sys\nsys.modules['numpy'] = None\n", ["tampers_tests"]),
    ("open('phase-11-multi-lora/labs/lab-01/test_lab.py', 'w')\n", ["tampers_tests"]),
    ("open('phase-11-multi-lora/labs/lab-02/test_serving.py', 'w')\n", ["tampers_tests"]),
    ("import test_serving\n", ["tampers_tests"]),
    ("from test_serving import URL\n", ["tampers_tests"]),
    ("import importlib\nm = importlib.import_module('test_serving')\n", ["tampers_tests"]),
    ("import sys\nexpected = sys._getframe(1).f_locals\n", ["inspects_tests"]),
    ("import inspect\nframes = inspect.stack()\n", ["inspects_tests"]),
    ("import os\nseed = int(os.environ['LAB_SEED'])\n", ["inspects_tests"]),
    ("import os\nlog = os.environ.get('GRADING_EVENTS')\n", ["tampers_tests"]),
])
def test_scan_flags_each_rule(source, expected):
    assert kinds_of(source) == expected


def test_scan_leaves_honest_code_and_prose_alone():
    honest = '''\
"""Uses the solution-free approach; see solution.py in the notes."""
import numpy as np
from labkit import load_lab


def f(x):
    """The solution to this is a stack of rows."""
    out = np.stack([x, x])
    out[0] = 1
    raise ValueError("x: no solution exists for this input")
'''
    assert scan_source(honest, PATH) == []


def test_scan_of_unparsable_code_is_empty():
    assert scan_source("def f(:\n", PATH) == []


def test_weights_must_name_exactly_the_labs(tmp_path):
    weights = tmp_path / "w.toml"
    weights.write_text("[defaults]\ntimeout_s = 5\nlab_budget_s = 50\n"
                       "[labs.lab-01-a]\npoints = 10\n[labs.lab-09-z]\npoints = 5\n")
    with pytest.raises(ConfigError, match=r"missing \['lab-02-b'\], unknown \['lab-09-z'\]"):
        load_weights(["lab-01-a", "lab-02-b"], weights)


def test_weights_merge_defaults_and_overrides(tmp_path):
    weights = tmp_path / "w.toml"
    weights.write_text("[defaults]\ntimeout_s = 5\nlab_budget_s = 50\n"
                       "[labs.lab-01-a]\npoints = 10\ntimeout_s = 99\n")
    cfg = load_weights(["lab-01-a"], weights)["lab-01-a"]
    assert (cfg.points, cfg.timeout_s, cfg.lab_budget_s) == (10, 99, 50)


def test_the_removed_workers_key_is_ignored_like_any_key_the_weights_do_not_know(tmp_path):
    """A lab's ``workers = false`` (its opt-out of workers) went with the grader's second mode;
    the weights read only the keys they know, so an old file still loads, and grades in
    workers like every lab."""
    plain = "[defaults]\ntimeout_s = 5\nlab_budget_s = 50\n[labs.lab-01-a]\npoints = 10\n"
    old, new = tmp_path / "old.toml", tmp_path / "new.toml"
    old.write_text(plain + "workers = false\n")
    new.write_text(plain)
    assert load_weights(["lab-01-a"], old) == load_weights(["lab-01-a"], new)
    assert not hasattr(load_weights(["lab-01-a"], old)["lab-01-a"], "workers")


@pytest.mark.parametrize("missing", ["isolate", "worker"])
def test_a_repo_without_workers_is_refused(tmp_path, capsys, missing):
    """The grader's one mode runs student code in the graded repository's workers: a
    ``--repo`` whose ``labkit`` cannot start them is refused, naming the missing file."""
    from grading import grade
    from grading.tests import fakes

    repo = tmp_path / "repo"
    repo.mkdir()
    fakes.make_repo(repo)
    (repo / "labkit" / f"{missing}.py").unlink()
    sub = fakes.make_submission(tmp_path / "sub", fakes.LAB1_SOLUTION, None)
    with pytest.raises(SystemExit) as exited:
        grade.main([str(sub), "--repo", str(repo), "--out", str(tmp_path / "out"),
                    "--no-sandbox"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"missing labkit/{missing}.py" in err and "no other mode" in err, err
    with pytest.raises(ConfigError, match=f"labkit/{missing}.py"):
        grade.check_workers(repo)
    assert not (tmp_path / "out").exists(), "refused before anything was graded"


def test_the_repository_weights_cover_every_lab():
    from grading.runner import TOOLING_ROOT, lab_names

    labs = lab_names(TOOLING_ROOT)
    assert set(load_weights(labs)) == set(labs)


def test_hidden_seeds_come_from_the_environment_first(monkeypatch, tmp_path):
    monkeypatch.setenv("GRADING_HIDDEN_SEEDS", "7, 8")
    assert hidden_seeds(tmp_path / "absent.toml") == [7, 8]
    monkeypatch.delenv("GRADING_HIDDEN_SEEDS")
    assert hidden_seeds(tmp_path / "absent.toml") == [], "a student release has no keys"
    monkeypatch.setenv("GRADING_HIDDEN_SEEDS", "seven")
    with pytest.raises(ConfigError, match="GRADING_HIDDEN_SEEDS"):
        hidden_seeds()
