"""What each source offers of a model: its versions, which one `latest` names, which are signed.

`release list MODEL --source ...` prints it so an operator sees a fleet's sources side by side
before a rollout. A local store and an S3 bucket list their keys; GitHub lists its releases (the
REST API) and the HF Hub its tags; a static HTTP mirror cannot list, so it is asked for `latest`
and probed for every version the other sources named (one GET of each manifest, one of each
signature). Nothing is verified here: `release fetch` does that.

A source is not trusted here either: every answer is bounded as the client bounds small files
(text a source sent is kept as sent, cut short: `release list` escapes it when it prints), a
listing stops after `MAX_PAGES` pages, keeps the newest `MAX_VERSIONS` versions and checks at
most `MAX_PROBES` of them one by one (the Hub's tags, a mirror's probes), and a name that is not
a version name (what `release fetch --version` accepts) is skipped. Every cut is said in the
listing's `notes`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.client.errors import BadResponse
from pipeline.client.github import GitHubSource
from pipeline.client.hf import HfSource
from pipeline.client.sources import MAX_VERSION_CHARS, LocalSource, MirrorSource, Source
from pipeline.errors import ArtifactNotFound, ReleaseError, first_line
from pipeline.manifest import MANIFEST_NAME, SIGNATURE_NAME
from pipeline.versions import version_key

log = logging.getLogger("pipeline.client")
MAX_PAGES = 100  # pages of one listing (GitHub: 100 releases each; S3: 1,000 keys each)
MAX_VERSIONS = 1000  # versions kept of one source, the newest
MAX_PROBES = 100  # versions checked one request or two each (the Hub's tags, a mirror's probes)
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")  # as `release fetch --version` accepts


@dataclass
class SourceListing:
    """One source's answer.

    Attributes:
        versions: {version: signed} (signed None: not known).
        latest: the version `latest` names there, or None.
        listed: the source listed its versions itself (False: a mirror, probed).
        error: why the source could not answer (then nothing else is set).
        notes: what was left out and why (a cap reached, names that are not versions).
    """

    source: str
    versions: dict[str, bool | None] = field(default_factory=dict)
    latest: str | None = None
    listed: bool = True
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    def ordered(self) -> list[str]:
        return sorted(self.versions, key=version_key, reverse=True)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "latest": self.latest,
            "listed": self.listed,
            "error": self.error,
            "versions": [{"version": v, "signed": self.versions[v]} for v in self.ordered()],
            "notes": self.notes,
        }


def _from_tag(pattern: str, model: str, tag: str) -> str | None:
    prefix, _, suffix = pattern.replace("{model}", model).partition("{version}")
    if tag.startswith(prefix) and tag.endswith(suffix) and len(tag) > len(prefix) + len(suffix):
        return tag[len(prefix) : len(tag) - len(suffix)]
    return None


def is_version(name: str) -> bool:
    """Whether `name` is a version name `release fetch --version` accepts."""
    return len(name) <= MAX_VERSION_CHARS and bool(_VERSION.fullmatch(name)) and name != "."


def _kept(
    found: dict[str, bool | None], out: SourceListing, limit: int = MAX_VERSIONS
) -> dict[str, bool | None]:
    """The newest `limit` of `found`'s version names; what was dropped goes into the notes."""
    names = [v for v in found if is_version(v)]
    skipped = len(found) - len(names)
    if skipped:
        out.notes.append(f"{skipped} name(s) that are not version names skipped")
    names.sort(key=version_key, reverse=True)
    if len(names) > limit:
        out.notes.append(f"only the newest {limit} of {len(names)} versions kept")
    return {v: found[v] for v in names[:limit]}


def _local(source: LocalSource, model: str, out: SourceListing) -> dict[str, bool | None]:
    root = Path(source.root) / model
    if not root.is_dir():
        return {}
    found = {
        d.name: (d / SIGNATURE_NAME).is_file()
        for d in root.iterdir()
        if d.is_dir() and not d.name.startswith(".") and (d / MANIFEST_NAME).is_file()
    }
    return _kept(found, out)


def _s3(source: Any, model: str, out: SourceListing) -> dict[str, bool | None]:
    base = source.key(model) + "/"
    keys: set[str] = set()
    token: str | None = None
    for page in range(1, MAX_PAGES + 1):
        found, token = source.list_page(base, token, f"{source.name}: listing page {page}")
        keys.update(k[len(base) :] for k in found if k.startswith(base))
        if token is None:
            break
    else:
        out.notes.append(f"listing stopped after {MAX_PAGES} pages (the bucket said there is more)")
    versions = {
        k.split("/")[0]: f"{k.split('/')[0]}/{SIGNATURE_NAME}" in keys
        for k in keys
        if k.count("/") == 1 and k.endswith("/" + MANIFEST_NAME)
    }
    return _kept(versions, out)


def _names(assets: Any) -> set[str]:
    if not isinstance(assets, list):
        return set()
    return {a.get("name") for a in assets if isinstance(a, dict) and isinstance(a.get("name"), str)}


def _github(source: GitHubSource, model: str, out: SourceListing) -> dict[str, bool | None]:
    headers = source._api_headers() if source.token else {"Accept": "application/vnd.github+json"}
    found: dict[str, bool | None] = {}
    for page in range(1, MAX_PAGES + 1):
        releases = source.get_json(
            f"{source.api_url}/repos/{source.repo}/releases?per_page=100&page={page}",
            f"{source.name}: releases (page {page})",
            headers,
        )
        if not isinstance(releases, list):
            raise BadResponse(f"{source.name}: releases (page {page}): not a list of releases")
        for r in releases:
            if not isinstance(r, dict) or r.get("draft"):
                continue
            tag = r.get("tag_name")
            version = _from_tag(source.tag, model, tag) if isinstance(tag, str) else None
            if version is None:
                continue
            names = _names(r.get("assets"))
            if MANIFEST_NAME in names:
                found[version] = SIGNATURE_NAME in names
        if len(releases) < 100:
            break
    else:
        out.notes.append(f"listing stopped after {MAX_PAGES} pages of releases")
    return _kept(found, out)


def _hf(source: HfSource, model: str, out: SourceListing) -> dict[str, bool | None]:
    refs = source.get_json(source.api_url("refs"), f"{source.name}: refs")
    tags = refs.get("tags") if isinstance(refs, dict) else None
    if not isinstance(tags, list):
        raise BadResponse(f"{source.name}: refs: no list of tags in the answer")
    commits: dict[str, str] = {}
    for tag in tags:
        if not isinstance(tag, dict):
            continue
        name, commit = tag.get("name"), tag.get("targetCommit")
        version = _from_tag(source.revision, model, name) if isinstance(name, str) else None
        if version is not None and isinstance(commit, str) and commit:
            commits[version] = commit
    candidates = _kept(dict.fromkeys(commits), out, MAX_PROBES)
    found: dict[str, bool | None] = {}
    for version in candidates:
        info = source.get_json(
            source.api_url("revision", commits[version]), f"{source.name}: tag of {version}"
        )
        siblings = info.get("siblings") if isinstance(info, dict) else None
        files = (
            {s.get("rfilename") for s in siblings or [] if isinstance(s, dict)}
            if isinstance(siblings, list)
            else set()
        )
        if MANIFEST_NAME in files:
            found[version] = SIGNATURE_NAME in files
    return found


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


def _probed(
    source: Source, model: str, versions: Iterable[str], out: SourceListing
) -> dict[str, bool | None]:
    candidates = _kept(dict.fromkeys(versions), out, MAX_PROBES)
    found: dict[str, bool | None] = {}
    for v in candidates:
        signed = _probe(source, model, v)
        if signed is not None:
            found[v] = signed
    return found


def list_source(source: Source, model: str, probe: Sequence[str] = ()) -> SourceListing:
    """What `source` offers of `model`; a source that cannot list is probed for `probe`."""
    from pipeline.client.s3 import S3Source

    out = SourceListing(source.name)
    try:
        try:
            latest = source.latest(model)
        except ArtifactNotFound:
            latest = None
        if latest is not None and not is_version(latest):
            out.notes.append(f"'latest' names '{latest[:60]}', not a version name")
            latest = None
        out.latest = latest
        if isinstance(source, LocalSource):
            out.versions = _local(source, model, out)
        elif isinstance(source, S3Source):
            out.versions = _s3(source, model, out)
        elif isinstance(source, GitHubSource):
            out.versions = _github(source, model, out)
        elif isinstance(source, HfSource):
            out.versions = _hf(source, model, out)
        else:  # MirrorSource and any other source that cannot list
            out.listed = False
            out.versions = _probed(source, model, [*([latest] if latest else []), *probe], out)
    except ReleaseError as e:
        out.error = first_line(e, type(e).__name__)
    except Exception as e:  # a library's own error (boto3, huggingface_hub): say it, go on
        out.error = f"{type(e).__name__}: {first_line(e)}"
    if out.error:
        out.versions, out.latest, out.notes = {}, None, []
    return out


def list_sources(sources: Sequence[Source], model: str) -> list[SourceListing]:
    """Every source's listing, in the order given; mirrors are probed for the versions the
    listing sources named."""
    first = {id(s): list_source(s, model) for s in sources if not isinstance(s, MirrorSource)}
    known = sorted(
        {v for listing in first.values() for v in listing.versions}, key=version_key, reverse=True
    )
    return [first.get(id(s)) or list_source(s, model, probe=known) for s in sources]
