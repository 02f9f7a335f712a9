"""The verified local cache.

Layout under the cache root (platformdirs' user cache dir, `$RELEASE_CACHE_DIR`, or an argument):

    .blobs/<blake3>            verified file contents, named by their digest
    .partial/<blake3>.part     downloads in progress or interrupted (resumed on the next run)
    .partial/hf/               huggingface_hub's own cache for HF Hub downloads (it resumes them)
    .locks/<blake3>.lock       one lock per file, so N processes download it once
    <model>/<version>/         an installed version: manifest.json (+ .sig) exactly as fetched,
                               and hard links to the blobs under the files' own names

A file enters `.blobs` only after its size and blake3 matched the manifest, by `os.replace`.
A version directory appears whole, by renaming a staging directory that already holds its
manifest and first model file; a variant fetched later is added by another atomic rename. So a
reader never sees a half-written file, and a crash leaves at most a `.part` file to resume or a
`.staging-*` directory the next install removes.

Locks are `flock` locks (through `filelock`, or `fcntl` for the shared one): the kernel releases
them when a process dies, so a killed process never leaves a stale lock, and its `.part` file is
resumed by the next one. Waiting for a lock is bounded by `lock_timeout`.

    .locks/<blake3>.lock       exclusive: one process downloads, links or deletes that blob
    .locks/<model>@<version>.lock
                               exclusive: one process installs or removes that version (and
                               removes only that version's stale staging directories)
    .locks/cache.lock          shared by every process that installs or reads a file
                               (`Cache.in_use`), exclusive for `prune`: prune never deletes a
                               blob between its download and its link, nor a version while a
                               process is reading it

Every OSError of the cache becomes a typed error (`DiskFull`, `CacheError`) naming the path and
the operation, and no cache operation follows a symbolic link below the root (the root itself
may be one: the operator's choice): see cache_fs.py. `release cache list / verify / prune`:
cache_maintenance.py.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline import atomic
from pipeline.client.cache_fs import (  # link_error and os_errors are imported from here too
    check_nolink,
    hardlink_error,
    link_error,
    link_or_copy,
    lstat_nolink,
    no_links_above,
    os_errors,
    real_dir,
    replace_with,
    write_new,
)
from pipeline.client.errors import CacheError, DiskFull
from pipeline.errors import ArtifactNotFound, IntegrityError, ReleaseError, RemoteError
from pipeline.manifest import MANIFEST_NAME, SIGNATURE_NAME, FileEntry, Manifest, check_file
from pipeline.versions import version_key

if TYPE_CHECKING:
    from pipeline.client.settings import ClientSettings

log = logging.getLogger("pipeline.client")
DEFAULT_LOCK_TIMEOUT = 1200.0  # longer than one download's time budget (network.RetryPolicy)


class CacheBusy(CacheError, TimeoutError):  # exit 3: the cache, not a remote, is busy
    """Another process kept a file's lock for longer than the bounded wait."""


def _other_names(path: Path) -> bool:
    """Whether the file at `path` has other hard links (False when it is gone)."""
    try:
        return os.lstat(path).st_nlink > 1
    except OSError:
        return False


@contextlib.contextmanager
def flock(path: Path, shared: bool, timeout: float, what: str) -> Iterator[None]:
    """A `flock` on `path`, shared or exclusive, waited for at most `timeout` seconds.

    Raises:
        CacheBusy: not granted in time (`what` is the message).
    """
    if sys.platform == "win32":  # no shared flock: exclusive for everyone (correct, less parallel)
        from filelock import FileLock, Timeout

        lock = FileLock(path, timeout=timeout)
        try:
            lock.acquire()
        except Timeout:
            raise CacheBusy(what) from None
        try:
            yield
        finally:
            lock.release()
        return
    import fcntl

    with os_errors("cache lock", path):
        fd = atomic.open_fd_nofollow(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        mode = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB
        deadline = time.monotonic() + timeout
        delay = 0.005
        while True:
            try:
                fcntl.flock(fd, mode)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise CacheBusy(what) from None
                time.sleep(delay)
                delay = min(0.1, delay * 2)
        yield
    finally:
        os.close(fd)  # releases the lock


def default_cache_dir(settings: ClientSettings | None = None) -> Path:
    """`settings.cache_dir` ($RELEASE_CACHE_DIR; the environment's when no settings are
    given), else the platform cache directory (e.g. ~/.cache/fastai-release)."""
    from platformdirs import user_cache_dir

    if settings is None:
        from pipeline.client.settings import ClientSettings

        settings = ClientSettings.from_env()
    return settings.cache_dir or Path(user_cache_dir("fastai-release"))


@dataclass
class CachedVersion:
    """One installed version: its manifest bytes and which model files are present."""

    model: str
    version: str
    directory: Path
    manifest_bytes: bytes
    signature: bytes | None
    manifest: Manifest | None  # None when the cached manifest does not parse
    files: dict[str, int] = field(default_factory=dict)  # name -> size on disk


class Cache:
    """A cache directory (see the module docstring).

    Args:
        root: the cache directory; None means `default_cache_dir()`.
        lock_timeout: seconds to wait for another process that is downloading the same file.
    """

    def __init__(self, root: Path | None = None, *, lock_timeout: float = DEFAULT_LOCK_TIMEOUT):
        self.root = Path(root) if root is not None else default_cache_dir()
        self.lock_timeout = lock_timeout
        self._in_use = threading.local()  # .held: this thread is inside `in_use`

    # -- paths -----------------------------------------------------------------------------

    def version_dir(self, model: str, version: str) -> Path:
        return self.root / model / version

    def blob(self, digest: str) -> Path:
        return self.root / ".blobs" / digest

    def part(self, digest: str) -> Path:
        return self.root / ".partial" / f"{digest}.part"

    @contextlib.contextmanager
    def lock(self, key: str, what: str, timeout: float | None = None) -> Iterator[None]:
        """Hold the lock named `key`; wait at most `timeout` (default: lock_timeout) seconds.

        Raises:
            CacheBusy: another process held it for longer (it is still downloading).
        """
        path = real_dir(self.root, self.root / ".locks", "cache lock") / f"{key}.lock"
        timeout = self.lock_timeout if timeout is None else timeout
        busy = (
            f"{what}: another process has held {path} for more than {timeout:g} s "
            "(it is still downloading this file, probably over a slow link); try again later"
        )
        with flock(path, False, timeout, busy):  # opened without following links
            yield

    @contextlib.contextmanager
    def in_use(self, timeout: float | None = None) -> Iterator[None]:
        """Hold the cache's shared lock: `prune` removes nothing until the block ends. Hold it
        from finding or installing a file until its bytes are read. Re-entrant within a thread
        (a loader holds it around a fetch that holds it too; Windows' lock is exclusive).

        Raises:
            CacheBusy: `prune` held the cache for longer than `timeout` (default lock_timeout).
            CacheError: the lock file cannot be created.
        """
        if getattr(self._in_use, "held", False):  # the outer block holds it and releases it
            yield
            return
        path = real_dir(self.root, self.root / ".locks", "cache lock") / "cache.lock"
        timeout = self.lock_timeout if timeout is None else timeout
        busy = f"{self.root}: `cache prune` held the cache for more than {timeout:g} s"
        with flock(path, True, timeout, busy):
            self._in_use.held = True
            try:
                yield
            finally:
                self._in_use.held = False

    # -- reading -----------------------------------------------------------------------------

    def read_version(self, model: str, version: str) -> CachedVersion | None:
        """The installed version, or None when there is none."""
        d = self.version_dir(model, version)
        what = f"{model} {version}: reading the cached version"
        no_links_above(self.root, d / MANIFEST_NAME, what)
        try:
            with atomic.open_nofollow(d / MANIFEST_NAME) as f:
                manifest_bytes = f.read()
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise link_error(Path(e.filename or d), what) from None
            return None  # not installed, or removed meanwhile
        try:
            with atomic.open_nofollow(d / SIGNATURE_NAME) as f:
                signature = f.read()
        except FileNotFoundError:
            signature = None
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise link_error(Path(e.filename or d), what) from None
            return None  # removed while we read it: not installed
        try:
            manifest = Manifest.from_json(manifest_bytes, str(d / MANIFEST_NAME))
        except Exception:
            manifest = None
        files: dict[str, int] = {}
        try:
            with os.scandir(d) as entries:
                for p in entries:
                    if p.is_symlink():
                        raise link_error(Path(p.path), what)
                    if p.name not in (MANIFEST_NAME, SIGNATURE_NAME):
                        with contextlib.suppress(OSError):
                            if p.is_file(follow_symlinks=False):
                                files[p.name] = p.stat(follow_symlinks=False).st_size
        except CacheError:
            raise
        except OSError:
            return None
        return CachedVersion(model, version, d, manifest_bytes, signature, manifest, files)

    def versions(self, model: str) -> list[str]:
        """Installed versions of `model`, newest first."""
        d = self.root / model
        if lstat_nolink(d, f"{model}: listing the cached versions") is None:
            return []
        return sorted(self._subdirs(d), key=version_key, reverse=True)

    def models(self) -> list[str]:
        return sorted(self._subdirs(self.root))

    def _subdirs(self, d: Path) -> list[str]:
        """The directories in `d` that are not hidden (.staging-*, .blobs...); a link is an
        error (CacheError naming it)."""
        names = []
        try:
            with os.scandir(d) as entries:
                for p in entries:
                    if p.name.startswith("."):
                        continue
                    if p.is_symlink():
                        raise link_error(Path(p.path), f"listing {d}")
                    if p.is_dir(follow_symlinks=False):
                        names.append(p.name)
        except CacheError:
            raise
        except OSError:  # no such directory, or removed meanwhile
            return []
        return names

    def installed(self, model: str, version: str, entry: FileEntry) -> Path | None:
        """The installed file when it matches `entry` (size and blake3), else None."""
        path = self.version_dir(model, version) / entry.name
        return path if check_nolink(self.root, path, entry, f"{model} {version}") is None else None

    # -- writing -----------------------------------------------------------------------------

    def ensure_blob(
        self, entry: FileEntry, download: Callable[[Path], None], where: str
    ) -> tuple[Path, bool]:
        """The verified blob of `entry`, downloading it first if needed (under its lock).

        `download(part)` brings the part file to the entry's size (resuming when it can). The
        result is checked before it becomes a blob; when it fails after a resumed download,
        the file is fetched once more from the start from the same source, since the bytes
        kept from an earlier run may be the bad ones.

        Returns the blob path and whether it was already there.

        Raises:
            IntegrityError: the downloaded bytes do not match (the download is deleted).
            DiskFull: not enough space (nothing cached is touched).
        """
        what = f"{where}/{entry.name}"
        blob = self.blob(entry.blake3)
        if check_nolink(self.root, blob, entry, what) is None:
            return blob, True
        with self.lock(entry.blake3, what):
            if (
                check_nolink(self.root, blob, entry, what) is None
            ):  # another finished it while we waited
                return blob, True
            part = self.part(entry.blake3)
            real_dir(self.root, blob.parent, f"{what}: preparing the download")
            real_dir(self.root, part.parent, f"{what}: preparing the download")
            lstat_nolink(part.parent / "hf", what)  # huggingface_hub's own cache (HF sources)
            self._check_space(part, entry, where)
            for attempt in (1, 2):
                st = lstat_nolink(part, f"{what}: the partial download")
                if st is not None and st.st_nlink > 1:
                    raise hardlink_error(part, f"{what}: the partial download")
                resumed = st is not None and st.st_size > 0
                try:
                    download(part)  # the writers open `part` with atomic.open_nofollow
                except ReleaseError:
                    if atomic.is_link(part):  # planted meanwhile: say so, not "the source failed"
                        raise link_error(part, f"{what}: the partial download") from None
                    if _other_names(part):  # the same for a hard link
                        raise hardlink_error(part, f"{what}: the partial download") from None
                    raise
                except OSError as e:  # a source copying into the part file (local, HF)
                    if e.errno == errno.ELOOP:
                        raise link_error(Path(e.filename or part), what) from None
                    if e.errno == errno.EMLINK:  # planted meanwhile
                        raise hardlink_error(part, f"{what}: the partial download") from None
                    if e.errno in (errno.ENOSPC, errno.EDQUOT):
                        with os_errors(f"{where}/{entry.name}: writing the download", part):
                            raise
                    if isinstance(e, FileNotFoundError) and not part.parent.is_dir():
                        raise CacheError(f"{where}/{entry.name}: {part.parent} vanished") from e
                    kind = ArtifactNotFound if isinstance(e, FileNotFoundError) else RemoteError
                    raise kind(f"{where}/{entry.name}: the source's copy failed: {e}") from e
                problem = check_nolink(self.root, part, entry, f"{what}: the partial download")
                if problem is None:
                    with os_errors(f"{where}/{entry.name}: storing the verified file", blob):
                        os.replace(part, blob)
                    return blob, False
                with os_errors(f"{where}/{entry.name}: deleting a bad download", part):
                    part.unlink(missing_ok=True)
                if not (resumed and attempt == 1):
                    break
                log.warning(
                    "%s: %s after resuming an earlier download; downloading it again from the start",
                    where,
                    problem,
                )
            raise IntegrityError(f"{where}: downloaded {problem}; deleted the download")

    def no_room(self, entry: FileEntry) -> tuple[bool, str] | None:
        """Whether `entry` cannot enter the cache: None when it fits (or is cached already),
        else (impossible, why): `impossible` when the declared size is more than the whole
        disk holding the cache (no real release is), otherwise it is more than the free space.

        Raises:
            CacheError: the free space cannot be measured.
        """
        d = self.root
        while not d.exists() and d.parent != d:  # a cache not created yet: its disk
            d = d.parent
        with os_errors("measuring free space", d):
            usage = shutil.disk_usage(d)
        if entry.size <= usage.free:
            return None
        part, blob = self.part(entry.blake3), self.blob(entry.blake3)
        try:
            have = 0 if atomic.is_link(part) else min(os.lstat(part).st_size, entry.size)
        except OSError:
            have = 0
        if entry.size - have <= usage.free:
            return None
        if not atomic.is_link(blob) and check_file(blob, entry) is None:
            return None
        if entry.size > usage.total:
            return True, (
                f"declares {entry.size} bytes, more than the whole disk holding "
                f"the cache {self.root} ({usage.total / 1e9:.1f} GB): no real release is that large"
            )
        return False, (
            f"needs {(entry.size - have) / 1e6:.1f} MB, {self.root} has "
            f"{usage.free / 1e6:.1f} MB free"
        )

    def _check_space(self, part: Path, entry: FileEntry, where: str) -> None:
        st = lstat_nolink(part, f"{where}/{entry.name}: the partial download")
        have = st.st_size if st is not None else 0
        with os_errors(f"{where}/{entry.name}: measuring free space", part.parent):
            free = shutil.disk_usage(part.parent).free
        need = entry.size - min(have, entry.size)
        if need > free:
            raise DiskFull(
                f"{where}/{entry.name}: needs {need / 1e6:.1f} MB, {self.root} has {free / 1e6:.1f} MB free; "
                "nothing was downloaded and the cache is unchanged: free space (`release cache prune`), "
                "or point RELEASE_CACHE_DIR / --cache-dir at a larger disk"
            )

    def install(
        self,
        model: str,
        version: str,
        manifest_bytes: bytes,
        signature: bytes | None,
        entry: FileEntry,
        blob: Path,
    ) -> Path:
        """Make `blob` visible as `<model>/<version>/<entry.name>`, installing the version if new.

        Returns the installed file's path.

        Raises:
            DiskFull: no room for the manifest or the link.
        """
        where = f"{model} {version}"
        what = f"{where}: installing {entry.name}"
        target = self.version_dir(model, version)
        with (
            self.lock(f"{model}@{version}", where),
            self.lock(entry.blake3, f"{where}/{entry.name}"),  # no prune between check and link
            os_errors(what, target),
        ):
            if check_nolink(self.root, blob, entry, what) is not None:
                raise CacheError(
                    f"{where}: {entry.name}: the verified file {blob} is gone or changed before "
                    "it could be installed (another process changed the cache outside "
                    "`Cache.in_use`); fetch again"
                )
            model_dir = real_dir(self.root, self.root / model, what)
            lstat_nolink(target, what)
            current = self.read_version(model, version)
            if current is not None and current.manifest_bytes == manifest_bytes:
                if signature is not None and current.signature != signature:
                    replace_with(target / SIGNATURE_NAME, lambda p: write_new(p, signature))
                path = target / entry.name
                if check_nolink(self.root, path, entry, what) is not None:
                    replace_with(path, lambda p: link_or_copy(blob, p))
                return path
            # left by a killed process installing this version (we hold its lock); the staging
            # directories of other versions may belong to processes installing them right now
            atomic.remove_stale_staging(model_dir, version)
            if current is not None:  # the same version with another manifest (republished)
                log.warning(
                    "%s %s: the cached manifest differs from the source's; replacing the cached version",
                    model,
                    version,
                )
            with atomic.staged_dir(target, nofollow=True) as staging:
                write_new(staging / MANIFEST_NAME, manifest_bytes)
                if signature is not None:
                    write_new(staging / SIGNATURE_NAME, signature)
                link_or_copy(blob, staging / entry.name)
            return target / entry.name

    # -- maintenance (cache_maintenance.py) ------------------------------------------------------

    def usage(self) -> dict[str, int]:
        """Bytes in blobs (every cached file, counted once) and in partial downloads."""
        from pipeline.client import cache_maintenance

        return cache_maintenance.usage(self)

    def verify(self) -> list[str]:
        """Check every installed file against its cached manifest; return the problems."""
        from pipeline.client import cache_maintenance

        return cache_maintenance.verify(self)

    def prune(
        self, keep: int = 1, model: str | None = None, dry_run: bool = False, wait: float = 30.0
    ) -> list[str]:
        """Remove all but the newest `keep` versions of each model (or of `model`) and those its
        remembered index's channels name, then blobs no version uses and interrupted downloads
        nobody is resuming (see `cache_maintenance.prune`). Returns what was removed.

        Raises:
            CacheBusy: other processes kept using the cache for longer than `wait`.
            CacheError: a file or directory could not be removed.
        """
        from pipeline.client import cache_maintenance

        return cache_maintenance.prune(self, keep, model, dry_run, wait)
