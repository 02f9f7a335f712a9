"""The verified local cache: <cache>/<model>/<version>/<file>, each file installed atomically."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock

from pipeline.errors import IntegrityError
from pipeline.manifest import FileEntry, check_file


def default_cache_dir() -> Path:
    """The platform cache directory (e.g. ~/.cache/fastai-release), or $RELEASE_CACHE_DIR."""
    from platformdirs import user_cache_dir

    return Path(os.environ.get("RELEASE_CACHE_DIR") or user_cache_dir("fastai-release"))


def ensure_file(
    directory: Path, entry: FileEntry, download: Callable[[Path], None], where: str
) -> tuple[Path, bool]:
    """The verified cached copy of `entry` in `directory`, downloading it first if needed.

    Returns the path and whether it was a cache hit. A per-file lock makes N processes that
    start together download once; the bytes are checked before they are moved into place.

    Raises:
        IntegrityError: the downloaded bytes do not match the manifest (the download is deleted).
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / entry.name
    if check_file(path, entry) is None:
        return path, True
    with FileLock(directory / f".{entry.name}.lock", timeout=900):
        if check_file(path, entry) is None:  # another process finished it while we waited
            return path, True
        tmp = directory / f".{entry.name}.{uuid.uuid4().hex[:8]}.part"
        try:
            download(tmp)
            problem = check_file(tmp, entry)
            if problem:
                raise IntegrityError(f"{where}: {problem}; deleted the download")
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    return path, False
