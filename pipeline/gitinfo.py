"""The git commit a build comes from (None outside a repository)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def commit_of(directory: Path) -> str | None:
    """HEAD's sha, with "-dirty" when tracked files have uncommitted changes."""
    try:
        sha = _git(directory, "rev-parse", "HEAD")
        dirty = _git(directory, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("-dirty" if dirty else "") if sha else None


def _git(directory: Path, *args: str) -> str:
    """A git command's output in `directory` (CalledProcessError when it fails)."""
    return subprocess.run(
        ["git", *args], cwd=directory, capture_output=True, text=True, timeout=10, check=True
    ).stdout.strip()
