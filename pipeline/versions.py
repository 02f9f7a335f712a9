"""How release versions are ordered, and where a version lives in a release store.

One ordering for the publishers (which version `latest` may move to), the client (its rollback
floor, the cache's newest version) and `release list`: PEP 440 (1.10.0 after 1.9.0, 1.0.0rc1
before 1.0.0); names that are not PEP 440 versions sort before every version, among themselves
by their text; two spellings of one PEP 440 version (1.0 and 1.0.0) by their text, so the order
is total and every part of the project agrees on it.

A release store (the local store, a static mirror, an S3 prefix) holds
`<root>/<model>/<version>/<file>` and `<root>/<model>/latest`.

Standard library and `packaging` only (the base install has both): the client imports it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

LATEST = "latest"  # the file beside a model's versions naming the newest one (never moved back)


def version_key(version: str) -> tuple[Any, ...]:
    """The sort key of a version name (see the module docstring)."""
    from packaging.version import InvalidVersion, Version

    try:
        return (1, Version(version), version)
    except InvalidVersion:
        return (0, version, version)


def newer(version: str, than: str | None) -> bool:
    """`version` orders after `than` (anything is newer than no version at all)."""
    return than is None or version_key(version) > version_key(than)


def version_dir(root: Path, model: str, version: str) -> Path:
    """The directory of one version in a release store laid out under `root`."""
    return Path(root) / model / version
