"""blake3 helpers. The only checksum this project uses."""

from __future__ import annotations

from pathlib import Path

import blake3

CHUNK = 1 << 20


def blake3_file(path: Path) -> str:
    """Hex blake3 digest of a file, read with mmap and several threads."""
    hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
    hasher.update_mmap(str(path))
    return hasher.hexdigest()


def blake3_bytes(data: bytes) -> str:
    """Hex blake3 digest of bytes."""
    return blake3.blake3(data).hexdigest()


class Blake3Stream:
    """Incremental hasher for data that arrives in chunks (downloads)."""

    def __init__(self) -> None:
        self._h = blake3.blake3()
        self.size = 0

    def update(self, chunk: bytes) -> None:
        self._h.update(chunk)
        self.size += len(chunk)

    def hexdigest(self) -> str:
        return self._h.hexdigest()
