"""A small, in-memory server speaking the Hugging Face Hub HTTP protocol, for offline tests.

The real ``huggingface_hub`` client (and ``transformers``' ``push_to_hub`` / ``from_pretrained``) is pointed at
``http://127.0.0.1:<port>`` through ``HF_ENDPOINT`` and runs unmodified against this server.  Every endpoint,
header and JSON shape below follows the client source of huggingface_hub 2.4 (see ``shared/hub-protocol.md``).

Stdlib only.  Usage::

    server, thread, endpoint = start_hub_server()
    hub = server.hub            # the FakeHub: repos, commits, request log
    ...
    stop_hub_server(server, thread)   # or server.stop()

Model
-----
* Repos are keyed by ``(repo_type, "ns/name")``; ``repo_type`` is ``"model"``, ``"dataset"`` or ``"space"``.
* Each commit is a 40-hex sha plus the FULL file tree ``{path: bytes}`` (a commit copies its parent's tree and
  applies ``file`` / ``lfsFile`` / ``deletedFile`` / ``deletedFolder`` operations).  ``Commit.lfs_paths`` tells
  which paths are stored through LFS.  A new repo starts with an "initial commit" holding ``.gitattributes``,
  like the real Hub.  Shas are deterministic (sha1 of repo, parent, message and tree).
* Revisions resolve by branch name (``main``, ``refs/pr/N``, created branches), tag, or commit sha (full, or a
  unique prefix of at least 7 characters).
* Files larger than ``FakeHub.lfs_threshold`` (1 MB) are answered ``"lfs"`` by preupload, so the client goes
  through the LFS batch endpoint and a PUT of the raw bytes to ``/__lfs__/{sha256}`` (verified on PUT).
* Every request is appended to ``FakeHub.requests`` as ``(method, path)`` (path without the query string).
* Writes require an ``Authorization: Bearer <anything>`` header (401 otherwise), as on the real Hub; the
  bearer tokens seen are collected in ``FakeHub.tokens_seen``.

Errors: 404 with ``X-Error-Code`` ``RepoNotFound`` / ``RevisionNotFound`` / ``EntryNotFound`` (the latter also
with ``X-Repo-Commit``, so that transformers caches the miss).  Unsupported routes and server-side exceptions
answer 501 (NOT 500: the client retries 5xx in (408, 429, 500, 502, 503, 504) with a multi-second backoff);
the exception tracebacks are kept in ``FakeHub.server_errors``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
import traceback
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

DEFAULT_USER = "test-user"
LFS_THRESHOLD = 1_000_000  # bytes; files strictly larger are uploaded through LFS
MAX_BODY = 1 << 30  # refuse request bodies above 1 GiB
TYPE_FROM_URL = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
GITATTRIBUTES = (
    b"*.bin filter=lfs diff=lfs merge=lfs -text\n"
    b"*.pt filter=lfs diff=lfs merge=lfs -text\n"
    b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
    b"*.msgpack filter=lfs diff=lfs merge=lfs -text\n"
    b"*.h5 filter=lfs diff=lfs merge=lfs -text\n"
    b"*.onnx filter=lfs diff=lfs merge=lfs -text\n"
)

Response = tuple[int, dict[str, str], bytes]


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob (what the Hub calls the ``oid`` / ETag of a regular file)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The git-lfs pointer file stored in git in place of an LFS file."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ("1", "true", "yes")


class HubError(Exception):
    """An HTTP error answer: status, message and optional ``X-Error-Code`` / extra headers / JSON body."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        body: dict | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}
        self.body = body


@dataclass
class Commit:
    oid: str
    parent: str | None
    title: str
    message: str
    files: dict[str, bytes]
    lfs_paths: frozenset[str]
    date: str

    def is_lfs(self, path: str) -> bool:
        return path in self.lfs_paths

    def blob_oid(self, path: str) -> str:
        """git oid of the blob stored in git (for LFS files: of the pointer file)."""
        data = self.files[path]
        if self.is_lfs(path):
            return git_blob_sha1(lfs_pointer(hashlib.sha256(data).hexdigest(), len(data)))
        return git_blob_sha1(data)

    def etag(self, path: str) -> str:
        """ETag served by /resolve: git blob sha1 for regular files, sha256 of the content for LFS files."""
        data = self.files[path]
        return hashlib.sha256(data).hexdigest() if self.is_lfs(path) else git_blob_sha1(data)

    def is_dir(self, path: str) -> bool:
        prefix = path.rstrip("/") + "/"
        return any(p.startswith(prefix) for p in self.files)


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool = False
    created_at: str = field(default_factory=_now)
    commits: dict[str, Commit] = field(default_factory=dict)  # insertion order = creation order
    branches: dict[str, str] = field(default_factory=dict)  # includes "refs/pr/N" for pull requests
    tags: dict[str, str] = field(default_factory=dict)
    pr_count: int = 0

    @property
    def head(self) -> Commit:
        return self.commits[self.branches["main"]]

    def resolve(self, revision: str) -> Commit | None:
        if revision in self.branches:
            return self.commits[self.branches[revision]]
        if revision in self.tags:
            return self.commits[self.tags[revision]]
        if revision in self.commits:
            return self.commits[revision]
        if 7 <= len(revision) < 40 and all(c in "0123456789abcdef" for c in revision):
            matches = [oid for oid in self.commits if oid.startswith(revision)]
            if len(matches) == 1:
                return self.commits[matches[0]]
        return None

    def history(self, commit: Commit) -> list[Commit]:
        """Commits from ``commit`` back to the root (bounded by the number of commits)."""
        out: list[Commit] = []
        current: Commit | None = commit
        while current is not None and len(out) <= len(self.commits):
            out.append(current)
            current = self.commits.get(current.parent) if current.parent else None
        return out

    @property
    def url_path(self) -> str:
        return URL_PREFIX[self.repo_type] + self.repo_id


class FakeHub:
    """In-memory Hub state plus the protocol logic (``handle``), independent of the HTTP transport."""

    def __init__(
        self, user: str = DEFAULT_USER, lfs_threshold: int = LFS_THRESHOLD, tree_page_size: int = 1000
    ):
        self.user = user
        self.lfs_threshold = lfs_threshold
        self.tree_page_size = tree_page_size
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs_blobs: dict[str, bytes] = {}  # sha256 -> content (uploaded through LFS PUT)
        self.requests: list[tuple[str, str]] = []
        self.tokens_seen: set[str] = set()
        self.server_errors: list[str] = []
        self.lock = threading.RLock()

    # ------------------------------------------------------------------ helpers for tests
    def count(self, method: str, path_contains: str = "") -> int:
        """Number of logged requests with this method whose path contains ``path_contains``."""
        with self.lock:
            return sum(1 for m, p in self.requests if m == method and path_contains in p)

    def clear_log(self) -> None:
        with self.lock:
            self.requests.clear()

    def get_repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        with self.lock:
            return self.repos[(repo_type, repo_id)]

    def create_repo(self, repo_id: str, repo_type: str = "model", private: bool = False) -> Repo:
        """Create a repo directly (no HTTP), with the usual initial commit holding ``.gitattributes``."""
        with self.lock:
            if (repo_type, repo_id) in self.repos:
                raise ValueError(f"{repo_type} repo {repo_id} exists")
            repo = Repo(repo_type=repo_type, repo_id=repo_id, private=private)
            self.repos[(repo_type, repo_id)] = repo
            self._new_commit(
                repo, "main", None, "initial commit", "", {".gitattributes": GITATTRIBUTES}, frozenset()
            )
            return repo

    def commit_files(
        self,
        repo_id: str,
        files: dict[str, bytes],
        *,
        repo_type: str = "model",
        message: str = "Seed files",
        revision: str = "main",
        lfs: frozenset[str] | set[str] = frozenset(),
    ) -> str:
        """Commit ``files`` directly (no HTTP), creating the repo if needed; returns the commit sha."""
        with self.lock:
            if (repo_type, repo_id) not in self.repos:
                self.create_repo(repo_id, repo_type)
            repo = self.repos[(repo_type, repo_id)]
            parent = repo.commits[repo.branches[revision]]
            tree = dict(parent.files)
            tree.update(files)
            lfs_paths = (set(parent.lfs_paths) - set(files)) | set(lfs)
            for path in lfs:
                self.lfs_blobs[hashlib.sha256(tree[path]).hexdigest()] = tree[path]
            return self._new_commit(repo, revision, parent.oid, message, "", tree, frozenset(lfs_paths)).oid

    def file_bytes(self, repo_id: str, path: str, revision: str = "main", repo_type: str = "model") -> bytes:
        with self.lock:
            commit = self.repos[(repo_type, repo_id)].resolve(revision)
            if commit is None:
                raise KeyError(revision)
            return commit.files[path]

    # ------------------------------------------------------------------ core
    def _new_commit(
        self,
        repo: Repo,
        branch: str,
        parent: str | None,
        title: str,
        message: str,
        files: dict[str, bytes],
        lfs_paths: frozenset[str],
    ) -> Commit:
        h = hashlib.sha1()
        h.update(
            f"{repo.repo_type}/{repo.repo_id}\n{parent}\n{len(repo.commits)}\n{title}\n{message}\n".encode()
        )
        for path in sorted(files):
            h.update(f"{path}\0{git_blob_sha1(files[path])}\0{path in lfs_paths}\n".encode())
        commit = Commit(h.hexdigest(), parent, title, message, files, lfs_paths & frozenset(files), _now())
        repo.commits[commit.oid] = commit
        repo.branches[branch] = commit.oid
        return commit

    def handle(self, method: str, raw_path: str, query: str, headers, body: bytes, base_url: str) -> Response:
        """Answer one request: returns (status, headers, body)."""
        with self.lock:
            self.requests.append((method, raw_path))
            auth = headers.get("Authorization") or ""
            if auth.startswith("Bearer "):
                self.tokens_seen.add(auth[len("Bearer ") :])
        try:
            with self.lock:
                return self._route(
                    method, raw_path, parse_qs(query, keep_blank_values=True), headers, body, base_url
                )
        except HubError as err:
            out_headers = {"X-Error-Message": err.message, **err.headers}
            if err.code:
                out_headers["X-Error-Code"] = err.code
            return _json(
                err.status, err.body if err.body is not None else {"error": err.message}, out_headers
            )
        except Exception as exc:  # reported to the client (501) and kept for the test
            tb = traceback.format_exc()
            with self.lock:
                self.server_errors.append(tb)
            msg = f"FakeHub internal error: {exc!r}"
            return _json(501, {"error": msg}, {"X-Error-Message": msg[:500]})

    def _route(self, method: str, raw_path: str, q: dict, headers, body: bytes, base: str) -> Response:
        parts = [unquote(p) for p in raw_path.split("/")[1:]]
        if parts and parts[-1] == "" and len(parts) > 1:
            parts = parts[:-1]
        if parts[:1] == ["api"]:
            rest = parts[1:]
            if rest == ["whoami-v2"] and method == "GET":
                self._require_auth(headers)
                return _json(200, self._whoami())
            if rest == ["repos", "create"] and method == "POST":
                self._require_auth(headers)
                return self._create_repo(_load_json(body), base)
            if rest == ["repos", "delete"] and method == "DELETE":
                self._require_auth(headers)
                return self._delete_repo(_load_json(body))
            if rest == ["validate-yaml"] and method == "POST":
                return _json(200, {"errors": [], "warnings": []})
            if len(rest) >= 3 and rest[0] in TYPE_FROM_URL:
                repo = self._repo(TYPE_FROM_URL[rest[0]], f"{rest[1]}/{rest[2]}")
                return self._repo_api(method, repo, rest[3:], q, headers, body, base)
            raise HubError(501, f"FakeHub: unsupported API route {method} {raw_path}")
        if parts[:1] == ["__lfs__"] and len(parts) == 2 and method == "PUT":
            return self._lfs_put(parts[1], body)
        repo_type = "model"
        if parts and parts[0] in ("datasets", "spaces") and len(parts) >= 3:
            repo_type, parts = TYPE_FROM_URL[parts[0]], parts[1:]
        if len(parts) >= 3:
            ns, name, rest = parts[0], parts[1], parts[2:]
            if name.endswith(".git") and rest == ["info", "lfs", "objects", "batch"] and method == "POST":
                self._require_auth(headers)
                repo = self._repo(repo_type, f"{ns}/{name[: -len('.git')]}")
                return self._lfs_batch(repo, _load_json(body), base)
            if rest[0] == "resolve" and len(rest) >= 3 and method in ("GET", "HEAD"):
                repo = self._repo(repo_type, f"{ns}/{name}")
                return self._resolve(repo, rest[1], "/".join(rest[2:]), headers)
        raise HubError(501, f"FakeHub: unsupported route {method} {raw_path}")

    def _repo_api(self, method: str, repo: Repo, rest: list[str], q: dict, headers, body: bytes, base: str):
        op = rest[0] if rest else ""
        if method == "GET" and not rest:
            return _json(200, self._info(repo, repo.head, q))
        if method == "GET" and op == "revision" and len(rest) == 2:
            return _json(200, self._info(repo, self._commit(repo, rest[1]), q))
        if method == "GET" and op == "tree" and len(rest) >= 2:
            return self._tree(repo, self._commit(repo, rest[1]), "/".join(rest[2:]), q, base)
        if method == "GET" and op == "refs" and len(rest) == 1:
            return _json(200, self._refs(repo, _truthy(_first(q, "include_prs"))))
        if method == "GET" and op == "commits" and len(rest) == 2:
            return _json(200, self._commits(repo, self._commit(repo, rest[1])))
        if method == "POST" and op == "paths-info" and len(rest) == 2:
            commit = self._commit(repo, rest[1])
            form = parse_qs(body.decode(), keep_blank_values=True)
            return _json(
                200, self._paths_info(repo, commit, form.get("paths", []), _truthy(_first(form, "expand")))
            )
        if method == "POST" and op == "preupload" and len(rest) == 2:
            self._require_auth(headers)
            return _json(
                200, self._preupload(repo, rest[1], _load_json(body), _truthy(_first(q, "create_pr")))
            )
        if method == "POST" and op == "commit" and len(rest) == 2:
            self._require_auth(headers)
            return self._commit_op(repo, rest[1], body, _truthy(_first(q, "create_pr")), base)
        if method == "POST" and op == "branch" and len(rest) == 2:
            self._require_auth(headers)
            return self._create_ref(
                repo, repo.branches, rest[1], _load_json(body).get("startingPoint"), "Branch"
            )
        if method == "DELETE" and op == "branch" and len(rest) == 2:
            self._require_auth(headers)
            if rest[1] == "main" or rest[1] not in repo.branches:
                raise HubError(404 if rest[1] != "main" else 403, f"Cannot delete branch {rest[1]}")
            del repo.branches[rest[1]]
            return _json(200, {})
        if method == "POST" and op == "tag" and len(rest) == 2:
            self._require_auth(headers)
            payload = _load_json(body)
            return self._create_ref(repo, repo.tags, payload.get("tag", ""), rest[1], "Tag")
        raise HubError(501, f"FakeHub: unsupported repo route {method} {'/'.join(rest)}")

    # ------------------------------------------------------------------ lookups
    def _require_auth(self, headers) -> None:
        auth = headers.get("Authorization") or ""
        if not auth.startswith("Bearer ") or not auth[len("Bearer ") :].strip():
            raise HubError(401, "Invalid credentials in Authorization header")

    def _repo(self, repo_type: str, repo_id: str) -> Repo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return repo

    def _commit(self, repo: Repo, revision: str) -> Commit:
        commit = repo.resolve(revision)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    # ------------------------------------------------------------------ endpoints
    def _whoami(self) -> dict:
        return {
            "type": "user",
            "id": hashlib.sha1(self.user.encode()).hexdigest()[:24],
            "name": self.user,
            "fullname": "Test User",
            "email": f"{self.user}@example.com",
            "emailVerified": True,
            "canPay": False,
            "isPro": False,
            "periodEnd": None,
            "avatarUrl": "",
            "orgs": [],
            "auth": {"type": "access_token", "accessToken": {"displayName": "fake", "role": "write"}},
        }

    def _create_repo(self, payload: dict, base: str) -> Response:
        name = payload.get("name")
        if not name or "/" in name:
            raise HubError(400, f"Invalid repo name {name!r}")
        repo_type = payload.get("type") or "model"
        if repo_type not in URL_PREFIX:
            raise HubError(400, f"Invalid repo type {repo_type!r}")
        repo_id = f"{payload.get('organization') or self.user}/{name}"
        url = f"{base}/{URL_PREFIX[repo_type]}{repo_id}"
        if (repo_type, repo_id) in self.repos:
            msg = f"You already created this {repo_type} repo"
            raise HubError(409, msg, body={"error": msg, "url": url})
        private = bool(payload.get("private")) or payload.get("visibility") == "private"
        self.create_repo(repo_id, repo_type, private=private)
        return _json(200, {"url": url, "name": repo_id, "id": repo_id})

    def _delete_repo(self, payload: dict) -> Response:
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload.get('organization') or self.user}/{payload.get('name')}"
        self._repo(repo_type, repo_id)
        del self.repos[(repo_type, repo_id)]
        return _json(200, {})

    def _info(self, repo: Repo, commit: Commit, q: dict) -> dict:
        blobs = _truthy(_first(q, "blobs"))
        siblings = []
        for path in sorted(commit.files):
            sibling: dict = {"rfilename": path}
            if blobs:
                data = commit.files[path]
                sibling.update(size=len(data), blobId=commit.blob_oid(path))
                if commit.is_lfs(path):
                    sha = hashlib.sha256(data).hexdigest()
                    sibling["lfs"] = {
                        "sha256": sha,
                        "size": len(data),
                        "pointerSize": len(lfs_pointer(sha, len(data))),
                    }
            siblings.append(sibling)
        info = {
            "_id": hashlib.sha1(f"{repo.repo_type}/{repo.repo_id}".encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": commit.oid,
            "lastModified": commit.date,
            "createdAt": repo.created_at,
            "private": repo.private,
            "disabled": False,
            "gated": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
        }
        if repo.repo_type == "model":
            info["modelId"] = repo.repo_id
        return info

    def _file_entry(self, repo: Repo, commit: Commit, path: str, expand: bool) -> dict:
        data = commit.files[path]
        entry: dict = {"type": "file", "oid": commit.blob_oid(path), "size": len(data), "path": path}
        if commit.is_lfs(path):
            sha = hashlib.sha256(data).hexdigest()
            entry["lfs"] = {"oid": sha, "size": len(data), "pointerSize": len(lfs_pointer(sha, len(data)))}
        if expand:
            entry["lastCommit"] = self._last_commit(repo, commit, path)
            entry["securityFileStatus"] = {"status": "safe"}
        return entry

    def _dir_entry(self, repo: Repo, commit: Commit, path: str, expand: bool) -> dict:
        prefix = path + "/"
        h = hashlib.sha1(path.encode())
        for p in sorted(commit.files):
            if p.startswith(prefix):
                h.update(f"{p}\0{commit.blob_oid(p)}\n".encode())
        entry: dict = {"type": "directory", "oid": h.hexdigest(), "size": 0, "path": path}
        if expand:
            entry["lastCommit"] = self._last_commit(repo, commit, path)
        return entry

    def _last_commit(self, repo: Repo, commit: Commit, path: str) -> dict:
        def snapshot(c: Commit) -> dict:
            return {p: d for p, d in c.files.items() if p == path or p.startswith(path + "/")}

        found = commit
        for c in repo.history(commit):
            parent = repo.commits.get(c.parent) if c.parent else None
            found = c
            if parent is None or snapshot(parent) != snapshot(c):
                break
        return {"id": found.oid, "title": found.title, "date": found.date}

    def _tree(self, repo: Repo, commit: Commit, path: str, q: dict, base: str) -> Response:
        path = path.strip("/")
        recursive = _truthy(_first(q, "recursive"))
        expand = _truthy(_first(q, "expand"))
        if path and path not in commit.files and not commit.is_dir(path):
            raise HubError(
                404, f"{path} does not exist on {commit.oid}", "EntryNotFound", {"X-Repo-Commit": commit.oid}
            )
        if path in commit.files:
            entries = [self._file_entry(repo, commit, path, expand)]
        else:
            prefix = path + "/" if path else ""
            files, dirs = [], set()
            for p in commit.files:
                if not p.startswith(prefix):
                    continue
                segs = p[len(prefix) :].split("/")
                for i in range(1, len(segs)):
                    if recursive or i == 1:
                        dirs.add(prefix + "/".join(segs[:i]))
                if recursive or len(segs) == 1:
                    files.append(p)
            entries = [self._dir_entry(repo, commit, d, expand) for d in sorted(dirs)]
            entries += [self._file_entry(repo, commit, f, expand) for f in sorted(files)]
        cursor = int(_first(q, "cursor") or 0)
        page = entries[cursor : cursor + self.tree_page_size]
        headers = {}
        if cursor + self.tree_page_size < len(entries):
            params = {k: v[0] for k, v in q.items()}
            params["cursor"] = str(cursor + self.tree_page_size)
            url = f"{base}/api/{repo.repo_type}s/{repo.repo_id}/tree/{quote(commit.oid)}"
            if path:
                url += "/" + quote(path, safe="")
            headers["Link"] = f'<{url}?{urlencode(params)}>; rel="next"'
        return _json(200, page, headers)

    def _paths_info(self, repo: Repo, commit: Commit, paths: list[str], expand: bool) -> list[dict]:
        out = []
        for path in paths:
            path = path.strip("/")
            if path in commit.files:
                out.append(self._file_entry(repo, commit, path, expand))
            elif path and commit.is_dir(path):
                out.append(self._dir_entry(repo, commit, path, expand))
        return out

    def _refs(self, repo: Repo, include_prs: bool) -> dict:
        def ref(kind: str, name: str, oid: str) -> dict:
            return {"name": name, "ref": f"refs/{kind}/{name}", "targetCommit": oid}

        out = {
            "branches": [
                ref("heads", n, o) for n, o in repo.branches.items() if not n.startswith("refs/pr/")
            ],
            "tags": [ref("tags", n, o) for n, o in repo.tags.items()],
            "converts": [],
        }
        if include_prs:
            out["pullRequests"] = [
                {"name": n.split("/")[-1], "ref": n, "targetCommit": o}
                for n, o in repo.branches.items()
                if n.startswith("refs/pr/")
            ]
        return out

    def _commits(self, repo: Repo, commit: Commit) -> list[dict]:
        return [
            {
                "id": c.oid,
                "title": c.title,
                "message": c.message,
                "date": c.date,
                "authors": [{"user": self.user, "avatar": ""}],
            }
            for c in repo.history(commit)
        ]

    def _create_ref(
        self, repo: Repo, refs: dict[str, str], name: str, start: str | None, kind: str
    ) -> Response:
        if not name:
            raise HubError(400, f"{kind} name is required")
        if name in refs:
            raise HubError(409, f"{kind} {name} already exists")
        refs[name] = self._commit(repo, start or "main").oid
        return _json(200, {})

    def _preupload(self, repo: Repo, revision: str, payload: dict, create_pr: bool) -> dict:
        commit = repo.resolve(revision)
        if commit is None and not create_pr:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        out = []
        for f in payload.get("files", []):
            path, size = f["path"], int(f.get("size", 0))
            mode = "lfs" if size > self.lfs_threshold else "regular"
            oid = None
            if commit is not None and path in commit.files:
                # The client skips files whose remote oid equals its local oid (sha256 for "lfs", git sha1 else).
                oid = commit.etag(path) if commit.is_lfs(path) else commit.blob_oid(path)
            out.append({"path": path, "uploadMode": mode, "shouldIgnore": False, "oid": oid})
        return {"files": out, "commitOid": commit.oid if commit else None}

    def _lfs_batch(self, repo: Repo, payload: dict, base: str) -> Response:
        if payload.get("operation") != "upload":
            raise HubError(501, "FakeHub: only the LFS 'upload' operation is supported")
        objects = []
        for obj in payload.get("objects", []):
            oid, size = obj["oid"], int(obj["size"])
            entry: dict = {"oid": oid, "size": size}
            if oid not in self.lfs_blobs:
                entry["actions"] = {"upload": {"href": f"{base}/__lfs__/{oid}"}}
            objects.append(entry)
        return _json(
            200, {"transfer": "basic", "objects": objects}, content_type="application/vnd.git-lfs+json"
        )

    def _lfs_put(self, oid: str, body: bytes) -> Response:
        actual = hashlib.sha256(body).hexdigest()
        if actual != oid:
            raise HubError(400, f"LFS upload: sha256 mismatch (expected {oid}, got {actual})")
        self.lfs_blobs[oid] = body
        return 200, {"Content-Length": "0"}, b""

    def _commit_op(self, repo: Repo, revision: str, body: bytes, create_pr: bool, base: str) -> Response:
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "Commit payload must start with a 'header' line")
        header = lines[0]["value"]
        base_commit = self._commit(repo, revision)
        if revision not in repo.branches and not create_pr:
            raise HubError(400, f"Cannot commit to {revision}: not a branch")
        parent_commit = header.get("parentCommit")
        if parent_commit and not base_commit.oid.startswith(parent_commit):
            raise HubError(412, "A commit has happened since. Please refresh and try again.")

        tree = dict(base_commit.files)
        lfs_paths = set(base_commit.lfs_paths)
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value", {})
            path = value.get("path", "")
            if key == "file":
                if value.get("encoding", "base64") != "base64":
                    raise HubError(400, f"Unsupported encoding {value.get('encoding')!r}")
                tree[path] = base64.b64decode(value["content"])
                lfs_paths.discard(path)
            elif key == "lfsFile":
                data = self.lfs_blobs.get(value["oid"])
                if data is None:
                    raise HubError(400, f"LFS file {path} ({value['oid']}) was not uploaded")
                if "size" in value and int(value["size"]) != len(data):
                    raise HubError(400, f"LFS file {path}: size mismatch")
                tree[path] = data
                lfs_paths.add(path)
            elif key == "deletedFile":
                if path not in tree:
                    raise HubError(
                        404,
                        f"A file with this name doesn't exist: {path}",
                        "EntryNotFound",
                        {"X-Repo-Commit": base_commit.oid},
                    )
                del tree[path]
            elif key == "deletedFolder":
                prefix = path.rstrip("/") + "/"
                doomed = [p for p in tree if p.startswith(prefix)]
                if not doomed:
                    raise HubError(
                        404,
                        f"A folder with this name doesn't exist: {path}",
                        "EntryNotFound",
                        {"X-Repo-Commit": base_commit.oid},
                    )
                for p in doomed:
                    del tree[p]
            else:
                raise HubError(400, f"Unknown commit operation {key!r}")

        pr_url = None
        branch = revision
        if create_pr:
            repo.pr_count += 1
            branch = f"refs/pr/{repo.pr_count}"
            pr_url = f"{base}/{repo.url_path}/discussions/{repo.pr_count}"
        commit = self._new_commit(
            repo,
            branch,
            base_commit.oid,
            header.get("summary") or "",
            header.get("description") or "",
            tree,
            frozenset(lfs_paths),
        )
        return _json(
            200,
            {
                "success": True,
                "commitOid": commit.oid,
                "commitUrl": f"{base}/{repo.url_path}/commit/{commit.oid}",
                "pullRequestUrl": pr_url,
                "hookOutput": "",
            },
        )

    def _resolve(self, repo: Repo, revision: str, path: str, headers) -> Response:
        commit = self._commit(repo, revision)
        if path not in commit.files:
            raise HubError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": commit.oid})
        data = commit.files[path]
        out = {
            "X-Repo-Commit": commit.oid,
            "ETag": f'"{commit.etag(path)}"',
            "Content-Type": "application/octet-stream",
            "Accept-Ranges": "bytes",
            "Content-Disposition": f'inline; filename="{path.rsplit("/", 1)[-1]}"',
        }
        range_header = headers.get("Range")
        if range_header and range_header.startswith("bytes="):
            start_s, _, end_s = range_header[len("bytes=") :].split(",")[0].partition("-")
            try:
                start = int(start_s) if start_s else max(len(data) - int(end_s), 0)
                end = int(end_s) if (start_s and end_s) else len(data) - 1
            except ValueError:
                start, end = 0, len(data) - 1
            if start >= len(data) and len(data) > 0:
                return 416, {**out, "Content-Range": f"bytes */{len(data)}"}, b""
            end = min(end, len(data) - 1)
            out["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            return 206, out, data[start : end + 1]
        return 200, out, data


def _first(q: dict, key: str) -> str | None:
    values = q.get(key)
    return values[0] if values else None


def _load_json(body: bytes) -> dict:
    if not body:
        return {}
    try:
        return json.loads(body)
    except ValueError as exc:
        raise HubError(400, f"Invalid JSON body: {exc}") from exc


def _json(
    status: int, payload, headers: dict[str, str] | None = None, content_type: str = "application/json"
) -> Response:
    return status, {"Content-Type": content_type, **(headers or {})}, json.dumps(payload).encode()


class _HubRequestHandler(BaseHTTPRequestHandler):
    # HTTP/1.0: one request per connection, so no keep-alive handler thread outlives ``stop``.
    protocol_version = "HTTP/1.0"
    server_version = "FakeHub/1.0"
    timeout = 30  # seconds a client may stay silent before its connection is dropped

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks, total = [], 0
            while True:  # bounded: ends at the 0-size chunk, at EOF, or past MAX_BODY
                size_line = self.rfile.readline(1024)
                if not size_line:
                    break
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline(1024)
                    break
                total += size
                if total > MAX_BODY:
                    raise HubError(413, "Request body too large")
                chunks.append(self.rfile.read(size))
                self.rfile.readline(1024)
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise HubError(413, "Request body too large")
        return self.rfile.read(length) if length > 0 else b""

    def _dispatch(self) -> None:
        hub: FakeHub = self.server.hub  # type: ignore[attr-defined]
        split = urlsplit(self.path)
        host, port = self.server.server_address[:2]
        base_url = f"http://{self.headers.get('Host') or f'{host}:{port}'}"
        try:
            body = self._read_body()
        except HubError as err:
            status, headers, payload = _json(err.status, {"error": err.message})
        else:
            status, headers, payload = hub.handle(
                self.command, split.path, split.query, self.headers, body, base_url
            )
        self.send_response(status)
        for key, value in headers.items():
            if key.lower() != "content-length":
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD" and payload:
            self.wfile.write(payload)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _dispatch

    def log_message(self, format: str, *args) -> None:  # silence per-request stderr logging
        pass


class HubHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    hub: FakeHub
    _thread: threading.Thread | None = None

    def stop(self, timeout: float = 5.0) -> None:
        stop_hub_server(self, self._thread, timeout=timeout)


def start_hub_server(
    hub: FakeHub | None = None, host: str = "127.0.0.1"
) -> tuple[HubHTTPServer, threading.Thread, str]:
    """Start a FakeHub server on a random free port; returns ``(server, thread, endpoint_url)``."""
    server = HubHTTPServer((host, 0), _HubRequestHandler)
    server.hub = hub if hub is not None else FakeHub()
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-hub-server", daemon=True
    )
    server._thread = thread
    thread.start()
    host_, port = server.server_address[:2]
    return server, thread, f"http://{host_}:{port}"


def stop_hub_server(server: HubHTTPServer, thread: threading.Thread | None, timeout: float = 5.0) -> None:
    """Stop serving, close the listening socket and join the server thread (idempotent)."""
    if thread is not None and thread.is_alive():
        server.shutdown()  # returns once serve_forever has exited
        thread.join(timeout)
    server.server_close()
