"""What each source offers of a model: its versions, which one `latest` names, which are signed.

`release list MODEL --source ...` prints it so an operator sees a fleet's sources side by side
before a rollout. A local store and an S3 bucket list their keys; GitHub lists its releases (the
REST API) and the HF Hub its tags; a static HTTP mirror cannot list, so it is asked for `latest`
and probed for every version the other sources named (one GET of each manifest, one of each
signature). Nothing is verified here: `release fetch` does that.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

from pipeline.client.sources import GitHubSource, HfSource, LocalSource, MirrorSource, Source
from pipeline.errors import ArtifactNotFound, ReleaseError
from pipeline.manifest import MANIFEST_NAME, SIGNATURE_NAME

log = logging.getLogger("pipeline.client")


@dataclass
class SourceListing:
    """One source's answer.

    Attributes:
        versions: {version: signed} (signed None: not known).
        latest: the version `latest` names there, or None.
        listed: the source listed its versions itself (False: a mirror, probed).
        error: why the source could not answer (then nothing else is set).
    """

    source: str
    versions: dict[str, bool | None] = field(default_factory=dict)
    latest: str | None = None
    listed: bool = True
    error: str | None = None

    def ordered(self) -> list[str]:
        return sorted(self.versions, key=version_key, reverse=True)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "latest": self.latest,
            "listed": self.listed,
            "error": self.error,
            "versions": [{"version": v, "signed": self.versions[v]} for v in self.ordered()],
        }


def version_key(v: str) -> tuple[int, Version | str]:
    try:
        return (1, Version(v))
    except InvalidVersion:
        return (0, v)


def _from_tag(pattern: str, model: str, tag: str) -> str | None:
    prefix, _, suffix = pattern.replace("{model}", model).partition("{version}")
    if tag.startswith(prefix) and tag.endswith(suffix) and len(tag) > len(prefix) + len(suffix):
        return tag[len(prefix) : len(tag) - len(suffix)]
    return None


def _local(source: LocalSource, model: str) -> dict[str, bool | None]:
    root = Path(source.root) / model
    if not root.is_dir():
        return {}
    return {
        d.name: (d / SIGNATURE_NAME).is_file()
        for d in root.iterdir()
        if d.is_dir() and not d.name.startswith(".") and (d / MANIFEST_NAME).is_file()
    }


def _s3(source: Any, model: str) -> dict[str, bool | None]:
    base = source.key(model) + "/"
    keys: set[str] = set()
    for page in source.client.get_paginator("list_objects_v2").paginate(
        Bucket=source.bucket, Prefix=base
    ):
        keys.update(o["Key"][len(base) :] for o in page.get("Contents") or [])
    return {
        k.split("/")[0]: f"{k.split('/')[0]}/{SIGNATURE_NAME}" in keys
        for k in keys
        if k.count("/") == 1 and k.endswith("/" + MANIFEST_NAME)
    }


def _github(source: GitHubSource, model: str) -> dict[str, bool | None]:
    headers = source._api_headers() if source.token else {"Accept": "application/vnd.github+json"}
    out: dict[str, bool | None] = {}
    page = 1
    while True:
        releases = source.http.get_json(
            f"{source.api_url}/repos/{source.repo}/releases?per_page=100&page={page}",
            what=f"{source.name}: releases",
            headers=headers,
        )
        for r in releases:
            version = _from_tag(source.tag, model, str(r.get("tag_name", "")))
            if version is None or r.get("draft"):
                continue
            names = {a.get("name") for a in r.get("assets") or []}
            if MANIFEST_NAME in names:
                out[version] = SIGNATURE_NAME in names
        if len(releases) < 100:
            return out
        page += 1


def _hf(source: HfSource, model: str) -> dict[str, bool | None]:
    source._hub()  # the [hf] extra, or a clear error
    from huggingface_hub import HfApi

    api = HfApi(endpoint=source.endpoint, token=source.token)
    out: dict[str, bool | None] = {}
    for tag in api.list_repo_refs(source.repo_id).tags:
        version = _from_tag(source.revision, model, tag.name)
        if version is None:
            continue
        files = set(api.list_repo_files(source.repo_id, revision=tag.target_commit))
        if MANIFEST_NAME in files:
            out[version] = SIGNATURE_NAME in files
    return out


def _probe(source: Source, model: str, version: str) -> bool | None:
    """Whether a source that cannot list has `version` (None: it has not), and if it is signed."""
    try:
        source.read_bytes(model, version, MANIFEST_NAME)
    except ArtifactNotFound:
        return None
    try:
        source.read_bytes(model, version, SIGNATURE_NAME)
    except ArtifactNotFound:
        return False
    return True


def list_source(source: Source, model: str, probe: Sequence[str] = ()) -> SourceListing:
    """What `source` offers of `model`; a source that cannot list is probed for `probe`."""
    from pipeline.client.s3 import S3Source

    out = SourceListing(source.name)
    try:
        try:
            out.latest = source.latest(model)
        except ArtifactNotFound:
            out.latest = None
        if isinstance(source, LocalSource):
            out.versions = _local(source, model)
        elif isinstance(source, S3Source):
            out.versions = _s3(source, model)
        elif isinstance(source, GitHubSource):
            out.versions = _github(source, model)
        elif isinstance(source, HfSource):
            out.versions = _hf(source, model)
        else:  # MirrorSource and any other source that cannot list
            out.listed = False
            for v in dict.fromkeys([*([out.latest] if out.latest else []), *probe]):
                signed = _probe(source, model, v)
                if signed is not None:
                    out.versions[v] = signed
    except ReleaseError as e:
        out.error = str(e).splitlines()[0]
    except Exception as e:  # a library's own error (boto3, huggingface_hub): say it, go on
        out.error = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:300]}"
    if out.error:
        out.versions, out.latest = {}, None
    return out


def list_sources(sources: Sequence[Source], model: str) -> list[SourceListing]:
    """Every source's listing, in the order given; mirrors are probed for the versions the
    listing sources named."""
    first = {id(s): list_source(s, model) for s in sources if not isinstance(s, MirrorSource)}
    known = sorted(
        {v for listing in first.values() for v in listing.versions}, key=version_key, reverse=True
    )
    return [first.get(id(s)) or list_source(s, model, probe=known) for s in sources]
