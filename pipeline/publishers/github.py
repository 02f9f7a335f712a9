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
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse

from pipeline.checksums import Blake3Stream
from pipeline.config import GitHubTarget
from pipeline.errors import ConfigError, IntegrityError, RemoteError, VersionExistsError
from pipeline.manifest import MANIFEST_NAME, Manifest, verify_dir
from pipeline.publishers.base import LocalFile, PublishResult, local_files
from pipeline.publishers.remote import Redactor, classify_github
from pipeline.publishers.settings import PublishSettings
from pipeline.retry import RetryPolicy

log = logging.getLogger("pipeline.publish")
CHUNK = 1 << 20
NOTES_LIMIT = 120_000  # GitHub refuses release bodies over 125,000 characters
PROGRESS_MIN = 4 << 20  # log upload progress for files at least this big


def _size(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


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


class GitHubPublisher:
    """Publishes a release directory as a GitHub release (see the module docstring)."""

    name = "github"

    def __init__(
        self,
        target: GitHubTarget,
        settings: PublishSettings,
        *,
        policy: RetryPolicy | None = None,
    ):
        if target.repo is None:
            raise ConfigError('publish.github.repo: expected "owner/name", found nothing')
        self.target = target
        self.repo_name = target.repo
        self.settings = settings
        self.policy = policy or RetryPolicy()
        self.redact = Redactor(settings.secrets())
        self._gh: Any = None
        self._repo: Any = None

    # --- plumbing -----------------------------------------------------------------------------

    @property
    def where(self) -> str:
        return f"GitHub {self.repo_name}"

    def _call(self, operation: str, fn: Any) -> Any:
        return self.policy.run(
            fn,
            what=f"{self.where}: {operation}",
            classify=lambda e: classify_github(e, self.policy.wall),
            describe=self.redact.describe,
        )

    def _client(self) -> Any:
        if self._gh is None:
            from github import Auth, Github

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
        url = urlparse(self.settings.github_api_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ConfigError(
                f"GITHUB_API_URL: expected an http(s) URL like https://api.github.com or "
                f"https://github.example.com/api/v3, found {self.settings.github_api_url!r}"
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
                    f"{var} cannot see it; check [publish.github] repo in release.toml and the token's access"
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

    def publish(
        self, release_dir: Path, manifest: Manifest, *, dry_run: bool = False, force: bool = False
    ) -> PublishResult:
        """Publish (or plan) this release on GitHub. Idempotent; see the module docstring.

        Raises:
            IntegrityError: the build does not match its manifest, or a re-download does not
                match what was uploaded (that asset is deleted; run again).
            VersionExistsError: the release (or its draft) holds other files and `force` is off.
            RemoteError: GitHub failed or refused, after retries.
        """
        release_dir = Path(release_dir)
        verify_dir(release_dir, manifest)
        if self._repo is None:
            self.check()
        files = local_files(release_dir, manifest)
        tag = self.target.tag(manifest.model, manifest.version)
        title = self.target.release_name.format(model=manifest.model, version=manifest.version)
        result = PublishResult(
            self.name, "planned" if dry_run else "done", f"{self.repo_name} release {tag}"
        )
        published, drafts = self._find(tag)
        release = published or (drafts[0] if drafts else None)
        act = result.actions.append

        if release is None:
            act(f"create draft release {tag} ({title!r})")
            identical, unfinished, different, upload = [], [], [], list(files)
        else:
            assets = self._assets(release)
            identical, unfinished, different, upload = self._compare(assets, files)
        result.skipped = identical
        for extra in drafts[1:]:
            act(f"delete duplicate draft release {extra.id} (left by an interrupted run)")
        if published is not None and not upload and not different:
            result.state = "planned" if dry_run else "skipped"
            result.verified = not dry_run
            result.message = "identical release already published"
            return result
        if different and not force:
            result.refused = sorted(a.name for a in different)
            what = "published release" if published is not None else "draft release"
            message = (
                f"{self.where}: {what} {tag} holds other files "
                f"({', '.join(result.refused)} differ{'s' if len(result.refused) == 1 else ''} from the build); "
                "versions are immutable: bump [model] version in release.toml, or pass --replace to replace them"
            )
            if dry_run:
                result.message = message.split(": ", 1)[1]
                result.uploaded = [f.name for f in upload if f.name not in result.refused]
                return result
            raise VersionExistsError(message)
        if published is not None:
            act(f"turn published release {tag} back into a draft while its files are replaced")
        for a in unfinished:
            act(f"delete unfinished upload {a.name}")
        for a in different:
            act(f"delete {a.name} (differs from the build; --replace)")
        for f in upload:
            act(f"upload {f.name} ({_size(f.size)})")
        if upload:
            act(f"download the {len(upload)} uploaded file(s) again and check each blake3")
        act(f"publish release {tag} with report.md as its notes")
        result.uploaded = [f.name for f in upload]
        if dry_run:
            return result

        for extra in drafts[1:]:
            self._call(f"delete duplicate draft {extra.id}", extra.delete_release)
        if release is None:
            attempts = {"n": 0}
            release = self._call(
                f"create draft release {tag}",
                lambda: self._create_draft(tag, title, attempts),
            )
        elif published is not None:
            release = self._call(
                f"unpublish release {tag}",
                lambda: release.update_release(
                    name=release.name or title,
                    message=release.body or "",
                    draft=True,
                    prerelease=release.prerelease,
                ),
            )
        for a in [*unfinished, *different]:
            self._call(f"delete asset {a.name}", a.delete_asset)
        uploaded = {f.name: self._upload(release, f) for f in upload}
        for f in upload:
            got = self._digest(uploaded[f.name])
            if got != f.blake3:
                self._call(f"delete asset {f.name}", uploaded[f.name].delete_asset)
                raise IntegrityError(
                    f"{self.where}: {f.name} reads back with blake3 {got[:16]}…, the build has "
                    f"{f.blake3[:16]}…; deleted that asset and left release {tag} a draft: "
                    "run the same command again to upload it again"
                )
        notes = self._notes(release_dir, tag, files)
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
        result.verified = True
        log.info("%s: release %s published with %d files", self.where, tag, len(files))
        return result

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
            log.info("%s: uploaded %s (%s)", self.where, f.name, _size(f.size))
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
        if self._repo is None:
            self.check()
        tag = self.target.tag(manifest.model, manifest.version)
        published, _ = self._find(tag)
        if published is None:
            raise IntegrityError(f"{self.where}: no published release {tag}")
        assets = {a.name: a for a in self._assets(published) if a.state == "uploaded"}
        problems = []
        for entry in manifest.files:
            a = assets.get(entry.name)
            if a is None:
                problems.append(f"{entry.name}: missing")
            elif self._digest(a) != entry.blake3:
                problems.append(f"{entry.name}: blake3 differs from the manifest")
        if MANIFEST_NAME not in assets:
            problems.append(f"{MANIFEST_NAME}: missing")
        else:
            data = self._call(
                f"download {MANIFEST_NAME}",
                lambda: b"".join(assets[MANIFEST_NAME].download_asset(None, chunk_size=CHUNK)[2]),
            )
            if Manifest.from_json(data) != manifest:
                problems.append(f"{MANIFEST_NAME}: differs from the build's manifest")
        if problems:
            raise IntegrityError(
                f"{self.where}: release {tag} does not match the build:\n"
                + "\n".join(f"  - {p}" for p in problems)
            )
