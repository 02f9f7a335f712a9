"""`release status`: each source's index of a model, read and checked, nothing remembered."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pipeline.client.index import check_envelope
from pipeline.client.index_reads import read_index
from pipeline.client.sources import LocalSource, MirrorSource
from pipeline.errors import ArtifactNotFound, InputError, ReleaseError
from pipeline.index import INDEX_NAME, now_utc, parse


@dataclass
class SourceStatus:
    """One source's index as `release status` shows it."""

    source: str
    sequence: int | None = None
    issued: str | None = None
    expires: str | None = None
    age_days: float | None = None
    channels: dict[str, str] = field(default_factory=dict)
    serves: dict[str, str] = field(default_factory=dict)  # channel -> version (yanks skipped)
    versions: list[str] = field(default_factory=list)
    yanked: dict[str, str] = field(default_factory=dict)
    signed: bool = False
    verified: str | None = None  # how, when a trust root was given
    problem: str | None = None  # why the index is not usable (or not there)
    latest: str | None = None  # the `latest` pointer where there is one

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def status(
    sources: list[Any],
    model: str,
    *,
    trust: Any,
    index_identity: str | None = None,
    now: datetime | None = None,
) -> list[SourceStatus]:
    """Each source's index of `model`, read and checked (nothing remembered)."""
    now = now or now_utc()
    out = []
    for source in sources:
        s = SourceStatus(source.name)
        out.append(s)
        with contextlib.suppress(ReleaseError):
            if (
                isinstance(source, LocalSource | MirrorSource)
                or type(source).__name__ == "S3Source"
            ):
                s.latest = source.latest(model)
        try:
            data = read_index(source, model).data
            assert data is not None
            env = parse(data, f"{source.name}: {model}/{INDEX_NAME}")
        except ArtifactNotFound:
            s.problem = "no index (clients use the 'latest' pointer)"
            continue
        except (ReleaseError, InputError) as e:
            s.problem = str(e)
            continue
        idx = env.index
        s.sequence, s.issued, s.expires = idx.sequence, idx.issued, idx.expires
        s.age_days = round((now - idx.issued_at()).total_seconds() / 86400, 3)
        s.channels, s.versions, s.yanked = dict(idx.channels), list(idx.versions), dict(idx.yanked)
        s.signed = env.signature is not None
        for name in idx.channels:
            with contextlib.suppress(ReleaseError):
                s.serves[name] = idx.pick(name).version
        try:
            _, s.verified = check_envelope(
                data,
                source,
                model,
                trust=trust,
                memory=None,
                index_identity=index_identity,
                now=now,
            )
        except ReleaseError as e:
            s.problem = str(e)
    return out
