"""`release cache list / verify / prune`: what the cache holds, whether it is intact, and the
removal of old versions, unused files and interrupted downloads (`Cache.usage`, `Cache.verify`,
`Cache.prune` call these). Prune holds the cache's lock exclusively: it never deletes a blob
between its download and its link, nor a version while a process is reading it.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from pipeline.client.cache import Cache, CacheBusy, flock
from pipeline.client.cache_fs import link_error, lstat_nolink, os_errors, real_dir, rmtree_in
from pipeline.manifest import MANIFEST_NAME, check_file

log = logging.getLogger("pipeline.client")


def usage(cache: Cache) -> dict[str, int]:
    """Bytes in blobs (every cached file, counted once) and in partial downloads."""

    def size(p: Path) -> int:
        try:
            st = os.lstat(p)
        except OSError:  # removed meanwhile (a finished download, a prune)
            return 0
        return st.st_size if stat.S_ISREG(st.st_mode) else 0

    def total(d: Path) -> int:
        if lstat_nolink(d, "cache usage") is None:  # a link: CacheError naming it
            return 0
        try:  # rglob does not descend into linked directories
            return sum(size(p) for p in d.rglob("*"))
        except OSError:
            return 0

    return {"blobs": total(cache.root / ".blobs"), "partial": total(cache.root / ".partial")}


def verify(cache: Cache) -> list[str]:
    """Check every installed file against its cached manifest; return the problems."""
    problems = []
    for model in cache.models():
        for version in cache.versions(model):
            cv = cache.read_version(model, version)
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
    cache: Cache,
    keep: int = 1,
    model: str | None = None,
    dry_run: bool = False,
    wait: float = 30.0,
) -> list[str]:
    """Remove all but the newest `keep` versions of each model (or of `model`) and those the
    remembered model index's channels name (`channel_versions`: a rolled-back version stays),
    then blobs no version uses and interrupted downloads nobody is resuming. Returns what was
    removed.

    It holds the cache's lock exclusively (see `in_use`), waiting at most `wait` seconds for
    the processes installing or reading files to finish.

    Raises:
        CacheBusy: other processes kept using the cache for longer than `wait`.
        CacheError: a file or directory could not be removed.
    """
    path = real_dir(cache.root, cache.root / ".locks", "cache lock") / "cache.lock"
    busy = (
        f"{cache.root}: other processes have been fetching or reading from this cache for "
        f"more than {wait:g} s; run `release cache prune` again when they are done"
    )
    with (
        flock(path, False, wait, busy),
        os_errors("cache prune", cache.root),
    ):
        _refuse_links(cache, model)  # before anything is removed
        return _prune(cache, keep, model, dry_run)


def _refuse_links(cache: Cache, model: str | None) -> None:
    """Raise CacheError naming the first symbolic link where prune looks or deletes."""
    what = "cache prune"
    dirs = [cache.root / ".blobs", cache.root / ".partial", cache.root / ".partial" / "hf"]
    for m in [model] if model else cache.models():
        dirs.append(cache.root / m)
        dirs += [cache.root / m / v for v in cache.versions(m)]
    for d in dirs:
        if lstat_nolink(d, what) is None:
            continue
        with os_errors(what, d), os.scandir(d) as entries:
            for p in entries:
                if p.is_symlink():
                    raise link_error(Path(p.path), what)


def channel_versions(cache: Cache, model: str) -> set[str]:
    """The versions the remembered model index (`<cache>/<model>/.index.json`) names in its
    channels. After an operator's rollback a channel names an older version than the newest
    cached one, and servers use it (offline too), so prune keeps it. Read without verifying the
    signature: it can only make prune keep more, never make the client trust anything."""
    from pipeline.client.index import MEMORY_NAME
    from pipeline.errors import ReleaseError
    from pipeline.index import MAX_INDEX_BYTES, parse

    path = cache.root / model / MEMORY_NAME
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as f:
            data = f.read(MAX_INDEX_BYTES + 1)
        return set(parse(data, str(path)).index.channels.values())
    except (OSError, ReleaseError):
        return set()


def _prune(cache: Cache, keep: int, model: str | None, dry_run: bool) -> list[str]:
    removed: list[str] = []
    for m in [model] if model else cache.models():
        versions = cache.versions(m)
        named = channel_versions(cache, m)
        for version in sorted(named & set(versions[keep:])):
            log.info("%s %s kept: the model index's channels name it (a rollback)", m, version)
        for version in [v for v in versions[keep:] if v not in named]:
            try:
                with cache.lock(f"{m}@{version}", f"{m} {version}", timeout=0):
                    if not dry_run:
                        rmtree_in(cache.root / m, version)
                    removed.append(f"{m} {version}")
            except CacheBusy:
                log.info("%s %s is being installed by another process; kept", m, version)
    blobs = cache.root / ".blobs"
    for p in sorted(blobs.iterdir()) if lstat_nolink(blobs, "cache prune") else []:
        st = os.lstat(p)
        if stat.S_ISREG(st.st_mode) and st.st_nlink <= 1:  # no installed version links to it
            _remove_unlocked(cache, p, p.name, dry_run, removed)
    partial = cache.root / ".partial"
    for p in sorted(partial.glob("*.part")) if lstat_nolink(partial, "cache prune") else []:
        _remove_unlocked(cache, p, p.name.removesuffix(".part"), dry_run, removed)
    if not dry_run and lstat_nolink(partial / "hf", "cache prune") is not None:
        rmtree_in(partial, "hf")
    return removed


def _remove_unlocked(
    cache: Cache, path: Path, digest: str, dry_run: bool, removed: list[str]
) -> None:
    try:
        with cache.lock(digest, path.name, timeout=0):
            if not dry_run:
                path.unlink(missing_ok=True)
            removed.append(f"{path.parent.name}/{path.name}")
    except CacheBusy:
        log.info("%s is being downloaded by another process; kept", path.name)
