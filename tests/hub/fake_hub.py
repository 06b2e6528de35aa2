"""A small Hub-compatible HTTP server for tests: just what huggingface_hub's client calls.

Repos, branches, commits and content-addressed blobs live in memory. Implemented (shapes as the
real Hub's HTTP API as huggingface_hub's `HfApi` and `hf_hub_download` call it): repo create, repo info (+ revision), tree listing,
preupload, LFS batch + basic upload, NDJSON commit (with `create_pr`), branch creation, resolve
(HEAD/GET with X-Repo-Commit, ETag, X-Linked-Etag/Size, Range) and validate-yaml.
Not implemented: Xet (clients must run with HF_HUB_DISABLE_XET), multipart LFS, pagination.
"""

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

LFS_SUFFIXES = (".safetensors", ".npz", ".bin", ".pt")


@dataclass
class FileEntry:
    oid: str  # git blob sha1 (what the Hub reports as `oid`, and as ETag for regular files)
    size: int
    sha256: str  # key into the blob store; also the ETag of LFS files
    lfs: bool


@dataclass
class Repo:
    token: str | None
    private: bool
    commits: dict[str, dict[str, FileEntry]] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)  # "main", "v1", "refs/pr/1" -> commit sha
    n_prs: int = 0


class HubState:
    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.blobs: dict[str, bytes] = {}  # sha256 -> content
        self.requests: list[tuple[str, str]] = []  # (method, path) log
        self.lock = threading.Lock()

    def resolve(self, repo: Repo, rev: str) -> str | None:
        if rev in repo.refs:
            return repo.refs[rev]
        return rev if rev in repo.commits else None


def _git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: HubState
    endpoint: str

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    # ---- plumbing -----------------------------------------------------------------------

    def _send(self, code: int, body: bytes = b"", headers: dict[str, str] | None = None):
        self.send_response(code)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":  # HEAD answers carry the headers of the GET, never its body
            self.wfile.write(body)

    def _json(self, code: int, obj, headers: dict[str, str] | None = None) -> None:
        self._send(code, json.dumps(obj).encode(), {"Content-Type": "application/json", **(headers or {})})

    def _error(self, code: int, error_code: str, message: str, extra: dict[str, str] | None = None) -> None:
        self._json(code, {"error": message}, {"X-Error-Code": error_code, "X-Error-Message": message, **(extra or {})})

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _token(self) -> str | None:
        auth = self.headers.get("Authorization") or ""
        return auth[len("Bearer ") :] if auth.startswith("Bearer ") else None

    def _repo(self, repo_id: str, write: bool = False) -> Repo | None:
        """The repo if the caller may see it; otherwise answers 404/401 (as the Hub does) and returns None."""
        repo = self.state.repos.get(repo_id)
        if repo is None or (repo.private or write) and repo.token is not None and self._token() != repo.token:
            self._error(404 if repo is None else 401, "RepoNotFound", f"Repository {repo_id} not found")
            return None
        return repo

    def _dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        self.state.requests.append((method, parts.path))
        query = parse_qs(parts.query)
        segs = parts.path.strip("/").split("/")
        for pattern, handler in ROUTES:
            m = re.fullmatch(pattern, f"{method} {'/'.join(segs)}")
            if m:
                with self.state.lock:
                    handler(self, query, *[unquote(g) if g is not None else None for g in m.groups()])
                return
        self._error(404, "NotFound", f"no route for {method} {parts.path}")

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    # ---- endpoints ----------------------------------------------------------------------

    def create_repo(self, query) -> None:
        body = json.loads(self._body())
        repo_id = f"{body['organization']}/{body['name']}" if body.get("organization") else body["name"]
        url = {"url": f"{self.endpoint}/{repo_id}"}
        if repo_id in self.state.repos:
            return self._json(409, {**url, "error": "You already created this model repo"})
        private = bool(body.get("private")) or body.get("visibility") == "private"
        repo = Repo(token=self._token(), private=private)
        sha = hashlib.sha1(f"init {repo_id}".encode()).hexdigest()
        attributes = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"  # the Hub starts repos with one
        self.state.blobs[hashlib.sha256(attributes).hexdigest()] = attributes
        repo.commits[sha] = {
            ".gitattributes": FileEntry(
                _git_oid(attributes), len(attributes), hashlib.sha256(attributes).hexdigest(), False
            )
        }
        repo.refs["main"] = sha
        self.state.repos[repo_id] = repo
        self._json(200, url)

    def repo_info(self, query, repo_id: str, rev: str | None) -> None:
        repo = self._repo(repo_id)
        if repo is None:
            return
        sha = self.state.resolve(repo, rev or "main")
        if sha is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        files = repo.commits[sha]
        siblings = [{"rfilename": p} for p in sorted(files)]
        self._json(200, {"id": repo_id, "sha": sha, "private": repo.private, "siblings": siblings, "tags": []})

    def tree(self, query, repo_id: str, rev: str, path: str | None) -> None:
        repo = self._repo(repo_id)
        if repo is None:
            return
        sha = self.state.resolve(repo, rev)
        if sha is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        prefix = f"{path.strip('/')}/" if path else ""
        recursive = query.get("recursive", ["false"])[0].lower() == "true"
        entries, dirs = [], set()
        for p, f in sorted(repo.commits[sha].items()):
            if not p.startswith(prefix):
                continue
            rest = p[len(prefix) :].split("/")
            for depth in range(1, len(rest)):  # every folder between prefix and the file
                if recursive or depth == 1:
                    dirs.add(prefix + "/".join(rest[:depth]))
            if recursive or len(rest) == 1:
                entry = {"type": "file", "path": p, "size": f.size, "oid": f.oid}
                if f.lfs:
                    entry["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": 134}
                entries.append(entry)
        if path and not entries and not dirs:  # the root of an empty repo lists as []
            return self._error(404, "EntryNotFound", f"{path} does not exist on {rev}", {"X-Repo-Commit": sha})
        folders = [{"type": "directory", "path": d, "oid": hashlib.sha1(d.encode()).hexdigest()} for d in sorted(dirs)]
        self._json(200, folders + entries)

    def preupload(self, query, repo_id: str, rev: str) -> None:
        if self._repo(repo_id, write=True) is None:
            return
        files = []
        for f in json.loads(self._body())["files"]:
            sample = base64.b64decode(f["sample"])
            binary = b"\0" in sample
            lfs = f["path"].endswith(LFS_SUFFIXES) or f["size"] >= 10_000_000 or binary
            files.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False})
        self._json(200, {"files": files})

    def lfs_batch(self, query, repo_id: str) -> None:
        if self._repo(repo_id, write=True) is None:
            return
        objects = []
        for obj in json.loads(self._body())["objects"]:
            item = {"oid": obj["oid"], "size": obj["size"]}
            if obj["oid"] not in self.state.blobs:
                item["actions"] = {"upload": {"href": f"{self.endpoint}/lfs-upload/{obj['oid']}"}}
            objects.append(item)
        self._json(200, {"transfer": "basic", "objects": objects})

    def lfs_upload(self, query, oid: str) -> None:
        data = self._body()
        if hashlib.sha256(data).hexdigest() != oid:
            return self._error(400, "BadRequest", "sha256 of the uploaded content does not match the oid")
        self.state.blobs[oid] = data
        self._send(200)

    def commit(self, query, repo_id: str, rev: str) -> None:
        repo = self._repo(repo_id, write=True)
        if repo is None:
            return
        parent = self.state.resolve(repo, rev)
        if parent is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        files, header = dict(repo.commits[parent]), {}
        for line in self._body().decode().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                header = value
            elif key == "file":
                data = base64.b64decode(value["content"])
                sha256 = hashlib.sha256(data).hexdigest()
                self.state.blobs[sha256] = data
                files[value["path"]] = FileEntry(_git_oid(data), len(data), sha256, lfs=False)
            elif key == "lfsFile":
                data = self.state.blobs.get(value["oid"])
                if data is None:
                    return self._error(400, "BadRequest", f"LFS object {value['oid']} was never uploaded")
                files[value["path"]] = FileEntry(_git_oid(data), value["size"], value["oid"], lfs=True)
            elif key == "deletedFile":
                files.pop(value["path"], None)
            elif key == "deletedFolder":
                files = {p: f for p, f in files.items() if not p.startswith(value["path"].rstrip("/") + "/")}
        if header.get("parentCommit") and header["parentCommit"] != parent:
            return self._error(412, "PreconditionFailed", "A commit has happened since the parent commit")
        sha = hashlib.sha1(json.dumps([parent, header, sorted((p, f.oid) for p, f in files.items())]).encode())
        sha = sha.hexdigest()
        repo.commits[sha] = files
        pr_url = None
        if query.get("create_pr", ["0"])[0] in ("1", "true"):
            repo.n_prs += 1
            repo.refs[f"refs/pr/{repo.n_prs}"] = sha
            pr_url = f"{self.endpoint}/{repo_id}/discussions/{repo.n_prs}"
        else:
            repo.refs[rev] = sha
        self._json(
            200, {"commitOid": sha, "commitUrl": f"{self.endpoint}/{repo_id}/commit/{sha}", "pullRequestUrl": pr_url}
        )

    def branch(self, query, repo_id: str, name: str) -> None:
        repo = self._repo(repo_id, write=True)
        if repo is None:
            return
        body = json.loads(self._body() or b"{}")
        if name in repo.refs:
            return self._error(409, "Conflict", f"Reference {name} already exists")
        start = self.state.resolve(repo, body.get("startingPoint") or "main")
        if start is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {body.get('startingPoint')}")
        repo.refs[name] = start
        self._json(200, {})

    def resolve_file(self, query, repo_id: str, rev: str, path: str) -> None:
        repo = self._repo(repo_id)
        if repo is None:
            return
        sha = self.state.resolve(repo, rev)
        if sha is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        entry = repo.commits[sha].get(path)
        if entry is None:
            return self._error(404, "EntryNotFound", f"{path} does not exist on {rev}", {"X-Repo-Commit": sha})
        data = self.state.blobs[entry.sha256]
        etag = entry.sha256 if entry.lfs else entry.oid
        headers = {"X-Repo-Commit": sha, "ETag": f'"{etag}"', "Accept-Ranges": "bytes"}
        if entry.lfs:
            headers.update({"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(entry.size)})
        start = 0
        m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if m:
            start = int(m.group(1))
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        body = data[start:]
        headers["Content-Length"] = str(len(body))
        self._send(206 if start else 200, body, headers)

    def validate_yaml(self, query) -> None:
        content = json.loads(self._body())["content"]
        errors = []
        m = re.match(r"^---\n(.*?)\n---", content, re.S)
        try:
            if m and not isinstance(yaml.safe_load(m.group(1)), dict):
                errors.append({"message": "metadata must be a YAML mapping"})
        except yaml.YAMLError as e:
            errors.append({"message": f"invalid YAML: {e}"})
        self._json(200 if not errors else 400, {"errors": errors, "warnings": []})


_REPO = r"([^/]+/[^/]+)"
ROUTES = [
    (r"POST api/repos/create", Handler.create_repo),
    (rf"(?:GET|HEAD) api/models/{_REPO}(?:/revision/([^/]+))?", Handler.repo_info),
    (rf"GET api/models/{_REPO}/tree/([^/]+)(?:/(.+))?", Handler.tree),
    (rf"POST api/models/{_REPO}/preupload/([^/]+)", Handler.preupload),
    (rf"POST api/models/{_REPO}/commit/([^/]+)", Handler.commit),
    (rf"POST api/models/{_REPO}/branch/([^/]+)", Handler.branch),
    (r"POST api/validate-yaml", Handler.validate_yaml),
    (rf"POST {_REPO}\.git/info/lfs/objects/batch", Handler.lfs_batch),
    (r"PUT lfs-upload/([0-9a-f]{64})", Handler.lfs_upload),
    (rf"(?:GET|HEAD) {_REPO}/resolve/([^/]+)/(.+)", Handler.resolve_file),
]


class FakeHub:
    """Start with `FakeHub()`, use `.endpoint`, stop with `.close()` (also drops keep-alive connections)."""

    def __init__(self) -> None:
        self.state = HubState()
        handler = type("BoundHandler", (Handler,), {"state": self.state})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        handler.endpoint = self.endpoint
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
