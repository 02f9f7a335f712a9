"""Atomic writes: a file via a unique temp file and os.replace, a directory via a staging
directory and rename; and opening files without following symbolic links (the client's cache,
which another local process may be able to write)."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_MODES = {
    "rb": os.O_RDONLY,
    "wb": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
    "ab": os.O_WRONLY | os.O_CREAT | os.O_APPEND,
    "r+b": os.O_RDWR,
    "xb": os.O_WRONLY | os.O_CREAT | os.O_EXCL,  # a new file: never an existing one or a link
}


def _link_error(path: Path) -> OSError:
    return OSError(errno.ELOOP, "a symbolic link (not followed)", str(path))


def open_dir_nofollow(path: Path) -> int:
    """A file descriptor of the directory `path`, which must not be a symbolic link itself.

    Raises:
        OSError: ELOOP (filename: `path`) when it is a link; what os.open raises otherwise.
    """
    path = Path(path)
    try:
        return os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _NOFOLLOW)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR) and os.path.islink(path):
            raise _link_error(path) from None
        raise


def open_fd_nofollow(path: Path, flags: int, mode: int = 0o666) -> int:
    """os.open(`path`, `flags`) without following a symbolic link, neither `path` itself nor
    its directory (opened first, then the file relative to it, so neither can be swapped for
    a link in between). Where the OS has no O_NOFOLLOW, both are checked with lstat first.

    Raises:
        OSError: ELOOP, with the link's path as filename, when either is a link; what os.open
            raises otherwise (an existing file with O_EXCL, a link included: EEXIST).
    """
    path = Path(path)
    if not _NOFOLLOW or os.open not in os.supports_dir_fd:
        for p in (path.parent, path):
            if os.path.islink(p):
                raise _link_error(p)
        return os.open(path, flags, mode)
    directory = open_dir_nofollow(path.parent)
    try:
        return os.open(path.name, flags | _NOFOLLOW, mode, dir_fd=directory)
    except OSError as e:
        if e.errno == errno.ELOOP or (e.errno == errno.EEXIST and os.path.islink(path)):
            raise _link_error(path) from None
        raise OSError(e.errno, e.strerror, str(path)) from None
    finally:
        os.close(directory)


def open_nofollow(path: Path, mode: str = "rb") -> IO[bytes]:
    """`open(path, mode)` for the binary modes rb, wb, ab, r+b and xb (a new file), following
    no symbolic link (see open_fd_nofollow): a link planted where a download or a lock goes
    cannot make the writer overwrite or create a file elsewhere.

    Raises:
        OSError: ELOOP (filename: the link) when `path` or its directory is a link.
    """
    fd = open_fd_nofollow(path, _MODES[mode])
    try:
        return os.fdopen(fd, "wb" if mode == "xb" else mode)
    except BaseException:
        os.close(fd)
        raise


def open_unshared(path: Path, mode: str) -> IO[bytes]:
    """`open_nofollow` for writing a partial download ("wb", "ab" or "r+b"): also refuses a file
    with another hard link, before a byte of it is truncated or written. Writing through a name
    planted by another process as a hard link would change that other file (a link to a file the
    server may write anywhere on the same disk); the cache's partial downloads have one name.

    Raises:
        OSError: EMLINK (filename: `path`) for a file with other hard links; ELOOP as
            `open_nofollow`.
    """
    fd = open_fd_nofollow(path, _MODES[mode] & ~os.O_TRUNC)
    try:
        links = os.fstat(fd).st_nlink
        if links > 1:
            raise OSError(errno.EMLINK, f"{links} names (hard links)", str(path))
        if mode == "wb":
            os.ftruncate(fd, 0)
        return os.fdopen(fd, mode)
    except BaseException:
        os.close(fd)
        raise


def is_link(path: Path) -> bool:
    """Whether `path` is a symbolic link (False when it does not exist)."""
    try:
        return stat.S_ISLNK(os.lstat(path).st_mode)
    except OSError:
        return False


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux: /proc)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (not thread-safe, hence the fallback)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_writer(path: Path, mode: str = "wb") -> Iterator[IO]:
    """Yield a file handle whose content replaces `path` only if the block finishes without error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates 0600; a published file is read by others (a web server, another user),
        # so give it what open() would: 0666 less the umask (0644 under the usual 022).
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def write_text(path: Path, text: str) -> None:
    """Write `text` to `path` atomically (UTF-8)."""
    with atomic_writer(path, "w") as f:
        f.write(text)


def write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_writer(path, "wb") as f:
        f.write(data)


STAGING_PREFIX = ".staging-"


def remove_stale_staging(parent: Path, name: str | None = None) -> None:
    """Delete staging directories that a killed process left in `parent`: every one, or only
    those `staged_dir` made for `parent / name` (the caller holds that name's lock, so no
    living process is filling them; staging directories of other names may be in use)."""
    import re

    pattern = None
    if name is not None:
        pattern = re.compile(
            rf"{re.escape(STAGING_PREFIX)}(?:old-)?{re.escape(name)}-[0-9a-f]{{8}}"
        )
    for stale in Path(parent).glob(f"{STAGING_PREFIX}*"):
        if pattern is None or pattern.fullmatch(stale.name):
            shutil.rmtree(stale, ignore_errors=True)


@contextlib.contextmanager
def staged_dir(target: Path, *, nofollow: bool = False) -> Iterator[Path]:
    """Yield a new hidden directory beside `target` to fill; when the block ends without error it
    becomes `target` in one rename (an existing `target` is moved aside first, then deleted), so a
    reader sees the old directory or the new one, never half of either. On error nothing changes.

    `nofollow`: every step works relative to `target`'s parent opened once without following a
    link (the parent, `target` or the staging directory being a symbolic link is an OSError,
    ELOOP, naming it), so nothing is renamed or deleted outside it.
    """
    if nofollow:
        with _staged_dir_nofollow(Path(target)) as staging:
            yield staging
        return
    target = Path(target)
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = parent / f"{STAGING_PREFIX}{target.name}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        yield staging
        if target.is_dir():
            old = parent / f"{STAGING_PREFIX}old-{target.name}-{uuid.uuid4().hex[:8]}"
            target.rename(old)
            staging.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def _staged_dir_nofollow(target: Path) -> Iterator[Path]:
    parent = target.parent
    fd = open_dir_nofollow(parent)
    try:
        name = f"{STAGING_PREFIX}{target.name}-{uuid.uuid4().hex[:8]}"
        os.mkdir(name, dir_fd=fd)
        try:
            yield parent / name
            try:
                st = os.lstat(target.name, dir_fd=fd)
            except FileNotFoundError:
                st = None
            if st is not None and stat.S_ISLNK(st.st_mode):
                raise _link_error(target)
            if st is not None:
                old = f"{STAGING_PREFIX}old-{target.name}-{uuid.uuid4().hex[:8]}"
                os.rename(target.name, old, src_dir_fd=fd, dst_dir_fd=fd)
                os.rename(name, target.name, src_dir_fd=fd, dst_dir_fd=fd)
                shutil.rmtree(old, ignore_errors=True, dir_fd=fd)
            else:
                os.rename(name, target.name, src_dir_fd=fd, dst_dir_fd=fd)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.lstat(name, dir_fd=fd)
                shutil.rmtree(name, ignore_errors=True, dir_fd=fd)
    finally:
        os.close(fd)
