"""Atomic writes: a file via a unique temp file and os.replace, a directory via a staging
directory and rename."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO


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
def staged_dir(target: Path) -> Iterator[Path]:
    """Yield a new hidden directory beside `target` to fill; when the block ends without error it
    becomes `target` in one rename (an existing `target` is moved aside first, then deleted), so a
    reader sees the old directory or the new one, never half of either. On error nothing changes.
    """
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
