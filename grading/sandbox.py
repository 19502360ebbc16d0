"""The sandbox every graded pytest run happens in: bubblewrap namespaces plus cgroup limits.

A sandboxed run sees an empty, read-only root with only these in it:

- read-only: the system directories (``/usr`` and the ``/bin``, ``/lib`` links), a short list
  of ``/etc`` files (``ETC_FILES``: no ``shadow``, no keys), the CPU topology under ``/sys``,
  the Python environment (its prefixes and ``sys.path``), the workspace copy of the tests, the
  staged submission, and the paths a lab's configuration names;
- read-write: its scratch directory (working directory, ``HOME``, caches, the event log), a
  private ``/tmp`` and ``/dev/shm`` (both tmpfs, capped at the memory limit);
- decoys at the paths of the reference files and the keys (``solution.py``, ``grading/keys/``,
  mutants, alternatives): any process that opens one (``cat``, ``ctypes``, a forked helper) is
  seen through inotify, and the file holds nothing but a comment.

and runs in its own user (uid 1000, no capabilities, no nested user namespaces), PID, network
(loopback only), IPC and UTS namespaces, in a new session, dying with the grader. When the
sandboxed command ends, PID 1 of its namespace ends and the kernel kills every process left in
it. The environment is built from nothing: the host's variables (tokens, proxies, ``HOME``)
do not reach the run unless a lab's configuration lists them.

Limits, where this machine can enforce them: a cgroup per run (v1 ``pids`` and ``memory``, or
v2 with both controllers delegated) under the grader's own cgroup; else ``RLIMIT_AS`` for
memory and ``RLIMIT_NPROC`` for processes (which root ignores). ``Sandbox.enforcement`` says
which, and reports repeat it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import glob
import json
import os
import resource
import shutil
import signal
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

COURSE_INSIDE = "/grading/course"  # + "-i": where the i-th hidden course repository's venv
                                   # and decoys stand inside (never its host path)
SANDBOX_UID = SANDBOX_GID = 1000  # an ordinary user inside the user namespace, without caps
INSTALL_HINT = ("install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; Fedora: dnf "
                "install bubblewrap; or: make sandbox-deps), or pass --no-sandbox to grade "
                "without one (every report then says UNSANDBOXED)")
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ETC_FILES = ("/etc/passwd", "/etc/group", "/etc/hosts", "/etc/nsswitch.conf", "/etc/host.conf",
             "/etc/gai.conf", "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d",
             "/etc/localtime", "/etc/timezone", "/etc/alternatives", "/etc/ssl/certs",
             "/etc/ca-certificates", "/etc/os-release", "/etc/mime.types", "/etc/protocols",
             "/etc/services")
SYS_DIRS = ("/sys/devices/system/cpu", "/sys/devices/system/node")  # lscpu, NUMA, torch
GPU_DEVICES = ("/dev/nvidia*", "/dev/dri")
CGROUP_MOUNTS = Path("/proc/self/mounts")
CGROUP_SELF = Path("/proc/self/cgroup")
LIMITED = ("memory", "pids")
DECOY_TEXT = ("# grading: decoy. The reference is not in the grading sandbox; opening this "
              "file is flagged.\n")
KILL_WAIT_S = 5.0
SETTLE_S = 1.0
# Launch.stats (and LabRun.sandbox, as a count): a sandbox whose decoys' tripwire could not be
# armed (inotify refused); nothing of it was watched, so the grade is withheld (grading.grade)
UNARMED = "tripwire_unarmed"
IN_OPEN = 0x20
INOTIFY_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len (then len bytes of name)
CGROUP_FILES = {
    "v1": {"memory": {"limit": "memory.limit_in_bytes", "swap": "memory.memsw.limit_in_bytes",
                      "events": "memory.oom_control", "peak": "memory.max_usage_in_bytes"},
           "pids": {"limit": "pids.max", "events": "pids.events", "peak": "pids.peak"}},
    "v2": {"memory": {"limit": "memory.max", "swap": "memory.swap.max",
                      "events": "memory.events", "peak": "memory.peak"},
           "pids": {"limit": "pids.max", "events": "pids.events", "peak": "pids.peak"}},
}


class SandboxUnavailable(Exception):
    """No sandbox can be made here; the message is one line and says what to do."""


# --- limits -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cgroups:
    """Where this process may create child cgroups: ``version`` "v1" (one directory per
    controller) or "v2" (one directory for both)."""

    version: str
    parents: tuple[tuple[str, str], ...]  # (controller, directory); v2 names "unified"

    def files(self, controller: str) -> dict[str, str]:
        """The limit, swap, event and peak files of ``controller`` in this version."""
        return CGROUP_FILES[self.version][controller]

    def parent(self, controller: str) -> Path:
        return Path(dict(self.parents)["unified" if self.version == "v2" else controller])


def find_cgroups(mounts: Path = CGROUP_MOUNTS, self_cgroup: Path = CGROUP_SELF) -> Cgroups | None:
    """The grader's own cgroups, if both ``pids`` and ``memory`` are under a hierarchy this
    process can create children in (v1 first: a hybrid system mounts its controllers there)."""
    try:
        mount_lines = mounts.read_text().splitlines()
        own = [line.split(":", 2) for line in self_cgroup.read_text().splitlines()]
    except OSError:
        return None
    v1, v2 = {}, None
    for line in mount_lines:
        fields = line.split()
        if len(fields) < 4:
            continue
        where, fstype, options = fields[1], fields[2], fields[3].split(",")
        if fstype == "cgroup":
            v1.update({c: where for c in LIMITED if c in options})
        elif fstype == "cgroup2":
            v2 = where
    paths_v1 = {c: path for _, controllers, path in own if controllers for c in
                controllers.split(",")}
    if all(c in v1 and c in paths_v1 for c in LIMITED):
        found = Cgroups("v1", tuple((c, v1[c] + paths_v1[c].rstrip("/")) for c in LIMITED))
        if _can_limit(found):
            return found
    path_v2 = next((path for hid, controllers, path in own if hid == "0" and not controllers),
                   None)
    if v2 is not None and path_v2 is not None:
        found = Cgroups("v2", (("unified", v2 + path_v2.rstrip("/")),))
        if _can_limit(found):
            return found
    return None


def _can_limit(cgroups: Cgroups) -> bool:
    """Create and remove one child cgroup with both limit files present and writable."""
    try:
        with CgroupRun(cgroups, f"probe-{os.getpid()}", Limits(1 << 40, 1 << 20)):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class Limits:
    memory_bytes: int
    max_pids: int


class CgroupRun:
    """One child cgroup per controller for one sandboxed process; removed on exit, after
    killing whatever is still in it. ``stats`` holds OOM kills, process-limit hits and peaks."""

    def __init__(self, cgroups: Cgroups, name: str, limits: Limits) -> None:
        self.cgroups, self.limits = cgroups, limits
        self.dirs = {c: cgroups.parent(c) / f"phase11-grade-{name}" for c in LIMITED}
        self.stats: dict[str, int] = {}

    def __enter__(self) -> CgroupRun:
        made = []
        try:
            for d in self._unique_dirs():
                d.mkdir()
                made.append(d)
            mem, pids = self.cgroups.files("memory"), self.cgroups.files("pids")
            self._write("memory", mem["limit"], str(self.limits.memory_bytes))
            with contextlib.suppress(FileNotFoundError):  # no swap accounting: nothing to cap
                self._write("memory", mem["swap"], str(self.limits.memory_bytes)
                            if self.cgroups.version == "v1" else "0")
            self._write("pids", pids["limit"], str(self.limits.max_pids))
        except OSError:
            for d in reversed(made):
                with contextlib.suppress(OSError):
                    d.rmdir()
            raise
        return self

    def _unique_dirs(self) -> list[Path]:
        return list(dict.fromkeys(self.dirs.values()))  # v2: one directory for both

    def _write(self, controller: str, name: str, value: str) -> None:
        (self.dirs[controller] / name).write_text(value)

    def _read(self, controller: str, name: str) -> str:
        try:
            return (self.dirs[controller] / name).read_text()
        except OSError:
            return ""

    def join(self) -> None:
        """Move the calling process in (a child between fork and exec)."""
        for d in self._unique_dirs():
            with open(d / "cgroup.procs", "w") as f:
                f.write(str(os.getpid()))

    def __exit__(self, *exc: object) -> None:
        leftover = self._kill_all()
        mem, pids = self.cgroups.files("memory"), self.cgroups.files("pids")
        self.stats = {"oom_kills": _counter(self._read("memory", mem["events"]), "oom_kill"),
                      "pid_limit_hits": _counter(self._read("pids", pids["events"]), "max"),
                      "peak_memory_bytes": _int(self._read("memory", mem["peak"])),
                      "peak_pids": _int(self._read("pids", pids["peak"])),
                      "leftover_processes": leftover}
        for d in self._unique_dirs():
            with contextlib.suppress(OSError):
                d.rmdir()

    def _procs(self) -> set[int]:
        found: set[int] = set()
        for d in self._unique_dirs():
            found |= {int(p) for p in self._read_dir(d).split()}
        return found

    @staticmethod
    def _read_dir(d: Path) -> str:
        try:
            return (d / "cgroup.procs").read_text()
        except OSError:
            return ""

    def _kill_all(self) -> int:
        """SIGKILL whatever is still in the cgroups once the run is over, and count it. Normally
        nothing: PID 1 of the namespace took its processes with it (a last one may still be
        on its way out: give it ``SETTLE_S``)."""
        settle = time.monotonic() + SETTLE_S
        while self._procs() and time.monotonic() < settle:
            time.sleep(0.02)
        left = self._procs()
        deadline = time.monotonic() + KILL_WAIT_S
        while (procs := self._procs()) and time.monotonic() < deadline:
            for pid in procs:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)
        return len(left)


def _counter(text: str, key: str) -> int:
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return _int(value)
    return 0


def _int(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        return 0


def enforcement(cgroups: Cgroups | None) -> dict[str, str]:
    """How each limit is enforced on this machine, in words; "not enforced: ..." otherwise."""
    if cgroups is not None:
        return {"memory": f"cgroup {cgroups.version}", "pids": f"cgroup {cgroups.version}"}
    pids = ("not enforced: no writable cgroup, and root is exempt from RLIMIT_NPROC"
            if os.geteuid() == 0 else "RLIMIT_NPROC (counts all of this user's processes)")
    return {"memory": "RLIMIT_AS (address space per process; tmpfs capped by size)",
            "pids": pids}


# --- no inotify inside -----------------------------------------------------------------------

# The kernel charges the inotify instances of a user namespace to its owner, the grading user:
# a process in one sandbox that opened instances until refused would leave none for the
# tripwires of every other sandbox (and for every process of that user on the host). Inside,
# ``inotify_init``/``inotify_init1`` fail with EPERM (a seccomp filter bwrap installs before
# exec: ``--seccomp``), so no sandbox can spend that budget; nothing the labs run needs them.
AUDIT_ARCH_X86_64, AUDIT_ARCH_I386, AUDIT_ARCH_AARCH64 = 0xC000003E, 0x40000003, 0xC00000B7
X32_BIT = 0x40000000  # x86_64's x32 ABI: the same numbers with this bit set
INOTIFY_SYSCALLS = {  # per audit architecture: inotify_init, inotify_init1
    AUDIT_ARCH_X86_64: (253, 294, 253 | X32_BIT, 294 | X32_BIT),
    AUDIT_ARCH_I386: (291, 332),  # int 0x80 from a 64-bit process is seen as i386
    AUDIT_ARCH_AARCH64: (26,),  # inotify_init1 (there is no inotify_init)
}
_BPF_LD_W_ABS, _BPF_JEQ_K, _BPF_RET_K = 0x20, 0x15, 0x06
_SECCOMP_RET_ALLOW, _SECCOMP_RET_ERRNO = 0x7FFF0000, 0x00050000
_SOCK_FILTER = struct.Struct("=HBBI")  # code, jt, jf, k


def no_inotify_filter() -> bytes:
    """The seccomp program (classic BPF, ``struct sock_filter`` array) bwrap loads with
    ``--seccomp``: every ``INOTIFY_SYSCALLS`` entry of the caller's architecture returns EPERM;
    everything else is allowed."""
    ops: list[list[int]] = [[_BPF_LD_W_ABS, 0, 0, 4]]  # seccomp_data.arch
    errno_at: list[int] = []  # indices of the jumps to the final "return EPERM"
    for arch, numbers in INOTIFY_SYSCALLS.items():
        ops.append([_BPF_JEQ_K, 0, len(numbers) + 2, arch])  # another architecture: skip
        ops.append([_BPF_LD_W_ABS, 0, 0, 0])  # seccomp_data.nr
        for nr in numbers:
            errno_at.append(len(ops))
            ops.append([_BPF_JEQ_K, 0, 0, nr])
        ops.append([_BPF_RET_K, 0, 0, _SECCOMP_RET_ALLOW])
    ops.append([_BPF_RET_K, 0, 0, _SECCOMP_RET_ALLOW])
    ops.append([_BPF_RET_K, 0, 0, _SECCOMP_RET_ERRNO | errno.EPERM])
    for i in errno_at:
        ops[i][1] = len(ops) - 1 - (i + 1)
    return b"".join(_SOCK_FILTER.pack(*op) for op in ops)


# --- decoys -------------------------------------------------------------------------------


class Tripwire:
    """Decoy files bound at the reference's paths, each watched with inotify: an open by any
    process in the sandbox shows up in ``opened()``, however it was made.

    It fails closed: when inotify refuses (no instance or watch left for the grading user, which
    a process in another sandbox can exhaust: the kernel charges a user namespace's instances to
    its owner), ``unarmed`` says why, and the run that used it is withheld, never passed."""

    def __init__(self, targets: tuple[str, ...]) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="phase11-decoys-"))
        self.binds: list[tuple[str, str]] = []
        self.watches: dict[int, str] = {}
        self.fd = -1
        self.unarmed: str | None = None
        if targets:
            try:
                self._libc = ctypes.CDLL(None, use_errno=True)
                self.fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
            except (OSError, AttributeError) as err:
                self.unarmed = f"no inotify: {err}"
            else:
                if self.fd < 0:
                    self.unarmed = f"inotify_init1: {os.strerror(ctypes.get_errno())}"
        for i, target in enumerate(targets):
            decoy = self.dir / f"{i}-{Path(target).name}"
            decoy.write_text(DECOY_TEXT, encoding="utf-8")
            self.binds.append((str(decoy), target))
            if self.fd >= 0:
                wd = self._libc.inotify_add_watch(self.fd, os.fsencode(decoy), IN_OPEN)
                if wd >= 0:
                    self.watches[wd] = target
                elif self.unarmed is None:
                    self.unarmed = f"inotify_add_watch: {os.strerror(ctypes.get_errno())}"

    def opened(self) -> list[str]:
        """The targets whose decoy some process opened, in order, each once."""
        seen: dict[str, None] = {}
        while self.fd >= 0:
            try:
                data = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                break
            offset = 0
            while offset + INOTIFY_EVENT.size <= len(data):
                wd, mask, _, length = INOTIFY_EVENT.unpack_from(data, offset)
                offset += INOTIFY_EVENT.size + length
                if mask & IN_OPEN and wd in self.watches:
                    seen[self.watches[wd]] = None
        return list(seen)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        shutil.rmtree(self.dir, ignore_errors=True)


# --- the sandbox --------------------------------------------------------------------------


@dataclass(frozen=True)
class Sandbox:
    """What this machine's sandbox is made of (``probe``), narrowed to one lab (``for_lab``)."""

    bwrap: str
    version: str
    python: str
    python_paths: tuple[str, ...]  # read-only: the interpreter's prefixes and sys.path
    cgroups: Cgroups | None
    enforcement: dict[str, str] = field(default_factory=dict)
    decoys: tuple[str, ...] = ()  # paths inside where a decoy stands in for a secret file
    limits: Limits | None = None
    readonly: tuple[tuple[str, str], ...] = ()  # (host path, path inside)
    env: tuple[tuple[str, str], ...] = ()
    hidden: tuple[str, ...] = ()  # course repositories: inside, each at a neutral path

    def inside(self, path: str) -> str:
        """Where the sandbox sees host ``path``: under ``COURSE_INSIDE`` (the i-th hidden course
        repository's layout kept) when it lies in one, so no course path is named; else as is."""
        found = [(len(root), i, root) for i, root in enumerate(self.hidden)
                 if _within(path, root)]
        if not found:
            return path
        _, i, root = max(found)  # the innermost repository holding it
        return str(Path(f"{COURSE_INSIDE}-{i}") / os.path.relpath(path, root))

    def for_lab(self, limits: Limits, readonly: list[tuple[str, str]], env: dict[str, str],
                decoys: list[str]) -> Sandbox:
        return replace(self, limits=limits, readonly=tuple(readonly),
                       env=tuple(sorted(env.items())), decoys=tuple(decoys))

    def describe(self) -> dict:
        """For reports: what isolates the run and how each limit is enforced."""
        return {"kind": "bubblewrap", "version": self.version, "enforcement": self.enforcement}

    # --- one run ----------------------------------------------------------------------------

    def environment(self, settings: dict[str, str], scratch: Path) -> dict[str, str]:
        """The run's whole environment: a clean base, the lab's pass-through, then ``settings``."""
        home, cache = scratch / "home", scratch / "cache"
        for d in (home, cache):
            d.mkdir(parents=True, exist_ok=True)
        bin_dir = str(Path(self.inside(self.python)).parent)
        env = {"PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin", "HOME": str(home),
               "USER": "student", "LOGNAME": "student", "TMPDIR": "/tmp", "LANG": "C.UTF-8",
               "XDG_CACHE_HOME": str(cache), "HF_HOME": str(cache / "huggingface"),
               "VLLM_CACHE_ROOT": str(cache / "vllm"),
               "TORCHINDUCTOR_CACHE_DIR": str(cache / "torchinductor"),
               "TRITON_CACHE_DIR": str(cache / "triton"), "MPLCONFIGDIR": str(cache / "mpl"),
               "NUMBA_CACHE_DIR": str(cache / "numba"),
               "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",  # no network: fail fast
               "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "PYTHONNOUSERSITE": "1"}
        return {**env, **dict(self.env), **settings}

    def argv(self, cmd: list[str], cwd: Path, scratch: Path, decoy_binds: list[tuple[str, str]],
             info_fd: int | None = None, own_net: bool = True,
             shared_fds: tuple[tuple[int, str], ...] = ()) -> list[str]:
        """The bwrap command line that runs ``cmd`` in ``cwd`` inside the sandbox. ``info_fd``:
        bwrap writes the sandbox's PID 1 (as the host sees it) there; ``own_net=False``: no
        network namespace of its own (a worker that joined its tests' one before exec);
        ``shared_fds``: (open folder descriptor, path) pairs bound read-only at that path (a
        worker's view of its tests' temp folder, opened without following links)."""
        size = [] if self.limits is None else ["--size", str(self.limits.memory_bytes)]
        info = [] if info_fd is None else ["--info-fd", str(info_fd)]
        net = ["--unshare-net"] if own_net else []
        args = [self.bwrap, *info, "--unshare-user", "--uid", str(SANDBOX_UID), "--gid",
                str(SANDBOX_GID), "--disable-userns", "--unshare-pid", *net,
                "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try", "--hostname",
                "grading", "--die-with-parent", "--new-session", "--proc", "/proc", "--dev",
                "/dev", *size, "--tmpfs", "/dev/shm", *size, "--tmpfs", "/tmp"]
        for path in SYSTEM_DIRS:
            if os.path.islink(path):
                args += ["--symlink", os.readlink(path), path]
            elif os.path.isdir(path):
                args += ["--ro-bind", path, path]
        for path in (*ETC_FILES, *SYS_DIRS):
            args += ["--ro-bind-try", path, path]
        for path in sorted(p for pattern in GPU_DEVICES for p in glob.glob(pattern)):
            args += ["--dev-bind", path, path]
        for path in self.python_paths:
            args += ["--ro-bind", path, self.inside(path)]
        for src, dst in self.readonly:
            args += ["--ro-bind", src, dst]
        for src, dst in decoy_binds:
            args += ["--ro-bind", src, self.inside(dst)]
        for fd, dst in shared_fds:
            args += ["--ro-bind-fd", str(fd), dst]
        args += ["--bind", str(scratch), str(scratch), "--remount-ro", "/", "--chdir", str(cwd),
                 "--", self.inside(cmd[0]), *cmd[1:]]
        return args

    @contextlib.contextmanager
    def launch(self, name: str):
        """Set up one run: its cgroups (or rlimits) and its decoys. Yields a ``Launch``; on exit
        kills leftovers and fills ``Launch.stats``."""
        launch = Launch(self)
        limiter = (CgroupRun(self.cgroups, name, self.limits)
                   if self.cgroups is not None and self.limits is not None else None)
        tripwire = Tripwire(self.decoys)
        launch.decoy_binds = tripwire.binds
        try:
            if limiter is not None:
                with limiter:
                    launch.limiter = limiter
                    yield launch
                launch.stats.update(limiter.stats)
            else:
                yield launch
        finally:
            launch.close()
            launch.stats["decoys_opened"] = tripwire.opened()
            if tripwire.unarmed:
                launch.stats[UNARMED] = tripwire.unarmed
            tripwire.close()


@dataclass
class Launch:
    """One sandboxed process being started: what ``Popen`` needs, and what it left behind."""

    sandbox: Sandbox
    limiter: CgroupRun | None = None
    decoy_binds: list[tuple[str, str]] = field(default_factory=list)
    stats: dict = field(default_factory=dict)
    pass_fds: list[int] = field(default_factory=list)  # hide_args' memory files

    def hide_args(self, argv: list[str]) -> list[str]:
        """``argv`` (bwrap's) as ``bwrap --args FD -- COMMAND``: the options and binds travel
        in a memory file that bwrap reads and closes, so the sandbox's ``/proc/1/cmdline`` names
        no host path (the command names inside paths only); with them, ``--seccomp FD``: the
        filter that refuses inotify inside (``no_inotify_filter``). Pass ``pass_fds`` to
        ``Popen``; the files are closed when the launch ends."""
        cut = argv.index("--")  # bwrap takes the command from its own argv only
        seccomp = self._memory_file("bwrap-seccomp", no_inotify_filter())
        options = [*argv[1:cut], "--seccomp", str(seccomp)]
        fd = self._memory_file("bwrap-args", b"".join(os.fsencode(a) + b"\0" for a in options))
        return [argv[0], "--args", str(fd), *argv[cut:]]

    def _memory_file(self, name: str, data: bytes) -> int:
        fd = os.memfd_create(name, os.MFD_CLOEXEC)
        self.pass_fds.append(fd)
        os.write(fd, data)
        os.lseek(fd, 0, os.SEEK_SET)
        return fd

    def close(self) -> None:
        for fd in self.pass_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.pass_fds.clear()

    def preexec(self) -> None:
        """In the child, before exec: enter the cgroups, or fall back to rlimits."""
        limits = self.sandbox.limits
        if limits is None:
            return
        if self.limiter is not None:
            self.limiter.join()
            return
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
        if os.geteuid() != 0:
            resource.setrlimit(resource.RLIMIT_NPROC, (limits.max_pids, limits.max_pids))


# --- the probe ----------------------------------------------------------------------------

PYTHON_PROBE = ("import json, sys; print(json.dumps([sys.prefix, sys.base_prefix, "
                "sys.exec_prefix, sys.base_exec_prefix, *sys.path]))")


def python_paths(python: str, hidden: list[Path]) -> tuple[str, ...]:
    """What the interpreter needs, read-only: its prefixes (as reported and resolved) and the
    existing ``sys.path`` entries outside them, minus those inside a hidden directory (a course
    repository's ``labkit`` comes from the workspace instead)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    try:
        out = subprocess.run([python, "-c", PYTHON_PROBE], capture_output=True, text=True,
                             env=env, check=True, timeout=60, cwd="/").stdout
        entries = json.loads(out.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as err:
        raise SandboxUnavailable(f"cannot ask {python} for its paths ({err})") from None
    prefixes = [os.path.abspath(p) for p in entries[:4]]
    prefixes += [os.path.realpath(p) for p in prefixes]
    prefixes.append(os.path.dirname(os.path.realpath(python)))
    searched = [os.path.abspath(e) for e in entries[4:] if e]
    keep: list[str] = []
    for path in [*prefixes, *searched]:
        if not os.path.exists(path) or any(_within(path, k) for k in keep):
            continue
        if path not in prefixes and any(_within(path, str(h)) for h in hidden):
            continue
        keep.append(path)
    return tuple(keep)


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def probe(python: str, hidden: list[Path], bwrap: str = "bwrap") -> Sandbox:
    """The sandbox of this machine, after one ``python -c pass`` inside it; raises
    ``SandboxUnavailable`` with a one-line reason and the way out."""
    found = shutil.which(bwrap)
    if found is None:
        raise SandboxUnavailable(f"no sandbox: bubblewrap ({bwrap}) is not installed; "
                                 f"{INSTALL_HINT}")
    try:
        version = subprocess.run([found, "--version"], capture_output=True, text=True,
                                 timeout=30).stdout.split()[-1]
    except (OSError, subprocess.SubprocessError, IndexError):
        version = "unknown"
    cgroups = find_cgroups()
    sandbox = Sandbox(bwrap=found, version=version, python=python,
                      python_paths=python_paths(python, hidden), cgroups=cgroups,
                      enforcement=enforcement(cgroups),
                      hidden=tuple(dict.fromkeys(str(h.resolve()) for h in hidden)))
    with tempfile.TemporaryDirectory(prefix="phase11-probe-") as scratch:
        cmd = sandbox.argv([python, "-c", "pass"], Path(scratch), Path(scratch), [])
        try:
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                                    env=sandbox.environment({}, Path(scratch)))
        except (OSError, subprocess.SubprocessError) as err:
            raise SandboxUnavailable(f"no sandbox: bwrap did not run ({err}); "
                                     f"{INSTALL_HINT}") from None
    if result.returncode != 0:
        why = " ".join((result.stderr.strip().splitlines() or ["no message"])[-1].split())
        raise SandboxUnavailable(f"no sandbox: bwrap cannot create its namespaces here ({why}); "
                                 f"allow user namespaces (sysctl kernel.unprivileged_userns_clone"
                                 f"=1, or grade as root), or pass --no-sandbox to grade without "
                                 f"one (every report then says UNSANDBOXED)")
    return sandbox


def not_hidden(path: Path, hidden: list[Path]) -> bool:
    """A path that may be bound into the sandbox: not a hidden directory nor above one."""
    path = path.resolve()
    return not any(path == h or h.is_relative_to(path) or path.is_relative_to(h / "grading")
                   for h in hidden)

