"""GitHub Releases, two-phase: draft -> upload -> verify -> publish (un-draft). PyGithub.

1. Find this version's release: a published one by tag, else its draft (the oldest one if an
   interrupted run left two; the others are deleted), else create a draft.
2. Compare what is already attached by size and blake3 (downloading it): identical files are
   skipped, unfinished uploads (state "starter") deleted, different or extra files refused unless
   `force` (`--replace`), which deletes them first. A published release is never changed unless
   forced, and then it goes back to draft while its assets are replaced.
3. Upload the missing files, with progress in the log.
4. Download every uploaded file again and check its blake3 (a mismatch deletes that asset and
   fails the target, so the next run uploads it again).
5. Publish the draft with report.md as the notes. Until then nobody sees the release.

Every step re-reads the remote state, so a run killed anywhere is finished by the next run
without duplicates. Requests go through one RetryPolicy (PyGithub's own retry is off).
"""

from __future__ import annotations

import logging
import mimetypes
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pipeline.checksums import Blake3Stream
from pipeline.config import GitHubTarget
from pipeline.errors import IntegrityError, RemoteError
from pipeline.manifest import Manifest
from pipeline.publishers.base import LocalFile, Plan, size_text
from pipeline.publishers.remote import RemotePublisher, classify_github
from pipeline.publishers.settings import PublishSettings
from pipeline.retry import Retry

log = logging.getLogger("pipeline.publish")
CHUNK = 1 << 20
NOTES_LIMIT = 120_000  # GitHub refuses release bodies over 125,000 characters
PROGRESS_MIN = 4 << 20  # log upload progress for files at least this big


class _ProgressReader:
    """A file wrapper that logs upload progress every 10% (requests reads it in blocks)."""

    def __init__(self, f: Any, size: int, label: str):
        self.f, self.size, self.label = f, size, label
        self.done = 0
        self._next = 10

    def __len__(self) -> int:
        return self.size

    def read(self, n: int = -1) -> bytes:
        chunk = self.f.read(n)
        self.done += len(chunk)
        if self.size >= PROGRESS_MIN and self.size and 100 * self.done // self.size >= self._next:
            pct = 100 * self.done // self.size
            log.info("%s: %d%% of %.1f MB", self.label, pct, self.size / 1e6)
            self._next = pct // 10 * 10 + 10
        return chunk

    def __iter__(self):  # noqa: ANN204
        while chunk := self.read(1 << 16):
            yield chunk


@dataclass
class _GitHubState:
    """What a plan read from GitHub, for apply."""

    tag: str
    title: str
    files: list[LocalFile]
    published: Any
    drafts: list[Any]
    release: Any
    unfinished: list[Any]
    different: list[Any]
    upload: list[LocalFile]


class GitHubPublisher(RemotePublisher):
    """Publishes a release directory as a GitHub release (see the module docstring)."""

    name = "github"
    target: GitHubTarget
    settings: PublishSettings
    _gh: Any = None  # the PyGithub client, made on first use
    _repo: Any = None  # the repository, read by check()

    @property
    def repo_name(self) -> str:
        return self.repo

    # --- plumbing -----------------------------------------------------------------------------

    @property
    def where(self) -> str:
        return f"GitHub {self.repo_name}"

    def _classify(self, exc: BaseException) -> Retry | None:
        return classify_github(exc, self.policy.wall)

    def _client(self) -> Any:
        if self._gh is None:
            from github import Auth, Github

            from pipeline.redaction import redact_request_logs

            redact_request_logs()  # asset downloads redirect to signed storage URLs (urllib3 DEBUG)

            self._gh = Github(
                base_url=self.settings.github_api_url,
                auth=Auth.Token(self.settings.github_token or ""),
                retry=None,  # one retry policy: ours
                timeout=max(1, int(self.policy.timeout)),
                per_page=100,
                seconds_between_requests=None,
                # GitHub asks for a pause between writes ([publish.github] pause_between_writes)
                seconds_between_writes=self.target.pause_between_writes or None,
            )
        return self._gh

    def check(self) -> None:
        """Token present and accepted, repository reachable and writable.

        Raises:
            ConfigError: GITHUB_API_URL is not an http(s) URL.
            RemoteError: no token, a rejected token, no such repository, or no write access.
        """
        self._require_http_url(
            "GITHUB_API_URL",
            self.settings.github_api_url,
            "https://api.github.com or https://github.example.com/api/v3",
        )
        var = self.settings.github_token_var
        if not self.settings.github_token:
            raise RemoteError(
                f"{self.where}: no token: set GITHUB_TOKEN (or GH_TOKEN) to a token that may write "
                f"releases of {self.repo_name} (in GitHub Actions: `permissions: contents: write` and "
                "`GITHUB_TOKEN: ${{ secrets.GITHUB_TOKEN }}` in the step's env)"
            )
        from github import GithubException, UnknownObjectException

        def fetch() -> Any:
            try:
                return self._client().get_repo(self.repo_name)
            except UnknownObjectException:
                raise RemoteError(
                    f"{self.where}: repository not found at {self.settings.github_api_url}, or the token in "
                    f"{var} cannot see it; check [publish.github] repo in {self.config_name} and the token's access"
                ) from None
            except GithubException as e:
                if e.status == 401:
                    raise RemoteError(
                        f"{self.where}: the token in {var} was rejected by {self.settings.github_api_url} "
                        f"({self.redact.describe(e)}); set {var} to a valid token"
                    ) from None
                raise

        self._repo = self._call("read the repository", fetch)
        permissions = (self._repo.raw_data or {}).get("permissions") or {}
        if permissions and not permissions.get("push"):
            raise RemoteError(
                f"{self.where}: the token in {var} may read but not write this repository; "
                "give it contents: write (in GitHub Actions: `permissions: contents: write`)"
            )
        self._checked = True

    # --- remote state -------------------------------------------------------------------------

    def _find_raw(self, tag: str) -> tuple[Any, list[Any]]:
        from github import UnknownObjectException

        try:
            return self._repo.get_release(tag), []
        except UnknownObjectException:
            pass  # drafts are not found by tag
        drafts = [r for r in self._repo.get_releases() if r.draft and r.tag_name == tag]
        return None, sorted(drafts, key=lambda r: r.id)

    def _find(self, tag: str) -> tuple[Any, list[Any]]:
        """(the published release for `tag` or None, this tag's drafts oldest first)."""
        return self._call(f"find release {tag}", lambda: self._find_raw(tag))

    def _assets(self, release: Any) -> list[Any]:
        return self._call(
            f"list assets of release {release.tag_name}", lambda: list(release.get_assets())
        )

    def _digest_raw(self, asset: Any) -> str:
        _, _, chunks = asset.download_asset(None, chunk_size=CHUNK)
        h = Blake3Stream()
        for chunk in chunks:
            h.update(chunk)
        return h.hexdigest()

    def _digest(self, asset: Any) -> str:
        """blake3 of an asset as a download returns it (streamed, nothing written to disk)."""
        return self._call(f"download {asset.name}", lambda: self._digest_raw(asset))

    def _compare(
        self, assets: list[Any], files: list[LocalFile]
    ) -> tuple[list[str], list[Any], list[Any], list[LocalFile]]:
        """(identical names, unfinished assets, different or extra assets, files to upload)."""
        by_name = {f.name: f for f in files}
        identical: list[str] = []
        unfinished, different = [], []
        present: set[str] = set()
        for a in assets:
            f = by_name.get(a.name)
            if a.state != "uploaded":
                unfinished.append(a)
                continue
            if f is None:
                different.append(a)
                continue
            present.add(a.name)
            if a.size == f.size and self._digest(a) == f.blake3:
                identical.append(a.name)
            else:
                different.append(a)
        different_names = {a.name for a in different}
        upload = [f for f in files if f.name not in present or f.name in different_names]
        return identical, unfinished, different, upload

    # --- publish ------------------------------------------------------------------------------

    def _location(self, manifest: Manifest) -> str:
        return f"{self.repo_name} release {self.target.tag(manifest.model, manifest.version)}"

    def _read(self, plan: Plan, files: list[LocalFile]) -> None:
        manifest = plan.manifest
        tag = self.target.tag(manifest.model, manifest.version)
        title = self.target.release_name.format(model=manifest.model, version=manifest.version)
        published, drafts = self._find(tag)
        release = published or (drafts[0] if drafts else None)
        act = plan.steps.append
        if release is None:
            act(f"create draft release {tag} ({title!r})")
            identical, unfinished, different, upload = [], [], [], list(files)
        else:
            identical, unfinished, different, upload = self._compare(self._assets(release), files)
        plan.skipped = identical
        plan.published = published is not None
        plan.state = _GitHubState(
            tag, title, files, published, drafts, release, unfinished, different, upload
        )
        for extra in drafts[1:]:
            act(f"delete duplicate draft release {extra.id} (left by an interrupted run)")
        if published is not None and not upload and not different:
            plan.noop = True
            plan.message = "identical release already published"
            return
        if different and published is not None:
            plan.refused = sorted(a.name for a in different)
            if not plan.force:
                plan.upload = [f.name for f in upload if f.name not in plan.refused]
                return
        if published is not None:
            act(f"turn published release {tag} back into a draft while its files are replaced")
        for a in unfinished:
            act(f"delete unfinished upload {a.name}")
        for a in different:
            act(
                f"delete {a.name} (differs from the build; --force)"
                if published is not None
                else f"delete {a.name} from the draft (an interrupted upload of other files)"
            )
        if upload:
            act(
                f"upload {len(upload)} file(s) to the draft, then download each again and check its blake3"
            )
        act(f"publish release {tag} with report.md as its notes")
        plan.upload = [f.name for f in upload]

    def _carry_out(self, plan: Plan) -> None:
        """Draft, upload, read back, publish (module docstring). A re-download that does not
        match deletes that asset and leaves the release a draft (IntegrityError)."""
        st: _GitHubState = plan.state
        tag, title, release = st.tag, st.title, st.release
        for extra in st.drafts[1:]:
            self._call(f"delete duplicate draft {extra.id}", extra.delete_release)
        if release is None:
            attempts = {"n": 0}
            release = self._call(
                f"create draft release {tag}",
                lambda: self._create_draft(tag, title, attempts),
            )
        elif st.published is not None:
            published = st.published
            release = self._call(
                f"unpublish release {tag}",
                lambda: published.update_release(
                    name=published.name or title,
                    message=published.body or "",
                    draft=True,
                    prerelease=published.prerelease,
                ),
            )
        for a in [*st.unfinished, *st.different]:
            self._call(f"delete asset {a.name}", a.delete_asset)
        uploaded = {f.name: self._upload(release, f) for f in st.upload}
        self._read_back(
            st.upload,
            lambda f: self._digest(uploaded[f.name]),
            lambda f: self._call(f"delete asset {f.name}", uploaded[f.name].delete_asset),
            label=lambda f: f.name,
            outcome=f"deleted that asset and left release {tag} a draft: run the same command "
            "again to upload it again",
        )
        notes = self._notes(plan.release_dir, tag, st.files)
        self._call(
            f"publish release {tag}",
            lambda: release.update_release(
                name=title,
                message=notes,
                draft=False,
                prerelease=self.target.prerelease,
                tag_name=tag,
                make_latest="legacy" if not self.target.prerelease else "false",
            ),
        )
        log.info("%s: release %s published with %d files", self.where, tag, len(st.files))

    def _create_draft(self, tag: str, title: str, attempts: dict[str, int]) -> Any:
        attempts["n"] += 1
        if attempts["n"] > 1:  # an earlier attempt may have created it before its reply was lost
            published, drafts = self._find_raw(tag)
            if published is not None or drafts:
                return published or drafts[0]
        return self._repo.create_git_release(
            tag, title, "", draft=True, prerelease=self.target.prerelease, make_latest="legacy"
        )

    def _upload(self, release: Any, f: LocalFile) -> Any:
        attempts = {"n": 0}
        content_type = mimetypes.guess_type(f.name)[0] or "application/octet-stream"
        label = f"{self.where}: upload {f.name}"

        def upload() -> Any:
            attempts["n"] += 1
            if attempts["n"] > 1:
                # A failed attempt may have left a finished asset (reply lost) or an unfinished one.
                for a in release.get_assets():
                    if a.name == f.name:
                        if (
                            a.state == "uploaded"
                            and a.size == f.size
                            and self._digest_raw(a) == f.blake3
                        ):
                            return a
                        a.delete_asset()
            with open(f.path, "rb") as fh:
                asset = release.upload_asset_from_memory(
                    _ProgressReader(fh, f.size, label), f.size, f.name, content_type
                )
            log.info("%s: uploaded %s (%s)", self.where, f.name, size_text(f.size))
            return asset

        return self._call(f"upload {f.name}", upload)

    def _notes(self, release_dir: Path, tag: str, files: list[LocalFile]) -> str:
        """report.md, with its images pointing at this release's assets."""
        path = release_dir / "report.md"
        text = path.read_text(encoding="utf-8") if path.is_file() else ""
        base = f"{self._repo.html_url}/releases/download/{quote(tag)}"
        for f in files:
            if f.name.endswith(".png"):
                text = text.replace(f"]({f.name})", f"]({base}/{quote(f.name)})")
        if len(text) > NOTES_LIMIT:
            text = text[:NOTES_LIMIT] + "\n\n(truncated: the full report is the report.md asset)\n"
        return text

    # --- verify -------------------------------------------------------------------------------

    def verify(self, manifest: Manifest) -> None:
        """Download the published release's files and check them against `manifest`.

        Raises:
            IntegrityError: a file is missing or differs, or the release is not published.
            RemoteError: GitHub failed, after retries.
        """
        self._ensure_checked()
        tag = self.target.tag(manifest.model, manifest.version)
        published, _ = self._find(tag)
        if published is None:
            raise IntegrityError(
                f"{self.where}: no published release {tag}: publish it (`release publish "
                "--target github`; a draft left by an interrupted run is finished by it)"
            )
        assets = {a.name: a for a in self._assets(published) if a.state == "uploaded"}
        self._compare_published(
            manifest,
            assets,
            lambda name: self._digest(assets[name]),
            lambda name: self._call(
                f"download {name}",
                lambda: b"".join(assets[name].download_asset(None, chunk_size=CHUNK)[2]),
            ),
            label=f"release {tag}",
            advice="publish the build again with --force to replace them",
        )
