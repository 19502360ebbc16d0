"""Resolve ``LAB_IMPL`` and load one lab's implementation module.

``LAB_IMPL`` selects whose code the tests exercise:

- ``starter``: ``labs/<lab>/starter.py``, the student's worksheet;
- ``solution``: the reference implementation, next to each starter in the instructors' course
  repository only (the student release ships none);
- a path to a submission folder laid out like ``labs/``: ``<path>/<lab>/starter.py``
  (an instructor grading a student's files without copying them into the repository).

Unset or empty, it is ``DEFAULT_IMPL``: ``"solution"`` in the course repository and
``"starter"`` in the student release, whose build rewrites that one line.

Each (lab, implementation) pair is loaded once, under its own module name, so two labs never
share a module object and a starter never shadows a solution.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

REPO_ROOT = Path(__file__).resolve().parent.parent
LABS_SUBDIR = Path("phase-11-multi-lora") / "labs"  # in any checkout: the repo, a release, a grader's copy
LABS_DIR = REPO_ROOT / LABS_SUBDIR
LABS_DIR_ENV = "PHASE11_LABS_DIR"  # the harness's own tests point this at a fake labs/ tree
DEFAULT_IMPL = "solution"
NAMED_IMPLS = ("solution", "starter")
SUBMISSION_FILE = "starter.py"


class LabImplError(Exception):
    """A usage or loading problem, explained in one line."""


@dataclass(frozen=True)
class Impl:
    """Which implementation to load: a named one from the repository, or a submission folder."""

    kind: str  # "solution" | "starter" | "submission"
    submission: Path | None = None

    def file_for(self, lab: str) -> Path:
        if self.kind == "submission":
            assert self.submission is not None
            return self.submission / lab / SUBMISSION_FILE
        return labs_dir() / lab / f"{self.kind}.py"

    def module_name(self, lab: str) -> str:
        slug = lab.split("-", 2)[1] if lab.startswith("lab-") else lab
        tag = self.kind
        if self.submission is not None:
            tag += "_" + hashlib.sha1(str(self.submission).encode()).hexdigest()[:8]
        return f"phase11_lab{slug}_{tag}"


def resolve_impl(value: str | None = None) -> Impl:
    """Parse a ``LAB_IMPL`` value (the environment's when ``value`` is None)."""
    raw = os.environ.get("LAB_IMPL", DEFAULT_IMPL) if value is None else value
    raw = raw.strip() or DEFAULT_IMPL
    if raw in NAMED_IMPLS:
        return Impl(raw)
    path = Path(raw).expanduser()
    if path.is_dir():
        return Impl("submission", path.resolve())
    raise LabImplError(
        f"LAB_IMPL: expected 'solution', 'starter' or a path to a submission folder laid out "
        f"like labs/, got {raw!r}"
    )


def labs_dir() -> Path:
    """The labs/ folder: the repository's, unless ``PHASE11_LABS_DIR`` names another."""
    return Path(os.environ.get(LABS_DIR_ENV, LABS_DIR)).resolve()


def lab_names(labs: Path | None = None) -> list[str]:
    """The lab folder names of ``labs`` (default: ``labs_dir()``), in directory order."""
    labs = labs_dir() if labs is None else labs
    return sorted(p.name for p in labs.iterdir() if p.is_dir() and p.name.startswith("lab-"))


def names_lab(name: str, lab: str) -> bool:
    """Whether ``name`` is the folder name ``lab`` or its prefix (``lab-03``)."""
    return lab == name or lab.startswith(name + "-")


_FOUND: dict[tuple[str | None, str], str] = {}  # (PHASE11_LABS_DIR, name) -> a lab's folder


def find_lab(name: str) -> str:
    """Accept a full folder name or its prefix (``lab-03``) and return the folder name.

    Remembered per labs folder: lab 02's punica ops call ``load_lab("lab-01")`` hundreds of
    times per engine step, and listing the folder each time cost a millisecond a call."""
    key = (os.environ.get(LABS_DIR_ENV), name)
    found = _FOUND.get(key)
    if found is not None:
        return found
    matches = [lab for lab in lab_names() if names_lab(name, lab)]
    if len(matches) != 1:
        raise LabImplError(f"lab: expected one of {lab_names()}, got {name!r}")
    _FOUND[key] = matches[0]
    return matches[0]


_CACHE: dict[str, ModuleType | LabImplError] = {}
_SUPPORT: dict[str, ModuleType] = {}  # module name -> a support module load_support loaded
IN_WORKER = False  # labkit.worker sets it: the one process where implementations may be exec'd
ISOLATE_ENV = "LAB_ISOLATE"
_REMOTE_LAB = None  # labkit.isolate.remote_lab, registered when labkit.isolate is imported


def isolate_mode(value: str | None = None) -> bool:
    """``LAB_ISOLATE``: "1" is worker mode; unset, "" or "0" is in-process; anything else errs."""
    raw = os.environ.get(ISOLATE_ENV, "") if value is None else value
    raw = raw.strip()
    if raw in ("", "0"):
        return False
    if raw == "1":
        return True
    raise LabImplError(f"{ISOLATE_ENV}: expected 1 (worker mode) or 0/unset, got {raw!r}")


def isolating() -> bool:
    """Whether ``LAB_ISOLATE=1`` asks for worker mode here (never inside the worker itself)."""
    return not IN_WORKER and isolate_mode()


def set_remote(remote_lab) -> None:
    """Worker mode's loader: ``remote_lab(lab, impl, owner=...)`` returns the proxy of ``lab``'s
    module in a worker. ``labkit.isolate`` registers itself here when imported (``labkit``'s
    ``__init__`` imports it), so that this module imports nothing of it."""
    global _REMOTE_LAB
    _REMOTE_LAB = remote_lab


def lab_of_path(path: Path) -> str | None:
    """The lab folder a file belongs to: under ``labs_dir()``, or under a ``LAB_IMPL`` folder."""
    path = Path(path).resolve()
    roots = [labs_dir()]
    try:
        impl = resolve_impl()
        if impl.submission is not None:
            roots.append(impl.submission)
    except LabImplError:
        pass
    for root in roots:
        try:
            rel = path.relative_to(root)
        except ValueError:
            continue
        if rel.parts and rel.parts[0].startswith("lab-"):
            return rel.parts[0]
    return None


def support_module(name: str) -> ModuleType | None:
    """The trusted support module named ``name``, if ``load_support`` loaded it."""
    return _SUPPORT.get(name)


NOT_SUPPORT = ("starter", "solution", "conftest")  # with test_*: never a lab's support module
SUPPORT_FOLDERS = ("given", "tools")  # a lab's folders of support modules, named ``<folder>.<module>``


def support_name(lab: str, module: str) -> str:
    """The module name ``load_support`` gives ``lab``'s ``module``: ``phase11_<lab>_<module>``,
    a dotted ``<folder>.<module>`` written ``<folder>__<module>`` (a dot in a module's name reads
    as a package that does not exist, to pickle and to ``__import__``)."""
    return f"phase11_{lab.replace('-', '_')}_{module.replace('.', '__')}"


def support_file(lab: str, module: str) -> Path | None:
    """Where ``lab``'s support ``module`` lives: ``<module>.py``, or ``<folder>/<module>.py`` for
    a dotted ``<folder>.<module>`` with ``<folder>`` one of ``SUPPORT_FOLDERS``. None for any
    other name, for an implementation (``starter``, ``solution``), a test file or a conftest."""
    folder, dot, stem = module.rpartition(".") if isinstance(module, str) else ("", "", "")
    if (dot and folder not in SUPPORT_FOLDERS) or not stem.isidentifier() \
            or stem in NOT_SUPPORT or stem.startswith("test_"):
        return None
    return labs_dir() / lab / (f"{folder}/{stem}.py" if folder else f"{stem}.py")


def given_support(name: str) -> ModuleType | None:
    """The support module ``load_support`` names ``name`` (``phase11_<lab>_<module>``), loaded
    now if it is not yet: ``<module>.py`` must be a given file of a lab under ``labs_dir()``,
    never an implementation (``starter``, ``solution``), a test file or a conftest. None
    otherwise. A dotted ``<folder>.<module>`` is ``<folder>/<module>.py``, ``<folder>`` one of
    ``SUPPORT_FOLDERS`` (``support_file``). Worker mode rebuilds a record or an exception of any
    given module by name."""
    if not isinstance(name, str) or name in _SUPPORT:
        return _SUPPORT.get(name) if isinstance(name, str) else None
    for lab in lab_names():
        prefix = support_name(lab, "")
        module = name[len(prefix):].replace("__", ".", 1) if name.startswith(prefix) else ""
        path = support_file(lab, module)
        if path is not None and support_name(lab, module) == name and path.is_file():
            load_support(lab, module)
            return _SUPPORT.get(name)
    return None


def load_impl(lab: str, impl: Impl | None = None) -> ModuleType:
    """Load ``lab``'s implementation file as a fresh module with a unique name.

    Raises ``LabImplError`` with a one-line message for a missing file, a syntax error or an
    exception at import time; the outcome is cached, so a broken file is reported once per test,
    not re-executed.
    """
    lab = find_lab(lab)
    if isolating():  # LAB_ISOLATE=1: the module lives in a worker process; this is its proxy
        if _REMOTE_LAB is None:
            raise LabImplError(f"{ISOLATE_ENV}=1: no worker mode here (labkit.isolate was not "
                               f"imported)")
        return _REMOTE_LAB(lab, impl, owner=_calling_lab() or lab)
    impl = impl or resolve_impl()
    name = impl.module_name(lab)
    cached = _CACHE.get(name)
    if isinstance(cached, LabImplError):
        raise cached
    if cached is not None:
        return cached
    try:
        module = _exec_file(name, impl.file_for(lab), lab)
    except LabImplError as err:
        _CACHE[name] = err
        raise
    _CACHE[name] = module
    return module


def load_lab(name: str) -> ModuleType:
    """Cross-lab use: another lab's implementation, under the same ``LAB_IMPL``.

    ``load_lab("lab-03")`` from lab 02 returns the solution, the starter or the submission's
    file, whichever the tests run against.
    """
    return load_impl(find_lab(name))


def _calling_lab() -> str | None:
    """The lab of the nearest calling test file (lab 02's tests share lab 02's worker)."""
    frame = sys._getframe(2)
    while frame is not None:
        if Path(frame.f_code.co_filename).name.startswith("test_"):
            return lab_of_path(Path(frame.f_code.co_filename))
        frame = frame.f_back
    return None


def _exec_file(name: str, path: Path, lab: str, *, implementation: bool = True) -> ModuleType:
    if implementation and isolating():
        raise LabImplError(f"{lab}: refusing to import {path.name} in the trusted process "
                           "(LAB_ISOLATE=1 runs implementations in a worker only)")
    if not path.is_file():
        raise LabImplError(f"{lab}: {path} not found (LAB_IMPL selects {path.name})")
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up by name
    try:
        spec.loader.exec_module(module)
    except SyntaxError as err:
        sys.modules.pop(name, None)
        raise LabImplError(f"{lab}: syntax error in {path}:{err.lineno}: {err.msg}") from None
    except Exception as err:  # noqa: BLE001 - any import-time failure is the submission's
        sys.modules.pop(name, None)
        raise LabImplError(
            f"{lab}: importing {path} raised {type(err).__name__}: {err}"
        ) from None
    return module


def load_support(lab: str, module: str) -> ModuleType:
    """A lab's support module (data generators, plotting helpers), always the repository's own.

    Support files are not graded, so a submission never replaces them: ``load_support("lab-02",
    "tools.sqldata")`` loads ``labs/lab-02-.../tools/sqldata.py`` whatever ``LAB_IMPL`` says
    (``support_file`` says which names are support modules).
    """
    lab = find_lab(lab)
    path = support_file(lab, module)
    if path is None:
        raise LabImplError(f"{lab}: module: expected a support module's name, <module> or "
                           f"<folder>.<module> with <folder> one of {SUPPORT_FOLDERS} (never an "
                           f"implementation, a test file or a conftest), got {module!r}")
    name = support_name(lab, module)
    if name in sys.modules:
        return sys.modules[name]
    mod = _exec_file(name, path, lab, implementation=False)
    _SUPPORT[name] = mod
    return mod
