"""The Hugging Face Hub: one commit with every file and the model card, verified, then tagged.

1. Create the model repo if it does not exist (private as configured).
2. If the tag (`v<version>`) exists: download every file at the tag and compare blake3.
   Identical -> nothing to do. Different, missing or extra files -> refused unless `force`.
3. One commit to main with all files plus README.md (the model card) and the deletion of files
   an older release left there; huggingface_hub skips files the Hub already holds, and a commit
   that changes nothing is not made (so a re-run after a kill adds no duplicate commit).
4. Download every file at that commit with `hf_hub_download` and check its blake3, then tag the
   commit. The tag is what users pin, so a tag exists only for a verified commit (with --force an
   existing tag is moved, after the new commit is verified).

huggingface_hub has its own backoff for uploads and downloads. While publishing, its HTTP client
gets a transport that turns every transient failure (5xx, 429, timeout, reset) into
`HostUnavailable` before the library's backoff sees it, so our one RetryPolicy decides, with
timeouts (the library's default client has none).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pipeline import checksums
from pipeline.config import HubTarget
from pipeline.errors import ConfigError, IntegrityError, RemoteError, VersionExistsError
from pipeline.manifest import MANIFEST_NAME, SIGNATURE_NAME, Manifest, verify_dir
from pipeline.publishers import modelcard
from pipeline.publishers.base import LocalFile, PublishResult, local_files
from pipeline.publishers.remote import (
    RETRY_STATUS,
    HostUnavailable,
    Redactor,
    classify_hf,
    host_wait,
)
from pipeline.publishers.settings import PublishSettings
from pipeline.retry import RetryPolicy

log = logging.getLogger("pipeline.publish")
CARD = "README.md"
HUB_FILES = (CARD, ".gitattributes")  # in the repo but not in the manifest


def _client_factory(timeout: float) -> Any:
    """An httpx2 client like huggingface_hub's default, with timeouts and a fail-fast transport."""
    import httpx2
    from huggingface_hub.utils import _http

    class FailFast(httpx2.BaseTransport):
        def __init__(self) -> None:
            self.inner = httpx2.HTTPTransport()

        def handle_request(self, request: httpx2.Request) -> httpx2.Response:
            where = f"{request.method} {request.url.path}"
            try:
                response = self.inner.handle_request(request)
            except httpx2.TimeoutException as e:
                raise HostUnavailable(f"timed out ({type(e).__name__}) on {where}") from e
            except httpx2.TransportError as e:
                raise HostUnavailable(f"connection failed ({type(e).__name__}) on {where}") from e
            if response.status_code in RETRY_STATUS:
                response.read()
                response.close()
                raise HostUnavailable(
                    f"HTTP {response.status_code} on {where}",
                    response.status_code,
                    host_wait(response.headers),
                )
            return response

        def close(self) -> None:
            self.inner.close()

    def factory() -> Any:
        return httpx2.Client(
            event_hooks={"request": [_http.hf_request_event_hook]},
            follow_redirects=True,
            timeout=httpx2.Timeout(timeout, connect=min(timeout, 10.0)),
            transport=FailFast(),
        )

    return factory


@contextlib.contextmanager
def _hub_session(timeout: float) -> Iterator[None]:
    """Use our client factory for huggingface_hub's shared session, then restore the previous one."""
    from huggingface_hub.utils import _http, set_client_factory

    previous = getattr(_http, "_GLOBAL_CLIENT_FACTORY", _http.default_client_factory)
    set_client_factory(_client_factory(timeout))
    try:
        yield
    finally:
        set_client_factory(previous)


def _git_sha1(path: Path) -> str:
    h = hashlib.sha1()
    h.update(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class HubPublisher:
    """Publishes a release directory to a Hugging Face Hub model repo (see the module docstring)."""

    name = "huggingface"

    def __init__(
        self, target: HubTarget, settings: PublishSettings, *, policy: RetryPolicy | None = None
    ):
        if target.repo is None:
            raise ConfigError('publish.huggingface.repo: expected "org/name", found nothing')
        self.target = target
        self.repo_id = target.repo
        self.settings = settings
        self.policy = policy or RetryPolicy()
        self.redact = Redactor(settings.secrets())
        self._api: Any = None
        self._checked = False

    @property
    def where(self) -> str:
        return f"Hugging Face {self.repo_id}"

    def _call(self, operation: str, fn: Any) -> Any:
        return self.policy.run(
            fn,
            what=f"{self.where}: {operation}",
            classify=classify_hf,
            describe=self.redact.describe,
        )

    @property
    def api(self) -> Any:
        if self._api is None:
            from huggingface_hub import HfApi

            self._api = HfApi(
                endpoint=self.settings.hf_endpoint,
                token=self.settings.hf_token,
                library_name="fastai-release",
            )
        return self._api

    # --- checks -------------------------------------------------------------------------------

    def check(self) -> None:
        """Token present, accepted, allowed to write; namespace is the user or one of its orgs.

        Raises:
            ConfigError: HF_ENDPOINT is not an http(s) URL.
            RemoteError: no token, a rejected or read-only token, or a namespace it cannot use.
        """
        url = urlparse(self.settings.hf_endpoint)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ConfigError(
                f"HF_ENDPOINT: expected an http(s) URL like https://huggingface.co, found {self.settings.hf_endpoint!r}"
            )
        if not self.settings.hf_token:
            raise RemoteError(
                f"{self.where}: no token: set HF_TOKEN to a write token of a user or organisation "
                f"that may create and write {self.repo_id} (https://huggingface.co/settings/tokens)"
            )
        from huggingface_hub.errors import HfHubHTTPError

        def whoami() -> dict:
            try:
                return self.api.whoami()
            except HfHubHTTPError as e:
                if e.response is not None and e.response.status_code == 401:
                    raise RemoteError(
                        f"{self.where}: the token in HF_TOKEN was rejected by {self.settings.hf_endpoint} "
                        "(HTTP 401); set HF_TOKEN to a valid write token"
                    ) from None
                raise

        with _hub_session(self.policy.timeout):
            me = self._call("check the token", whoami)
        role = ((me.get("auth") or {}).get("accessToken") or {}).get("role")
        if role == "read":
            raise RemoteError(
                f"{self.where}: the token in HF_TOKEN is a read token; publishing needs a write token"
            )
        namespace = self.repo_id.split("/")[0]
        names = [me.get("name")] + [o.get("name") for o in me.get("orgs") or []]
        if namespace not in names:
            raise RemoteError(
                f"{self.where}: {namespace} is neither the token's user ({me.get('name')}) nor one of its "
                f"organisations ({', '.join(n for n in names[1:] if n) or 'none'}); check [publish.huggingface] repo"
            )
        self._checked = True

    # --- remote state -------------------------------------------------------------------------

    def _download_digest(self, path: str, revision: str, cache: Path) -> str:
        from huggingface_hub import hf_hub_download

        def get() -> str:
            p = hf_hub_download(
                self.repo_id,
                path,
                revision=revision,
                cache_dir=str(cache),
                token=self.settings.hf_token,
                endpoint=self.settings.hf_endpoint,
                force_download=True,  # a retried attempt must not trust a partial earlier one
            )
            return checksums.blake3_file(Path(p))

        return self._call(f"download {path} at {revision[:12]}", get)

    def _compare_at(
        self, revision: str, expected: dict[str, str], cache: Path
    ) -> tuple[list[str], list[str]]:
        """(identical names, different/missing/extra names) of the files at `revision`."""
        there = set(
            self._call(
                f"list files at {revision[:12]}",
                lambda: self.api.list_repo_files(self.repo_id, revision=revision),
            )
        )
        same, differ = [], []
        for name, digest in expected.items():
            if name in there and self._download_digest(name, revision, cache) == digest:
                same.append(name)
            else:
                differ.append(name)
        differ += sorted(there - set(expected) - set(HUB_FILES))
        return same, differ

    def _tag_target(self, tag: str) -> str | None:
        refs = self._call("list tags", lambda: self.api.list_repo_refs(self.repo_id))
        return next((t.target_commit for t in refs.tags if t.name == tag), None)

    def _main_state(self) -> dict[str, tuple[str, str | None]]:
        """{path: (git blob sha1, lfs sha256 or None)} on main."""
        items = self._call(
            "list files on main",
            lambda: list(self.api.list_repo_tree(self.repo_id, revision="main", recursive=True)),
        )
        out = {}
        for it in items:
            if getattr(it, "blob_id", None) is not None:
                lfs = getattr(it, "lfs", None)
                out[it.path] = (it.blob_id, lfs.sha256 if lfs else None)
        return out

    # --- publish ------------------------------------------------------------------------------

    def publish(
        self, release_dir: Path, manifest: Manifest, *, dry_run: bool = False, force: bool = False
    ) -> PublishResult:
        """Publish (or plan) this release on the Hub. Idempotent; see the module docstring.

        Raises:
            IntegrityError: the build does not match its manifest, or a download from the Hub
                does not match the build.
            VersionExistsError: the tag exists with other files and `force` is off.
            RemoteError: the Hub failed or refused, after retries.
        """
        release_dir = Path(release_dir)
        verify_dir(release_dir, manifest)
        if not self._checked:
            self.check()
        files = local_files(release_dir, manifest)
        tag = self.target.tag(manifest.model, manifest.version)
        card = modelcard.render(
            manifest,
            release_dir,
            self.target,
            self.repo_id,
            tag,
            signed=any(f.name == SIGNATURE_NAME for f in files),
        ).encode()
        expected = {f.name: f.blake3 for f in files}
        result = PublishResult(self.name, "planned" if dry_run else "done", f"{self.repo_id}@{tag}")
        with (
            _hub_session(self.policy.timeout),
            tempfile.TemporaryDirectory(prefix="release-hf-verify-") as tmp,
        ):
            cache = Path(tmp)
            return self._publish(
                release_dir, manifest, files, card, expected, tag, result, cache, dry_run, force
            )

    def _publish(
        self,
        release_dir: Path,
        manifest: Manifest,
        files: list[LocalFile],
        card: bytes,
        expected: dict[str, str],
        tag: str,
        result: PublishResult,
        cache: Path,
        dry_run: bool,
        force: bool,
    ) -> PublishResult:
        act = result.actions.append
        exists = self._call("read the repository", lambda: self.api.repo_exists(self.repo_id))
        tagged = self._tag_target(tag) if exists else None
        if tagged is not None:
            same, differ = self._compare_at(tagged, expected, cache)
            result.skipped = same
            if not differ:
                result.state = "planned" if dry_run else "skipped"
                result.verified = not dry_run
                result.message = f"identical release already tagged {tag}"
                return result
            if not force:
                result.refused = differ
                message = (
                    f"{self.where}: tag {tag} holds other files ({', '.join(differ)} "
                    f"differ{'s' if len(differ) == 1 else ''} from the build); versions are immutable: "
                    "bump [model] version in release.toml, or pass --force to move the tag"
                )
                if dry_run:
                    result.message = message.split(": ", 1)[1]
                    return result
                raise VersionExistsError(message)

        main = self._main_state() if exists else {}
        upload, unchanged = [], []
        for f in files:
            blob, lfs = main.get(f.name, (None, None))
            same = (lfs is not None and lfs == _sha256(f.path)) or (
                lfs is None and blob == _git_sha1(f.path)
            )
            (unchanged if same else upload).append(f.name)
        card_blob, card_lfs = main.get(CARD, (None, None))
        card_same = (
            card_lfs is None
            and card_blob == hashlib.sha1(b"blob %d\0" % len(card) + card).hexdigest()
        )
        stale = sorted(set(main) - set(expected) - set(HUB_FILES))
        if not exists:
            act(
                f"create model repo {self.repo_id} ({'private' if self.target.private else 'public'})"
            )
        changes = len(upload) + (0 if card_same else 1) + len(stale)
        if changes:
            act(
                f"commit to main: upload {len(upload)} file(s)"
                + ("" if card_same else " + README.md (model card)")
                + (f", {len(unchanged)} already there" if unchanged else "")
                + (
                    f", delete {len(stale)} left by an older release ({', '.join(stale)})"
                    if stale
                    else ""
                )
            )
        else:
            act("commit to main: nothing to change (every file is already there)")
        act(f"download the {len(files) + 1} files at the commit and check each blake3")
        if tagged is not None:
            act(f"move tag {tag} from {tagged[:12]} to the new commit (--force)")
        else:
            act(f"tag the commit {tag}")
        result.uploaded = upload
        result.skipped = unchanged
        if dry_run:
            return result

        if not exists:
            self._call(
                "create the repository",
                lambda: self.api.create_repo(
                    self.repo_id, private=self.target.private, exist_ok=True
                ),
            )
        oid = self._call(
            "commit the release",
            lambda: self._commit(manifest, files, card, stale),
        )
        expected_all = {**expected, CARD: checksums.blake3_bytes(card)}
        same, differ = self._compare_at(oid, expected_all, cache)
        if differ:
            raise IntegrityError(
                f"{self.where}: commit {oid[:12]} does not hold the build's files "
                f"({', '.join(differ)} differ on download); tag {tag} not created: run the same command again"
            )
        if tagged is not None and tagged != oid:
            self._call("delete the old tag", lambda: self._delete_tag(tag))
        self._call("tag the release", lambda: self._tag(tag, oid))
        result.verified = True
        log.info("%s: %s tagged %s (commit %s)", self.where, manifest.version, tag, oid[:12])
        return result

    def _commit(
        self, manifest: Manifest, files: list[LocalFile], card: bytes, stale: list[str]
    ) -> str:
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete

        # Fresh operations on every attempt: huggingface_hub refuses to reuse committed ones.
        ops: list[Any] = [CommitOperationAdd(f.name, str(f.path)) for f in files]
        ops.append(CommitOperationAdd(CARD, card))
        ops += [CommitOperationDelete(p) for p in stale]
        info = self.api.create_commit(
            self.repo_id,
            ops,
            commit_message=f"{manifest.model} {manifest.version}",
            commit_description=(
                f"Published by fastai-release: {len(files)} files; {MANIFEST_NAME} blake3 "
                f"{next(f.blake3 for f in files if f.name == MANIFEST_NAME)}"
            ),
        )
        return info.oid

    def _tag(self, tag: str, oid: str) -> None:
        from huggingface_hub.errors import HfHubHTTPError

        try:
            self.api.create_tag(self.repo_id, tag=tag, revision=oid, tag_message=f"release {tag}")
        except HfHubHTTPError as e:
            if e.response is None or e.response.status_code != 409:
                raise
            there = self._tag_target(tag)  # an earlier attempt may have made it, reply lost
            if there != oid:
                raise RemoteError(
                    f"{self.where}: tag {tag} appeared meanwhile, pointing at {str(there)[:12]}, not {oid[:12]}; "
                    "another publish is running? Run the same command again"
                ) from None

    def _delete_tag(self, tag: str) -> None:
        from huggingface_hub.errors import RevisionNotFoundError

        with contextlib.suppress(RevisionNotFoundError):  # gone already: an earlier attempt
            self.api.delete_tag(self.repo_id, tag=tag)

    # --- verify -------------------------------------------------------------------------------

    def verify(self, manifest: Manifest) -> None:
        """Download every file at the tag and check it against `manifest`.

        Raises:
            IntegrityError: the tag is missing, or a file is missing or differs.
            RemoteError: the Hub failed, after retries.
        """
        tag = self.target.tag(manifest.model, manifest.version)
        with _hub_session(self.policy.timeout), tempfile.TemporaryDirectory() as tmp:
            oid = self._tag_target(tag)
            if oid is None:
                raise IntegrityError(f"{self.where}: no tag {tag}")
            expected = {f.name: f.blake3 for f in manifest.files}
            _, differ = self._compare_at(tag, expected, Path(tmp))
            differ = [d for d in differ if d not in (MANIFEST_NAME, SIGNATURE_NAME)]
            if differ:
                raise IntegrityError(
                    f"{self.where}: tag {tag} does not match the manifest ({', '.join(differ)})"
                )
