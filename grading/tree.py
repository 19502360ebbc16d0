"""Which files make up the repository, and copies of parts of it.

The release ships the repository's files as git sees them (tracked plus untracked-but-not-
ignored); the grader's workspace is the test machinery and the lab folders as they are on disk
(git-ignored assets included), minus every ``solution.py``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from grading import safe
from grading.runner import LABS_SUBDIR, TOOLING_ROOT

SKIP_DIRS = {".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache", ".hypothesis"}
WORKSPACE_ROOTS = ("conftest.py", "pyproject.toml", "labkit", str(LABS_SUBDIR))
PLUGIN_FILES = (Path("grading") / "__init__.py", Path("grading") / "plugin.py",
                Path("grading") / "workers.py")
LINK_ABOVE_BYTES = 1 << 20  # larger files (model weights, captures) are linked, not copied
SECRET_DIRS = ("grading/keys", "grading/mutants", "grading/alternatives")


def walk(root: Path) -> list[Path]:
    """Every file under ``root``, relative to it, skipping caches and virtual environments."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        found += [(Path(dirpath) / f).relative_to(root) for f in sorted(filenames)]
    return found


def repo_files(repo: Path) -> list[Path]:
    """The repository's files as git sees them; every file on disk when git is unavailable."""
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others",
             "--exclude-standard"],
            check=True, capture_output=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return walk(repo)
    files = {Path(p) for p in out.decode().split("\0") if p}
    return sorted(p for p in files if (repo / p).is_file())  # ls-files lists deleted files too


def copy_files(files: Iterable[Path], src: Path, dst: Path, link_large: bool = False,
               binds: list[tuple[str, str]] | None = None) -> None:
    """Copy ``files`` (relative to ``src``) to ``dst``. Large ones are symlinked with
    ``link_large``; with ``binds`` (sandboxed), each is hard-linked, or where that fails becomes
    an empty placeholder and ``(source, target)`` is appended, for the sandbox to bind the
    original read-only over it."""
    for rel in files:
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        source = src / rel
        large = source.stat().st_size > LINK_ABOVE_BYTES
        if large and binds is not None and _hard_link(source.resolve(), target):
            continue  # no bind from the repository: the sandbox's mountinfo never names it
        if large and binds is not None:
            target.touch()
            binds.append((str(source.resolve()), str(target)))
        elif large and link_large:
            target.symlink_to(source.resolve())
        else:
            shutil.copy2(source, target)


def _hard_link(source: Path, target: Path) -> bool:
    """Hard-link ``source`` at ``target`` (the same file, read-only in the sandbox); False where
    the file system refuses (another device, no rights)."""
    try:
        os.link(source, target)
    except OSError:
        return False
    return True


@dataclass
class Workspace:
    """The tree a submission is tested in; ``binds`` are the large files a sandbox binds in."""

    root: Path
    binds: list[tuple[str, str]] = field(default_factory=list)


def make_workspace(repo: Path, dst: Path, sandboxed: bool = False) -> Workspace:
    """The tree submissions are tested in: harness and lab folders, without any solution.py.

    Sandboxed, the repository is out of reach, so large files are bound instead of linked and
    the grader's pytest plugin is copied in (the run's ``PYTHONPATH`` is the workspace)."""
    workspace = Workspace(dst)
    binds = workspace.binds if sandboxed else None
    for name in WORKSPACE_ROOTS:
        root = repo / name
        if root.is_file():
            copy_files([Path(name)], repo, dst)
        elif root.is_dir():
            copy_files([Path(name) / p for p in walk(root) if p.name != "solution.py"],
                       repo, dst, link_large=True, binds=binds)
    if sandboxed:
        copy_files(PLUGIN_FILES, TOOLING_ROOT, dst)
    return workspace


def secret_files(repo: Path) -> list[Path]:
    """What a submission must never read: the reference solutions, keys, mutants and
    alternatives of the course repository ``repo``."""
    labs = repo / LABS_SUBDIR
    found = sorted(labs.glob("*/solution.py")) if labs.is_dir() else []
    for name in SECRET_DIRS:
        found += [repo / name / p for p in walk(repo / name)] if (repo / name).is_dir() else []
    return found


def course_repos(paths: Iterable[str | Path]) -> list[Path]:
    """The course repositories that hold any of ``paths`` (a virtual environment made by
    ``make install`` lives in one): folders above them with a labs/ tree."""
    found: dict[Path, None] = {}
    for path in paths:
        for parent in Path(path).resolve().parents:
            if (parent / LABS_SUBDIR).is_dir():
                found[parent] = None
    return list(found)


def fingerprint(root: Path, suffixes: tuple[str, ...] = (".py", ".toml")) -> dict[str, str]:
    """sha256 of every test-machinery file under ``root``: to notice a submission editing them."""
    return {str(p): sha256(root / p) for p in walk(root) if p.suffix in suffixes}


FINGERPRINT_LIMIT = 64 << 20


def sha256(path: Path) -> str:
    """The file's sha256, read as ``grading.safe`` reads (an unsandboxed run can plant a FIFO or
    a link in the workspace): what it is instead, when it is not a regular file."""
    try:
        data, cut = safe.read_bytes(path, FINGERPRINT_LIMIT)
    except (safe.Unsafe, OSError) as err:
        return f"unreadable: {err}"
    return hashlib.sha256(data).hexdigest() + ("+" if cut else "")
