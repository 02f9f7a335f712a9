"""The error hierarchy. Each error carries the exit code the CLI maps it to (see DESIGN.md).

Errors a library user would catch also inherit the built-in that names their kind: ConfigError,
InputError and IntegrityError are ValueErrors; RemoteError (and the client's CacheError) are
OSErrors; ArtifactNotFound is a FileNotFoundError. Exit codes: 0 ok · 1 unexpected · 2 usage ·
3 config/input (and the local cache) · 4 gate · 5 integrity/trust · 6 remote · 7 partial publish.
"""

from __future__ import annotations

from collections.abc import Iterable


class ReleaseError(Exception):
    """Base class of every error a user can act on. Printed without a traceback."""

    exit_code = 1


class UsageError(ReleaseError):
    """The command line itself is wrong."""

    exit_code = 2


class ConfigError(ReleaseError, ValueError):
    """release.toml or an input file is wrong. `problems` holds one line per problem."""

    exit_code = 3

    def __init__(self, message: str, problems: list[str] | None = None):
        self.problems = list(problems or [])
        if self.problems:
            message = message + "\n" + bullets(self.problems)
        super().__init__(message)


class InputError(ReleaseError, ValueError):
    """A data file or model file given as input cannot be used."""

    exit_code = 3


class ArtifactNotFound(ReleaseError, FileNotFoundError):
    """A file the command needs is not there."""

    exit_code = 3


class VersionExistsError(ReleaseError):
    """A published version exists with different files; versions are immutable."""

    exit_code = 3


class GateFailed(ReleaseError):
    """One or more validation gates failed: the build is not releasable."""

    exit_code = 4

    def __init__(self, message: str, table: str = ""):
        self.table = table
        super().__init__(message + ("\n" + table if table else ""))


class IntegrityError(ReleaseError, ValueError):
    """A checksum or signature does not match: bytes that must not be used (a ValueError, as
    a bad checksum is for `hashlib`/`binascii` users)."""

    exit_code = 5


class RemoteError(ReleaseError, OSError):
    """A network host failed or refused (an OSError, as `requests` and `urllib` errors are: a
    server that catches OSError around I/O catches this too). Not a ConnectionError: a refused
    token or an HTTP 404 is no broken connection, and the publishers retry ConnectionErrors."""

    exit_code = 6


class PartialPublishError(ReleaseError):
    """Some publish targets finished and some did not."""

    exit_code = 7


def bullets(items: Iterable[object]) -> str:
    """One indented "  - item" line per item: the list under an error that found several."""
    return "\n".join(f"  - {item}" for item in items)


def first_line(exc: BaseException, default: str = "") -> str:
    """The first line of an error's message, at most 300 characters (`default` when it has
    none): what a one-line report of a library's error shows, never a traceback or a dump."""
    return (str(exc).strip().splitlines() or [default])[0][:300]
