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

Every OSError of the cache becomes a typed error: `DiskFull` (no space, quota) or `CacheError`
(anything else: permissions, a directory that vanished), naming the path and the operation.

No cache operation follows a symbolic link below the root (the root itself may be one: the
operator's choice). A process that can write the cache must not be able to turn the server's
writes, deletions or reads into ones elsewhere: files are opened with O_NOFOLLOW relative to
their directory (new files with O_EXCL too), directories are checked with lstat, versions are
renamed and deleted relative to their model directory opened without following it, and a link
found where the cache expects a file or a directory is a CacheError (exit 3) naming it, with
the way out: remove it.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import stat
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline import atomic
from pipeline.client.errors import CacheError, DiskFull
from pipeline.errors import ArtifactNotFound, IntegrityError, ReleaseError, RemoteError
from pipeline.manifest import MANIFEST_NAME, SIGNATURE_NAME, FileEntry, Manifest, check_file

if TYPE_CHECKING:
    from pipeline.client.settings import ClientSettings

log = logging.getLogger("pipeline.client")
DEFAULT_LOCK_TIMEOUT = 1200.0  # longer than one download's time budget (network.RetryPolicy)


class CacheBusy(RemoteError):
    """Another process kept a file's lock for longer than the bounded wait."""


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
    except (CacheError, CacheBusy):
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


@contextlib.contextmanager
def _shared_or_exclusive(path: Path, shared: bool, timeout: float, what: str) -> Iterator[None]:
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


def _version_key(v: str) -> tuple:
    from packaging.version import InvalidVersion, Version

    try:
        return (1, Version(v), v)
    except InvalidVersion:
        return (0, v, v)


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

    # -- no links ------------------------------------------------------------------------------

    def _real_dir(self, path: Path, what: str) -> Path:
        """`path`, a directory under the root, made if missing; none of its components below
        the root may be a symbolic link (nor anything but a directory).

        Raises:
            CacheError: a link (named, with the way out) or another file is in the way.
        """
        with os_errors(what, self.root):
            self.root.mkdir(parents=True, exist_ok=True)
        d = self.root
        for name in Path(path).relative_to(self.root).parts:
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

    def _lstat(self, path: Path, what: str) -> os.stat_result | None:
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

    def _no_links_above(self, path: Path, what: str) -> None:
        """No component of `path` below the root is a symbolic link (missing ones are fine).

        Raises:
            CacheError: one is (named).
        """
        d = self.root
        for name in Path(path).relative_to(self.root).parts:
            d = d / name
            if self._lstat(d, what) is None:
                return

    def _check(self, path: Path, entry: FileEntry, what: str) -> str | None:
        """check_file without following a link: the mismatch, or None.

        Raises:
            CacheError: `path` or a directory above it (below the root) is a symbolic link.
        """
        self._no_links_above(path, what)
        return check_file(path, entry)

    @contextlib.contextmanager
    def lock(self, key: str, what: str, timeout: float | None = None) -> Iterator[None]:
        """Hold the lock named `key`; wait at most `timeout` (default: lock_timeout) seconds.

        Raises:
            CacheBusy: another process held it for longer (it is still downloading).
        """
        path = self._real_dir(self.root / ".locks", "cache lock") / f"{key}.lock"
        timeout = self.lock_timeout if timeout is None else timeout
        busy = (
            f"{what}: another process has held {path} for more than {timeout:g} s "
            "(it is still downloading this file, probably over a slow link); try again later"
        )
        with _shared_or_exclusive(path, False, timeout, busy):  # opened without following links
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
        path = self._real_dir(self.root / ".locks", "cache lock") / "cache.lock"
        timeout = self.lock_timeout if timeout is None else timeout
        busy = f"{self.root}: `cache prune` held the cache for more than {timeout:g} s"
        with _shared_or_exclusive(path, True, timeout, busy):
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
        self._no_links_above(d / MANIFEST_NAME, what)
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
        if self._lstat(d, f"{model}: listing the cached versions") is None:
            return []
        return sorted(self._subdirs(d), key=_version_key, reverse=True)

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
        return path if self._check(path, entry, f"{model} {version}") is None else None

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
        if self._check(blob, entry, what) is None:
            return blob, True
        with self.lock(entry.blake3, what):
            if self._check(blob, entry, what) is None:  # another finished it while we waited
                return blob, True
            part = self.part(entry.blake3)
            self._real_dir(blob.parent, f"{what}: preparing the download")
            self._real_dir(part.parent, f"{what}: preparing the download")
            self._lstat(part.parent / "hf", what)  # huggingface_hub's own cache (HF sources)
            self._check_space(part, entry, where)
            for attempt in (1, 2):
                st = self._lstat(part, f"{what}: the partial download")
                resumed = st is not None and st.st_size > 0
                try:
                    download(part)  # the writers open `part` with atomic.open_nofollow
                except ReleaseError:
                    if atomic.is_link(part):  # planted meanwhile: say so, not "the source failed"
                        raise link_error(part, f"{what}: the partial download") from None
                    raise
                except OSError as e:  # a source copying into the part file (local, HF)
                    if e.errno == errno.ELOOP:
                        raise link_error(Path(e.filename or part), what) from None
                    if e.errno in (errno.ENOSPC, errno.EDQUOT):
                        with os_errors(f"{where}/{entry.name}: writing the download", part):
                            raise
                    if isinstance(e, FileNotFoundError) and not part.parent.is_dir():
                        raise CacheError(f"{where}/{entry.name}: {part.parent} vanished") from e
                    kind = ArtifactNotFound if isinstance(e, FileNotFoundError) else RemoteError
                    raise kind(f"{where}/{entry.name}: the source's copy failed: {e}") from e
                problem = self._check(part, entry, f"{what}: the partial download")
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
        st = self._lstat(part, f"{where}/{entry.name}: the partial download")
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
        with (
            self.lock(f"{model}@{version}", where),
            self.lock(entry.blake3, f"{where}/{entry.name}"),  # no prune between check and link
            os_errors(f"{where}: installing {entry.name}", self.version_dir(model, version)),
        ):
            if self._check(blob, entry, f"{where}: installing {entry.name}") is not None:
                raise CacheError(
                    f"{where}: {entry.name}: the verified file {blob} is gone or changed before "
                    "it could be installed (another process changed the cache outside "
                    "`Cache.in_use`); fetch again"
                )
            return self._install(model, version, manifest_bytes, signature, entry, blob)

    def _install(
        self,
        model: str,
        version: str,
        manifest_bytes: bytes,
        signature: bytes | None,
        entry: FileEntry,
        blob: Path,
    ) -> Path:
        target = self.version_dir(model, version)
        what = f"{model} {version}: installing {entry.name}"
        model_dir = self._real_dir(self.root / model, what)
        self._lstat(target, what)
        current = self.read_version(model, version)
        if current is not None and current.manifest_bytes == manifest_bytes:
            if signature is not None and current.signature != signature:
                _replace_with(target / SIGNATURE_NAME, lambda p: _write_new(p, signature))
            path = target / entry.name
            if self._check(path, entry, what) is not None:
                _replace_with(path, lambda p: _link_or_copy(blob, p))
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
            _write_new(staging / MANIFEST_NAME, manifest_bytes)
            if signature is not None:
                _write_new(staging / SIGNATURE_NAME, signature)
            _link_or_copy(blob, staging / entry.name)
        return target / entry.name

    # -- maintenance -------------------------------------------------------------------------

    def usage(self) -> dict[str, int]:
        """Bytes in blobs (every cached file, counted once) and in partial downloads."""

        def size(p: Path) -> int:
            try:
                st = os.lstat(p)
            except OSError:  # removed meanwhile (a finished download, a prune)
                return 0
            return st.st_size if stat.S_ISREG(st.st_mode) else 0

        def total(d: Path) -> int:
            if self._lstat(d, "cache usage") is None:  # a link: CacheError naming it
                return 0
            try:  # rglob does not descend into linked directories
                return sum(size(p) for p in d.rglob("*"))
            except OSError:
                return 0

        return {"blobs": total(self.root / ".blobs"), "partial": total(self.root / ".partial")}

    def verify(self) -> list[str]:
        """Check every installed file against its cached manifest; return the problems."""
        problems = []
        for model in self.models():
            for version in self.versions(model):
                cv = self.read_version(model, version)
                if cv is None or cv.manifest is None:
                    problems.append(f"{model} {version}: no readable {MANIFEST_NAME}")
                    continue
                for name in cv.files:
                    try:
                        entry = cv.manifest.file(name)
                    except Exception:
                        problems.append(f"{model} {version}: {name} is not in its manifest")
                        continue
                    if problem := check_file(cv.directory / name, entry):
                        problems.append(f"{model} {version}: {problem}")
        return problems

    def prune(
        self,
        keep: int = 1,
        model: str | None = None,
        dry_run: bool = False,
        wait: float = 30.0,
    ) -> list[str]:
        """Remove all but the newest `keep` versions of each model (or of `model`), then blobs
        no version uses and interrupted downloads nobody is resuming. Returns what was removed.

        It holds the cache's lock exclusively (see `in_use`), waiting at most `wait` seconds for
        the processes installing or reading files to finish.

        Raises:
            CacheBusy: other processes kept using the cache for longer than `wait`.
            CacheError: a file or directory could not be removed.
        """
        path = self._real_dir(self.root / ".locks", "cache lock") / "cache.lock"
        busy = (
            f"{self.root}: other processes have been fetching or reading from this cache for "
            f"more than {wait:g} s; run `release cache prune` again when they are done"
        )
        with (
            _shared_or_exclusive(path, False, wait, busy),
            os_errors("cache prune", self.root),
        ):
            self._refuse_links(model)  # before anything is removed
            return self._prune(keep, model, dry_run)

    def _refuse_links(self, model: str | None) -> None:
        """Raise CacheError naming the first symbolic link where prune looks or deletes."""
        what = "cache prune"
        dirs = [self.root / ".blobs", self.root / ".partial", self.root / ".partial" / "hf"]
        for m in [model] if model else self.models():
            dirs.append(self.root / m)
            dirs += [self.root / m / v for v in self.versions(m)]
        for d in dirs:
            if self._lstat(d, what) is None:
                continue
            with os_errors(what, d), os.scandir(d) as entries:
                for p in entries:
                    if p.is_symlink():
                        raise link_error(Path(p.path), what)

    def _prune(self, keep: int, model: str | None, dry_run: bool) -> list[str]:
        removed: list[str] = []
        for m in [model] if model else self.models():
            for version in self.versions(m)[keep:]:
                try:
                    with self.lock(f"{m}@{version}", f"{m} {version}", timeout=0):
                        if not dry_run:
                            _rmtree_in(self.root / m, version)
                        removed.append(f"{m} {version}")
                except CacheBusy:
                    log.info("%s %s is being installed by another process; kept", m, version)
        blobs = self.root / ".blobs"
        for p in sorted(blobs.iterdir()) if self._lstat(blobs, "cache prune") else []:
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode) and st.st_nlink <= 1:  # no installed version links to it
                self._remove_unlocked(p, p.name, dry_run, removed)
        partial = self.root / ".partial"
        for p in sorted(partial.glob("*.part")) if self._lstat(partial, "cache prune") else []:
            self._remove_unlocked(p, p.name.removesuffix(".part"), dry_run, removed)
        if not dry_run and self._lstat(partial / "hf", "cache prune") is not None:
            _rmtree_in(partial, "hf")
        return removed

    def _remove_unlocked(self, path: Path, digest: str, dry_run: bool, removed: list[str]) -> None:
        try:
            with self.lock(digest, path.name, timeout=0):
                if not dry_run:
                    path.unlink(missing_ok=True)
                removed.append(f"{path.parent.name}/{path.name}")
        except CacheBusy:
            log.info("%s is being downloaded by another process; kept", path.name)


def _rmtree_in(parent: Path, name: str) -> None:
    """Delete the directory `parent / name`, working relative to `parent` opened without
    following a link: nothing outside it is deleted, whatever is swapped in meanwhile."""
    fd = atomic.open_dir_nofollow(parent)
    try:
        shutil.rmtree(name, dir_fd=fd)  # refuses `name` itself being a link
    finally:
        os.close(fd)


def _write_new(path: Path, data: bytes) -> None:
    """Write a new file (never an existing one, never through a link)."""
    with atomic.open_nofollow(path, "xb") as f:
        f.write(data)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EEXIST, errno.ELOOP):
            raise
        # a file system without hard links
        with atomic.open_nofollow(src) as fin, atomic.open_nofollow(dst, "xb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)


def _replace_with(path: Path, write: Callable[[Path], None]) -> None:
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
