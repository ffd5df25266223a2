"""A small Hugging Face Hub emulator for tests: real HTTP on 127.0.0.1, state in memory.

It speaks the routes huggingface_hub 2.4 uses to create a repo, upload a folder through the legacy
LFS protocol (Xet disabled: `HF_HUB_DISABLE_XET=1`), commit (NDJSON), branch, open a PR, and download
back (`resolve` with the headers `hf_hub_download` needs), for model repos and for Spaces (kept
under the key `spaces/OWNER/NAME`, with their SDK; the Hub refuses a Space without one). Every
commit's NDJSON lines are kept, so tests can assert which files went as `file` (regular) and which
as `lfsFile`.

Fault injection (`HubServer.faults`): answer a status N times on matching requests, drop the
connection N times, or require a token (401 for others, 403 for read-only tokens).

    with HubServer() as hub:
        env = hub.client_env(tmp_path)      # HF_ENDPOINT, HF_TOKEN, HF_HUB_DISABLE_XET, ...
        hub.fail("/commit/", status=500, times=2)
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import math
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from mythos_convert.hub.files import LFS_PATTERNS, LFS_SIZE  # the Hub's default .gitattributes rule

USER = "tester"


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def is_lfs(path: str, size: int, sample: bytes) -> bool:
    """The Hub's rule: a .gitattributes pattern, more than 10 MB, or binary content."""
    name = path.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatch(name, p) for p in LFS_PATTERNS) or size > LFS_SIZE or b"\0" in sample


@dataclass
class StoredFile:
    data: bytes
    lfs: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def oid(self) -> str:
        return git_blob_sha1(self.data)


@dataclass
class Commit:
    oid: str
    parent: str | None
    message: str
    files: dict[str, StoredFile]
    lines: list[dict] = field(default_factory=list)  # the NDJSON the client sent


@dataclass
class Repo:
    repo_id: str  # OWNER/NAME for a model, spaces/OWNER/NAME for a Space
    private: bool
    repo_type: str = "model"
    sdk: str | None = None  # a Space's SDK (gradio, docker, static)
    refs: dict[str, str] = field(default_factory=dict)  # branch or refs/pr/N -> commit oid
    commits: dict[str, Commit] = field(default_factory=dict)
    prs: int = 0


@dataclass
class Fault:
    pattern: str  # regex searched in "METHOD path"
    times: int  # how many more requests it hits (-1: all)
    status: int | None = None  # answer this status...
    drop: bool = False  # ...or close the connection without answering


class HubServer:
    """The emulator. Start with `with HubServer() as hub:`; `hub.url` is its endpoint."""

    def __init__(self, multipart_chunk: int = 5 * 1024 * 1024, multipart_threshold: int = 8 * 1024 * 1024):
        self.repos: dict[str, Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.partial: dict[str, dict[int, bytes]] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path) in arrival order
        self.faults: list[Fault] = []
        self.tokens: dict[str, str] | None = None  # token -> "write" | "read"; None accepts any
        self.multipart_chunk = multipart_chunk
        self.multipart_threshold = multipart_threshold
        self.lock = threading.RLock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    # ------------------------------------------------------------------ lifecycle and knobs
    def __enter__(self) -> HubServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def fail(self, pattern: str, status: int = 500, times: int = 1) -> None:
        """Answer `status` to the next `times` requests whose "METHOD path" matches `pattern` (-1: always)."""
        self.faults.append(Fault(pattern, times, status=status))

    def drop(self, pattern: str, times: int = -1) -> None:
        """Close the connection without an answer on matching requests."""
        self.faults.append(Fault(pattern, times, drop=True))

    def require_tokens(self, tokens: dict[str, str]) -> None:
        """Only these tokens work: others get 401; "read" tokens get 403 on writes."""
        self.tokens = dict(tokens)

    def client_env(self, home: Path, token: str = "hf_test_token") -> dict[str, str]:
        """The environment a huggingface_hub client needs to talk to this server with plain LFS."""
        return {
            "HF_ENDPOINT": self.url,
            "HF_TOKEN": token,
            "HF_HOME": str(home),
            "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "HF_HUB_DISABLE_UPDATE_CHECK": "1",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }

    # ------------------------------------------------------------------ views for tests
    def head(self, repo_id: str, ref: str = "main") -> Commit:
        repo = self.repos[repo_id]
        return repo.commits[repo.refs[ref]]

    def commits(self, repo_id: str) -> list[Commit]:
        return list(self.repos[repo_id].commits.values()) if repo_id in self.repos else []

    def count(self, pattern: str) -> int:
        return sum(1 for m, p in self.requests if re.search(pattern, f"{m} {p}"))

    # ------------------------------------------------------------------ repo state
    def create_repo(
        self, repo_id: str, private: bool = False, repo_type: str = "model", sdk: str | None = None
    ) -> Repo:
        with self.lock:
            repo = Repo(repo_id, private, repo_type, sdk)
            oid = self._new_oid(repo_id, "initial")
            repo.commits[oid] = Commit(oid, None, "initial commit", {".gitattributes": _gitattributes()})
            repo.refs["main"] = oid
            self.repos[repo_id] = repo
            return repo

    def _new_oid(self, *parts: str) -> str:
        return hashlib.sha1(("|".join(parts) + str(time.time_ns())).encode()).hexdigest()


def _gitattributes() -> StoredFile:
    lines = [f"{p} filter=lfs diff=lfs merge=lfs -text" for p in LFS_PATTERNS]
    return StoredFile(("\n".join(lines) + "\n").encode(), lfs=False)


class _Drop(Exception):
    pass


def _make_handler(hub: HubServer):
    class Handler(_HubHandler):
        server_state = hub

    return Handler


class _HubHandler(BaseHTTPRequestHandler):
    server_state: HubServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    # ------------------------------------------------------------------ plumbing
    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: Any = None, headers: dict[str, str] | None = None, raw: bytes | None = None):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else b"")
        self.send_response(status)
        content_type = "application/json" if raw is None else "application/octet-stream"
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _error(self, status: int, message: str, code: str | None = None):
        headers = {"X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        self._send(status, {"error": message}, headers)

    def _dispatch(self, method: str) -> None:
        hub = self.server_state
        split = urlsplit(self.path)
        path, query = split.path, parse_qs(split.query)
        with hub.lock:
            hub.requests.append((method, path))
            fault = next((f for f in hub.faults if f.times != 0 and re.search(f.pattern, f"{method} {path}")), None)
            if fault is not None and fault.times > 0:
                fault.times -= 1
        try:
            if fault is not None:
                self._body()
                if fault.drop:
                    raise _Drop
                return self._error(fault.status or 500, "injected failure")
            if not self._authorised(method, path):
                return None
            self._route(method, path, query)
        except _Drop:
            self.close_connection = True
            try:
                self.connection.shutdown(2)
            except OSError:
                pass

    def _authorised(self, method: str, path: str) -> bool:
        hub = self.server_state
        if hub.tokens is None or path.startswith(("/lfs-", "/api/agent-harnesses", "/api/telemetry")):
            return True
        token = self.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if token not in hub.tokens:
            self._body()
            self._error(401, "Invalid credentials in Authorization header")
            return False
        if hub.tokens[token] != "write" and method in ("POST", "PUT") and "validate-yaml" not in path:
            self._body()
            self._error(403, "You don't have the rights to create a model under this namespace")
            return False
        return True

    # ------------------------------------------------------------------ routes
    def _route(self, method: str, path: str, query: dict) -> None:
        parts = [unquote(p) for p in path.strip("/").split("/")]
        api = parts[0] == "api"
        if api and parts[1:] == ["whoami-v2"]:
            return self._send(200, {"type": "user", "name": USER, "auth": {"accessToken": {"role": "write"}}})
        if api and parts[1:] == ["agent-harnesses"]:
            return self._send(200, {"standardEnvVars": [], "harnesses": {}})
        if api and parts[1] == "telemetry":
            return self._send(200, {})
        if api and parts[1:] == ["validate-yaml"] and method == "POST":
            return self._validate_yaml()
        if api and parts[1:] == ["repos", "create"] and method == "POST":
            return self._create_repo()
        if api and parts[1] == "models" and len(parts) >= 4:
            return self._model_api(method, "/".join(parts[2:4]), parts[4:], query)
        if api and parts[1] == "spaces" and len(parts) >= 4:
            return self._model_api(method, "spaces/" + "/".join(parts[2:4]), parts[4:], query)
        if parts[0] == "spaces" and len(parts) >= 3:  # a Space's git and resolve routes: the model ones, prefixed
            parts, prefix = parts[1:], "spaces/"
        else:
            prefix = ""
        if parts[0] == "lfs-upload":
            return self._lfs_upload(method, parts[1:])
        if parts[0] == "lfs-verify" and method == "POST":
            return self._lfs_verify()
        if len(parts) >= 3 and parts[1].endswith(".git") and parts[2:] == ["info", "lfs", "objects", "batch"]:
            return self._lfs_batch(f"{prefix}{parts[0]}/{parts[1][:-4]}")
        if len(parts) >= 5 and parts[2] == "resolve":
            return self._resolve(method, prefix + "/".join(parts[:2]), parts[3], "/".join(parts[4:]))
        self._body()
        return self._error(404, f"no route for {method} {path}")

    def _repo(self, repo_id: str) -> Repo | None:
        repo = self.server_state.repos.get(repo_id)
        if repo is None:
            self._error(404, f"Repository {repo_id} not found", "RepoNotFound")
        return repo

    def _ref(self, repo: Repo, rev: str) -> str | None:
        if rev in repo.refs:
            return repo.refs[rev]
        if rev in repo.commits:
            return rev
        self._error(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return None

    def _validate_yaml(self) -> None:
        import yaml

        body = self._json_body()
        content = body.get("content", "")
        match = re.match(r"^---\n(.*?)\n---", content, re.S)
        try:
            data = yaml.safe_load(match.group(1)) if match else {}
        except yaml.YAMLError as exc:
            return self._send(400, {"errors": [{"message": f"invalid YAML: {exc}"}], "warnings": []})
        if match and not isinstance(data, dict):
            return self._send(400, {"errors": [{"message": "metadata must be a mapping"}], "warnings": []})
        return self._send(200, {"errors": [], "warnings": []})

    def _create_repo(self) -> None:
        hub = self.server_state
        body = self._json_body()
        repo_type = body.get("type") or "model"
        name = f"{body.get('organization') or USER}/{body['name']}"
        repo_id = name if repo_type == "model" else f"{repo_type}s/{name}"
        url = f"{hub.url}/{repo_id}"
        if repo_type == "space" and body.get("sdk") not in ("gradio", "docker", "static"):
            return self._error(400, "space_sdk is required for a Space: gradio, docker or static")
        if repo_id in hub.repos:
            return self._send(409, {"error": f"You already created this {repo_type} repo", "url": url})
        private = bool(body.get("private")) or body.get("visibility") == "private"
        hub.create_repo(repo_id, private=private, repo_type=repo_type, sdk=body.get("sdk"))
        return self._send(200, {"url": url, "name": name, "id": name})

    def _model_api(self, method: str, repo_id: str, rest: list[str], query: dict) -> None:
        body = self._json_body() if method in ("POST", "PUT") else None
        repo = self._repo(repo_id)
        if repo is None:
            return None
        if not rest or rest[0] == "revision":
            rev = rest[1] if len(rest) > 1 else "main"
            return self._model_info(repo, rev)
        action = rest[0]
        if action == "preupload" and method == "POST":
            return self._preupload(repo, rest[1], body)
        if action == "commit" and method == "POST":
            return self._commit(repo, rest[1], "create_pr" in query)
        if action == "tree" and method == "GET":
            return self._tree(repo, rest[1], "/".join(rest[2:]), query.get("recursive", ["false"])[0] == "true")
        if action == "branch" and method == "POST":
            return self._branch(repo, rest[1], body or {})
        if action == "refs" and method == "GET":
            branches = [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": oid} for b, oid in repo.refs.items()]
            branches = [b for b in branches if not b["name"].startswith("refs/")]
            prs = [{"name": r, "ref": r, "targetCommit": oid} for r, oid in repo.refs.items() if r.startswith("refs/")]
            return self._send(200, {"branches": branches, "tags": [], "converts": [], "pullRequests": prs})
        return self._error(404, f"no route for {method} {action}")

    def _model_info(self, repo: Repo, rev: str) -> None:
        oid = self._ref(repo, rev)
        if oid is None:
            return None
        files = repo.commits[oid].files
        return self._send(
            200,
            {
                "id": repo.repo_id.removeprefix("spaces/"),
                "modelId": repo.repo_id.removeprefix("spaces/"),
                "sha": oid,
                "private": repo.private,
                "tags": [],
                "downloads": 0,
                "likes": 0,
                "lastModified": "2026-01-01T00:00:00.000Z",
                "siblings": [{"rfilename": p, "size": len(f.data)} for p, f in sorted(files.items())],
                **({"sdk": repo.sdk} if repo.repo_type == "space" else {}),
            },
        )

    def _preupload(self, repo: Repo, rev: str, body: dict) -> None:
        oid = repo.refs.get(rev)  # a missing branch is fine here: create_pr may target it
        existing = repo.commits[oid].files if oid else {}
        out = []
        for entry in body.get("files", []):
            path, size = entry["path"], int(entry["size"])
            lfs = is_lfs(path, size, base64.b64decode(entry.get("sample", "")))
            old = existing.get(path)
            old_oid = (old.sha256 if old.lfs else old.oid) if old else None
            out.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": old_oid})
        return self._send(200, {"files": out})

    def _lfs_batch(self, repo_id: str) -> None:
        hub = self.server_state
        body = self._json_body()
        if self._repo(repo_id) is None:
            return None
        objects = []
        for obj in body.get("objects", []):
            oid, size = obj["oid"], int(obj["size"])
            if oid in hub.lfs_objects:
                objects.append({"oid": oid, "size": size})  # no actions: already uploaded
                continue
            verify = {"href": f"{hub.url}/lfs-verify/{oid}"}
            if size > hub.multipart_threshold:
                n = math.ceil(size / hub.multipart_chunk)
                header = {"chunk_size": str(hub.multipart_chunk)}
                header.update({f"{i:05d}": f"{hub.url}/lfs-upload/{oid}/part/{i}" for i in range(1, n + 1)})
                upload = {"href": f"{hub.url}/lfs-upload/{oid}/complete", "header": header}
            else:
                upload = {"href": f"{hub.url}/lfs-upload/{oid}"}
            objects.append({"oid": oid, "size": size, "actions": {"upload": upload, "verify": verify}})
        return self._send(
            200, {"transfer": "basic", "objects": objects}, {"Content-Type": "application/vnd.git-lfs+json"}
        )

    def _lfs_upload(self, method: str, rest: list[str]) -> None:
        hub = self.server_state
        oid = rest[0]
        data = self._body()
        if method == "PUT" and len(rest) == 1:
            if hashlib.sha256(data).hexdigest() != oid:
                return self._error(400, "sha256 mismatch")
            hub.lfs_objects[oid] = data
            return self._send(200, {})
        if method == "PUT" and len(rest) == 3 and rest[1] == "part":
            hub.partial.setdefault(oid, {})[int(rest[2])] = data
            return self._send(200, {}, {"ETag": f'"{hashlib.md5(data).hexdigest()}"'})
        if method == "POST" and rest[1:] == ["complete"]:
            payload = json.loads(data)
            parts = hub.partial.pop(oid, {})
            numbers = [p["partNumber"] for p in payload["parts"]]
            if sorted(numbers) != sorted(parts) or any(not p.get("etag") for p in payload["parts"]):
                return self._error(400, "multipart completion does not match the uploaded parts")
            blob = b"".join(parts[i] for i in sorted(parts))
            if hashlib.sha256(blob).hexdigest() != oid:
                return self._error(400, "sha256 mismatch after multipart completion")
            hub.lfs_objects[oid] = blob
            return self._send(200, {})
        return self._error(404, "bad LFS upload route")

    def _lfs_verify(self) -> None:
        body = self._json_body()
        blob = self.server_state.lfs_objects.get(body.get("oid"))
        if blob is None or len(blob) != body.get("size"):
            return self._error(404, "object not uploaded")
        return self._send(200, {})

    def _commit(self, repo: Repo, rev: str, create_pr: bool) -> None:
        hub = self.server_state
        lines = [json.loads(line) for line in self._last_body.splitlines() if line.strip()]
        base = repo.refs.get(rev)
        if base is None:
            return self._error(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        files = dict(repo.commits[base].files)
        header = {}
        for line in lines:
            key, value = line["key"], line["value"]
            if key == "header":
                header = value
            elif key == "file":
                files[value["path"]] = StoredFile(base64.b64decode(value["content"]), lfs=False)
            elif key == "lfsFile":
                blob = hub.lfs_objects.get(value["oid"])
                if blob is None:
                    return self._error(400, f"LFS object {value['oid']} for {value['path']} was never uploaded")
                files[value["path"]] = StoredFile(blob, lfs=True)
            elif key == "deletedFile":
                files.pop(value["path"], None)
            elif key == "deletedFolder":
                files = {p: f for p, f in files.items() if not p.startswith(value["path"].rstrip("/") + "/")}
        oid = hub._new_oid(repo.repo_id, rev, header.get("summary", ""))
        repo.commits[oid] = Commit(oid, base, header.get("summary", ""), files, lines)
        answer = {"commitOid": oid, "commitUrl": f"{hub.url}/{repo.repo_id}/commit/{oid}"}
        if create_pr:
            repo.prs += 1
            repo.refs[f"refs/pr/{repo.prs}"] = oid
            answer["pullRequestUrl"] = f"{hub.url}/{repo.repo_id}/discussions/{repo.prs}"
        else:
            repo.refs[rev] = oid
        return self._send(200, answer)

    def _json_body(self) -> Any:  # keep the raw body for NDJSON routes
        raw = self._body()
        self._last_body = raw.decode("utf-8", "replace")
        if not raw:
            return {}
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            return {}

    def _tree(self, repo: Repo, rev: str, prefix: str, recursive: bool) -> None:
        oid = self._ref(repo, rev)
        if oid is None:
            return None
        entries, dirs = [], set()
        base = prefix.rstrip("/") + "/" if prefix else ""
        for path, stored in sorted(repo.commits[oid].files.items()):
            if not path.startswith(base):
                continue
            rest = path[len(base) :]
            if "/" in rest and not recursive:
                dirs.add(base + rest.split("/")[0])
                continue
            entry = {"type": "file", "oid": stored.oid, "size": len(stored.data), "path": path}
            if stored.lfs:
                entry["lfs"] = {"oid": stored.sha256, "size": len(stored.data), "pointerSize": 134}
            entries.append(entry)
        entries += [{"type": "directory", "oid": "0" * 40, "size": 0, "path": d} for d in sorted(dirs)]
        if prefix and not entries:
            return self._error(404, f"{prefix} not found", "EntryNotFound")
        return self._send(200, entries)

    def _branch(self, repo: Repo, branch: str, body: dict) -> None:
        if branch in repo.refs:
            return self._error(409, f"Branch {branch} already exists")
        start = self._ref(repo, body.get("startingPoint") or "main")
        if start is None:
            return None
        repo.refs[branch] = start
        return self._send(200, {})

    def _resolve(self, method: str, repo_id: str, rev: str, path: str) -> None:
        repo = self._repo(repo_id)
        if repo is None:
            return None
        oid = self._ref(repo, rev)
        if oid is None:
            return None
        stored = repo.commits[oid].files.get(path)
        if stored is None:
            return self._error(404, f"{path} not found", "EntryNotFound")
        headers = {"X-Repo-Commit": oid, "ETag": f'"{stored.sha256 if stored.lfs else stored.oid}"'}
        if stored.lfs:
            headers.update({"X-Linked-Etag": f'"{stored.sha256}"', "X-Linked-Size": str(len(stored.data))})
        return self._send(200, headers=headers, raw=stored.data)
