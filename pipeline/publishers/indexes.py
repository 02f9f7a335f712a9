"""Where each publish target keeps a model's index (`pipeline/index.py`), and how it is replaced.

One adapter per publisher, using the publisher's own client, retry policy and credentials:

- local: `<root>/<model>/index.json`, replaced by a rename under the store's publish lock;
- S3: `<prefix>/<model>/index.json` (`Cache-Control: no-cache`, so a CDN revalidates and a poll
  is answered 304 while nothing changed), one PUT: atomic;
- GitHub: the asset `index.json` of a published pre-release tagged `<model>-index` (never
  GitHub's "latest release", which stays the newest model release). An asset cannot be replaced
  in place: the new document is uploaded as `index-<sequence>.json`, the old `index.json`
  deleted and the new asset renamed. A reader between the last two requests finds no index for
  a moment and keeps what it has; a run killed anywhere leaves an `index-<sequence>.json` that
  the next run finishes (it is a candidate document: see `pipeline/channels.py`);
- HF Hub: `index.json` on the branch `index` (one commit per change; `main` keeps holding only
  the newest release, as `from_pretrained_fastai` reads it).

Every adapter answers `read` (the stored document, documents a killed run left, the `latest`
pointer), `write` (replace the document, resumably) and `has_version` (the version is published
there: a channel may only name a published version).
"""

from __future__ import annotations

import io
import re
import tempfile
from dataclasses import dataclass
from typing import Any, Protocol

from pipeline import atomic
from pipeline.errors import RemoteError
from pipeline.index import INDEX_NAME, MAX_INDEX_BYTES, parse
from pipeline.manifest import MANIFEST_NAME, is_safe_version

INDEX_CACHE = "no-cache"  # S3/CDN: revalidate every time (a 304 costs a few hundred bytes)
GITHUB_PENDING = re.compile(r"index-(\d+)\.json")
HUB_BRANCH = "index"


def github_index_tag(model: str) -> str:
    """The tag of the GitHub release that holds `model`'s index."""
    return f"{model}-index"


@dataclass
class Stored:
    """What a target holds of a model's index.

    Attributes:
        current: the bytes of `index.json` (None: there is none).
        pending: documents an interrupted replacement left (GitHub's `index-<sequence>.json`).
        latest: the version the `latest` pointer names, where the target has one.
    """

    current: bytes | None = None
    pending: tuple[bytes, ...] = ()
    latest: str | None = None


class IndexStore(Protocol):
    name: str
    has_latest_pointer: bool

    def where(self, model: str) -> str: ...

    def read(self, model: str) -> Stored: ...

    def write(self, model: str, data: bytes) -> None: ...

    def has_version(self, model: str, version: str) -> bool: ...

    def versions(self, model: str) -> list[str]: ...

    def set_latest(self, model: str, version: str) -> None: ...


def _bounded(chunks: Any, what: str) -> bytes:
    out = bytearray()
    for chunk in chunks:
        out += chunk
        if len(out) > MAX_INDEX_BYTES:
            raise RemoteError(f"{what}: more than {MAX_INDEX_BYTES} bytes: not an index")
    return bytes(out)


class LocalIndexStore:
    """`<root>/<model>/index.json` of a local release store."""

    has_latest_pointer = True

    def __init__(self, publisher: Any):
        self.p = publisher
        self.name = publisher.name

    def where(self, model: str) -> str:
        return str(self.p.root / model / INDEX_NAME)

    def read(self, model: str) -> Stored:
        path = self.p.root / model / INDEX_NAME
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_INDEX_BYTES + 1)
        except FileNotFoundError:
            data = None
        return Stored(data, (), self.p.latest(model))

    def write(self, model: str, data: bytes) -> None:
        from filelock import FileLock

        model_dir = self.p.root / model
        model_dir.mkdir(parents=True, exist_ok=True)
        with FileLock(model_dir / ".publish.lock", timeout=600):
            atomic.write_bytes(model_dir / INDEX_NAME, data)

    def has_version(self, model: str, version: str) -> bool:
        return (self.p.root / model / version / MANIFEST_NAME).is_file()

    def versions(self, model: str) -> list[str]:
        d = self.p.root / model
        if not d.is_dir():
            return []
        return [
            v.name
            for v in d.iterdir()
            if v.is_dir() and is_safe_version(v.name) and (v / MANIFEST_NAME).is_file()
        ]

    def set_latest(self, model: str, version: str) -> None:
        atomic.write_text(self.p.root / model / "latest", version + "\n")


class S3IndexStore:
    """`<prefix>/<model>/index.json` in the target's bucket."""

    has_latest_pointer = True

    def __init__(self, publisher: Any):
        self.p = publisher
        self.name = publisher.name

    def where(self, model: str) -> str:
        return f"s3://{self.p.bucket}/{self.p.key(model, INDEX_NAME)}"

    def read(self, model: str) -> Stored:
        from botocore.exceptions import ClientError

        key = self.p.key(model, INDEX_NAME)

        def run() -> bytes | None:
            try:
                body = self.p.client.get_object(Bucket=self.p.bucket, Key=key)["Body"]
            except ClientError as e:
                if (e.response.get("Error") or {}).get("Code") in ("NoSuchKey", "404"):
                    return None
                raise
            return _bounded(body.iter_chunks(1 << 16), f"{self.p.where}: {key}")

        return Stored(self.p._call(f"read {key}", run), (), self.p.latest(model))

    def write(self, model: str, data: bytes) -> None:
        key = self.p.key(model, INDEX_NAME)
        self.p._call(
            f"write {key}",
            lambda: self.p.client.put_object(
                Bucket=self.p.bucket,
                Key=key,
                Body=data,
                CacheControl=INDEX_CACHE,
                ContentType="application/json",
                ChecksumAlgorithm="SHA256",
            ),
        )

    def has_version(self, model: str, version: str) -> bool:
        key = self.p.key(model, version, MANIFEST_NAME)
        return key in self.p._list(key)

    def versions(self, model: str) -> list[str]:
        base = self.p.key(model) + "/"
        out = []
        for key in self.p._list(base):
            parts = key[len(base) :].split("/")
            if len(parts) == 2 and parts[1] == MANIFEST_NAME and is_safe_version(parts[0]):
                out.append(parts[0])
        return out

    def set_latest(self, model: str, version: str) -> None:
        from pipeline.publishers.s3 import LATEST, LATEST_CACHE

        key = self.p.key(model, LATEST)
        self.p._call(
            f"write {key}",
            lambda: self.p.client.put_object(
                Bucket=self.p.bucket,
                Key=key,
                Body=(version + "\n").encode(),
                CacheControl=LATEST_CACHE,
                ContentType="text/plain; charset=utf-8",
                ChecksumAlgorithm="SHA256",
            ),
        )


class GitHubIndexStore:
    """The `index.json` asset of the pre-release `<model>-index` (see the module docstring)."""

    has_latest_pointer = False  # GitHub's "latest release" stays the newest model release

    def __init__(self, publisher: Any):
        self.p = publisher
        self.name = publisher.name

    def where(self, model: str) -> str:
        return f"{self.p.repo_name} release {github_index_tag(model)}: {INDEX_NAME}"

    def _ready(self) -> None:
        if self.p._repo is None:
            self.p.check()

    def _release(self, model: str) -> Any:
        published, drafts = self.p._find(github_index_tag(model))
        return published or (drafts[0] if drafts else None)

    def _bytes(self, asset: Any) -> bytes:
        def get() -> bytes:
            _, _, chunks = asset.download_asset(None, chunk_size=1 << 16)
            return _bounded(chunks, f"{self.p.where}: {asset.name}")

        return self.p._call(f"download {asset.name}", get)

    def read(self, model: str) -> Stored:
        self._ready()
        release = self._release(model)
        if release is None:
            return Stored()
        current, pending = None, []
        for a in self.p._assets(release):
            if a.state != "uploaded":
                continue
            if a.name == INDEX_NAME:
                current = self._bytes(a)
            elif GITHUB_PENDING.fullmatch(a.name):
                pending.append(self._bytes(a))
        return Stored(current, tuple(pending))

    def write(self, model: str, data: bytes) -> None:
        self._ready()
        tag = github_index_tag(model)
        release = self._release(model)
        if release is None:
            release = self.p._call(f"create release {tag}", lambda: self._create(tag))
        elif release.draft:
            release = self.p._call(
                f"publish release {tag}",
                lambda: release.update_release(
                    name=release.name or tag,
                    message=release.body or "",
                    draft=False,
                    prerelease=True,
                    make_latest="false",
                ),
            )
        sequence = parse(data, INDEX_NAME).index.sequence
        name = f"index-{sequence}.json"
        assets = self.p._assets(release)
        pending = None
        for a in assets:
            stale = a.state != "uploaded" or (GITHUB_PENDING.fullmatch(a.name) and a.name != name)
            if a.name == name and a.state == "uploaded":
                if self._bytes(a) == data:
                    pending = a
                    continue
                stale = True
            if stale:
                self.p._call(f"delete asset {a.name}", a.delete_asset)
        current = next((a for a in assets if a.name == INDEX_NAME and a.state == "uploaded"), None)
        if current is not None and self._bytes(current) == data:
            if pending is not None:
                self.p._call(f"delete asset {name}", pending.delete_asset)
            return
        if pending is None:
            pending = self.p._call(f"upload {name}", lambda: self._upload(release, name, data))
        if current is not None:
            self.p._call(f"delete asset {INDEX_NAME}", current.delete_asset)
        self.p._call(f"rename {name} to {INDEX_NAME}", lambda: self._rename(release, name))

    def _create(self, tag: str) -> Any:
        published, drafts = self.p._find_raw(tag)  # a retried attempt may have made it already
        if published is not None or drafts:
            return published or drafts[0]
        return self.p._repo.create_git_release(
            tag,
            tag,
            "The model index (channels, yanked versions) of fastai-release. Not a model release.",
            draft=False,
            prerelease=True,
            make_latest="false",
        )

    def _upload(self, release: Any, name: str, data: bytes) -> Any:
        for a in release.get_assets():  # a retried attempt may have finished it
            if a.name == name:
                if a.state == "uploaded" and a.size == len(data):
                    return a
                a.delete_asset()
        return release.upload_asset_from_memory(
            io.BytesIO(data), len(data), name, "application/json"
        )

    def _rename(self, release: Any, name: str) -> None:
        for a in release.get_assets():
            if a.name == INDEX_NAME:
                return  # a retried attempt renamed it already
            if a.name == name:
                a.update_asset(INDEX_NAME)
                return
        raise RemoteError(f"{self.p.where}: {name} vanished before it could be renamed")

    def has_version(self, model: str, version: str) -> bool:
        self._ready()
        published, _ = self.p._find(self.p.target.tag(model, version))
        return published is not None

    def versions(self, model: str) -> list[str]:
        self._ready()
        tags = self.p._call(
            "list releases",
            lambda: [r.tag_name for r in self.p._repo.get_releases() if not r.draft],
        )
        return _versions_of(tags, self.p.target.tag_pattern, model)

    def set_latest(self, model: str, version: str) -> None:  # pragma: no cover - not offered
        raise NotImplementedError


class HubIndexStore:
    """`index.json` on the branch `index` of the model repository."""

    has_latest_pointer = False  # `main` holds the newest release's files

    def __init__(self, publisher: Any):
        self.p = publisher
        self.name = publisher.name

    def where(self, model: str) -> str:
        return f"{self.p.repo_id}@{HUB_BRANCH}: {INDEX_NAME}"

    def _ready(self) -> None:
        if not self.p._checked:
            self.p.check()

    def _session(self) -> Any:
        from pipeline.publishers.hub_session import hub_session

        return hub_session(self.p.policy.timeout)

    def _branch_exists(self) -> bool:
        refs = self.p._call("list branches", lambda: self.p.api.list_repo_refs(self.p.repo_id))
        return any(b.name == HUB_BRANCH for b in refs.branches)

    def read(self, model: str) -> Stored:
        self._ready()
        with self._session():
            exists = self.p._call(
                "read the repository", lambda: self.p.api.repo_exists(self.p.repo_id)
            )
            if not exists or not self._branch_exists():
                return Stored()
            return Stored(self._download())

    def _download(self) -> bytes | None:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError

        def get() -> bytes | None:
            with tempfile.TemporaryDirectory(prefix="release-hf-index-") as tmp:
                try:
                    path = hf_hub_download(
                        self.p.repo_id,
                        INDEX_NAME,
                        revision=HUB_BRANCH,
                        cache_dir=tmp,
                        token=self.p.settings.hf_token,
                        endpoint=self.p.settings.hf_endpoint,
                        force_download=True,
                    )
                except EntryNotFoundError:
                    return None
                with open(path, "rb") as f:
                    data = f.read(MAX_INDEX_BYTES + 1)
            if len(data) > MAX_INDEX_BYTES:
                raise RemoteError(f"{self.where('')}: more than {MAX_INDEX_BYTES} bytes")
            return data

        return self.p._call(f"download {INDEX_NAME} at {HUB_BRANCH}", get)

    def write(self, model: str, data: bytes) -> None:
        from huggingface_hub import CommitOperationAdd

        self._ready()
        sequence = parse(data, INDEX_NAME).index.sequence
        with self._session():
            self.p._call(
                f"create branch {HUB_BRANCH}",
                lambda: self.p.api.create_branch(self.p.repo_id, branch=HUB_BRANCH, exist_ok=True),
            )
            if self._download() == data:  # a retried attempt (or a killed run) committed it
                return
            self.p._call(
                f"commit {INDEX_NAME} to {HUB_BRANCH}",
                lambda: self.p.api.create_commit(
                    self.p.repo_id,
                    [CommitOperationAdd(INDEX_NAME, data)],
                    commit_message=f"{model} index, sequence {sequence}",
                    revision=HUB_BRANCH,
                ),
            )

    def has_version(self, model: str, version: str) -> bool:
        self._ready()
        with self._session():
            exists = self.p._call(
                "read the repository", lambda: self.p.api.repo_exists(self.p.repo_id)
            )
            return exists and self.p._tag_target(self.p.target.tag(model, version)) is not None

    def versions(self, model: str) -> list[str]:
        self._ready()
        with self._session():
            exists = self.p._call(
                "read the repository", lambda: self.p.api.repo_exists(self.p.repo_id)
            )
            if not exists:
                return []
            refs = self.p._call("list tags", lambda: self.p.api.list_repo_refs(self.p.repo_id))
        return _versions_of([t.name for t in refs.tags], self.p.target.tag_pattern, model)

    def set_latest(self, model: str, version: str) -> None:  # pragma: no cover - not offered
        raise NotImplementedError


def _versions_of(tags: list[str], pattern: str, model: str) -> list[str]:
    """The versions of the tags that have the form `pattern` ("v{version}", "{model}-v{version}")."""
    prefix, _, suffix = pattern.replace("{model}", model).partition("{version}")
    out = []
    for tag in tags:
        if tag.startswith(prefix) and tag.endswith(suffix) and len(tag) > len(prefix) + len(suffix):
            v = tag[len(prefix) : len(tag) - len(suffix)]
            if is_safe_version(v) and v != "index":
                out.append(v)
    return out


def store_for(publisher: Any) -> IndexStore:
    """The index store of a publisher (by its target name)."""
    stores = {
        "local": LocalIndexStore,
        "s3": S3IndexStore,
        "github": GitHubIndexStore,
        "huggingface": HubIndexStore,
    }
    cls = stores.get(publisher.name)
    if cls is None:
        raise RemoteError(f"{publisher.name}: this target keeps no model index")
    return cls(publisher)
