"""The sandbox's parts, fast: the bwrap command line, the environment, the limits on a fake
cgroup tree, the per-lab pass-through, the refusal without bwrap, the report line; and, where
bwrap works, what a process inside can and cannot see."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from grading import grade, report, sandbox
from grading.config import ConfigError, LabConfig
from grading.tests import fakes

REPO = fakes.REAL_REPO


def bare(**kw) -> sandbox.Sandbox:
    base = sandbox.Sandbox(bwrap="/usr/bin/bwrap", version="0.8.0", python=sys.executable,
                           python_paths=(sys.prefix,), cgroups=None,
                           enforcement=sandbox.enforcement(None))
    return base.for_lab(sandbox.Limits(1 << 30, 64), kw.get("readonly", []), kw.get("env", {}),
                        kw.get("decoys", []))


def pairs(argv: list[str], option: str) -> list[tuple[str, str]]:
    return [(argv[i + 1], argv[i + 2]) for i, a in enumerate(argv) if a == option]


def test_argv_unshares_everything_and_binds_only_what_it_lists(tmp_path):
    ws = tmp_path / "ws"
    argv = bare(readonly=[(str(ws), str(ws))]).argv(["python", "-V"], tmp_path, tmp_path,
                                                     [("/d/0-solution.py", "/r/solution.py")])
    for option in ("--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc",
                   "--disable-userns", "--die-with-parent", "--new-session"):
        assert option in argv
    assert argv[argv.index("--remount-ro") + 1] == "/", "nothing writable but what is bound so"
    assert argv[-3:] == ["--", "python", "-V"]
    assert pairs(argv, "--bind") == [(str(tmp_path), str(tmp_path))], "scratch: the only rw bind"
    ro = pairs(argv, "--ro-bind")
    assert ("/", "/") not in ro and (str(REPO), str(REPO)) not in ro
    assert (str(ws), str(ws)) in ro and ("/d/0-solution.py", "/r/solution.py") in ro
    assert ("/etc/shadow", "/etc/shadow") not in pairs(argv, "--ro-bind-try")
    assert argv[argv.index("--tmpfs") - 1] == str(1 << 30), "/dev/shm capped at the memory limit"


def test_a_course_repository_is_seen_only_at_a_neutral_path(tmp_path):
    course = tmp_path / "course"
    venv_python = str(course / ".venv" / "bin" / "python")
    box = dataclasses.replace(bare(decoys=[str(course / "labs" / "solution.py")]),
                          python=venv_python, python_paths=(str(course / ".venv"),),
                          hidden=(str(course),))
    argv = box.argv([venv_python, "-V"], tmp_path, tmp_path,
                    [("/d/0-solution.py", str(course / "labs" / "solution.py"))])
    ro = pairs(argv, "--ro-bind")
    inside = f"{sandbox.COURSE_INSIDE}-0"
    assert (str(course / ".venv"), f"{inside}/.venv") in ro, "the venv, at a neutral path"
    assert ("/d/0-solution.py", f"{inside}/labs/solution.py") in ro, "the decoy keeps its layout"
    assert argv[-2:] == [f"{inside}/.venv/bin/python", "-V"], "run as the neutral interpreter"
    assert not any(a.startswith(str(course)) for i, a in enumerate(argv)
                   if argv[i - 1] != "--ro-bind"), "a course path only ever as a bind source"
    assert box.environment({}, tmp_path)["PATH"].startswith(f"{inside}/.venv/bin:")


def test_the_bwrap_command_line_carries_no_bind(tmp_path):
    launch = sandbox.Launch(bare())
    full = bare().argv(["python", "-V"], tmp_path, tmp_path, [])
    short = launch.hide_args(full)
    try:
        assert short[:2] == [full[0], "--args"] and short[3:] == ["--", "python", "-V"]
        fd = int(short[2])
        options = os.read(fd, 1 << 20).split(b"\0")[:-1]
        assert options[:-2] == [os.fsencode(a) for a in full[1:full.index("--")]]
        assert options[-2] == b"--seccomp" and int(options[-1]) in launch.pass_fds
    finally:
        launch.close()
    assert launch.pass_fds == []


def test_environment_is_built_from_nothing(monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "hunter2")
    monkeypatch.setenv("LAB02_CPU_BASE", "/models/smol")
    env = bare(env={"LAB02_CPU_BASE": "/models/smol"}).environment({"LAB_SEED": "7"}, tmp_path)
    assert "AWS_SECRET_ACCESS_KEY" not in env
    assert env["LAB02_CPU_BASE"] == "/models/smol" and env["LAB_SEED"] == "7"
    assert env["HOME"] == str(tmp_path / "home") and env["TMPDIR"] == "/tmp"
    assert all(v.startswith(str(tmp_path)) for k, v in env.items() if k.endswith(("_HOME",
                                                                                  "_DIR")))


def fake_cgroupfs(tmp_path: Path, version: str) -> tuple[Path, Path]:
    """A /proc/self/mounts and /proc/self/cgroup pair pointing at directories under tmp."""
    root = tmp_path / "cg"
    if version == "v1":
        mounts = (f"cgroup {root}/pids cgroup rw,relatime,pids 0 0\n"
                  f"cgroup {root}/memory cgroup rw,relatime,memory 0 0\n")
        own = "8:pids:/\n4:memory:/box/one\n0::/\n"
        (root / "pids").mkdir(parents=True)
        (root / "memory" / "box" / "one").mkdir(parents=True)
    else:
        mounts = f"cgroup2 {root} cgroup2 rw,nsdelegate 0 0\n"
        own = "0::/grader.service\n"
        (root / "grader.service").mkdir(parents=True)
    (tmp_path / "mounts").write_text(mounts)
    (tmp_path / "cgroup").write_text(own)
    return tmp_path / "mounts", tmp_path / "cgroup"


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_limits_go_to_a_child_of_the_graders_own_cgroup(tmp_path, version):
    cgroups = sandbox.find_cgroups(*fake_cgroupfs(tmp_path, version))
    assert cgroups is not None and cgroups.version == version
    parent = cgroups.parent("memory")
    assert parent == (tmp_path / "cg" / ("memory/box/one" if version == "v1" else
                                         "grader.service"))
    run = sandbox.CgroupRun(cgroups, "t", sandbox.Limits(3 << 20, 42))
    with run:
        mem = run.dirs["memory"] / cgroups.files("memory")["limit"]
        pids = run.dirs["pids"] / "pids.max"
        assert (mem.read_text(), pids.read_text()) == (str(3 << 20), "42")
    assert set(run.stats) == {"oom_kills", "pid_limit_hits", "peak_memory_bytes", "peak_pids",
                              "leftover_processes"}
    assert sandbox.enforcement(cgroups) == {"memory": f"cgroup {version}",
                                            "pids": f"cgroup {version}"}


def test_without_cgroups_the_fallbacks_say_what_they_are():
    how = sandbox.enforcement(None)
    assert how["memory"].startswith("RLIMIT_AS")
    expected = "not enforced" if os.geteuid() == 0 else "RLIMIT_NPROC"
    assert how["pids"].startswith(expected), "root is exempt from RLIMIT_NPROC"


def test_a_lab_passes_listed_variables_and_binds_the_paths_they_name(tmp_path):
    model = tmp_path / "smol"
    model.mkdir()
    cfg = LabConfig(points=1, timeout_s=1, lab_budget_s=1, env=("LAB02_*", "CI"))
    environ = {"LAB02_CPU_BASE": str(model), "LAB02_BASE_MODEL": "meta-llama/x", "CI": "true",
               "HF_TOKEN": "secret"}
    got = grade.lab_sandbox(cfg, [REPO], environ)
    assert got.env == {"CI": "true", "LAB02_BASE_MODEL": "meta-llama/x",
                       "LAB02_CPU_BASE": str(model)}
    assert got.readonly == [(str(model), str(model))], "a hub name is not a path: not bound"
    with pytest.raises(ConfigError, match="would bind a course repository"):
        grade.lab_sandbox(cfg, [REPO], {"LAB02_CPU_BASE": str(REPO)})
    with pytest.raises(ConfigError):
        grade.lab_sandbox(cfg, [REPO], {"LAB02_CPU_BASE": str(REPO / "grading" / "keys")})


def test_shards_are_a_round_robin_over_sorted_names():
    subs = [Path(n) for n in ("eve", "bob", "dan", "amy", "cat")]
    slices = [grade.shard_of(subs, i, 2) for i in range(2)]
    assert [[p.name for p in s] for s in slices] == [["amy", "cat", "eve"], ["bob", "dan"]]
    assert grade.parse_shard("1/2") == (1, 2)
    for bad in ("2/2", "-1/2", "1", "a/b"):
        with pytest.raises(Exception, match="expected I/N"):
            grade.parse_shard(bad)


def test_reports_open_with_the_sandbox_state():
    job = grade.Job(repo=REPO, labs=["lab-01-x"], weights={"lab-01-x": LabConfig(
        1, 1, 1, memory_mib=512, max_pids=64)}, seeds=[], opts=grade.RunOptions(), env={})
    assert report.sandbox_line(job.sandbox_report()).startswith("**UNSANDBOXED** (--no-sandbox)")
    boxed = grade.Job(**{**vars(job), "box": bare()}).sandbox_report()
    line = report.sandbox_line(boxed)
    assert line.startswith("**Sandboxed**: bubblewrap 0.8.0")
    assert "memory 512 MiB, 64 processes (lab-01)" in line and "RLIMIT_AS" in line


def test_grade_refuses_in_one_line_without_bwrap(fake_repo, tmp_path, monkeypatch, capsys):
    sub = fakes.make_submission(tmp_path / "s", fakes.LAB1_STARTER, None)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert grade.main([str(sub), "--repo", str(fake_repo), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "bubblewrap" in err and "apt-get install bubblewrap" in err and "--no-sandbox" in err


def test_grade_refuses_when_bwrap_cannot_make_namespaces(fake_repo, tmp_path, monkeypatch,
                                                         capsys):
    fake = fakes.write(tmp_path / "bin" / "bwrap", """\
        #!/bin/sh
        [ "$1" = --version ] && echo "bubblewrap 0.8.0" && exit 0
        echo "bwrap: No permissions to creating new namespace" >&2
        exit 1
        """)
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:/usr/bin:/bin")
    sub = fakes.make_submission(tmp_path / "s", fakes.LAB1_STARTER, None)
    assert grade.main([str(sub), "--repo", str(fake_repo), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "cannot create its namespaces" in err and "No permissions" in err, err


# --- inside the real sandbox -------------------------------------------------------------


LOOK_AROUND = """\
import json, os, socket, sys
from pathlib import Path
repo = Path(sys.argv[1])
seen = {"repo": sorted(os.listdir(repo)) if repo.is_dir() else None,
        "keys": (repo / "grading" / "keys").exists(),
        "home": os.environ["HOME"], "uid": os.getuid(), "pid": os.getpid(),
        "tmp": os.listdir("/tmp"), "etc_shadow": os.path.exists("/etc/shadow")}
try:
    socket.create_connection(("1.1.1.1", 53), timeout=2)
    seen["net"] = "open"
except OSError as err:
    seen["net"] = type(err).__name__
print(json.dumps(seen))
"""


def test_a_process_inside_sees_no_repository_keys_network_or_host_tmp(sandbox_works, tmp_path):
    box = sandbox_works.for_lab(sandbox.Limits(1 << 30, 64), [], {}, [])
    (tmp_path / "scratch").mkdir()
    host_only = Path("/tmp") / f"phase11-host-only-{os.getpid()}"
    host_only.touch()
    with box.launch("look") as launch:
        argv = box.argv([sys.executable, "-c", LOOK_AROUND, str(REPO)], tmp_path / "scratch",
                        tmp_path / "scratch", launch.decoy_binds)
        out = subprocess.run(argv, env=box.environment({}, tmp_path / "scratch"),
                             preexec_fn=launch.preexec, capture_output=True, text=True,
                             timeout=120)
    host_only.unlink()
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    assert seen["repo"] in (None, [".venv"]), "at most the venv that lives in the repository"
    assert not seen["keys"] and not seen["etc_shadow"]
    assert seen["uid"] == sandbox.SANDBOX_UID and seen["pid"] < 10
    assert host_only.name not in seen["tmp"], "the host's /tmp is not the sandbox's"
    # the scratch dir's mount point, and the venv's when the checkout itself lives under /tmp
    allowed = {tmp_path.parts[2]} | ({REPO.parts[2]} if REPO.parts[1] == "tmp" else set())
    assert set(seen["tmp"]) <= allowed, "only the mount points of the scratch dir and the venv"
    assert seen["home"].startswith(str(tmp_path))
    assert seen["net"] != "open"


def test_parallel_jobs_share_the_cores_out_unless_told_otherwise():
    cores = len(os.sched_getaffinity(0))
    assert grade.threads_per_job(1, {}) == {}
    share = grade.threads_per_job(2, {"MKL_NUM_THREADS": "3"})
    assert share == {"OMP_NUM_THREADS": str(max(1, cores // 2)),
                     "OPENBLAS_NUM_THREADS": str(max(1, cores // 2))}


TRY_INOTIFY = """
import ctypes, errno, json, os, platform
libc = ctypes.CDLL(None, use_errno=True)
calls = {"inotify_init1": lambda: libc.inotify_init1(0), "inotify_init": lambda: libc.inotify_init()}
if platform.machine() == "x86_64":  # the raw numbers, and the x32 ABI's
    calls.update({f"syscall {nr:#x}": (lambda nr=nr: libc.syscall(nr, 0))
                  for nr in (253, 294, 253 | 0x40000000, 294 | 0x40000000)})
seen = {}
for name, call in calls.items():
    ctypes.set_errno(0)
    seen[name] = [call(), errno.errorcode.get(ctypes.get_errno(), "0")]
seen["pipe"] = len(os.pipe())  # everything else works
print(json.dumps(seen))
"""


def test_no_process_inside_can_make_an_inotify_instance(sandbox_works, tmp_path):
    """Inotify instances are charged to the grading user: a sandbox that could open them until
    refused would blind every other sandbox's tripwire. Inside, each way to make one is EPERM."""
    box = sandbox_works.for_lab(sandbox.Limits(1 << 30, 64), [], {}, [])
    (tmp_path / "scratch").mkdir()
    with box.launch("inotify") as launch:
        argv = launch.hide_args(box.argv([sys.executable, "-c", TRY_INOTIFY], tmp_path / "scratch",
                                         tmp_path / "scratch", launch.decoy_binds))
        out = subprocess.run(argv, env=box.environment({}, tmp_path / "scratch"),
                             pass_fds=launch.pass_fds, preexec_fn=launch.preexec,
                             capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    assert seen.pop("pipe") == 2
    assert seen and all(v == [-1, "EPERM"] for v in seen.values()), seen


EXHAUST_THEN_ARM = """
import ctypes, json, os, sys
sys.path.insert(0, {root!r})
from grading import sandbox
os.setgroups([]); os.setgid(65534); os.setuid(65534)  # charged to nobody, never to root
libc, held = ctypes.CDLL(None, use_errno=True), []
while len(held) < 100000:  # bounded by max_user_instances (128 by default) well before this
    fd = libc.inotify_init1(os.O_CLOEXEC)
    if fd < 0:
        break
    held.append(fd)
blind = sandbox.Tripwire(("/x/solution.py",))
blind_unarmed, blind_opened = blind.unarmed, blind.opened()
blind.close()
for fd in held:
    os.close(fd)
armed = sandbox.Tripwire(("/x/solution.py",))
print(json.dumps([len(held), blind_unarmed, blind_opened, armed.unarmed]))
armed.close()
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, to exhaust nobody's budget only")
def test_a_tripwire_that_inotify_refuses_says_so(tmp_path):
    """With no inotify instance left for its user, a tripwire watches nothing: it says so
    (``unarmed``), which withholds the grade (``test_grade``), instead of passing silently.
    The budget exhausted is that of ``nobody``, in a child that ends at once."""
    tmp_path.chmod(0o777)
    code = EXHAUST_THEN_ARM.format(root=str(fakes.REAL_REPO))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, env={**os.environ, "TMPDIR": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    held, unarmed, opened, after = json.loads(out.stdout)
    assert held > 0 and opened == []
    assert unarmed and unarmed.startswith("inotify_init1: "), unarmed
    assert after is None, "armed again once the instances were given back"
