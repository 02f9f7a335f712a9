"""The cache's file-system steps that follow no link below its root, and its OSErrors typed.

A process that can write the cache must not be able to turn the server's writes, deletions or
reads into ones elsewhere: directories are checked with lstat (`real_dir`, `lstat_nolink`,
`no_links_above`), new files are opened with O_NOFOLLOW and O_EXCL (`write_new`), renames and
deletions happen relative to a directory opened without following it (`replace_with`,
`rmtree_in`), and a link found where the cache expects a file or a directory is a CacheError
(exit 3) naming it, with the way out: remove it (`link_error`). Every other OSError becomes
`DiskFull` or `CacheError` naming the path and the operation (`os_errors`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from pipeline import atomic
from pipeline.client.errors import CacheError, DiskFull
from pipeline.errors import ReleaseError
from pipeline.manifest import FileEntry, check_file


def link_error(path: Path, what: str) -> CacheError:
    """The error for a symbolic link found inside the cache, naming it and the way out."""
    try:
        target = f" (to {os.readlink(path)})"
    except OSError:
        target = ""
    return CacheError(
        f"{what}: {path} is a symbolic link{target} inside the cache, and the cache follows no "
        f"link: remove it (rm {path}) and run again; if you did not make it, another process "
        "can write this cache: give the cache a directory only the server's user can write"
    )


@contextlib.contextmanager
def os_errors(what: str, path: Path) -> Iterator[None]:
    """Turn an OSError inside the block into DiskFull or CacheError naming `what` and `path`
    (a symbolic link met on the way: `link_error` naming the link)."""
    try:
        yield
    except ReleaseError:  # typed already (CacheError, CacheBusy): never wrapped again
        raise
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise link_error(Path(e.filename) if e.filename else path, what) from None
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFull(
                f"{what}: no space left in {path}; the cache is unchanged: free space "
                "(`release cache prune`), or point RELEASE_CACHE_DIR / --cache-dir at a larger disk"
            ) from e
        raise CacheError(
            f"{what}: {path}: {e.strerror or type(e).__name__} (errno {e.errno}); check the cache "
            "directory's permissions and file system, or use another --cache-dir"
        ) from e


def real_dir(root: Path, path: Path, what: str) -> Path:
    """`path`, a directory under `root`, made if missing; none of its components below
    `root` may be a symbolic link (nor anything but a directory).

    Raises:
        CacheError: a link (named, with the way out) or another file is in the way.
    """
    with os_errors(what, root):
        root.mkdir(parents=True, exist_ok=True)
    d = root
    for name in Path(path).relative_to(root).parts:
        d = d / name
        with os_errors(what, d):
            try:
                mode = os.lstat(d).st_mode
            except FileNotFoundError:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(d)
                mode = os.lstat(d).st_mode
        if stat.S_ISLNK(mode):
            raise link_error(d, what)
        if not stat.S_ISDIR(mode):
            raise CacheError(f"{what}: {d} is not a directory; remove it and run again")
    return Path(path)


def hardlink_error(path: Path, what: str) -> CacheError:
    """The error for a partial download with another name (a hard link planted in the cache)."""
    return CacheError(
        f"{what}: {path} has another name (a hard link), so writing it would change a file "
        f"elsewhere, and the cache writes no such file: remove it (rm {path}) and run again; if "
        "you did not make it, another process can write this cache: give the cache a directory "
        "only the server's user can write"
    )


def lstat_nolink(path: Path, what: str) -> os.stat_result | None:
    """lstat(path), None when it does not exist.

    Raises:
        CacheError: it is a symbolic link (named), or cannot be examined.
    """
    with os_errors(what, path):
        try:
            st = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
    if stat.S_ISLNK(st.st_mode):
        raise link_error(path, what)
    return st


def no_links_above(root: Path, path: Path, what: str) -> None:
    """No component of `path` below `root` is a symbolic link (missing ones are fine).

    Raises:
        CacheError: one is (named).
    """
    d = root
    for name in Path(path).relative_to(root).parts:
        d = d / name
        if lstat_nolink(d, what) is None:
            return


def check_nolink(root: Path, path: Path, entry: FileEntry, what: str) -> str | None:
    """check_file without following a link: the mismatch, or None.

    Raises:
        CacheError: `path` or a directory above it (below `root`) is a symbolic link.
    """
    no_links_above(root, path, what)
    return check_file(path, entry)


def rmtree_in(parent: Path, name: str) -> None:
    """Delete the directory `parent / name`, working relative to `parent` opened without
    following a link: nothing outside it is deleted, whatever is swapped in meanwhile."""
    fd = atomic.open_dir_nofollow(parent)
    try:
        shutil.rmtree(name, dir_fd=fd)  # refuses `name` itself being a link
    finally:
        os.close(fd)


def write_new(path: Path, data: bytes) -> None:
    """Write a new file (never an existing one, never through a link)."""
    with atomic.open_nofollow(path, "xb") as f:
        f.write(data)


def link_or_copy(src: Path, dst: Path) -> None:
    """A hard link `dst` to `src`, or a copy on a file system without hard links."""
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EEXIST, errno.ELOOP):
            raise
        # a file system without hard links
        with atomic.open_nofollow(src) as fin, atomic.open_nofollow(dst, "xb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)


def replace_with(path: Path, write: Callable[[Path], None]) -> None:
    """Make `path` by `write(tmp)` and a rename, both relative to `path`'s directory opened
    without following a link (a new temp file; the rename replaces a link, never follows it)."""
    tmp = f".{path.name}.{uuid.uuid4().hex[:8]}.tmp"
    fd = atomic.open_dir_nofollow(path.parent)
    try:
        write(path.parent / tmp)
        os.replace(tmp, path.name, src_dir_fd=fd, dst_dir_fd=fd)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=fd)
        os.close(fd)
