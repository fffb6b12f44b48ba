"""A small Hugging Face Hub-compatible HTTP server for tests, on 127.0.0.1, standard library only.

The stock huggingface_hub client talks to it through HF_ENDPOINT. It implements the
endpoints imgzoo's save / push / load paths use, with the headers the client reads:

- ``POST /api/repos/create``                            create a repo (409 if it exists)
- ``POST /api/validate-yaml``                           the client checks a README's metadata first
- ``POST /api/models/{repo}/preupload/{rev}``           always ``"uploadMode": "regular"``, so file
                                                         contents arrive inline (base64) in the commit
- ``POST /api/models/{repo}/commit/{rev}``              NDJSON: header, file, deletedFile, deletedFolder
- ``POST /api/models/{repo}/tag/{rev}``                 create a tag
- ``POST /api/models/{repo}/branch/{branch}``           create a branch (409 if it exists)
- ``GET  /api/models/{repo}[/revision/{rev}]``          repo info
- ``HEAD|GET /{repo}/resolve/{rev}/{path}``             by branch, tag or commit sha; X-Repo-Commit,
                                                         ETag (sha256 of the content), Content-Length

Errors carry ``X-Error-Code`` (RepoNotFound, RevisionNotFound, EntryNotFound), which the
client maps to its exception classes. Writes need ``Authorization: Bearer <token>``; a
wrong token gets 401 "Invalid credentials in Authorization header"; a private repo is a
404 RepoNotFound to anyone without the token, as on the Hub.

Bounded: request bodies up to ``MAX_BODY`` bytes, sockets time out, the server shuts
itself down after ``lifetime`` seconds even if a test forgets to stop it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml

DATE = "2026-01-01T00:00:00.000Z"  # the Hub's format; the client parses it with a trailing Z
MAX_BODY = 64 * 1024 * 1024
_REPO = r"(?P<repo>[\w.\-]+/[\w.\-]+)"
_ROUTES = [
    ("POST", re.compile(r"^/api/repos/create$"), "create_repo"),
    ("POST", re.compile(r"^/api/validate-yaml$"), "validate_yaml"),
    ("POST", re.compile(rf"^/api/models/{_REPO}/preupload/(?P<rev>[^/]+)$"), "preupload"),
    ("POST", re.compile(rf"^/api/models/{_REPO}/commit/(?P<rev>[^/]+)$"), "commit"),
    ("POST", re.compile(rf"^/api/models/{_REPO}/tag/(?P<rev>[^/]+)$"), "create_tag"),
    ("POST", re.compile(rf"^/api/models/{_REPO}/branch/(?P<branch>[^/]+)$"), "create_branch"),
    ("GET", re.compile(rf"^/api/models/{_REPO}(?:/revision/(?P<rev>[^/]+))?$"), "repo_info"),
    ("GET", re.compile(rf"^/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$"), "resolve"),
    ("HEAD", re.compile(rf"^/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$"), "resolve"),
]


class HubError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code
        self.headers = {"X-Error-Message": message, **(headers or {})}
        self.body = {"error": message, **(extra or {})}


@dataclass
class Repo:
    private: bool
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # sha -> {path: content}
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str) -> str:
        sha = self.branches.get(revision) or self.tags.get(revision)
        if sha is None and revision in self.commits:
            sha = revision
        if sha is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return sha


class HubState:
    """Repositories, the accepted token and a log of requests, shared by the handler threads."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status), the last 10,000
        self.lock = threading.Lock()
        self._counter = 0

    def new_sha(self, seed: bytes) -> str:
        self._counter += 1
        return hashlib.sha1(seed + str(self._counter).encode()).hexdigest()

    def count(self, method: str, path_suffix: str) -> int:
        """How many successful ``method`` requests ended with ``path_suffix``."""
        with self.lock:
            return sum(1 for m, p, s in self.requests if m == method and p.endswith(path_suffix) and s < 400)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30  # seconds a socket may stay idle; a stuck client cannot pin a thread
    server: _Server

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output quiet
        pass

    # -- plumbing --------------------------------------------------------------------------------

    def _dispatch(self, method: str) -> None:
        path = urlsplit(self.path).path
        status = 500
        try:
            body = self._read_body()
            for route_method, pattern, name in _ROUTES:
                match = pattern.match(path)
                if route_method == method and match:
                    params = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
                    status = getattr(self, name)(method, body, **params)
                    break
            else:
                raise HubError(404, f"no route for {method} {path}")
        except HubError as exc:
            status = exc.status
            self._send(exc.status, exc.body, headers=exc.headers, code=exc.code, head=method == "HEAD")
        finally:
            with self.server.state.lock:
                self.server.state.requests.append((method, path, status))
                del self.server.state.requests[:-10_000]

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise HubError(413, f"request body over {MAX_BODY} bytes")
        return self.rfile.read(length) if length else b""

    def _send(
        self,
        status: int,
        payload: Any = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        code: str | None = None,
        head: bool = False,
    ) -> int:
        data = raw if raw is not None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream" if raw is not None else "application/json")
        self.send_header("Content-Length", str(len(data)))
        if code:
            self.send_header("X-Error-Code", code)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if not head:
            self.wfile.write(data)
        return status

    def _authorized(self) -> bool:
        """True with the right token, False without one; a wrong token is a 401 at once."""
        auth = self.headers.get("Authorization")
        if auth is None:
            return False
        if auth != f"Bearer {self.server.state.token}":
            raise HubError(401, "Invalid credentials in Authorization header")
        return True

    def _repo(self, repo_id: str, *, write: bool = False) -> Repo:
        authorized = self._authorized()
        if write and not authorized:
            raise HubError(401, "You must be authenticated to write to a repository")
        repo = self.server.state.repos.get(repo_id)
        if repo is None or (repo.private and not authorized):
            raise HubError(404, "Repository not found", "RepoNotFound")
        return repo

    # -- endpoints -------------------------------------------------------------------------------

    def create_repo(self, method: str, body: bytes) -> int:
        if not self._authorized():
            raise HubError(401, "You must be authenticated to create a repository")
        payload = json.loads(body)
        repo_id = f"{payload['organization']}/{payload['name']}"
        private = payload.get("private") is True or payload.get("visibility") == "private"
        state = self.server.state
        with state.lock:
            if repo_id in state.repos:
                # The Hub answers a conflict with the repo's URL, which create_repo(exist_ok=True) returns.
                raise HubError(
                    409, "You already created this model repo", extra={"url": f"{self.server.endpoint}/{repo_id}"}
                )
            repo = Repo(private=private)
            sha = state.new_sha(repo_id.encode())
            repo.commits[sha] = {".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"}
            repo.branches["main"] = sha
            state.repos[repo_id] = repo
        return self._send(200, {"url": f"{self.server.endpoint}/{repo_id}", "name": repo_id, "id": sha})

    def validate_yaml(self, method: str, body: bytes) -> int:
        content = json.loads(body)["content"]
        errors = []
        if content.startswith("---\n"):
            end = content.find("\n---", 4)
            try:
                meta = yaml.safe_load(content[4:end]) if end != -1 else None
                if not isinstance(meta, dict):
                    errors.append({"message": "metadata must be a YAML mapping between --- lines"})
            except yaml.YAMLError as exc:
                errors.append({"message": f"invalid YAML: {exc}"})
        if errors:
            return self._send(400, {"errors": errors, "warnings": []})
        return self._send(200, {"errors": [], "warnings": []})

    def preupload(self, method: str, body: bytes, repo: str, rev: str) -> int:
        self._repo(repo, write=True)
        files = json.loads(body)["files"]
        answer = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None} for f in files]
        return self._send(200, {"files": answer, "commitOid": None})

    def commit(self, method: str, body: bytes, repo: str, rev: str) -> int:
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        state = self.server.state
        with state.lock:
            target = self._repo(repo, write=True)
            if rev not in target.branches:
                raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
            files = dict(target.commits[target.branches[rev]])
            for line in lines:
                key, value = line["key"], line["value"]
                if key == "file":
                    files[value["path"]] = base64.b64decode(value["content"])
                elif key == "deletedFile":
                    files.pop(value["path"], None)
                elif key == "deletedFolder":
                    prefix = value["path"].rstrip("/") + "/"
                    files = {p: c for p, c in files.items() if not p.startswith(prefix)}
                elif key != "header":
                    raise HubError(400, f"this test server takes inline files only, got {key!r}")
            sha = state.new_sha(body)
            target.commits[sha] = files
            target.branches[rev] = sha
        url = f"{self.server.endpoint}/{repo}/commit/{sha}"
        return self._send(200, {"commitUrl": url, "commitOid": sha, "pullRequestUrl": None, "success": True})

    def create_tag(self, method: str, body: bytes, repo: str, rev: str) -> int:
        return self._new_ref(repo, json.loads(body)["tag"], start=rev, kind="tags")

    def create_branch(self, method: str, body: bytes, repo: str, branch: str) -> int:
        start = (json.loads(body) if body else {}).get("startingPoint") or "main"
        return self._new_ref(repo, branch, start=start, kind="branches")

    def _new_ref(self, repo: str, name: str, *, start: str, kind: str) -> int:
        """A tag or branch at the commit ``start`` resolves to; 409 if either kind already has ``name``."""
        with self.server.state.lock:
            target = self._repo(repo, write=True)
            if name in target.tags or name in target.branches:
                raise HubError(409, f"Reference {name} already exists")
            getattr(target, kind)[name] = target.resolve(start)
        return self._send(200, {})

    def repo_info(self, method: str, body: bytes, repo: str, rev: str = "main") -> int:
        target = self._repo(repo)
        sha = target.resolve(rev)
        info = {
            "id": repo,
            "modelId": repo,
            "sha": sha,
            "private": target.private,
            "lastModified": DATE,
            "createdAt": DATE,
            "tags": [],
            "siblings": [{"rfilename": path} for path in sorted(target.commits[sha])],
        }
        return self._send(200, info)

    def resolve(self, method: str, body: bytes, repo: str, rev: str, path: str) -> int:
        target = self._repo(repo)
        sha = target.resolve(rev)
        content = target.commits[sha].get(path)
        if content is None:
            raise HubError(404, "Entry not found", "EntryNotFound", headers={"X-Repo-Commit": sha})
        headers = {"X-Repo-Commit": sha, "ETag": f'"{hashlib.sha256(content).hexdigest()}"'}
        return self._send(200, raw=content, headers=headers, head=method == "HEAD")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: HubState
    endpoint: str


class HubServer:
    """``with HubServer(token) as hub: ...``; ``hub.endpoint`` is the HF_ENDPOINT to use."""

    def __init__(self, token: str, *, lifetime: float = 600.0) -> None:
        self.state = HubState(token)
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.state = self.state
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._server.endpoint = self.endpoint
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._timer = threading.Timer(lifetime, self.stop)
        self._timer.daemon = True

    def start(self) -> HubServer:
        self._thread.start()
        self._timer.start()
        return self

    def stop(self) -> None:
        self._timer.cancel()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
