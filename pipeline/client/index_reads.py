"""A model index (or a `latest` pointer) read from each kind of source, conditionally.

`read_index` asks with a conditional request where the host supports it (ETag / If-None-Match,
else Last-Modified / If-Modified-Since; S3's IfNoneMatch; a file's stat), so an idle poll costs
one small request answered 304; every read is bounded at `MAX_INDEX_BYTES` and goes through the
source's own transport (its deadline, redirect hosts, tokens). Where it is: `<base>/<model>/
index.json` on a directory, a mirror or an S3 bucket; the asset `index.json` of the release
`<model>-index` on GitHub; `index.json` on the branch `index` of an HF repository.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.client.github import GitHubSource
from pipeline.client.hf import HfSource
from pipeline.client.sources import LocalSource, MirrorSource, Source
from pipeline.errors import ArtifactNotFound, RemoteError
from pipeline.index import INDEX_NAME, MAX_INDEX_BYTES

GITHUB_INDEX_TAG = "{model}-index"
HF_INDEX_REVISION = "index"


@dataclass
class Validator:
    """What a source said about the copy of a file this client read last (for the next poll)."""

    etag: str | None = None
    last_modified: str | None = None
    stamp: tuple[int, int, int] | None = None  # a local file's (mtime_ns, size, inode)
    data: bytes | None = None  # the bytes read last (sources that cannot answer 304)


@dataclass(frozen=True)
class Read:
    """A conditional read: `data` None means "not modified since `validator`"."""

    data: bytes | None
    validator: Validator

    @property
    def changed(self) -> bool:
        return self.data is not None


def _local(source: LocalSource, model: str, name: str, v: Validator) -> Read:
    path = Path(source.root) / model / name
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ArtifactNotFound(f"{source.name}: no {model}/{name}") from None
    except OSError as e:
        raise RemoteError(f"{source.name}: cannot read {model}/{name}: {e}") from None
    stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
    if v.stamp == stamp:
        return Read(None, v)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_INDEX_BYTES + 1)
    except OSError as e:
        raise RemoteError(f"{source.name}: cannot read {model}/{name}: {e}") from None
    return Read(data, Validator(stamp=stamp))


def _http(source: Any, url: str, what: str, v: Validator, headers: Any = None) -> Read:
    """A conditional read through the source's Http (its bounds, deadline and redirect hosts)."""
    data, etag, modified = source.http.get_if_changed(
        url,
        what=what,
        etag=v.etag,
        last_modified=None if v.etag else v.last_modified,
        headers=headers,
        limit=MAX_INDEX_BYTES,
        source=source.name,
        redirect_hosts=getattr(source, "redirect_hosts", ()),
    )
    if data is None:
        return Read(None, v)
    return Read(data, Validator(etag=etag, last_modified=modified))


def _s3(source: Any, model: str, name: str, v: Validator) -> Read:
    """A conditional read of the object through a pre-signed URL and the source's Http (the
    bounds every source has; boto3 only signs), signed again for the bucket's own region."""
    key = source.key(model, name)
    what = f"{source.name}: {model}/{name}"
    return source.with_region(
        what, lambda: _http(source, source.presign("get_object", what, Key=key), what, v)
    )


def _github(source: GitHubSource, model: str, v: Validator) -> Read:
    from urllib.parse import quote

    tag = GITHUB_INDEX_TAG.format(model=model)
    what = f"{source.name}: release {tag}: {INDEX_NAME}"
    if not source.token:  # the public download URL: no API call, no API rate limit
        return _http(source, source.download_url(tag, INDEX_NAME), what, v)
    # with a token (a private repository): the release through the API, answered 304 while
    # its assets are unchanged (a 304 does not count against GitHub's rate limit)
    api = f"{source.api_url}/repos/{source.repo}/releases/tags/{quote(tag, safe='')}"
    read = _http(source, api, f"{source.name}: release {tag}", v, source._api_headers())
    if read.data is None:
        return read
    try:
        release = json.loads(read.data)
    except (ValueError, RecursionError):
        raise ArtifactNotFound(f"{what}: the release answer is not JSON") from None
    url, headers = source.asset_in(release, tag, INDEX_NAME)  # the token to the API only
    data = source.http.get_bytes(
        url,
        what=what,
        headers=headers,
        limit=MAX_INDEX_BYTES,
        source=source.name,
        redirect_hosts=source.redirect_hosts,
    )
    return Read(data, read.validator)


def _hf(source: HfSource, v: Validator) -> Read:
    """The index on the Hub's `index` branch, through the source's Http (If-None-Match)."""
    what = f"{source.name}@{HF_INDEX_REVISION}: {INDEX_NAME}"
    url = source.file_url(INDEX_NAME, HF_INDEX_REVISION)
    return source.explained(what, lambda: _http(source, url, what, v, source.headers()))


def read_index(
    source: Source,
    model: str,
    validator: Validator | None = None,
    *,
    name: str = INDEX_NAME,
) -> Read:
    """The source's `index.json` of `model` (or, with `name="latest"`, its `latest` pointer,
    on sources with the store layout), unless unchanged since `validator`.

    Raises:
        ArtifactNotFound: the source has no index of `model` (or cannot hold one).
        Unreachable, RemoteError: the source failed.
    """
    v = validator or Validator()
    if isinstance(source, LocalSource):
        return _local(source, model, name, v)
    if isinstance(source, MirrorSource):
        what = f"{source.name}: {model}/{name}"
        return _http(source, source._url(model, name), what, v, source.headers)
    if type(source).__name__ == "S3Source":
        return _s3(source, model, name, v)
    if name != INDEX_NAME:
        raise ArtifactNotFound(f"{source.name}: has no {name} pointer to poll")
    if isinstance(source, GitHubSource):
        return _github(source, model, v)
    if isinstance(source, HfSource):
        return _hf(source, v)
    reader = getattr(source, "read_index", None)  # a custom source may offer one
    if reader is None:
        raise ArtifactNotFound(f"{getattr(source, 'name', source)}: keeps no model index")
    data = reader(model)
    return Read(data, Validator(data=data)) if data != v.data else Read(None, v)
