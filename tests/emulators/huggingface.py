"""A Hugging Face Hub emulator (model repos) that the unmodified huggingface_hub talks to.

Usage (huggingface_hub reads HF_HUB_DISABLE_XET, HF_HUB_DISABLE_TELEMETRY and HF_HOME at import:
tests/conftest.py sets them before anything imports it; pass `endpoint=hub.url` to every call):

    with HubEmulator(tokens={"hf_test": "alice"}, orgs={"alice": ["acme"]}) as hub:
        HfApi(endpoint=hub.url, token="hf_test").create_repo("acme/m")
        hub.files("acme/m", "v1.0.0")     # {path: bytes} at a branch, tag or commit
        hub.tags("acme/m"), hub.commits("acme/m")   # tag -> commit oid; main's history, newest first

Public API (small on purpose; clients of the download side rely on it):
    url                                 what HF_ENDPOINT is set to
    files(repo, rev), tags(repo), commits(repo), add_repo(repo, files, private)
    stored_bytes(), batches             LFS storage used; the oids each LFS batch asked about
    fail(), reset_connection(), slow()  (tests.emulators.base) N x any status, resets, late replies
    corrupt(path, times)                the next GET of that file (any repo) has one byte flipped
    log / count() / writes() / hook

Routes: whoami-v2; repos/create (409 when it exists; a new repo gets an initial commit holding
.gitattributes, as on the Hub); model info at a revision; refs; tree; preupload (LFS for *.pkl,
*.bin, *.pt, *.pth, *.safetensors, *.png and anything over 10 MB, with the oid of the file already
at that revision); LFS batch "basic" (no actions for objects already stored), PUT upload (checks
sha256 and size), verify; NDJSON commit (header, file, lfsFile, deletedFile, deletedFolder);
tag create/delete; branch create (from main or startingPoint); validate-yaml; `HEAD|GET /{repo}/resolve/{rev}/{path}` with X-Repo-Commit,
ETag/X-Linked-Etag, X-Linked-Size, Range support, and X-Error-Code RepoNotFound /
RevisionNotFound / EntryNotFound. Revisions are routed on the raw (URL-encoded) path.
Tokens: `Authorization: Bearer T`; a token is "write" unless given as `(user, "read")`.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import quote, unquote

from tests.emulators.base import Emulator, Reply, Request

LFS_SUFFIXES = (".pkl", ".bin", ".pt", ".pth", ".safetensors", ".png")
LFS_MIN_SIZE = 10 * 1024 * 1024
GITATTRIBUTES = (
    b"*.pkl filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"
)


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass(frozen=True)
class Blob:
    data: bytes
    lfs: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def oid(self) -> str:
        """What preupload reports: sha256 for LFS files, the git blob sha1 otherwise."""
        return self.sha256 if self.lfs else git_sha1(self.data)


@dataclass
class Commit:
    oid: str
    parent: str | None
    files: dict[str, Blob]
    title: str
    date: str


@dataclass
class HubRepo:
    repo_id: str
    private: bool
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def resolve(self, rev: str) -> Commit | None:
        oid = self.branches.get(rev) or self.tags.get(rev) or rev
        return self.commits.get(oid)


class HubEmulator(Emulator):
    name = "huggingface"

    def __init__(
        self,
        tokens: dict[str, str | tuple[str, str]] | None = None,
        orgs: dict[str, list[str]] | None = None,
    ) -> None:
        super().__init__()
        self.tokens: dict[str, tuple[str, str]] = {
            t: (v, "write") if isinstance(v, str) else v
            for t, v in (tokens or {"hf_test": "alice"}).items()
        }
        self.orgs = orgs or {"alice": ["acme"]}
        self.repos: dict[str, HubRepo] = {}
        self.lfs: dict[str, bytes] = {}
        self.batches: list[list[str]] = []  # the oids of every LFS batch request, in order
        self._counter = itertools.count(1)
        self._corrupt: dict[str, int] = {}

    # --- public helpers -----------------------------------------------------------------------

    def add_repo(
        self, repo_id: str, files: dict[str, bytes] | None = None, private: bool = False
    ) -> None:
        with self.lock:
            self._create(repo_id, private)
            if files:
                self._commit(
                    self.repos[repo_id],
                    "main",
                    {p: Blob(d, self._is_lfs(p, len(d))) for p, d in files.items()},
                    set(),
                    "seed",
                )

    def files(self, repo_id: str, rev: str = "main") -> dict[str, bytes]:
        with self.lock:
            c = self.repos[repo_id].resolve(rev)
            assert c is not None, f"{repo_id}: no revision {rev}"
            return {p: b.data for p, b in c.files.items()}

    def tags(self, repo_id: str) -> dict[str, str]:
        with self.lock:
            return dict(self.repos[repo_id].tags)

    def commits(self, repo_id: str, branch: str = "main") -> list[str]:
        """The commit oids of `branch`, newest first."""
        with self.lock:
            r = self.repos[repo_id]
            out, oid = [], r.branches.get(branch)
            while oid:
                out.append(oid)
                oid = r.commits[oid].parent
            return out

    def stored_bytes(self) -> int:
        """Bytes in LFS storage (content-addressed: one object per distinct content)."""
        with self.lock:
            return sum(len(d) for d in self.lfs.values())

    def corrupt(self, path: str, times: int = 1) -> None:
        with self.lock:
            self._corrupt[path] = self._corrupt.get(path, 0) + times

    # --- state --------------------------------------------------------------------------------

    @staticmethod
    def _is_lfs(path: str, size: int) -> bool:
        return path.endswith(LFS_SUFFIXES) or size > LFS_MIN_SIZE

    def _new_oid(self, seed: str) -> str:
        return hashlib.sha1(f"{seed}-{next(self._counter)}".encode()).hexdigest()

    def _create(self, repo_id: str, private: bool) -> HubRepo:
        repo = HubRepo(repo_id, private)
        self.repos[repo_id] = repo
        self._commit(
            repo, "main", {".gitattributes": Blob(GITATTRIBUTES, False)}, set(), "initial commit"
        )
        return repo

    def _commit(
        self, repo: HubRepo, branch: str, add: dict[str, Blob], delete: set[str], title: str
    ) -> Commit:
        parent = repo.branches.get(branch)
        files = dict(repo.commits[parent].files) if parent else {}
        for p in delete:
            for q in [q for q in files if q == p or q.startswith(p.rstrip("/") + "/")]:
                del files[q]
        files.update(add)
        c = Commit(
            self._new_oid(repo.repo_id),
            parent,
            files,
            title,
            datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        )
        repo.commits[c.oid] = c
        repo.branches[branch] = c.oid
        return c

    # --- routing ------------------------------------------------------------------------------

    @staticmethod
    def _err(status: int, message: str, code: str | None = None) -> Reply:
        headers = {"X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        return Reply.json({"error": message}, status, headers)

    def _user(self, req: Request) -> tuple[str, str] | None:
        token = req.token()
        return self.tokens.get(token) if token else None

    def _can_write(self, user: tuple[str, str] | None, repo_id: str) -> bool:
        if user is None or user[1] != "write":
            return False
        ns = repo_id.split("/")[0]
        return ns == user[0] or ns in self.orgs.get(user[0], [])

    def _visible(self, req: Request, repo_id: str) -> HubRepo | None:
        repo = self.repos.get(repo_id)
        if repo is None:
            return None
        if repo.private:
            user = self._user(req)
            ns = repo_id.split("/")[0]
            if user is None or (ns != user[0] and ns not in self.orgs.get(user[0], [])):
                return None
        return repo

    def route(self, req: Request) -> Reply:
        with self.lock:
            return self._route(req)

    def _route(self, req: Request) -> Reply:
        raw = [p for p in req.path.split("/") if p]
        parts = [unquote(p) for p in raw]
        m = req.method
        if parts == ["api", "agent-harnesses"]:
            return Reply.json({"standardEnvVars": [], "harnesses": {}})
        if parts == ["api", "whoami-v2"]:
            user = self._user(req)
            if user is None:
                return self._err(401, "Invalid credentials in Authorization header")
            return Reply.json(
                {
                    "type": "user",
                    "name": user[0],
                    "fullname": user[0],
                    "orgs": [{"name": o, "type": "org"} for o in self.orgs.get(user[0], [])],
                    "auth": {
                        "type": "access_token",
                        "accessToken": {"displayName": "test", "role": user[1]},
                    },
                }
            )
        if parts == ["api", "validate-yaml"] and m == "POST":
            req.body()
            return Reply.json({"errors": [], "warnings": []})
        if parts == ["api", "repos", "create"] and m == "POST":
            return self._create_repo(req)
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            return self._api_model(req, f"{parts[2]}/{parts[3]}", raw[4:])
        if (
            len(parts) >= 2
            and parts[1].endswith(".git")
            and parts[2:] == ["info", "lfs", "objects", "batch"]
        ):
            return self._lfs_batch(req, f"{parts[0]}/{parts[1][:-4]}")
        if parts[:1] == ["_lfs"] and len(parts) >= 2:
            return self._lfs_object(req, parts[1], verify=parts[2:] == ["verify"])
        if len(parts) >= 5 and parts[2] == "resolve":
            return self._resolve(req, f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]))
        return self._err(404, "Not Found")

    def _create_repo(self, req: Request) -> Reply:
        data = req.json() or {}
        user = self._user(req)
        if user is None:
            return self._err(401, "Invalid credentials in Authorization header")
        repo_id = f"{data.get('organization') or user[0]}/{data['name']}"
        if not self._can_write(user, repo_id):
            return self._err(
                403, "You don't have the rights to create a model under this namespace"
            )
        if repo_id in self.repos:
            return Reply.json(
                {"error": "You already created this model repo", "url": f"{self.url}/{repo_id}"},
                409,
            )
        private = data.get("visibility") == "private" or bool(data.get("private"))
        self._create(repo_id, private)
        return Reply.json({"url": f"{self.url}/{repo_id}", "name": repo_id, "id": repo_id})

    def _api_model(self, req: Request, repo_id: str, raw_rest: list[str]) -> Reply:
        rest = [unquote(p) for p in raw_rest]
        m = req.method
        repo = self._visible(req, repo_id)
        if repo is None:
            return self._err(401, "Repository not found", "RepoNotFound")
        writes = m not in ("GET", "HEAD")
        if writes and not self._can_write(self._user(req), repo_id):
            return self._err(403, "You don't have write access to this repository")
        if not rest or rest[0] == "revision":
            rev = rest[1] if len(rest) > 1 else "main"
            c = repo.resolve(rev)
            if c is None:
                return self._err(404, f"Invalid rev id: {rev}", "RevisionNotFound")
            return Reply.json(
                {
                    "_id": repo_id,
                    "id": repo_id,
                    "modelId": repo_id,
                    "author": repo_id.split("/")[0],
                    "sha": c.oid,
                    "lastModified": c.date,
                    "private": repo.private,
                    "disabled": False,
                    "gated": False,
                    "downloads": 0,
                    "likes": 0,
                    "tags": [],
                    "siblings": [{"rfilename": p} for p in sorted(c.files)],
                }
            )
        if rest == ["refs"]:

            def ref(kind: str, name: str, oid: str) -> dict:
                return {"name": name, "ref": f"refs/{kind}/{name}", "targetCommit": oid}

            return Reply.json(
                {
                    "branches": [ref("heads", n, o) for n, o in repo.branches.items()],
                    "tags": [ref("tags", n, o) for n, o in repo.tags.items()],
                    "converts": [],
                    "pullRequests": [],
                }
            )
        if rest[0] == "tree" and len(rest) >= 2:
            c = repo.resolve(rest[1])
            if c is None:
                return self._err(404, f"Invalid rev id: {rest[1]}", "RevisionNotFound")
            prefix = "/".join(rest[2:])
            items = []
            for p in sorted(c.files):
                if prefix and not p.startswith(prefix.rstrip("/") + "/") and p != prefix:
                    continue
                b = c.files[p]
                item = {"type": "file", "oid": git_sha1(b.data), "size": len(b.data), "path": p}
                if b.lfs:
                    item["lfs"] = {"oid": b.sha256, "size": len(b.data), "pointerSize": 134}
                items.append(item)
            return Reply.json(items)
        if rest[0] == "preupload" and m == "POST":
            c = repo.resolve(rest[1]) if len(rest) > 1 else None
            data = req.json() or {}
            out = []
            for f in data.get("files", []):
                lfs = self._is_lfs(f["path"], int(f.get("size", 0)))
                there = c.files.get(f["path"]) if c else None
                out.append(
                    {
                        "path": f["path"],
                        "uploadMode": "lfs" if lfs else "regular",
                        "shouldIgnore": False,
                        "oid": (there.sha256 if lfs else git_sha1(there.data)) if there else None,
                    }
                )
            return Reply.json({"files": out, "commitOid": c.oid if c else None})
        if rest[0] == "branch" and len(rest) == 2 and m == "POST":
            if rest[1] in repo.branches or rest[1] in repo.tags:
                return self._err(409, f"Reference already exists: {rest[1]}")
            start = (req.json() or {}).get("startingPoint") or "main"
            c = repo.resolve(start)
            if c is None:
                return self._err(404, f"Invalid rev id: {start}", "RevisionNotFound")
            repo.branches[rest[1]] = c.oid
            return Reply.json({})
        if rest[0] == "commit" and m == "POST" and len(rest) == 2:
            return self._commit_route(req, repo, rest[1])
        if rest[0] == "tag" and len(rest) == 2:
            if m == "POST":
                c = repo.resolve(rest[1])
                if c is None:
                    return self._err(404, f"Invalid rev id: {rest[1]}", "RevisionNotFound")
                tag = (req.json() or {}).get("tag")
                if not tag:
                    return self._err(400, "tag is required")
                if tag in repo.tags or tag in repo.branches:
                    return self._err(409, f"Tag {tag} already exists")
                repo.tags[tag] = c.oid
                return Reply.json({})
            if m == "DELETE":
                if rest[1] not in repo.tags:
                    return self._err(404, f"Invalid rev id: {rest[1]}", "RevisionNotFound")
                del repo.tags[rest[1]]
                return Reply.json({})
        return self._err(404, "Not Found")

    def _commit_route(self, req: Request, repo: HubRepo, branch: str) -> Reply:
        if branch not in repo.branches:
            return self._err(404, f"Invalid rev id: {branch}", "RevisionNotFound")
        add: dict[str, Blob] = {}
        delete: set[str] = set()
        title = ""
        for line in req.body().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                title = value.get("summary", "")
                parent = value.get("parentCommit")
                if parent and parent != repo.branches[branch]:
                    return self._err(
                        412, "A commit has happened since. Please refresh and try again."
                    )
            elif key == "file":
                data = (
                    base64.b64decode(value["content"])
                    if value.get("encoding") == "base64"
                    else value["content"].encode()
                )
                add[value["path"]] = Blob(data, False)
            elif key == "lfsFile":
                data = self.lfs.get(value["oid"])
                if data is None or len(data) != value["size"]:
                    return self._err(
                        422, f"LFS object {value['oid']} for {value['path']} was never uploaded"
                    )
                add[value["path"]] = Blob(data, True)
            elif key in ("deletedFile", "deletedFolder"):
                delete.add(value["path"])
        c = self._commit(repo, branch, add, delete, title)
        return Reply.json(
            {
                "success": True,
                "commitOid": c.oid,
                "commitUrl": f"{self.url}/{repo.repo_id}/commit/{c.oid}",
                "hookOutput": "",
                "pullRequestUrl": None,
            }
        )

    def _lfs_batch(self, req: Request, repo_id: str) -> Reply:
        if self._visible(req, repo_id) is None:
            return self._err(401, "Repository not found", "RepoNotFound")
        if not self._can_write(self._user(req), repo_id):
            return self._err(403, "You don't have write access to this repository")
        data = req.json() or {}
        objects = []
        self.batches.append([o["oid"] for o in data.get("objects", [])])
        for o in data.get("objects", []):
            entry = {"oid": o["oid"], "size": o["size"], "authenticated": True}
            stored = self.lfs.get(o["oid"])
            if stored is None or len(stored) != o["size"]:
                entry["actions"] = {
                    "upload": {"href": f"{self.url}/_lfs/{o['oid']}"},
                    "verify": {"href": f"{self.url}/_lfs/{o['oid']}/verify"},
                }
            objects.append(entry)
        return Reply.json({"transfer": "basic", "objects": objects})

    def _lfs_object(self, req: Request, oid: str, verify: bool) -> Reply:
        if verify:
            data = req.json() or {}
            stored = self.lfs.get(oid)
            if stored is None or len(stored) != data.get("size"):
                return self._err(404, f"LFS object {oid} not found")
            return Reply.json({"success": True})
        if req.method != "PUT":
            return self._err(405, "Method not allowed")
        self.lock.release()  # large bodies stream in without blocking other requests
        try:
            body = req.body(partial=True)
        finally:
            self.lock.acquire()
        if not req.complete():
            return self._err(400, "incomplete upload")
        if hashlib.sha256(body).hexdigest() != oid:
            return self._err(400, f"sha256 of the upload is not {oid}")
        self.lfs[oid] = body
        return Reply(200)

    def _resolve(self, req: Request, repo_id: str, rev: str, path: str) -> Reply:
        repo = self._visible(req, repo_id)
        if repo is None:
            return self._err(401, "Repository not found", "RepoNotFound")
        c = repo.resolve(rev)
        if c is None:
            return self._err(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        blob = c.files.get(path)
        if blob is None:
            return self._err(404, f"Entry not found: {path}", "EntryNotFound")
        etag = blob.sha256 if blob.lfs else git_sha1(blob.data)
        headers = {
            "X-Repo-Commit": c.oid,
            "ETag": f'"{etag}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
            "Content-Disposition": f'inline; filename="{quote(path.rsplit("/", 1)[-1])}"',
        }
        if blob.lfs:
            headers["X-Linked-Etag"] = f'"{etag}"'
            headers["X-Linked-Size"] = str(len(blob.data))
        data = blob.data
        if req.method == "GET" and self._corrupt.get(path, 0) > 0:
            self._corrupt[path] -= 1
            data = bytes([data[0] ^ 0xFF]) + data[1:] if data else b"x"
        if req.method == "HEAD":
            headers["Content-Length"] = str(len(data))
            return Reply(200, b"", headers)
        if req.headers.get("If-None-Match") == headers["ETag"]:  # as the Hub's resolve answers
            return Reply(304, b"", headers)
        rng = re.match(r"bytes=(\d+)-(\d*)$", req.headers.get("Range", ""))
        if rng:
            start = int(rng.group(1))
            end = int(rng.group(2)) if rng.group(2) else len(data) - 1
            if start >= len(data):
                return Reply(416, b"", {"Content-Range": f"bytes */{len(data)}"})
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            return Reply(206, data[start : end + 1], headers)
        return Reply(200, data, headers)
