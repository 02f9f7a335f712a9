"""A GitHub Releases emulator (GitHub Enterprise URL shape) that the unmodified PyGithub talks to.

Usage:

    with GitHubEmulator(tokens={"ghp_test": "alice"}, repos=["alice/models"]) as gh:
        Github(base_url=gh.api_url, auth=Auth.Token("ghp_test"), retry=None, ...)
        gh.releases("alice/models")            # every release as GitHub's JSON (drafts included)
        gh.asset_bytes(asset_id)               # what was uploaded
        gh.public_url("alice/models", "v1.0.0", "export.pkl")  # public download (302 to storage)

Public API (small on purpose; clients of the download side rely on it):
    api_url                       `{url}/api/v3`, what GITHUB_API_URL is set to
    releases(repo), asset_bytes(id), public_url(repo, tag, name), add_repo(repo),
    add_release(repo, tag, draft, assets, unfinished)   seed what an earlier run left
    fail(), reset_connection(), slow()   (tests.emulators.base) N x any status, resets, late replies
    rate_limit(reset_at, ...)     primary rate limit: 403 + X-RateLimit-Remaining: 0 + Reset
    secondary_rate_limit(...)     403 + Retry-After;  too_many_requests(...): 429 + Retry-After
    corrupt(name, times)          the next downloads of that asset read back with one byte flipped
    log / count() / writes() / hook

Routes: GET /user; GET /repos/{o}/{r}; releases: list, by id, by tag (published only; drafts are
404 by tag, as on github.com), latest, create, update (un-draft creates the tag), delete; assets:
list, get (JSON, or 302 to storage with Accept: application/octet-stream), rename (PATCH), delete; upload at
`{url}/api/uploads/repos/{o}/{r}/releases/{id}/assets?name=&label=` (a duplicate name is 422
already_exists; a body cut short leaves an asset in state "starter", as GitHub does); storage at
`/api/storage/{id}/{name}` (no auth); public `/{o}/{r}/releases/download/{tag}/{name}` (published
releases only) answering 302 to storage; storage answers with an ETag and 304 to a matching
If-None-Match, as GitHub's asset storage does, and so do the API's JSON answers (a weak ETag).
Tokens: `Authorization: token|Bearer T`; a token is
"write" unless given as `(login, "read")`, which gets push: false and 403 on writes.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import quote, unquote

from tests.emulators.base import Aborted, Emulator, Reply, Request

PREFIX = "/api/v3"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Asset:
    id: int
    name: str
    label: str
    content_type: str
    data: bytes
    state: str = "uploaded"  # "starter" = an upload that never finished
    created_at: str = field(default_factory=_now)


@dataclass
class Release:
    id: int
    tag_name: str
    name: str
    body: str
    draft: bool
    prerelease: bool
    target_commitish: str
    created_at: str = field(default_factory=_now)
    published_at: str | None = None
    assets: dict[int, Asset] = field(default_factory=dict)


@dataclass
class Repo:
    full_name: str
    releases: dict[int, Release] = field(default_factory=dict)
    tags: set[str] = field(default_factory=set)


class GitHubEmulator(Emulator):
    name = "github"

    def __init__(
        self,
        tokens: dict[str, str | tuple[str, str]] | None = None,
        repos: list[str] | tuple[str, ...] = ("alice/models",),
    ) -> None:
        super().__init__()
        self.tokens: dict[str, tuple[str, str]] = {
            t: (v, "write") if isinstance(v, str) else v
            for t, v in (tokens or {"ghp_test": "alice"}).items()
        }
        self.repos: dict[str, Repo] = {r: Repo(r) for r in repos}
        self._ids = itertools.count(1000)
        self._corrupt: dict[str, int] = {}
        self.rate_remaining = 5000

    # --- public helpers -----------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        return self.url + PREFIX

    def add_repo(self, full_name: str) -> None:
        with self.lock:
            self.repos.setdefault(full_name, Repo(full_name))

    def add_release(
        self,
        repo: str,
        tag: str,
        draft: bool = False,
        assets: dict[str, bytes] | None = None,
        unfinished: dict[str, bytes] | None = None,
    ) -> int:
        """Seed a release (as an earlier run or a person left it); returns its id. `unfinished`
        assets are in state "starter", as an upload cut short leaves them."""
        with self.lock:
            r = self.repos[repo]
            rel = Release(next(self._ids), tag, tag, "", draft, False, "main")
            if not draft:
                rel.published_at = _now()
                r.tags.add(tag)
            for name, data in (assets or {}).items():
                a = Asset(next(self._ids), name, "", "application/octet-stream", data)
                rel.assets[a.id] = a
            for name, data in (unfinished or {}).items():
                a = Asset(next(self._ids), name, "", "application/octet-stream", data, "starter")
                rel.assets[a.id] = a
            r.releases[rel.id] = rel
            return rel.id

    def releases(self, repo: str) -> list[dict]:
        """Every release of `repo` (drafts too) as the API's JSON, oldest first."""
        with self.lock:
            r = self.repos[repo]
            return [
                self._release_json(r, rel)
                for rel in sorted(r.releases.values(), key=lambda x: x.id)
            ]

    def asset_bytes(self, asset_id: int) -> bytes:
        with self.lock:
            return self._find_asset(asset_id)[2].data

    def public_url(self, repo: str, tag: str, name: str) -> str:
        return f"{self.url}/{repo}/releases/download/{quote(tag)}/{quote(name)}"

    def corrupt(self, name: str, times: int = 1) -> None:
        """The next `times` downloads of any asset called `name` return one flipped byte."""
        with self.lock:
            self._corrupt[name] = self._corrupt.get(name, 0) + times

    def rate_limit(
        self, method: str = "GET", pattern: str = ".", reset_at: int | None = None, times: int = 1
    ) -> None:
        """Primary rate limit: 403 with X-RateLimit-Remaining 0 until `reset_at` (epoch seconds)."""
        reset = reset_at if reset_at is not None else int(time.time()) + 1
        self.fail(
            method,
            pattern,
            403,
            times,
            headers={
                "X-RateLimit-Limit": "5000",
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": str(reset),
                "X-RateLimit-Resource": "core",
            },
            body={
                "message": "API rate limit exceeded for user ID 1.",
                "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api",
            },
        )

    def secondary_rate_limit(
        self, method: str = "POST", pattern: str = ".", retry_after: int = 1, times: int = 1
    ) -> None:
        """Secondary rate limit: 403 with Retry-After."""
        self.fail(
            method,
            pattern,
            403,
            times,
            headers={"Retry-After": str(retry_after)},
            body={
                "message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
            },
        )

    def too_many_requests(
        self, method: str = "GET", pattern: str = ".", retry_after: int = 1, times: int = 1
    ) -> None:
        self.fail(
            method,
            pattern,
            429,
            times,
            headers={"Retry-After": str(retry_after)},
            body={"message": "Too many requests"},
        )

    # --- JSON shapes --------------------------------------------------------------------------

    def _asset_json(self, repo: Repo, rel: Release, a: Asset) -> dict:
        tag = rel.tag_name if not rel.draft else f"untagged-{rel.id:x}"
        return {
            "id": a.id,
            "node_id": f"RA_{a.id}",
            "url": f"{self.api_url}/repos/{repo.full_name}/releases/assets/{a.id}",
            "browser_download_url": f"{self.url}/{repo.full_name}/releases/download/{quote(tag)}/{quote(a.name)}",
            "name": a.name,
            "label": a.label,
            "state": a.state,
            "content_type": a.content_type,
            "size": len(a.data),
            "digest": "sha256:" + hashlib.sha256(a.data).hexdigest()
            if a.state == "uploaded"
            else None,
            "download_count": 0,
            "created_at": a.created_at,
            "updated_at": a.created_at,
            "uploader": {"login": "uploader"},
        }

    def _release_json(self, repo: Repo, rel: Release) -> dict:
        base = f"{self.api_url}/repos/{repo.full_name}"
        tag = rel.tag_name if not rel.draft else f"untagged-{rel.id:x}"
        return {
            "id": rel.id,
            "node_id": f"RE_{rel.id}",
            "url": f"{base}/releases/{rel.id}",
            "assets_url": f"{base}/releases/{rel.id}/assets",
            "upload_url": f"{self.url}/api/uploads/repos/{repo.full_name}/releases/{rel.id}/assets{{?name,label}}",
            "html_url": f"{self.url}/{repo.full_name}/releases/tag/{quote(tag)}",
            "tarball_url": f"{base}/tarball/{quote(rel.tag_name)}",
            "zipball_url": f"{base}/zipball/{quote(rel.tag_name)}",
            "tag_name": rel.tag_name,
            "target_commitish": rel.target_commitish,
            "name": rel.name,
            "body": rel.body,
            "draft": rel.draft,
            "prerelease": rel.prerelease,
            "immutable": False,
            "created_at": rel.created_at,
            "published_at": rel.published_at,
            "author": {"login": "alice"},
            "assets": [
                self._asset_json(repo, rel, a)
                for a in sorted(rel.assets.values(), key=lambda x: x.id)
            ],
        }

    # --- routing ------------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        self.rate_remaining = max(0, self.rate_remaining - 1)
        return {
            "X-RateLimit-Limit": "5000",
            "X-RateLimit-Remaining": str(self.rate_remaining),
            "X-RateLimit-Reset": str(int(time.time()) + 3600),
            "X-RateLimit-Used": str(5000 - self.rate_remaining),
            "X-RateLimit-Resource": "core",
        }

    @staticmethod
    def _error(status: int, message: str, **extra: object) -> Reply:
        return Reply.json({"message": message, **extra}, status)

    @classmethod
    def _already_exists(cls, resource: str, field: str | None = None) -> Reply:
        """GitHub's 422 for a tag or an asset name that is taken (`field`: the one that is)."""
        error = {"resource": resource, "code": "already_exists"}
        if field is not None:
            error["field"] = field
        return cls._error(422, "Validation Failed", errors=[error])

    def _find_asset(self, asset_id: int) -> tuple[Repo, Release, Asset]:
        for repo in self.repos.values():
            for rel in repo.releases.values():
                if asset_id in rel.assets:
                    return repo, rel, rel.assets[asset_id]
        raise KeyError(asset_id)

    def route(self, req: Request) -> Reply:
        with self.lock:
            reply = self._route(req)
        if req.method == "GET" and reply.status == 200 and req.path.startswith(PREFIX + "/"):
            # the REST API's conditional requests: a weak ETag per JSON answer, 304 when the
            # client already has it (GitHub does not count a 304 against the rate limit)
            etag = 'W/"' + hashlib.sha256(reply.body).hexdigest()[:32] + '"'
            if etag in [t.strip() for t in req.headers.get("If-None-Match", "").split(",")]:
                reply = Reply(304, b"")
            reply.headers["ETag"] = etag
        reply.headers.update(self._headers())
        return reply

    def _route(self, req: Request) -> Reply:
        parts = [unquote(p) for p in req.path.strip("/").split("/")]
        m = req.method
        if req.path.startswith("/api/storage/"):
            return self._storage(parts[2], req.headers.get("If-None-Match"))
        if req.path.startswith("/api/uploads/repos/"):
            # api/uploads/repos/{o}/{r}/releases/{id}/assets
            return self._upload(req, f"{parts[3]}/{parts[4]}", int(parts[6]))
        if not req.path.startswith(PREFIX + "/"):
            # /{o}/{r}/releases/download/{tag}/{name}: public, no auth
            if len(parts) == 6 and parts[2:4] == ["releases", "download"]:
                return self._public_download(f"{parts[0]}/{parts[1]}", parts[4], parts[5])
            # /{o}/{r}/releases/latest/download/{name}: 302 to the latest release's public URL
            if len(parts) == 6 and parts[2:5] == ["releases", "latest", "download"]:
                return self._public_latest(f"{parts[0]}/{parts[1]}", parts[5])
            return self._error(404, "Not Found")
        parts = parts[2:]  # strip api/v3
        token = req.token()
        if token is None and (m not in ("GET", "HEAD") or parts == ["user"]):
            return self._error(401, "Requires authentication")
        if token is not None and token not in self.tokens:
            return self._error(401, "Bad credentials")
        # anonymous reads of a public repository, as on github.com (no drafts)
        login, scope = self.tokens[token] if token is not None else ("", "read")
        if parts == ["user"] and m == "GET":
            return Reply.json({"login": login, "id": 1, "type": "User"})
        if len(parts) < 3 or parts[0] != "repos":
            return self._error(404, "Not Found")
        full = f"{parts[1]}/{parts[2]}"
        repo = self.repos.get(full)
        if repo is None:
            return self._error(404, "Not Found")
        rest = parts[3:]
        if m not in ("GET", "HEAD") and scope != "write":
            return self._error(403, "Resource not accessible by personal access token")
        if not rest and m == "GET":
            return Reply.json(
                {
                    "id": 1,
                    "name": parts[2],
                    "full_name": full,
                    "owner": {"login": parts[1]},
                    "private": False,
                    "default_branch": "main",
                    "url": f"{self.api_url}/repos/{full}",
                    "html_url": f"{self.url}/{full}",
                    "permissions": {"admin": False, "push": scope == "write", "pull": True},
                }
            )
        if rest[:1] != ["releases"]:
            return self._error(404, "Not Found")
        rest = rest[1:]
        if not rest:
            if m == "GET":
                rels = sorted(repo.releases.values(), key=lambda r: -r.id)
                if scope != "write":
                    rels = [r for r in rels if not r.draft]
                return Reply.json([self._release_json(repo, r) for r in rels])
            if m == "POST":
                return self._create_release(repo, req.json() or {})
        if rest[0] == "tags" and len(rest) == 2 and m == "GET":
            for rel in repo.releases.values():
                if rel.tag_name == rest[1] and not rel.draft:
                    return Reply.json(self._release_json(repo, rel))
            return self._error(404, "Not Found")
        if rest == ["latest"] and m == "GET":
            published = [r for r in repo.releases.values() if not r.draft and not r.prerelease]
            if not published:
                return self._error(404, "Not Found")
            return Reply.json(
                self._release_json(repo, max(published, key=lambda r: r.published_at or ""))
            )
        if rest[0] == "assets" and len(rest) == 2:
            return self._asset(req, repo, int(rest[1]))
        if rest[0].isdigit():
            rel = repo.releases.get(int(rest[0]))
            if rel is None:
                return self._error(404, "Not Found")
            if len(rest) == 1:
                if m == "GET":
                    return Reply.json(self._release_json(repo, rel))
                if m == "PATCH":
                    return self._update_release(repo, rel, req.json() or {})
                if m == "DELETE":
                    del repo.releases[rel.id]
                    return Reply(204)
            if rest[1:] == ["assets"] and m == "GET":
                return Reply.json(
                    [
                        self._asset_json(repo, rel, a)
                        for a in sorted(rel.assets.values(), key=lambda x: x.id)
                    ]
                )
        return self._error(404, "Not Found")

    def _tag_taken(self, repo: Repo, tag: str, other_than: int | None = None) -> bool:
        return any(
            r.tag_name == tag and not r.draft and r.id != other_than for r in repo.releases.values()
        )

    def _create_release(self, repo: Repo, data: dict) -> Reply:
        tag = data.get("tag_name")
        if not tag:
            return self._error(
                422, "Validation Failed", errors=[{"field": "tag_name", "code": "missing_field"}]
            )
        draft = bool(data.get("draft", False))
        if not draft and self._tag_taken(repo, tag):
            return self._already_exists("Release", "tag_name")
        rel = Release(
            id=next(self._ids),
            tag_name=tag,
            name=data.get("name") or tag,
            body=data.get("body") or "",
            draft=draft,
            prerelease=bool(data.get("prerelease", False)),
            target_commitish=data.get("target_commitish") or "main",
        )
        if not draft:
            rel.published_at = _now()
            repo.tags.add(tag)
        repo.releases[rel.id] = rel
        return Reply.json(self._release_json(repo, rel), 201)

    def _update_release(self, repo: Repo, rel: Release, data: dict) -> Reply:
        tag = data.get("tag_name", rel.tag_name)
        draft = bool(data.get("draft", rel.draft))
        if not draft and self._tag_taken(repo, tag, other_than=rel.id):
            return self._already_exists("Release", "tag_name")
        rel.tag_name = tag
        rel.name = data.get("name", rel.name)
        rel.body = data.get("body", rel.body)
        rel.prerelease = bool(data.get("prerelease", rel.prerelease))
        if rel.draft and not draft:
            rel.published_at = _now()
            repo.tags.add(tag)
        rel.draft = draft
        return Reply.json(self._release_json(repo, rel))

    def _asset(self, req: Request, repo: Repo, asset_id: int) -> Reply:
        for rel in repo.releases.values():
            if asset_id in rel.assets:
                a = rel.assets[asset_id]
                if req.method == "DELETE":
                    del rel.assets[asset_id]
                    return Reply(204)
                if req.method == "PATCH":  # rename (and relabel), as GitHub's "update an asset"
                    data = req.json() or {}
                    name = data.get("name", a.name)
                    if any(o.name == name and o.id != a.id for o in rel.assets.values()):
                        return self._already_exists("ReleaseAsset")
                    a.name, a.label = name, data.get("label", a.label)
                    return Reply.json(self._asset_json(repo, rel, a))
                if req.method == "GET":
                    if "application/octet-stream" in req.headers.get("Accept", ""):
                        if a.state != "uploaded":
                            return self._error(404, "Not Found")
                        return Reply(302, headers={"Location": self._storage_url(a)})
                    return Reply.json(self._asset_json(repo, rel, a))
        return self._error(404, "Not Found")

    def _storage_url(self, a: Asset) -> str:
        return f"{self.url}/api/storage/{a.id}/{quote(a.name)}?X-Amz-Signature=emulated"

    def _upload(self, req: Request, full: str, release_id: int) -> Reply:
        token = req.token()
        if token not in self.tokens:
            return self._error(401, "Bad credentials")
        if self.tokens[token][1] != "write":
            return self._error(403, "Resource not accessible by personal access token")
        repo = self.repos.get(full)
        rel = repo.releases.get(release_id) if repo else None
        if repo is None or rel is None:
            return self._error(404, "Not Found")
        name = req.query.get("name", "")
        if any(a.name == name for a in rel.assets.values()):
            return self._already_exists("ReleaseAsset", "name")
        asset = Asset(
            id=next(self._ids),
            name=name,
            label=req.query.get("label", ""),
            content_type=req.headers.get("Content-Type", "application/octet-stream"),
            data=b"",
            state="starter",
        )
        rel.assets[asset.id] = asset  # visible while the body streams in, as on GitHub
        self.lock.release()  # let other requests proceed while a large body arrives
        try:
            data = req.body(partial=True)
        finally:
            self.lock.acquire()
        asset.data = data
        if not req.complete():
            raise Aborted  # the client went away: the asset stays in state "starter"
        asset.state = "uploaded"
        return Reply.json(self._asset_json(repo, rel, asset), 201)

    def _serve(self, a: Asset, if_none_match: str | None = None) -> Reply:
        data = a.data
        etag = '"0x' + hashlib.sha256(a.data).hexdigest()[:16].upper() + '"'  # as Azure storage
        if if_none_match is not None and etag in [t.strip() for t in if_none_match.split(",")]:
            return Reply(304, b"", {"ETag": etag})
        if self._corrupt.get(a.name, 0) > 0:
            self._corrupt[a.name] -= 1
            data = bytes([data[0] ^ 0xFF]) + data[1:] if data else b"x"
        return Reply(200, data, {"Content-Type": "application/octet-stream", "ETag": etag})

    def _storage(self, asset_id: str, if_none_match: str | None = None) -> Reply:
        try:
            _, _, a = self._find_asset(int(asset_id))
        except (KeyError, ValueError):
            return self._error(404, "Not Found")
        if a.state != "uploaded":
            return self._error(404, "Not Found")
        return self._serve(a, if_none_match)

    def _public_download(self, full: str, tag: str, name: str) -> Reply:
        repo = self.repos.get(full)
        if repo is not None:
            for rel in repo.releases.values():
                if rel.tag_name == tag and not rel.draft:
                    for a in rel.assets.values():
                        if a.name == name and a.state == "uploaded":
                            return Reply(302, headers={"Location": self._storage_url(a)})
        return Reply(404, b"Not Found", {"Content-Type": "text/plain"})

    def _public_latest(self, full: str, name: str) -> Reply:
        repo = self.repos.get(full)
        published = [
            r for r in (repo.releases.values() if repo else ()) if not r.draft and not r.prerelease
        ]
        if not published:
            return Reply(404, b"Not Found", {"Content-Type": "text/plain"})
        latest = max(published, key=lambda r: r.published_at or "")
        return Reply(302, headers={"Location": self.public_url(full, latest.tag_name, name)})


def asset_names(release: dict) -> set[str]:
    """Names of a release JSON's uploaded assets."""
    return {a["name"] for a in release["assets"] if a["state"] == "uploaded"}
