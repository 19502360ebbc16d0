"""The trust boundary, grader side: student code runs only in workers the runner starts, the
tests' process gets their sockets over an inherited control descriptor, and nothing a sandbox
writes is read back. On the fake course with a stand-in ``labkit.isolate``/``labkit.worker``
(``standin``): the worker launcher's units (fast), then whole grading runs (``slow``)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from grading import grade, runner, tree, workers
from grading.runner import RunOptions, run_lab
from grading.tests import fakes, standin
from grading.tests.test_grade import tree_state
from labkit.loader import LABS_SUBDIR

STUDENT_MODULE = re.compile(r"^phase11_lab\d\d_(starter|solution|submission)")


@pytest.fixture(scope="module")
def iso_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return standin.make_repo(tmp_path_factory.mktemp("iso-repo"))


def staged(root: Path, lab1: str, lab2: str = fakes.LAB2_STARTER) -> Path:
    return fakes.make_submission(root, lab1, lab2)


PROBE = '''\
import os
import socket


def add(a, b):
    return {"uid": os.getuid(), "pid": os.getpid(), "cwd": os.getcwd(),
            "files": sorted(os.listdir(".")), "env": sorted(os.environ)}


def mul(port, b):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            return s.recv(100).decode()
    except OSError as err:
        return f"unreachable: {type(err).__name__}"


def neg(a):
    return os.environ.get("LAB_SEED", "")


def total(xs):
    return sum(xs)


def peek(folder):
    """What a worker can do with the folder its tests share: read a file, write one."""
    seen = open(os.path.join(folder, "given.txt")).read()
    try:
        open(os.path.join(folder, "planted.txt"), "w").close()
        return [seen, "written"]
    except OSError as err:
        return [seen, type(err).__name__]
'''


class Side:
    """The test playing sandbox A: a client on the service's control descriptor."""

    def __init__(self, service: workers.WorkerService) -> None:
        self.client = workers.WorkerClient(os.dup(service.child_fd()))
        service.started()

    def call(self, worker: workers.RemoteWorker, fn: str, *args):
        f = worker.sock.makefile("rwb")
        f.write(json.dumps({"lab": fakes.LAB1}).encode() + b"\n")
        f.write(json.dumps({"fn": fn, "args": list(args)}).encode() + b"\n")
        f.flush()
        return json.loads(f.readline())


def service_for(iso_repo: Path, tmp_path: Path, box=None, **kw) -> workers.WorkerService:
    sub = staged(tmp_path / "sub", PROBE)
    private = tmp_path / "private"
    private.mkdir()
    env = {**os.environ, "GRADING_EVENTS_FD": "9", "LAB_SEED": "4242"}
    return workers.WorkerService(python=sys.executable, workspace=iso_repo, impl=str(sub),
                                 scratch_root=private, sandbox=box, base_env=env, **kw)


# --- the launcher's units ---------------------------------------------------------------------


def test_worker_env_drops_the_graders_settings_and_the_seed(tmp_path):
    env = workers.worker_env({"LAB_SEED": "7", "LAB_ISOLATE": "1", "GRADING_X": "1",
                              "PYTHONPATH": "/evil", "LAB_IMPL": "/evil"},
                             Path("/ws"), "/sub", tmp_path, None,
                             {"GRADING_EVENTS_FD": "3", "LAB_SEED": "9", "PATH": "/bin"})
    assert not [k for k in env if k.startswith("GRADING_")]
    assert "LAB_SEED" not in env and "LAB_ISOLATE" not in env and env["PATH"] == "/bin"
    assert env["PYTHONPATH"] == "/ws" and env["LAB_IMPL"] == "/sub"


def test_a_worker_runs_the_submission_in_a_fresh_folder_and_dies_on_kill(iso_repo, tmp_path):
    service = service_for(iso_repo, tmp_path)
    side = Side(service)
    try:
        worker = side.client({"LAB_ISOLATE": "1"})
        reply = side.call(worker, "add", 1, 2)["ok"]
        assert reply["cwd"] == str(tmp_path / "private" / "worker-1")
        assert reply["files"] == [], "the worker's folder holds nothing of the grader's"
        assert not [k for k in reply["env"] if k.startswith("GRADING_") or k == "LAB_SEED"]
        assert worker.poll() is None
        worker.kill()
        assert worker.poll() is not None
    finally:
        service.close()
    assert len(service.stats) == 1


def test_a_planted_worker_folder_refuses_the_worker(iso_repo, tmp_path):
    service = service_for(iso_repo, tmp_path)
    (tmp_path / "private" / "worker-1").symlink_to("/")
    side = Side(service)
    try:
        with pytest.raises(RuntimeError, match="FileExistsError"):
            side.client({})
    finally:
        service.close()
    assert any("could not be started" in p for p in service.problems)


def test_a_sandboxed_worker_is_uid_1000_in_its_own_pid_namespace(iso_repo, tmp_path,
                                                                 sandbox_works):
    box = _box(sandbox_works, iso_repo, tmp_path, sandbox_works.limits)
    service = service_for(iso_repo, tmp_path, box)
    side = Side(service)
    try:
        worker = side.client({"LAB_SEED": "1"})
        reply = side.call(worker, "add", 1, 2)["ok"]
        assert reply["uid"] == 1000 and reply["pid"] < 10
        assert side.call(side.client({}), "neg", 1)["ok"] == "", "no LAB_SEED in a worker"
    finally:
        service.close()
    assert len(service.stats) == 2 and all("decoys_opened" in s for s in service.stats)


def test_a_sandboxed_worker_reads_the_tests_shared_folder_and_cannot_write_it(
        iso_repo, tmp_path, sandbox_works):
    box = _box(sandbox_works, iso_repo, tmp_path)
    shared = tmp_path / "a" / workers.TESTS_SHARED
    shared.mkdir(parents=True)
    (shared / "given.txt").write_text("from A")
    service = service_for(iso_repo, tmp_path, box, tests_shared=shared)
    side = Side(service)
    try:
        assert side.call(side.client({}), "peek", str(shared))["ok"] == ["from A", "OSError"]
    finally:
        service.close()
    assert not (shared / "planted.txt").exists()


def test_a_link_planted_as_the_shared_folder_binds_nothing(iso_repo, tmp_path, sandbox_works):
    box = _box(sandbox_works, iso_repo, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "given.txt").write_text("a host file")
    shared = tmp_path / "a" / workers.TESTS_SHARED
    shared.parent.mkdir()
    shared.symlink_to(elsewhere)  # what A could plant in its own scratch
    service = service_for(iso_repo, tmp_path, box, tests_shared=shared)
    side = Side(service)
    try:
        reply = side.call(side.client({}), "peek", str(shared))
    finally:
        service.close()
    assert "ok" not in reply, f"the worker read through the planted link: {reply}"
    assert any("not a folder" in p for p in service.problems), service.problems


def _limits():
    from grading.sandbox import Limits

    return Limits(2 << 30, 256)


def _box(sandbox_works, iso_repo: Path, tmp_path: Path, limits=None):
    """A worker's sandbox seeing the workspace and the staged submission (``tmp_path/sub``)."""
    return sandbox_works.for_lab(limits or _limits(), [
        (str(iso_repo), str(iso_repo)), (str(tmp_path / "sub"), str(tmp_path / "sub"))], {}, [])


SERVER = ("import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); "
          "print(s.getsockname()[1], flush=True); c, _ = s.accept(); c.sendall(b'hi from A')")


def test_a_sandboxed_worker_shares_the_tests_network_namespace(iso_repo, tmp_path,
                                                               sandbox_works):
    if os.geteuid() != 0:
        pytest.skip("joining a network namespace needs root; the workers get their own")
    box = _box(sandbox_works, iso_repo, tmp_path)
    a_scratch = tmp_path / "a"
    a_scratch.mkdir()
    info_r, info_w = os.pipe()
    argv = box.argv([sys.executable, "-c", SERVER], a_scratch, a_scratch, [], info_fd=info_w)
    a = subprocess.Popen(argv, stdout=subprocess.PIPE, pass_fds=(info_w,), text=True,
                         env=box.environment({}, a_scratch))
    os.close(info_w)
    from grading.runner import _child_pid

    service = service_for(iso_repo, tmp_path, box, netns_pid=_child_pid(info_r))
    side = Side(service)
    try:
        port = int(a.stdout.readline())
        assert side.call(side.client({}), "mul", port, 0)["ok"] == "hi from A"
        assert service.shared_net is True
    finally:
        service.close()
        a.kill()
        a.wait()
        os.close(info_r)


# --- whole runs: what the tests' process holds, restarts ---------------------------------------


RESTART_LOOP = "import os\nos._exit(87)\n"


def _run(iso_repo: Path, tmp_path: Path, lab1: str, **opts):
    ws = tree.make_workspace(iso_repo, tmp_path / "ws", sandboxed=False)
    sub = staged(tmp_path / "sub", lab1)
    return run_lab(ws.root, fakes.LAB1, str(sub), tmp_path / "run",
                   RunOptions(timeout_s=3, budget_s=120, **opts))


def own_run(iso_repo: Path, tmp_path: Path, lab1: str) -> tuple[dict, list[str]]:
    """A student's own ``pytest`` on lab 01 (``LAB_IMPL`` the submission, no ``LAB_ISOLATE``, no
    grader): the submission imported into the tests' process. ``grading.plugin``'s event
    channel is there as the tests' process has it; what it carried, read as the runner reads
    it: every test's result, and the ``phase11_lab*`` modules the process held."""
    sub = staged(tmp_path / "sub", lab1)
    events_r, events_w = os.pipe()
    reader = runner.PipeReader(events_r)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRADING_", "LAB_"))}
    env.update(LAB_IMPL=str(sub), GRADING_EVENTS_FD=str(events_w), PYTHONDONTWRITEBYTECODE="1",
               PYTHONPATH=str(runner.TOOLING_ROOT))
    try:
        subprocess.run([sys.executable, "-m", "pytest", str(iso_repo / LABS_SUBDIR / fakes.LAB1),
                        "--rootdir", str(iso_repo), "-p", "grading.plugin", "-p",
                        "no:cacheprovider", "-q", "--basetemp", str(tmp_path / "basetemp")],
                       cwd=tmp_path, env=env, pass_fds=(events_w,), capture_output=True,
                       timeout=120, check=False)
    finally:
        os.close(events_w)
    events, _ = runner.parse_events(reader.finish())
    results: dict[str, runner.TestResult] = {}
    runner._absorb(events, results, runner.LabRun(lab=fakes.LAB1, impl=str(sub)))
    return results, [n for ev in events if ev["event"] == "modules" for n in ev["names"]]


def passed(results: dict[str, runner.TestResult]) -> list[str]:
    return sorted(t.name for t in results.values() if t.graded and t.outcome == "passed")


@pytest.mark.slow
def test_the_tests_process_imports_no_student_code_with_workers(iso_repo, tmp_path):
    run = _run(iso_repo, tmp_path / "graded", fakes.LAB1_SOLUTION)
    graded = [t for t in run.tests if t.graded]
    assert graded and all(t.outcome == "passed" for t in graded), run.problems
    assert [n for n in run.modules if STUDENT_MODULE.match(n)] == []
    # the control: the same record names the submission's module where the tests import it
    _, held = own_run(iso_repo, tmp_path / "own", fakes.LAB1_SOLUTION)
    assert [n for n in held if STUDENT_MODULE.match(n)], held


HANGS = "\n".join(f"def {name}(*args):\n    while True:\n        pass\n"
                   for name in ("add", "mul", "neg", "total"))


@pytest.mark.slow
def test_a_restart_loop_stops_at_the_cap_and_a_worker_death_restarts_nothing(
        iso_repo, tmp_path, sandbox_works):
    """What ends a tests' process now is a timeout in the sandbox (the lab resumes in a fresh
    one): a submission whose every call hangs ends every attempt, and stops at the cap. A
    submission that kills its worker at import costs its tests, never an attempt."""
    ws = tree.make_workspace(iso_repo, tmp_path / "ws", sandboxed=True)
    sub = staged(tmp_path / "sub", HANGS)
    box = sandbox_works.for_lab(_limits(), grade.inside_binds(ws, str(sub)), {}, [])
    loop = run_lab(grade.INSIDE_WORKSPACE, fakes.LAB1, str(grade.INSIDE_SUBMISSION),
                   tmp_path / "run",
                   RunOptions(timeout_s=1, budget_s=120, sandbox=box, max_attempts=3))
    assert loop.attempts == 3 and any("after 3 attempts" in p for p in loop.problems)
    assert not any(t.outcome == "passed" for t in loop.tests if t.graded)
    died = _run(iso_repo, tmp_path / "b", RESTART_LOOP, max_attempts=3)
    assert died.attempts == 1
    assert not any(t.outcome == "passed" for t in died.tests if t.graded)


def test_run_lab_refuses_a_folder_that_exists(iso_repo, tmp_path):
    (tmp_path / "run").symlink_to("/")
    with pytest.raises(FileExistsError):
        _run(iso_repo, tmp_path, fakes.LAB1_SOLUTION)


# --- hostile submissions, graded whole in worker mode -------------------------------------------

NODE = "phase-11-multi-lora/labs/lab-01-alpha/test_lab.py::"
FORGE_EVENTS = f'''\
import atexit
import json
import os

NAMES = ["test_add_small_ints", "test_mul_small_ints", "test_neg_flips_sign",
         "test_total_of_a_seeded_draw", "test_add_matches_plus"]
OK = {{"outcome": "passed", "duration": 0.0, "exc": "", "message": "", "wasxfail": False}}
LINES = "".join(json.dumps({{"event": "end", "nodeid": {NODE!r} + n,
                             "phases": {{w: OK for w in ("setup", "call", "teardown")}}}}) + "\\n"
                for n in NAMES).encode()


def forge():
    for fd in range(1, 1024):
        try:
            os.write(fd, LINES)
        except OSError:
            pass


forge()
atexit.register(forge)
''' + fakes.LAB1_STARTER.split('"""', 2)[2]

SWAP_TEST_CODE = '''\
import gc


def _passes(*args, **kwargs):
    return None


gc.unfreeze()  # the course's conftest freezes what collection built: get_objects skips it
for obj in gc.get_objects():
    if type(obj).__name__ == "function" and obj.__name__.startswith("test_"):
        try:
            obj.__code__ = _passes.__code__
        except (TypeError, ValueError):
            pass
''' + fakes.LAB1_STARTER.split('"""', 2)[2]

MAKEREPORT_HOOK = '''\
import gc

import pytest


class _Passes:
    @pytest.hookimpl(hookwrapper=True, tryfirst=True)
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        report = outcome.get_result()
        report.outcome, report.longrepr = "passed", None


gc.unfreeze()  # the course's conftest freezes what collection built: get_objects skips it
for obj in gc.get_objects():
    if type(obj).__name__ == "PytestPluginManager":
        try:
            obj.register(_Passes(), "passes")
        except ValueError:
            pass
''' + fakes.LAB1_STARTER.split('"""', 2)[2]

ATTACKS = {"forge-events": FORGE_EVENTS, "swap-test-code": SWAP_TEST_CODE,
           "makereport-hook": MAKEREPORT_HOOK}


def _grade_batch(iso_repo: Path, root: Path, subs: dict[str, str], extra: list[str]) -> dict:
    for name, lab1 in subs.items():
        staged(root / "subs" / name, lab1)
    before = (tree_state(iso_repo), tree_state(root / "subs"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRADING_HIDDEN_SEEDS", "12345,678")
        rc = grade.main([str(root / "subs"), "--out", str(root / "out"), "--repo",
                         str(iso_repo), "--labs", "lab-01", *extra])
    assert rc == 0
    assert (tree_state(iso_repo), tree_state(root / "subs")) == before, "nothing else changed"
    return {p.parent.name: json.loads(p.read_text())
            for p in (root / "out").glob("*/report.json")}


@pytest.fixture(scope="module")
def worker_batch(iso_repo, tmp_path_factory, sandbox_or_not) -> dict:
    return _grade_batch(iso_repo, tmp_path_factory.mktemp("batch"),
                        {"solved": fakes.LAB1_SOLUTION, "pristine": fakes.LAB1_STARTER,
                         **ATTACKS}, sandbox_or_not)


@pytest.mark.slow
def test_worker_mode_gives_solutions_full_points_and_starters_zero(worker_batch):
    assert worker_batch["solved"]["total"] == 60 and worker_batch["pristine"]["total"] == 0
    assert worker_batch["solved"]["sandbox"]["workers"] is True


@pytest.mark.slow
@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_attacks_on_the_tests_process_are_powerless_with_workers(worker_batch, attack):
    report = worker_batch[attack]
    assert report["total"] == 0, [t for lab in report["labs"] for t in lab["tests"]
                                  if t["outcome"] == "passed"]
    assert not report["errors"] or all("hidden seeds" in e for e in report["errors"])


@pytest.mark.slow
def test_the_same_attacks_pass_in_a_students_own_run(iso_repo, tmp_path):
    """The control: where the submission shares the tests' process (a student's own run, the
    plugin's channel beside it), each attack passes tests that the pristine starter it
    carries fails, so the test above can fail."""
    assert passed(own_run(iso_repo, tmp_path / "pristine", fakes.LAB1_STARTER)[0]) == []
    got = {name: passed(own_run(iso_repo, tmp_path / name, lab1)[0])
           for name, lab1 in ATTACKS.items()}
    assert all(got.values()), got


PLANTER = '''\
import os

BASES = (".", "..", "../..", "../../..", "/tmp")
NAMES = ("hidden-1", "lab-01-alpha-hidden-1", "lab-01-alpha-hidden-2", "pytest.log",
         "exclude.txt", "events-1.jsonl", "attempt-2", "workers-2", "worker-2")
for base in BASES:
    for name in NAMES:
        path = os.path.join(base, name)
        for plant in (lambda p: os.symlink("/", p), os.mkfifo):
            try:
                plant(path)
            except OSError:
                pass
            path += ".fifo"


def add(a, b):
    return a + b


def mul(a, b):
    return a * b


def neg(a):
    return -a


def total(xs):
    return {visible}
'''


@pytest.mark.slow
def test_planted_links_and_fifos_in_a_workers_folder_change_nothing(iso_repo, tmp_path,
                                                                    sandbox_works):
    host_tmp = set(os.listdir("/tmp"))
    reports = _grade_batch(iso_repo, tmp_path, {
        "planter": PLANTER.format(visible=fakes.visible_total())}, [])
    report = reports["planter"]
    assert not report["errors"], report["errors"]
    kinds = {f["kind"] for f in report["flags"]}
    assert "fails_hidden_seed" in kinds, "both hidden runs ran, in folders of their own"
    (lab,) = report["labs"]
    assert lab["passed"] == lab["graded"]  # the visible seed's answer, hard-coded
    assert not {"hidden-1", "pytest.log", "exclude.txt"} & (set(os.listdir("/tmp")) - host_tmp)
