"""The software environment that writes (build) or reads (client) the pickles."""

from __future__ import annotations

import platform
import sys
from importlib import metadata

# Libraries whose versions shape the pickled learner; the client compares them before unpickling.
PICKLE_LIBRARIES = ("torch", "fastai", "fastcore", "fasttransform", "numpy", "pandas")


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def current(quantized_engine: str | None = None) -> dict[str, str]:
    """Versions of python and the pickle-shaping libraries installed here (no imports of them)."""
    env = {"python": platform.python_version(), "platform": f"{sys.platform}-{platform.machine()}"}
    for lib in PICKLE_LIBRARIES:
        if (v := _version(lib)) is not None:
            env[lib] = v
    if quantized_engine:
        env["quantized_engine"] = quantized_engine
    return env


def library_versions() -> dict[str, str]:
    """Just the libraries (for cache keys)."""
    return {k: v for k, v in current().items() if k != "platform"}
