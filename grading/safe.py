"""Reading files the sandbox could have reached (logs, junit, anything under a run's folder).

A submission may have replaced any such file with a symlink (to the keys, to a classmate), a
FIFO (a grader that hangs), a device or a huge file. ``read_bytes`` opens without following a
link and without blocking, checks that what it opened is a regular file, and reads at most
``limit`` bytes; anything else raises ``Unsafe``, whose message says what the path was ("refused
to read X: a symlink"), to be reported as a problem of that submission. With ``root``, every
folder between ``root`` (trusted: the grader made it) and the file is opened the same way, so a
symlinked folder on the way is refused too.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

DEFAULT_LIMIT = 8 << 20
_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_DIR_FLAGS = _FLAGS | os.O_DIRECTORY


class Unsafe(Exception):
    """A path the grader refuses to read or copy, in one line."""


def kind(mode: int) -> str:
    """What a file of mode ``mode`` is, in words."""
    for test, name in ((stat.S_ISLNK, "a symlink"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a folder"),
                       (stat.S_ISREG, "a regular file")):
        if test(mode):
            return name
    return "not a regular file"


def what_is(path: Path) -> str:
    """``kind`` of ``path`` itself (a link is not followed); "missing" when absent."""
    try:
        return kind(os.lstat(path).st_mode)
    except OSError:
        return "missing"


def _refuse(path: Path, why: str) -> Unsafe:
    return Unsafe(f"refused to read {path}: {why}")


def _open_dirs(path: Path, root: Path | None) -> tuple[int | None, str]:
    """(a descriptor of the folder holding ``path``, the file's name in it), every folder below
    ``root`` opened without following links. (None, str(path)) without ``root``."""
    if root is None:
        return None, str(path)
    try:
        rel = Path(path).relative_to(root)
    except ValueError:
        raise _refuse(path, f"not under {root}") from None
    if not rel.parts or ".." in rel.parts:
        raise _refuse(path, f"not a file under {root}")
    try:
        fd = os.open(root, _DIR_FLAGS)
    except OSError:
        raise _refuse(path, f"{root} is {what_is(Path(root))}") from None
    where = Path(root)
    try:
        for part in rel.parts[:-1]:
            where = where / part
            try:
                new = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError:
                raise _refuse(path, f"{where} is {what_is(where)}") from None
            os.close(fd)
            fd = new
    except BaseException:
        os.close(fd)
        raise
    return fd, rel.parts[-1]


def open_regular(path: Path, root: Path | None = None, single_link: bool = False) -> int:
    """A read-only descriptor of ``path``, a regular file (with ``single_link``: one that has
    no other hard link); raises ``Unsafe`` for anything else, ``FileNotFoundError`` when it is
    missing. Never follows a link, never blocks on a FIFO."""
    dir_fd, name = _open_dirs(Path(path), root)
    try:
        try:
            fd = os.open(name, _FLAGS, dir_fd=dir_fd)
        except FileNotFoundError:
            raise
        except OSError as err:
            found = what_is(Path(path))
            raise _refuse(path, found if found != "a regular file" else err.strerror) from None
    finally:
        if dir_fd is not None:
            os.close(dir_fd)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise _refuse(path, kind(info.st_mode))
    if single_link and info.st_nlink > 1:
        os.close(fd)
        raise _refuse(path, f"a hard link ({info.st_nlink} names for one file)")
    return fd


def read_bytes(path: Path, limit: int = DEFAULT_LIMIT, root: Path | None = None,
               single_link: bool = False) -> tuple[bytes, bool]:
    """(at most ``limit`` bytes of ``path``, whether the file was longer)."""
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
        raise ValueError(f"limit: expected a non-negative int, got {limit!r}")
    fd = open_regular(path, root, single_link)
    try:
        chunks, got = [], 0
        while got <= limit:
            chunk = os.read(fd, min(1 << 16, limit + 1 - got))
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    return data[:limit], len(data) > limit


def read_text(path: Path, limit: int = DEFAULT_LIMIT, root: Path | None = None) -> str:
    """``read_bytes`` decoded (bad bytes replaced), cut at ``limit`` bytes with a note."""
    data, cut = read_bytes(path, limit, root)
    text = data.decode("utf-8", errors="replace")
    return text + (f"\n[grading: cut at {limit} bytes]\n" if cut else "")


def copy(src: Path, dst: Path, limit: int = DEFAULT_LIMIT, root: Path | None = None,
         single_link: bool = False) -> bool:
    """Copy ``src`` (read as ``read_bytes`` does) to a new file ``dst`` in a folder the grader
    owns; True when ``src`` was cut at ``limit``. ``dst`` must not exist (nor be a link)."""
    data, cut = read_bytes(src, limit, root, single_link)
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    return cut


def _scan(fd: int) -> list[str]:
    """Unlink every entry of the open folder ``fd`` that is not a folder (files, links, FIFOs,
    sockets, devices: never followed); the names of its sub-folders."""
    folders = []
    with os.scandir(fd) as entries:
        names = [e.name for e in entries]
    for name in names:
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(st.st_mode):
            folders.append(name)
        else:
            os.unlink(name, dir_fd=fd)
    return folders


def _enter(parent: int, name: str) -> int:
    """Open sub-folder ``name`` of ``parent`` (never through a link), made ``rwx`` for its owner
    first when it is not (a mode-000 folder a submission left)."""
    st = os.stat(name, dir_fd=parent, follow_symlinks=False)
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError(name)
    if st.st_mode & 0o700 != 0o700:
        os.chmod(name, stat.S_IMODE(st.st_mode) | 0o700, dir_fd=parent)
    return os.open(name, _DIR_FLAGS, dir_fd=parent)


def remove_tree(path: Path) -> None:
    """Remove ``path`` and everything under it, as a submission may have left it: any depth
    (iterative, one folder descriptor open at a time, names relative to it, so neither the
    stack nor ``PATH_MAX`` limits it), links removed and never followed, FIFOs, sockets and
    devices unlinked without being opened, folders without permissions made ``rwx`` for the
    owner first. Missing is fine; raises ``OSError`` for what cannot be removed."""
    path = Path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(path)
        return
    parent = os.open(path.parent, _DIR_FLAGS)
    try:
        fd = _enter(parent, path.name)
    finally:
        os.close(parent)
    pending, names = [_scan_closing_on_error(fd)], []
    try:
        while pending:
            if pending[-1]:
                name = pending[-1].pop()
                try:
                    child = _enter(fd, name)
                except FileNotFoundError:
                    continue
                os.close(fd)
                fd = child
                names.append(name)
                pending.append(_scan(fd))
                continue
            pending.pop()
            if names:  # this folder is empty: up one, and remove it there
                up = os.open("..", _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = up
                os.rmdir(names.pop(), dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(path)


def _scan_closing_on_error(fd: int) -> list[str]:
    try:
        return _scan(fd)
    except BaseException:
        os.close(fd)
        raise
