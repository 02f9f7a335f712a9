"""The Hugging Face Hub: one commit with every file and the model card, verified, then tagged.

The repo is laid out as huggingface_hub's own `push_to_hub_fastai` would lay it out, so the
snippet the Hub shows for `library_name: fastai` (`from_pretrained_fastai("org/name")`) works:
`model.pkl` (the quantized learner: the same LFS object as `export_quantized.pkl`, uploaded and
stored once) and `pyproject.toml` (the python, fastai and fastcore versions that wrote it), beside
the release's own files for our client. `from_pretrained_fastai` downloads the whole snapshot,
so only the variants in `[publish.huggingface] variants` go to the Hub (default quantized + onnx:
the 6x larger original stays on the other targets), and `main` holds only the newest release
(older ones are at their tags).

1. Create the model repo if it does not exist (private as configured).
2. If the tag (`v<version>`) exists: download every file at the tag and compare blake3.
   Identical -> nothing to do. Different, missing or extra files -> refused unless `force`.
3. One commit to main with all files plus README.md (the model card) and the deletion of files
   an older release left there; huggingface_hub skips files the Hub already holds, and a commit
   that changes nothing is not made (so a re-run after a kill adds no duplicate commit).
4. Download every file at that commit with `hf_hub_download` and check its blake3, then tag the
   commit. The tag is what users pin, so a tag exists only for a verified commit (with --force an
   existing tag is moved, after the new commit is verified).

huggingface_hub has its own backoff for uploads and downloads, and its default HTTP client has
no timeout: every call to the Hub runs in a `hub_session` (pipeline/publishers/hub_session.py),
which gives it the policy's timeouts and turns every transient failure into `HostUnavailable`
before the library's backoff sees it, so our one RetryPolicy decides.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import checksums
from pipeline.config import HubTarget
from pipeline.errors import IntegrityError, RemoteError
from pipeline.manifest import MANIFEST_NAME, QUANTIZED_FILE, SIGNATURE_NAME, Manifest
from pipeline.publishers import modelcard
from pipeline.publishers.base import Plan, local_files
from pipeline.publishers.hub_session import hub_session
from pipeline.publishers.remote import RemotePublisher, classify_hf
from pipeline.publishers.settings import PublishSettings
from pipeline.retry import Retry

log = logging.getLogger("pipeline.publish")
CARD = "README.md"
MODEL_PKL = "model.pkl"  # what from_pretrained_fastai loads: the quantized learner
PYPROJECT = "pyproject.toml"  # what from_pretrained_fastai reads the fastai/fastcore versions from
HUB_FILES = (CARD, ".gitattributes")  # in the repo, not compared as part of the release


@dataclass(frozen=True)
class HubFile:
    """One file of the Hub repo: a release file, or one of the Hub-only files (model.pkl,
    pyproject.toml), from a path or from bytes."""

    name: str
    content: Path | bytes
    size: int
    blake3: str


def pyproject_toml(manifest: Manifest) -> bytes:
    """pyproject.toml exactly as push_to_hub_fastai writes it, with the versions that wrote the
    release's pickles (from_pretrained_fastai checks fastai and fastcore against its minimums)."""
    env = manifest.environment
    pins = [f'"{k}={env[k]}"' for k in ("python", "fastai", "fastcore") if env.get(k)]
    return (
        "[build-system]\n"
        f'requires = ["setuptools>=40.8.0", "wheel", {", ".join(pins)}]\n'
        'build-backend = "setuptools.build_meta:__legacy__"\n'
    ).encode()


def hub_files(release_dir: Path, manifest: Manifest, variants: tuple[str, ...]) -> list[HubFile]:
    """What the Hub repo holds for this release, card aside: the release files of `variants`
    (and every file that belongs to no variant), the manifest and signature, model.pkl and
    pyproject.toml."""
    out = [
        HubFile(f.name, f.path, f.size, f.blake3)
        for f in local_files(release_dir, manifest)
        if f.name in (MANIFEST_NAME, SIGNATURE_NAME)
        or manifest.file(f.name).variant in (None, *variants)
    ]
    quantized = next((f for f in out if f.name == QUANTIZED_FILE), None)
    if quantized is not None:
        out.append(HubFile(MODEL_PKL, quantized.content, quantized.size, quantized.blake3))
        pyproject = pyproject_toml(manifest)
        out.append(HubFile(PYPROJECT, pyproject, len(pyproject), checksums.blake3_bytes(pyproject)))
    return out


@dataclass
class _HubState:
    """What a plan read from the Hub, for apply."""

    tag: str
    files: list[HubFile]
    card: bytes
    expected: dict[str, str]
    exists: bool
    tagged: str | None
    stale: list[str]


def _git_sha1(content: Path | bytes) -> str:
    if isinstance(content, bytes):
        return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()
    h = hashlib.sha1()
    h.update(b"blob %d\0" % content.stat().st_size)
    with open(content, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _sha256(content: Path | bytes) -> str:
    if isinstance(content, bytes):
        return hashlib.sha256(content).hexdigest()
    with open(content, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class HubPublisher(RemotePublisher):
    """Publishes a release directory to a Hugging Face Hub model repo (see the module docstring)."""

    name = "huggingface"
    target: HubTarget
    settings: PublishSettings
    _api: Any = None  # the HfApi, made on first use

    @property
    def repo_id(self) -> str:
        return self.repo

    @property
    def where(self) -> str:
        return f"Hugging Face {self.repo_id}"

    def _classify(self, exc: BaseException) -> Retry | None:
        return classify_hf(exc)

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
        self._require_http_url("HF_ENDPOINT", self.settings.hf_endpoint, "https://huggingface.co")
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

        with hub_session(self.policy.timeout):
            me = self._call("check the token", whoami)
        role = ((me.get("auth") or {}).get("accessToken") or {}).get("role")
        if role == "read":
            raise RemoteError(
                f"{self.where}: the token in HF_TOKEN is a read token; publishing needs a write "
                "token: set HF_TOKEN to one (https://huggingface.co/settings/tokens)"
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

        from pipeline.redaction import redact_request_logs

        redact_request_logs()  # the Hub redirects downloads to signed storage URLs

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

    def _compare_at(self, revision: str, expected: dict[str, str]) -> tuple[list[str], list[str]]:
        """(identical names, different/missing/extra names) of the files at `revision`."""
        with tempfile.TemporaryDirectory(prefix="release-hf-verify-") as tmp:
            return self._compare_in(revision, expected, Path(tmp))

    def _compare_in(
        self, revision: str, expected: dict[str, str], cache: Path
    ) -> tuple[list[str], list[str]]:
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

    # --- plan and apply -----------------------------------------------------------------------

    def _location(self, manifest: Manifest) -> str:
        return f"{self.repo_id}@{self.target.tag(manifest.model, manifest.version)}"

    def _files(self, release_dir: Path, manifest: Manifest) -> list[HubFile]:
        return hub_files(release_dir, manifest, self.target.variants)

    def _read(self, plan: Plan, files: list[HubFile]) -> None:
        manifest = plan.manifest
        tag = self.target.tag(manifest.model, manifest.version)
        card = modelcard.render(
            manifest,
            plan.release_dir,
            self.target,
            self.repo_id,
            tag,
            signed=any(f.name == SIGNATURE_NAME for f in files),
            hub_names=[f.name for f in files],
            manifest_blake3=next(f.blake3 for f in files if f.name == MANIFEST_NAME),
        ).encode()
        expected = {f.name: f.blake3 for f in files}
        with hub_session(self.policy.timeout):
            self._plan(plan, files, card, expected, tag)

    def _plan(
        self, plan: Plan, files: list[HubFile], card: bytes, expected: dict[str, str], tag: str
    ) -> None:
        act = plan.steps.append
        exists = self._call("read the repository", lambda: self.api.repo_exists(self.repo_id))
        tagged = self._tag_target(tag) if exists else None
        plan.state = _HubState(tag, files, card, expected, exists, tagged, [])
        if tagged is not None:
            plan.published = True
            same, differ = self._compare_at(tagged, expected)
            plan.skipped = same
            if not differ:
                plan.noop = True
                plan.message = f"identical release already tagged {tag}"
                return
            plan.refused = differ
            if not plan.force:
                return

        main = self._main_state() if exists else {}
        upload, unchanged = [], []
        for f in files:
            blob, lfs = main.get(f.name, (None, None))
            same = (lfs is not None and lfs == _sha256(f.content)) or (
                lfs is None and blob == _git_sha1(f.content)
            )
            (unchanged if same else upload).append(f.name)
        card_blob, card_lfs = main.get(CARD, (None, None))
        card_same = card_lfs is None and card_blob == _git_sha1(card)
        stale = sorted(set(main) - set(expected) - set(HUB_FILES))
        plan.state.stale = stale
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
        if MODEL_PKL in upload:
            act(f"{MODEL_PKL} is {QUANTIZED_FILE}'s LFS object: its bytes are uploaded once")
        act(f"download the {len(files) + 1} files at the commit and check each blake3")
        if tagged is not None:
            act(f"move tag {tag} from {tagged[:12]} to the new commit (--force)")
        else:
            act(f"tag the commit {tag}")
        plan.upload = upload
        plan.skipped = unchanged

    def _carry_out(self, plan: Plan) -> None:
        """One commit, read back, tag (module docstring). A commit that does not read back as
        the build gets no tag (IntegrityError)."""
        st: _HubState = plan.state
        with hub_session(self.policy.timeout):
            if not st.exists:
                self._call(
                    "create the repository",
                    lambda: self.api.create_repo(
                        self.repo_id, private=self.target.private, exist_ok=True
                    ),
                )
            oid = self._call(
                "commit the release",
                lambda: self._commit(plan.manifest, st.files, st.card, st.stale),
            )
            expected_all = {**st.expected, CARD: checksums.blake3_bytes(st.card)}
            _, differ = self._compare_at(oid, expected_all)
            if differ:
                raise IntegrityError(
                    f"{self.where}: commit {oid[:12]} does not hold the build's files "
                    f"({', '.join(differ)} differ on download); tag {st.tag} not created: run the same command again"
                )
            if st.tagged is not None and st.tagged != oid:
                self._call("delete the old tag", lambda: self._delete_tag(st.tag))
            self._call("tag the release", lambda: self._tag(st.tag, oid))
        log.info(
            "%s: %s tagged %s (commit %s)", self.where, plan.manifest.version, st.tag, oid[:12]
        )

    def _commit(
        self, manifest: Manifest, files: list[HubFile], card: bytes, stale: list[str]
    ) -> str:
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete

        # Fresh operations on every attempt: huggingface_hub refuses to reuse committed ones.
        def add(name: str, content: Path | bytes) -> Any:
            return CommitOperationAdd(name, content if isinstance(content, bytes) else str(content))

        ops: list[Any] = [add(f.name, f.content) for f in files]
        ops.append(add(CARD, card))
        # Identical bytes under two names (model.pkl, export_quantized.pkl): upload each content
        # once first; the commit then finds the other name's object already stored (the LFS
        # batch answers it without an upload action) and only names it.
        first: dict[str, Any] = {}
        for f, op in zip(files, ops, strict=False):
            first.setdefault(f.blake3, op)
        if len(first) < len(files):
            self.api.preupload_lfs_files(self.repo_id, additions=list(first.values()))
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
        with hub_session(self.policy.timeout):
            oid = self._tag_target(tag)
            if oid is None:
                raise IntegrityError(
                    f"{self.where}: no tag {tag}: {manifest.model} {manifest.version} is not "
                    "published there; publish it (`release publish --target huggingface`), or "
                    "check the version and [publish.huggingface] tag"
                )
            expected = {
                f.name: f.blake3
                for f in manifest.files
                if f.variant in (None, *self.target.variants)
            }
            quantized = next((f for f in manifest.files if f.name == QUANTIZED_FILE), None)
            if quantized is not None:
                expected[MODEL_PKL] = quantized.blake3
            _, differ = self._compare_at(tag, expected)
            differ = [d for d in differ if d not in (MANIFEST_NAME, SIGNATURE_NAME, PYPROJECT)]
            if differ:
                raise IntegrityError(
                    f"{self.where}: tag {tag} does not match the manifest ({', '.join(differ)}); "
                    "publish the build again with --force to replace them"
                )
