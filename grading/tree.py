"""Which files make up the repository, and copies of parts of it.

The release ships the repository's files as git sees them (tracked plus untracked-but-not-
ignored); the grader's workspace is the test machinery and the lab folders as they are on disk,
minus every ``solution.py``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

from grading.runner import LABS_SUBDIR

SKIP_DIRS = {".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache", ".hypothesis"}
WORKSPACE_ROOTS = ("conftest.py", "pyproject.toml", "labkit", str(LABS_SUBDIR))
LINK_ABOVE_BYTES = 1 << 20  # larger files (model weights, captures) are linked, not copied


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


def copy_files(files: Iterable[Path], src: Path, dst: Path, link_large: bool = False) -> None:
    for rel in files:
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        source = src / rel
        if link_large and source.stat().st_size > LINK_ABOVE_BYTES:
            target.symlink_to(source.resolve())
        else:
            shutil.copy2(source, target)


def make_workspace(repo: Path, dst: Path) -> Path:
    """The tree submissions are tested in: harness and lab folders, without any solution.py."""
    for name in WORKSPACE_ROOTS:
        root = repo / name
        if root.is_file():
            copy_files([Path(name)], repo, dst)
        elif root.is_dir():
            copy_files([Path(name) / p for p in walk(root) if p.name != "solution.py"],
                       repo, dst, link_large=True)
    return dst


def fingerprint(root: Path, suffixes: tuple[str, ...] = (".py", ".toml")) -> dict[str, str]:
    """sha256 of every test-machinery file under ``root``: to notice a submission editing them."""
    return {str(p): sha256(root / p) for p in walk(root) if p.suffix in suffixes}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
