"""A local stand-in for the Hugging Face Hub, for the publishing tests: an in-process HTTP server on
127.0.0.1 that answers the routes huggingface_hub 2.4 and datasets 5.2 call to create a dataset repo,
read and change its settings, upload (preupload, LFS batch + PUT, NDJSON commit), list and download.

State lives in memory: repos with a commit history per branch, LFS objects by sha256, and a log of
every request, so tests can assert what was sent. `fail_commits` makes chosen commit requests fail.
Xet is not spoken here: the fixture sets `HF_HUB_DISABLE_XET` so uploads take the LFS path.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

#: The Hub stores a file as LFS when its first bytes hold a NUL (binary) or when it is this large.
LFS_SIZE = 10 * 1024 * 1024
GITATTRIBUTES = b"*.parquet filter=lfs diff=lfs merge=lfs -text\n"


def git_oid(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass(frozen=True)
class Blob:
    content: bytes
    lfs: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    def entry(self, path: str) -> dict:
        """The file as the tree and paths-info endpoints describe it."""
        out = {"type": "file", "path": path, "size": len(self.content), "oid": git_oid(self.content)}
        if self.lfs:
            out["lfs"] = {"oid": self.sha256, "size": len(self.content), "pointerSize": 134}
        return out


@dataclass
class Commit:
    oid: str
    title: str
    files: dict[str, Blob]
    date: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"))


@dataclass
class Repo:
    repo_id: str
    private: bool
    branches: dict[str, list[Commit]] = field(default_factory=dict)

    def commit(self, revision: str) -> Commit | None:
        if revision in self.branches:
            return self.branches[revision][-1]
        for history in self.branches.values():
            for commit in history:
                if commit.oid == revision:
                    return commit
        return None


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, retry_after: str | None = None,
                 **payload):
        super().__init__(message)
        self.status, self.message, self.code, self.retry_after = status, message, code, retry_after
        self.payload = {"error": message, **payload}


class LocalHub:
    """The server's state and the test helpers that read it."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request
        self.unhandled: list[tuple[str, str]] = []
        self.lfs_uploads: list[str] = []  # sha256 of every LFS object PUT
        self.preuploaded: list[str] = []  # paths of every file announced to the preupload endpoint
        self.commit_requests = 0
        self.fail_commits: dict[int, int] = {}  # 1-based commit request number -> HTTP status
        self.echo_authorization = False  # injected failures quote the request's Authorization header
        self.before_commit: dict[int, Callable[[], None]] = {}  # commit request number -> another writer
        self.settings_forbidden = False  # PUT .../settings answers 403 (a token without admin rights)
        self.lock = threading.Lock()
        self._counter = 0
        self._server: ThreadingHTTPServer | None = None

    # --- test helpers -----------------------------------------------------------------------

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        commit = self.repos[repo_id].commit(revision)
        return {path: blob.content for path, blob in commit.files.items()}

    def history(self, repo_id: str, branch: str = "main") -> list[Commit]:
        return list(self.repos[repo_id].branches[branch])

    def changes(self, repo_id: str, since: int = 0, branch: str = "main") -> list[list[str]]:
        """Per commit of `branch` after its first `since + 1`: the paths it added, changed or deleted."""
        history = self.repos[repo_id].branches[branch]
        out = []
        for before, after in zip(history[since:-1], history[since + 1 :]):
            paths = set(before.files) | set(after.files)
            out.append(sorted(p for p in paths if before.files.get(p) != after.files.get(p)))
        return out

    def add_repo(self, repo_id: str, private: bool = False, files: dict[str, bytes] | None = None) -> Repo:
        repo = Repo(repo_id, private)
        initial = {".gitattributes": Blob(GITATTRIBUTES, False)}
        for path, content in (files or {}).items():
            initial[path] = Blob(content, self._is_lfs(content[:512], len(content)))
        repo.branches["main"] = [Commit(self._new_oid(), "initial commit", initial)]
        self.repos[repo_id] = repo
        return repo

    def commit_files(self, repo_id: str, files: dict[str, bytes], branch: str = "main") -> Commit:
        """Commit `files` directly, as another writer would."""
        history = self.repos[repo_id].branches[branch]
        blobs = {p: Blob(c, self._is_lfs(c[:512], len(c))) for p, c in files.items()}
        history.append(Commit(self._new_oid(), "another writer", {**history[-1].files, **blobs}))
        return history[-1]

    # --- server -----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "LocalHub":
        hub = self

        class Handler(_Handler):
            state = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # --- routes -------------------------------------------------------------------------------

    def _new_oid(self) -> str:
        self._counter += 1
        return hashlib.sha1(f"commit-{self._counter}".encode()).hexdigest()

    @staticmethod
    def _is_lfs(sample: bytes, size: int) -> bool:
        return b"\0" in sample or size >= LFS_SIZE

    def _repo(self, repo_id: str) -> Repo:
        repo = self.repos.get(repo_id)
        if repo is None:
            raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return repo

    def _commit(self, repo: Repo, revision: str) -> Commit:
        commit = repo.commit(unquote(revision))
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    def create_repo(self, body: dict) -> tuple[int, dict]:
        repo_id = f"{body['organization']}/{body['name']}" if body.get("organization") else body["name"]
        if repo_id in self.repos:
            raise HubError(409, "You already created this dataset repo", url=f"{self.url}/datasets/{repo_id}")
        self.add_repo(repo_id, private=body.get("visibility") == "private")
        return 200, {"url": f"{self.url}/datasets/{repo_id}", "name": repo_id}

    def repo_info(self, repo_id: str, revision: str) -> tuple[int, dict]:
        repo = self._repo(repo_id)
        commit = self._commit(repo, revision)
        return 200, {
            "id": repo_id, "author": repo_id.split("/")[0], "sha": commit.oid, "private": repo.private,
            "gated": False, "disabled": False, "downloads": 0, "likes": 0, "tags": [],
            "lastModified": commit.date, "siblings": [{"rfilename": p} for p in sorted(commit.files)],
        }  # fmt: skip

    def update_settings(self, repo_id: str, body: dict) -> tuple[int, dict]:
        repo = self._repo(repo_id)
        if self.settings_forbidden:
            raise HubError(403, "You don't have the rights to change the settings of this repository")
        if "visibility" in body:
            repo.private = body["visibility"] == "private"
        return 200, {}

    def tree(self, repo_id: str, revision: str, path: str, recursive: bool) -> tuple[int, list]:
        commit = self._commit(self._repo(repo_id), revision)
        prefix = f"{path.strip('/')}/" if path.strip("/") else ""
        if prefix and not any(p.startswith(prefix) for p in commit.files):
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound")
        entries: dict[str, dict] = {}
        for file_path, blob in sorted(commit.files.items()):
            if not file_path.startswith(prefix):
                continue
            parts = file_path[len(prefix):].split("/")
            for depth in range(1, len(parts)):
                folder = prefix + "/".join(parts[:depth])
                if recursive or depth == 1:
                    entries.setdefault(folder, {"type": "directory", "path": folder, "size": 0,
                                                "oid": hashlib.sha1(folder.encode()).hexdigest()})
            if recursive or len(parts) == 1:
                entries[file_path] = blob.entry(file_path)
        return 200, [entries[k] for k in sorted(entries)]

    def paths_info(self, repo_id: str, revision: str, paths: list[str]) -> tuple[int, list]:
        commit = self._commit(self._repo(repo_id), revision)
        out = []
        for path in paths:
            path = path.strip("/")
            if path in commit.files:
                out.append(commit.files[path].entry(path))
            elif any(p.startswith(path + "/") for p in commit.files):
                out.append({"type": "directory", "path": path, "size": 0,
                            "oid": hashlib.sha1(path.encode()).hexdigest()})
        return 200, out

    def preupload(self, repo_id: str, revision: str, body: dict) -> tuple[int, dict]:
        commit = self._commit(self._repo(repo_id), revision)
        files = []
        self.preuploaded += [f["path"] for f in body["files"]]
        for f in body["files"]:
            lfs = self._is_lfs(base64.b64decode(f["sample"]), f["size"])
            remote = commit.files.get(f["path"])
            oid = None if remote is None else (remote.sha256 if remote.lfs else git_oid(remote.content))
            files.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular",
                          "shouldIgnore": False, "oid": oid})
        return 200, {"files": files}

    def lfs_batch(self, repo_id: str, body: dict) -> tuple[int, dict]:
        self._repo(repo_id)
        objects = []
        for obj in body["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in self.lfs_objects:  # already stored: no action, nothing is sent again
                entry["actions"] = {"upload": {"href": f"{self.url}/lfs-upload/{obj['oid']}"}}
            objects.append(entry)
        return 200, {"transfer": "basic", "objects": objects}

    def lfs_put(self, oid: str, content: bytes) -> tuple[int, dict]:
        if hashlib.sha256(content).hexdigest() != oid:
            raise HubError(400, f"LFS object {oid}: the content does not match its sha256")
        self.lfs_objects[oid] = content
        self.lfs_uploads.append(oid)
        return 200, {}

    def create_commit(self, repo_id: str, revision: str, body: bytes, authorization: str = "") -> tuple[int, dict]:
        self.commit_requests += 1
        if self.commit_requests in self.before_commit:
            self.before_commit[self.commit_requests]()
        status = self.fail_commits.get(self.commit_requests)
        if status is not None:
            echo = f" (request sent {authorization})" if self.echo_authorization else ""
            raise HubError(status, f"injected failure of commit request {self.commit_requests}{echo}",
                           retry_after="7" if status == 429 else None)
        repo = self._repo(repo_id)
        branch = unquote(revision)
        if branch not in repo.branches:
            raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
        head = repo.branches[branch][-1]
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        header = lines[0]["value"]
        if header.get("parentCommit") not in (None, head.oid):
            raise HubError(412, "A commit has happened since. Please refresh and try again.")
        files = dict(head.files)
        for item in lines[1:]:
            key, value = item["key"], item["value"]
            if key == "file":
                content = base64.b64decode(value["content"])
                files[value["path"]] = Blob(content, False)
            elif key == "lfsFile":
                if value["oid"] not in self.lfs_objects:
                    raise HubError(422, f"LFS object {value['oid']} of {value['path']} was never uploaded")
                files[value["path"]] = Blob(self.lfs_objects[value["oid"]], True)
            elif key == "deletedFile":
                if value["path"] not in files:
                    raise HubError(404, f"A file with this name doesn't exist: {value['path']}", "EntryNotFound")
                del files[value["path"]]
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                files = {p: b for p, b in files.items() if not p.startswith(prefix)}
            else:
                raise HubError(400, f"unknown commit operation {key}")
        commit = Commit(self._new_oid(), header["summary"], files)
        repo.branches[branch].append(commit)
        return 200, {"commitUrl": f"{self.url}/datasets/{repo_id}/commit/{commit.oid}",
                     "commitOid": commit.oid, "pullRequestUrl": None}

    def create_branch(self, repo_id: str, branch: str, body: dict) -> tuple[int, dict]:
        repo = self._repo(repo_id)
        branch = unquote(branch)
        if branch in repo.branches:
            raise HubError(409, f"Branch {branch} already exists")
        start = self._commit(repo, body.get("startingPoint") or "main")
        repo.branches[branch] = [start]
        return 200, {}

    def validate_yaml(self, body: dict) -> tuple[int, dict]:
        content = body.get("content", "")
        match = re.match(r"^---\n(.*?)\n---\n", content, re.S)
        try:
            metadata = yaml.safe_load(match.group(1)) if match else {}
        except yaml.YAMLError as e:
            raise HubError(400, f"Invalid YAML: {e}")
        if not isinstance(metadata, dict):
            raise HubError(400, "The YAML metadata must be a mapping")
        return 200, {"errors": [], "warnings": []}


#: (method, pattern, handler name); `{repo}` is namespace/name.
_REPO = r"(?P<repo>[^/]+/[^/]+?)"
ROUTES = [
    ("POST", r"/api/repos/create", "create_repo"),
    ("POST", r"/api/validate-yaml", "validate_yaml"),
    ("GET", r"/api/agent-harnesses", "agent_harnesses"),
    ("GET", rf"/api/datasets/{_REPO}(?:/revision/(?P<rev>[^/]+))?", "repo_info"),
    ("PUT", rf"/api/datasets/{_REPO}/settings", "update_settings"),
    ("GET", rf"/api/datasets/{_REPO}/tree/(?P<rev>[^/]+)(?P<path>/.*)?", "tree"),
    ("POST", rf"/api/datasets/{_REPO}/paths-info/(?P<rev>[^/]+)", "paths_info"),
    ("POST", rf"/api/datasets/{_REPO}/preupload/(?P<rev>[^/]+)", "preupload"),
    ("POST", rf"/api/datasets/{_REPO}/commit/(?P<rev>[^/]+)", "create_commit"),
    ("POST", rf"/api/datasets/{_REPO}/branch/(?P<rev>[^/]+)", "create_branch"),
    ("POST", rf"/datasets/{_REPO}\.git/info/lfs/objects/batch", "lfs_batch"),
    ("PUT", r"/lfs-upload/(?P<oid>[0-9a-f]{64})", "lfs_put"),
    ("GET", rf"/datasets/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "resolve"),
    ("HEAD", rf"/datasets/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "resolve"),
]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: LocalHub

    def log_message(self, *args) -> None:  # keep pytest's output clean
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, payload, headers: dict | None = None, head_only: bool = False) -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if not isinstance(payload, bytes):
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head_only:
            self.wfile.write(body)

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        hub = self.state
        body = self._body() if method in ("POST", "PUT") else b""
        hub.requests.append((method, url.path))
        for route_method, pattern, name in ROUTES:
            match = re.fullmatch(pattern, url.path)
            if route_method != method or not match:
                continue
            try:
                with hub.lock:
                    if name == "resolve":
                        return self._resolve(method, match)
                    status, payload = self._call(name, match, url, body)
                self._send(status, payload)
            except HubError as e:
                headers = {"X-Error-Message": e.message}
                if e.code:
                    headers["X-Error-Code"] = e.code
                if e.retry_after:
                    headers["Retry-After"] = e.retry_after
                self._send(e.status, e.payload, headers, head_only=method == "HEAD")
            return
        hub.unhandled.append((method, self.path))
        self._send(404, {"error": f"no route for {method} {url.path}"}, head_only=method == "HEAD")

    def _call(self, name: str, match: re.Match, url, body: bytes):
        hub, groups = self.state, match.groupdict()
        query = parse_qs(url.query)
        if name == "agent_harnesses":  # huggingface_hub's user-agent registry: an empty one
            return 200, {"standardEnvVars": [], "harnesses": {}}
        if name in ("create_repo", "validate_yaml"):
            return getattr(hub, name)(json.loads(body))
        if name == "repo_info":
            return hub.repo_info(groups["repo"], groups["rev"] or "main")
        if name in ("update_settings", "lfs_batch"):
            return getattr(hub, name)(groups["repo"], json.loads(body))
        if name == "tree":
            recursive = query.get("recursive", ["False"])[0].lower() in ("true", "1")
            return hub.tree(groups["repo"], groups["rev"], unquote(groups["path"] or ""), recursive)
        if name == "paths_info":
            return hub.paths_info(groups["repo"], groups["rev"], parse_qs(body.decode()).get("paths", []))
        if name == "preupload":
            return hub.preupload(groups["repo"], groups["rev"], json.loads(body))
        if name == "create_commit":
            return hub.create_commit(groups["repo"], groups["rev"], body, self.headers.get("Authorization", ""))
        if name == "create_branch":
            return hub.create_branch(groups["repo"], groups["rev"], json.loads(body or b"{}"))
        return hub.lfs_put(groups["oid"], body)

    def _resolve(self, method: str, match: re.Match) -> None:
        hub, groups = self.state, match.groupdict()
        commit = hub._commit(hub._repo(groups["repo"]), groups["rev"])
        path = unquote(groups["path"])
        blob = commit.files.get(path)
        if blob is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound")
        etag = blob.sha256 if blob.lfs else git_oid(blob.content)
        headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{etag}"', "Accept-Ranges": "bytes"}
        content, status = blob.content, 200
        found = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if found:
            start = int(found.group(1))
            end = int(found.group(2)) if found.group(2) else len(content) - 1
            if start >= len(content):
                raise HubError(416, "Range not satisfiable")
            headers["Content-Range"] = f"bytes {start}-{min(end, len(content) - 1)}/{len(content)}"
            content, status = content[start : end + 1], 206
        self._send(status, content, headers, head_only=method == "HEAD")
