"""The hostile-submission battery: real lab-01 grading runs in the sandbox, each submission
trying to get out (``hostile``), each escape asserted separately: its score, its flags, and that
nothing reached the host (files in the repository, ``$HOME`` or the host's ``/tmp``, a
connection to a listener on the host's loopback, a process still running).

Three hostile submissions are graded in one batch (``--jobs 2``); the issue's submission is
also graded unsandboxed once, to prove the battery is not vacuous: there it scores 30/30 with no
flag and its files do appear. About three minutes on two busy cores.

The escapes of issue 29 (a submission zeroing its inputs, a worker encoding the hidden seed in
the order it opens decoys, a 3,000-deep tree in a worker's folder, an inotify exhauster beside
a decoy reader, Markdown and bidi text in failure messages) are graded in worker mode with two
hidden seeds, in one batch with both controls (the reference and an independent honest
implementation): about two and a half minutes more.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import signal
import socket
import tempfile
import uuid
from pathlib import Path

import pytest

from grading import grade
from grading.runner import LOG_LIMIT_BYTES
from grading.tests import fakes, hostile
from grading.tests.test_grade import tree_state

pytestmark = pytest.mark.slow

LAB = hostile.LAB
POINTS = 30
WEIGHTS = f"""\
[defaults]
timeout_s = 10
lab_budget_s = 400
memory_mib = 768
max_pids = 128
env = ["OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"]

[labs.{LAB}]
points = {POINTS}
"""


def marked_processes(marker: str) -> list[str]:
    """Processes on this machine whose command line or name carries ``marker``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            comm = (proc / "comm").read_text().strip()
            if marker in cmdline or marker[:15] == comm:
                found.append(f"{proc.name}: {comm} {cmdline[:120]}")
    return found


def kill_marked(marker: str) -> None:
    for line in marked_processes(marker):
        with contextlib.suppress(OSError):
            os.kill(int(line.split(":")[0]), signal.SIGKILL)


def accepted(listener: socket.socket) -> list[bytes]:
    """What reached the listener: one entry per connection."""
    got = []
    while True:
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            return got
        with conn:
            conn.settimeout(2)
            with contextlib.suppress(OSError):
                got.append(conn.recv(1024))


def lab_tests(report: dict) -> dict[str, dict]:
    (lab,) = report["labs"]
    return {t["name"]: t for t in lab["tests"]}


def escaped_files(paths: list[Path]) -> list[str]:
    return [str(p) for p in paths if p.exists()]


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory, sandbox_limits):
    """One marker, one course, one listener, one fake $HOME; removed afterwards, escapes too."""
    marker = "p11h" + uuid.uuid4().hex[:10]
    course = fakes.make_course(tmp_path_factory.mktemp("course"), [LAB], WEIGHTS)
    home = tmp_path_factory.mktemp("home")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.setblocking(False)
    scene = {"marker": marker, "course": course, "home": home, "listener": listener,
             "port": listener.getsockname()[1], "root": tmp_path_factory.mktemp("hostile")}
    yield scene
    listener.close()
    kill_marked(marker)
    for leftover in [*Path("/tmp").glob(f"{marker}*"), *Path.home().glob(f"{marker}*")]:
        leftover.unlink()


def targets(scene: dict, tag: str, real_home: bool) -> list[str]:
    """Where an escape would write: the course repository, $HOME (the fake one, and the real
    one inside the sandbox only), the host's /tmp."""
    name = f"{scene['marker']}-{tag}"
    found = [scene["course"] / f"{name}-repo", scene["home"] / f"{name}-home",
             Path("/tmp") / f"{name}-tmp"]
    if real_home:
        found.append(Path.home() / f"{name}-home")
    return [str(p) for p in found]


def every_trace(scene: dict, tag: str, names: list[str]) -> list[Path]:
    """Every file the submissions tagged ``tag`` would leave on the host if they got out."""
    paths = []
    for t in targets(scene, tag, real_home=True):
        paths += [Path(t + suffix) for suffix in ("", ".libc", ".py-open")]
    return paths + [Path("/tmp") / f"{scene['marker']}-{tag}-{n}-keys" for n in names]


def run_grade(scene: dict, subs: Path, out: Path, *extra: str, seeds: str = "",
              host_tmp: Path | None = None) -> dict:
    """Grade ``subs``; by default without hidden seeds (the sandbox's battery); ``host_tmp``:
    the grader's own temp folder (``TMPDIR``), to see what it leaves there."""
    before = tree_state(scene["course"])
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRADING_HIDDEN_SEEDS", seeds)  # "": the battery is about the sandbox
        for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            mp.setenv(name, "1")
        if host_tmp is not None:
            mp.setenv("TMPDIR", str(host_tmp))
            mp.setattr(tempfile, "tempdir", None)
        rc = grade.main([str(subs), "--out", str(out), "--repo", str(scene["course"]),
                         "--labs", "lab-01", *extra])
    reports = {p.parent.name: json.loads(p.read_text()) for p in out.glob("*/report.json")}
    return {"rc": rc, "out": out, "reports": reports, "course_changed":
            tree_state(scene["course"]) != before, "processes": marked_processes(scene["marker"]),
            "connections": accepted(scene["listener"])}


SUBMISSIONS = ("steals_via_child", "steals_directly", "rogue")


@pytest.fixture(scope="module")
def sandboxed(scene: dict) -> dict:
    root, course, marker = scene["root"], scene["course"], scene["marker"]
    subs = root / "subs"
    texts = {
        "steals_via_child": hostile.steals_via_child(
            course, targets(scene, "sb", True), f"/tmp/{marker}-sb-steals_via_child-keys",
            scene["port"], marker),
        "steals_directly": hostile.steals_directly(course, targets(scene, "sb", True),
                                                       marker),
        "rogue": hostile.rogue_solution(hostile.course_solution(course), course,
                                        targets(scene, "sb", True), marker),
    }
    for name, text in texts.items():
        fakes.write(subs / name / LAB / "starter.py", text)
    result = run_grade(scene, subs, root / "out", "--jobs", "2")
    result["escaped"] = escaped_files(every_trace(scene, "sb", list(SUBMISSIONS)))
    return result


@pytest.fixture(scope="module")
def unsandboxed(scene: dict) -> dict:
    """The issue's submission with the sandbox off: the control experiment."""
    root, course, marker = scene["root"], scene["course"], scene["marker"]
    sub = root / "control" / "steals_via_child"
    fakes.write(sub / LAB / "starter.py", hostile.steals_via_child(
        course, targets(scene, "ctl", False), f"/tmp/{marker}-ctl-steals_via_child-keys",
        scene["port"], marker))
    result = run_grade(scene, sub.parent, root / "out-control", "--no-sandbox")
    result["escaped"] = escaped_files(every_trace(scene, "ctl", ["steals_via_child"]))
    for path in result["escaped"]:
        Path(path).unlink()
    return result


def kinds(report: dict) -> set[str]:
    return {f["kind"] for f in report["flags"]}


def details(report: dict, kind: str) -> list[str]:
    return [f["detail"] for f in report["flags"] if f["kind"] == kind]


def test_the_batch_is_graded_in_the_sandbox(sandboxed):
    assert sandboxed["rc"] == 0
    assert sorted(sandboxed["reports"]) == sorted(SUBMISSIONS)
    for report in sandboxed["reports"].values():
        assert report["sandbox"]["kind"] == "bubblewrap", report["sandbox"]


def test_control_unsandboxed_the_childs_read_scores_full_marks_unflagged(unsandboxed, scene):
    (report,) = unsandboxed["reports"].values()
    assert report["total"] == POINTS, "the hostile code works: only the sandbox stops it"
    assert report["flags"] == [], "the static checks do not see a child process"
    assert report["sandbox"]["kind"] is None
    assert len(unsandboxed["escaped"]) == 4, unsandboxed["escaped"]  # repo, home, tmp, keys
    assert unsandboxed["connections"] == [scene["marker"].encode()]


def test_reading_the_reference_through_a_child_process_scores_zero_and_is_flagged(sandboxed):
    report = sandboxed["reports"]["steals_via_child"]
    assert report["total"] == 0
    assert kinds(report) == {"reads_solution"}
    opened = details(report, "reads_solution")
    assert any("solution.py" in d and "decoy" in d for d in opened), opened
    assert {t["reason"] for t in lab_tests(report).values()
            if not t["structural"]} == {"not_implemented"}, "it ran: the exec found nothing"


def test_reading_the_keys_is_flagged_and_nothing_else_of_them_arrives(sandboxed):
    for name in ("steals_via_child", "steals_directly"):
        opened = details(sandboxed["reports"][name], "reads_solution")
        assert any("hidden_seeds.toml" in d for d in opened), (name, opened)
    assert not [p for p in sandboxed["escaped"] if p.endswith("-keys")]


def test_reading_the_reference_in_the_worker_meets_a_decoy(sandboxed):
    """``open()`` and libc's ``open`` in the worker's own process: both find the decoy."""
    report = sandboxed["reports"]["steals_directly"]
    assert report["total"] == 0
    assert kinds(report) == {"reads_solution"}
    opened = details(report, "reads_solution")
    assert any("decoy" in d and "solution.py" in d for d in opened), opened


@pytest.mark.parametrize("where", ["repo", "home", "tmp"])
def test_writes_into_the_repository_home_and_host_tmp_do_not_arrive(sandboxed, scene, where):
    assert not [p for p in sandboxed["escaped"] if f"-{where}" in p], sandboxed["escaped"]
    if where == "repo":
        assert not sandboxed["course_changed"], "the course repository changed"


def test_connecting_to_a_listener_on_the_hosts_loopback_is_refused(sandboxed):
    assert sandboxed["connections"] == []


def test_the_rogue_loses_exactly_the_tests_it_sabotaged(sandboxed):
    report = sandboxed["reports"]["rogue"]
    tests = lab_tests(report)
    # the rogue sabotages lora_overhead; the lab's main spec (test_lab.py) is where each of its
    # cases lands once (the input tables of test_inputs.py call it too, and lose with it)
    got = {name: (t["outcome"], t["reason"]) for name, t in tests.items()
           if "test_lab.py" in t["nodeid"]
           and (name in hostile.ROGUE_CASES or t["outcome"] != "passed")}
    assert got == hostile.ROGUE_CASES
    (lab,) = report["labs"]
    others = [t for t in tests.values() if "test_lab.py" not in t["nodeid"]
              and t["outcome"] != "passed"]
    assert all("lora_overhead" in t["name"] for t in others), [t["name"] for t in others]
    lost = sum(outcome != "passed" for outcome, _ in hostile.ROGUE_CASES.values()) + len(others)
    assert report["total"] == pytest.approx(POINTS * (lab["graded"] - lost) / lab["graded"])
    assert kinds(report) == set(), report["flags"]


def test_forking_without_bound_hits_the_process_limit_and_leaves_nothing(sandboxed):
    (lab,) = sandboxed["reports"]["rogue"]["labs"]
    assert any("process limit (128) refused" in p for p in lab["problems"]), lab["problems"]
    assert lab["sandbox"]["pid_limit_hits"] > 0
    assert lab["sandbox"]["peak_pids"] <= 128
    assert lab["sandbox"]["leftover_processes"] == 0
    assert sandboxed["processes"] == []


def test_allocating_without_bound_meets_the_memory_limit(sandboxed):
    (lab,) = sandboxed["reports"]["rogue"]["labs"]
    assert any("memory limit (768 MiB) ended" in p for p in lab["problems"]), lab["problems"]
    assert lab["sandbox"]["peak_memory_bytes"] <= 768 << 20


def test_a_daemon_does_not_outlive_the_run(sandboxed):
    tests = lab_tests(sandboxed["reports"]["rogue"])
    assert tests["test_lora_overhead_below_one_percent_at_7b_shapes"]["outcome"] == "passed", \
        "the daemon started (the test passes only then)"
    assert sandboxed["processes"] == []


def test_megabytes_of_output_are_cut_in_the_log_and_absent_from_the_report(sandboxed):
    folder = sandboxed["out"] / "rogue"
    log = folder / "logs" / f"{LAB}.log"
    assert log.stat().st_size <= LOG_LIMIT_BYTES + 1024
    assert "output cut" in log.read_text(errors="replace")
    assert (folder / "report.md").stat().st_size < 200_000


def test_exiting_the_interpreter_inside_a_test_fails_only_that_test(sandboxed):
    """``os._exit`` and ``sys.exit`` end the worker, never the tests' process: each fails its
    own test, and the next test's call starts a fresh worker."""
    tests = lab_tests(sandboxed["reports"]["rogue"])
    case = "test_lora_overhead_refuses_non_positive_sizes[{}]"
    assert tests[case.format("d_in")]["reason"] == "crashed"
    assert tests[case.format("d_out")]["reason"] == "crashed"
    assert tests[case.format("r")]["reason"] == "assertion", "the next test ran"


# --- the escapes: worker mode, hidden seeds, two controls (real lab-01 runs) ----------

ESCAPE_SEEDS = (913527, 684211)
ESCAPES = ("zeroes_its_inputs", "order_encoder", "deep_tree", "exhausts_inotify",
           "reads_every_decoy", "writes_markdown")
CONTROLS = ("reference", "independent")


@pytest.fixture(scope="module")
def escapes(scene: dict) -> dict:
    """The issue's escapes and both controls in one batch (``--jobs 2``, so that the inotify
    exhauster and the decoy reader run side by side), in worker mode with two hidden seeds; the
    grader's temp folder is a folder of the test's own, to see what is left there."""
    root, course = scene["root"], scene["course"]
    subs, host_tmp = root / "escape-subs", root / "host-tmp"
    host_tmp.mkdir()
    solution = hostile.course_solution(course)
    texts = {"zeroes_its_inputs": hostile.zeroes_its_inputs(),
             "order_encoder": hostile.order_encoder(solution),
             "deep_tree": hostile.leaves_a_deep_tree(),
             "exhausts_inotify": hostile.exhausts_inotify(),
             "reads_every_decoy": hostile.reads_every_decoy(),
             "writes_markdown": hostile.writes_markdown(),
             "reference": solution,
             "independent": (fakes.REAL_REPO / "grading" / "alternatives" / LAB
                             / "mask_grouping.py").read_text()}
    for name, text in texts.items():
        fakes.write(subs / name / LAB / "starter.py", text)
    result = run_grade(scene, subs, root / "out-escapes", "--jobs", "2",
                       seeds=",".join(map(str, ESCAPE_SEEDS)), host_tmp=host_tmp)
    result["left_on_host"] = sorted(str(p) for p in host_tmp.iterdir())
    return result


def said(report: dict, prefix: str) -> list[str]:
    """What a submission said in its failure messages, from ``prefix`` on."""
    return sorted({t["message"][t["message"].index(prefix):].split("\n")[0]
                   for t in lab_tests(report).values() if prefix in t["message"]})


def test_the_escapes_are_graded_in_workers_with_hidden_seeds(escapes):
    assert escapes["rc"] == 0
    assert sorted(escapes["reports"]) == sorted(ESCAPES + CONTROLS)
    for report in escapes["reports"].values():
        assert report["sandbox"]["kind"] == "bubblewrap" and report["sandbox"]["workers"]
        assert report["hidden_seeds"] == len(ESCAPE_SEEDS)


@pytest.mark.parametrize("name", CONTROLS)
def test_both_controls_get_full_marks_unflagged(escapes, name):
    report = escapes["reports"][name]
    assert report["total"] == POINTS and report["flags"] == [] and report["errors"] == []
    assert "withheld" not in report


@pytest.mark.parametrize("name", ESCAPES)
def test_each_escape_ends_at_most_3_of_30_or_flagged_and_leaks_no_seed(escapes, name):
    report = escapes["reports"][name]
    assert report["total"] <= 3 or kinds(report), (report["total"], report["flags"])
    seed = re.compile("|".join(rf"(?<![\d.]){s}(?!\d)" for s in ESCAPE_SEEDS))  # not in a float
    for path in (escapes["out"] / name).rglob("*"):
        if path.is_file():
            assert not seed.search(path.read_text(errors="replace")), path


def test_zeroing_the_inputs_gains_nothing(escapes):
    """The worker's edits of its arguments never reach the tests' arrays: an expectation
    computed after the call sees the inputs the test drew."""
    report = escapes["reports"]["zeroes_its_inputs"]
    assert report["total"] <= 3, [t["name"] for t in lab_tests(report).values()
                                  if t["outcome"] == "passed"]
    assert kinds(report) == set()


def test_a_hidden_runs_order_reaches_no_report(escapes):
    """The order encoder's worker opens every decoy in an order drawn from its inputs: the
    visible run's opens are flagged one by one; the hidden runs' come back as one flag of
    their kind, without order, count or detail."""
    report = escapes["reports"]["order_encoder"]
    hidden = [f for f in report["flags"] if "hidden seed" in f["detail"]]
    assert hidden == [{"kind": "reads_solution", "lab": LAB, "detail": grade.HIDDEN_FLAG_WORDING}]
    visible = [f for f in report["flags"] if f not in hidden]
    assert visible and all("decoy" in f["detail"] for f in visible), visible
    md = (escapes["out"] / "order_encoder" / "report.md").read_text()
    assert md.count(grade.HIDDEN_FLAG_WORDING[:40]) == 1


def test_a_deep_tree_in_a_workers_folder_is_removed_and_the_grade_stands(escapes):
    report = escapes["reports"]["deep_tree"]
    assert report["errors"] == [], report["errors"]
    (lab,) = report["labs"]
    assert lab["graded"] > 100 and "status" not in lab, "graded, not a grader error"
    assert escapes["left_on_host"] == [], "nothing of the run is left in the grader's temp"


def test_a_sandbox_cannot_spend_the_inotify_budget_and_the_reader_beside_it_is_seen(escapes):
    """Inside, inotify is refused at once; the classmate graded beside it has every decoy it
    opened flagged, exactly as alone, and neither grade is withheld."""
    exhauster, reader = (escapes["reports"][n] for n in ("exhausts_inotify", "reads_every_decoy"))
    assert said(exhauster, "INOTIFY") and all(s.startswith("INOTIFY held=0 errno=1 ")
                                               for s in said(exhauster, "INOTIFY"))
    (read,) = said(reader, "READ ")
    opened = {f["detail"] for f in reader["flags"] if "decoy" in f["detail"]}
    assert len(opened) == int(read.split()[1]) > 0, (read, opened)
    assert "reads_solution" in kinds(exhauster)
    assert "withheld" not in exhauster and "withheld" not in reader


def test_failure_messages_render_as_plain_text(escapes):
    from markdown_it import MarkdownIt

    md = (escapes["out"] / "writes_markdown" / "report.md").read_text()
    assert "TESTS PASSED" in md, "the messages are in the report"
    for raw in ("__ALL", "https://evil", "www.evil", "grader@evil", "_see_", *"\u202e\u200e\u200f"
                "\u061c\u200b\u2060\ufeff"):
        assert raw not in md, ascii(raw)
    tokens = MarkdownIt("gfm-like", {"linkify": False}).parse(md)
    children = [c for t in tokens if t.type == "inline" for c in t.children]
    assert not any(c.type in ("link_open", "em_open") for c in children)
    strong = [children[i + 1].content for i, c in enumerate(children) if c.type == "strong_open"]
    assert not any("PASSED" in text for text in strong), strong


# --- staging: symlinked, hard-linked and FIFO starters (real lab-01 runs, sandboxed) ---------


@pytest.fixture(scope="module")
def staging(scene: dict) -> dict:
    """The staging attacks and an honest classmate in one batch (``--jobs 2``), after an
    earlier report that must stay as it was."""
    root, course = scene["root"], scene["course"]
    subs = root / "staging-subs"
    pointed = hostile.plant_staging_attacks(subs, course, root / "stash")
    fakes.write(subs / "viewer" / LAB / "starter.py", hostile.shows_its_view(
        hostile.course_solution(course), [str(subs), str(root / "stash"), str(course)]))
    out = root / "out-staging"
    earlier = fakes.write(out / "earlier" / "report.md", "# an earlier report\n")
    before = tree_state(subs), tree_state(root / "stash"), earlier.read_text()
    result = run_grade(scene, subs, out, "--jobs", "2")
    result["unchanged"] = before == (tree_state(subs), tree_state(root / "stash"),
                                     earlier.read_text())
    result["pointed"] = pointed
    result["keys"] = (course / "grading" / "keys" / "hidden_seeds.toml").read_text()
    return result


def test_the_staging_batch_finishes_and_the_classmate_keeps_full_points(staging):
    assert staging["rc"] == 0
    assert sorted(staging["reports"]) == sorted(["classmate", "viewer", *hostile.STAGING_ATTACKS])
    assert staging["reports"]["classmate"]["total"] == POINTS
    assert kinds(staging["reports"]["classmate"]) == set()


@pytest.mark.parametrize(("name", "what"), [
    ("link_reference", "a symlink"), ("link_classmate", "a symlink"), ("link_keys", "a symlink"),
    ("hard_link", "a hard link"), ("fifo", "a FIFO")])
def test_a_starter_that_is_not_a_plain_file_scores_zero_and_is_flagged(staging, name, what):
    report = staging["reports"][name]
    assert report["total"] == 0
    assert kinds(report) == {"unsafe_submission"}
    (detail,) = details(report, "unsafe_submission")
    assert f"{LAB}/starter.py" in detail and what in detail, detail
    assert {t["reason"] for t in lab_tests(report).values()
            if not t["structural"]} == {"import_error"}, "scored as missing"


def test_nothing_a_link_points_at_is_copied_or_printed(staging):
    keys = staging["keys"].strip()
    for name in hostile.STAGING_ATTACKS:
        folder = staging["out"] / name
        for path in folder.rglob("*"):
            if path.is_file():
                assert keys not in path.read_text(errors="replace"), path
        if staging["pointed"][name]:
            assert staging["pointed"][name] not in (folder / "report.md").read_text(), name


def test_staging_attacks_change_nothing_outside_the_run(staging):
    assert staging["unchanged"], "a submission, the stash or an earlier report changed"
    assert not staging["course_changed"]
    assert staging["processes"] == [] and staging["connections"] == []


# --- records a fooled runner could hand over (grade.py's boundary, fake runs: seconds) --------

FORGED = {"good": "plain", "numeric_name": "numeric_name", "dict_message": "dict_message",
          "injects": "injects", '=HYPERLINK("evil.example","x")': "hyperlink", "ansi": "ansi",
          "log_symlink": "log_symlink {keys}", "hidden_fail": "hidden_fail",
          "slow": "slow {slow_s}", "order_encoder": "order_encoder", "deep_tree": "deep_tree",
          "unarmed": "unarmed", "unarmed_hidden": "unarmed_hidden"}
BUDGET_S, SLOW_S = 4.0, 6.0  # the slow one sleeps past the submission budget in its first lab
HIDDEN = [913527, 684211]


@pytest.fixture(scope="module")
def forged(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Every FORGED submission graded in one batch (``--jobs 2``) with ``fakes.forged_run`` as
    the runner: the records reach grade.py exactly as a runner would hand them over."""
    from grading import report
    from grading.config import WEIGHTS_REL, load_weights
    from grading.runner import RunOptions, lab_names

    repo = fakes.make_repo(tmp_path_factory.mktemp("forged-repo"))
    keys = fakes.write(repo / "grading" / "keys" / "hidden_seeds.toml", "seeds = [424242]\n")
    subs, out = tmp_path_factory.mktemp("forged-subs"), tmp_path_factory.mktemp("forged-out")
    for name, line in FORGED.items():
        for lab in (fakes.LAB1, fakes.LAB2):
            fakes.write(subs / name / lab / "starter.py", "# fake: " + line.format(
                keys=keys, slow_s=SLOW_S) + "\n")
    earlier = fakes.write(out / "earlier" / "report.md", "# an earlier report\n")
    labs = lab_names(repo)
    job = grade.Job(repo=repo, labs=labs, weights=load_weights(labs, repo / WEIGHTS_REL),
                    seeds=HIDDEN, opts=RunOptions(), env={}, staged=labs,
                    submission_budget_s=BUDGET_S, run_lab=fakes.forged_run)
    before = tree_state(repo), tree_state(subs)
    targets = [(subs / name, out / report.slug(name)) for name in sorted(FORGED)]
    grades = grade.grade_all(job, targets, jobs=2)
    report.write_summary(grades, out)
    return {"out": out, "grades": {g["submission"]: g for g in grades}, "keys": keys,
            "unchanged": before == (tree_state(repo), tree_state(subs))
            and earlier.read_text() == "# an earlier report\n",
            "folders": {name: out / report.slug(name) for name in FORGED}}


def forged_total(forged: dict, name: str) -> float:
    return forged["grades"][name]["total"]


def test_a_cohort_of_forged_records_finishes_with_a_summary(forged):
    assert sorted(forged["grades"]) == sorted(FORGED)
    assert (forged["out"] / "summary.csv").is_file() and (forged["out"] / "summary.md").is_file()
    assert forged_total(forged, "good") == 100
    assert forged["unchanged"], "the repository, a submission or an earlier report changed"


@pytest.mark.parametrize("name", ["numeric_name", "dict_message"])
def test_a_malformed_record_is_a_problem_of_that_submission(forged, name):
    grade_ = forged["grades"][name]
    assert grade_["total"] == pytest.approx(100 * 2 / 3), "the valid records still score"
    assert grade_["errors"] == [] or all("no hidden seeds" not in e for e in grade_["errors"])
    for lab in grade_["labs"]:
        assert any(p.startswith("malformed run record") for p in lab["problems"]), lab
        assert all(isinstance(t["name"], str) and isinstance(t["message"], str)
                   for t in lab["tests"])
        assert all(isinstance(p, str) for p in lab["problems"])


def md_lines(forged: dict, name: str) -> list[str]:
    return (forged["folders"][name] / "report.md").read_text().splitlines()


@pytest.mark.parametrize("name", sorted(FORGED))
def test_no_record_breaks_or_hides_part_of_a_report(forged, name):
    text = (forged["folders"][name] / "report.md").read_text()
    assert "<!--" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert lines.count("## Flags") == 1 and lines.count("## Labs") == 1
    labs = lines[lines.index("## Labs") + 2:]
    assert [ln.split(" | ")[0] for ln in labs[2:4]] == [f"| {fakes.LAB1}", f"| {fakes.LAB2}"]
    assert labs[4] == "", "exactly two lab rows"
    assert not any(ln.startswith("| fake") or ln.startswith("| lab-01 |") for ln in lines)


def test_injecting_flags_stay_visible_and_escaped(forged):
    grade_ = forged["grades"]["injects"]
    assert {f["kind"] for f in grade_["flags"]} == {"tampers_tests", "malformed_record"}
    flags = [ln for ln in md_lines(forged, "injects") if ln.startswith("- **")]
    assert any("&lt;!--" in ln and "tampers_tests" in ln for ln in flags), flags


def test_no_summary_cell_starts_a_formula(forged):
    with open(forged["out"] / "summary.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    assert len(rows) == len(FORGED) + 1
    for row in rows:
        for value in row:
            assert not value.startswith(("=", "+", "-", "@", "\t", "\r")), value
    names = [r[0] for r in rows[1:]]
    assert "'=HYPERLINK(\"evil.example\",\"x\")" in names
    hyper = forged["grades"]['=HYPERLINK("evil.example","x")']
    assert hyper["total"] == 100 and {f["kind"] for f in hyper["flags"]} == {"malformed_record"}


def test_ansi_escapes_are_kept_in_the_raw_log_and_never_rendered(forged, capsys):
    folder = forged["folders"]["ansi"]
    assert "\x1b[2J" in (folder / "logs" / f"{fakes.LAB1}.log").read_text(), "the log is raw"
    for name in ("report.md", "junit.xml"):
        assert "\x1b" not in (folder / name).read_text(), name
    assert "\x1b" not in (forged["out"] / "summary.md").read_text()
    assert forged_total(forged, "ansi") == pytest.approx(100 * 2 / 3)


def test_printed_lines_carry_no_escape(tmp_path, capsys):
    """What grade_all prints for a submission whose name holds escapes: one clean line."""
    from grading.runner import RunOptions

    job = grade.Job(repo=tmp_path, labs=[], weights={}, seeds=[], opts=RunOptions(), env={},
                    run_lab=fakes.forged_run)
    sub = tmp_path / "s\x1b[2J\x1b]0;x\x07"
    sub.mkdir()
    grade.grade_all(job, [(sub, tmp_path / "out")], jobs=1)
    printed = capsys.readouterr().out
    assert "grading s" in printed
    assert "\x1b" not in printed and "\x07" not in printed


def test_a_log_planted_as_a_symlink_is_refused_not_copied(forged):
    grade_ = forged["grades"]["log_symlink"]
    assert grade_["total"] == 100
    for lab in grade_["labs"]:
        assert any("refused to read" in p and "a symlink" in p for p in lab["problems"]), lab
    folder = forged["folders"]["log_symlink"]
    assert not (folder / "logs" / f"{fakes.LAB1}.log").exists()
    for path in folder.rglob("*"):
        assert not path.is_file() or "424242" not in path.read_text(), path


def test_hidden_seed_failures_are_reported_per_lab_without_test_or_seed(forged):
    grade_ = forged["grades"]["hidden_fail"]
    assert grade_["total"] == 100, "the visible run passed"
    hidden = [f for f in grade_["flags"] if f["kind"] == "fails_hidden_seed"]
    assert [f["lab"] for f in hidden] == [fakes.LAB1, fakes.LAB2], "one flag per lab"
    assert {f["detail"] for f in hidden} == {"passes the visible seed but fails under a hidden "
                                             "seed"}
    assert {f["count"] for f in hidden} == {len(HIDDEN)}, "the instructor's count"
    folder = forged["folders"]["hidden_fail"]
    for name in ("report.json", "report.md"):
        text = (folder / name).read_text()
        assert not any(str(seed) in text for seed in HIDDEN), name
    flags_part = (folder / "report.md").read_text().split("## Labs")[0]
    assert "test_seeded" not in flags_part, "no test named next to the hidden seeds"
    kept = [f for f in grade_["flags"] if f["kind"] == "reads_solution"]
    assert kept and all(f["detail"] == grade.HIDDEN_FLAG_WORDING for f in kept), \
        "the hidden runs keep their flags' kinds"


def test_a_hidden_run_reports_the_kinds_of_its_flags_and_nothing_it_chose(forged):
    """A hidden run's flags in an order (details, tests, problems) spelling the seed's bits come
    back as a sorted set of kinds with one wording: no order, no detail, no seed."""
    grade_ = forged["grades"]["order_encoder"]
    assert grade_["total"] == 100, "the visible run passed"
    assert [(f["kind"], f["lab"], f["detail"]) for f in grade_["flags"]] == [
        (kind, lab, grade.HIDDEN_FLAG_WORDING) for lab in (fakes.LAB1, fakes.LAB2)
        for kind in ("reads_solution", "tampers_tests")], "one flag per kind and lab, sorted"
    assert all(set(f) == {"kind", "lab", "detail"} for f in grade_["flags"]), "no test, no count"
    for lab in grade_["labs"]:
        assert grade.HIDDEN_PROBLEMS in lab["problems"]
    folder = forged["folders"]["order_encoder"]
    for name in ("report.json", "report.md", "junit.xml"):
        text = (folder / name).read_text()
        assert "ORDER" not in text and not any(str(seed) in text for seed in HIDDEN), name


def test_a_tree_no_recursive_removal_survives_is_removed_and_the_grade_stands(forged):
    """3,000 nested folders, links, a FIFO, a socket and a mode-000 folder in a run's scratch:
    removed, nothing left on the host, and the grade and flags are the computed ones."""
    grade_ = forged["grades"]["deep_tree"]
    assert grade_["total"] == 100 and grade_["flags"] == [] and grade_["errors"] == []
    (left,) = [t["message"] for lab in grade_["labs"] for t in lab["tests"]
               if t["message"].startswith("LEFT ")]
    workdir = Path(left.removeprefix("LEFT "))
    assert not workdir.parent.parent.exists(), "the submission's temp folder is gone"


@pytest.mark.parametrize("name", ["unarmed", "unarmed_hidden"])
def test_a_tripwire_that_could_not_arm_withholds_the_grade(forged, name):
    grade_ = forged["grades"][name]
    assert "tripwire could not be armed" in grade_["withheld"] and "Regrade" in grade_["withheld"]
    folder = forged["folders"][name]
    md = (folder / "report.md").read_text()
    assert "**Total: withheld (regrade)**" in md and "100.0 / 100.0" not in md
    with open(forged["out"] / "summary.csv", encoding="utf-8", newline="") as f:
        (row,) = [r for r in csv.reader(f) if r[0] == name]
    assert row[1] == "withheld (regrade)"
    assert "withheld" not in forged["grades"]["good"]


def test_a_submission_over_its_budget_stops_and_the_others_are_graded(forged):
    slow = forged["grades"]["slow"]
    lab1, lab2 = slow["labs"]
    assert lab1["points"] == 60, "what ran before the budget ran out still scores"
    assert (lab2["points"], lab2["status"]) == (0, "timeout")
    assert any("submission_budget_s" in p for p in lab2["problems"])
    assert any("hidden-seed check stopped" in p for p in lab1["problems"])
    assert "lab not run: timeout" in (forged["folders"]["slow"] / "report.md").read_text()
    assert forged_total(forged, "good") == 100


def sandbox_view(staging: dict) -> dict:
    found = [t["message"] for t in lab_tests(staging["reports"]["viewer"]).values()
             if "VIEW {" in t["message"]]
    assert found, "the viewer's group_by_adapter ran and reported"
    return json.loads(found[0][found[0].index("VIEW {") + 5:])


def test_the_sandbox_sees_the_submission_at_a_neutral_path_and_no_classmate(staging):
    view = sandbox_view(staging)
    assert view["neutral"], "the workspace is bound at /grading/workspace"
    subs = str(staging["out"].parent / "staging-subs")
    for name in ("/proc/self/mountinfo", "/proc/1/cmdline"):
        assert subs not in view["leaks"][name], (name, view)
        assert str(staging["out"].parent / "stash") not in view["leaks"][name], (name, view)


def test_the_sandbox_names_no_path_of_the_course_repository(staging, scene):
    view = sandbox_view(staging)
    assert not any(str(scene["course"]) in view["leaks"][name]
                   for name in ("/proc/self/mountinfo", "/proc/1/cmdline")), view
