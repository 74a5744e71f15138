"""LocalHub: a small stand-in for the Hugging Face Hub HTTP API, used by the tests.

The project publishes potentials to the Hub and loads them back, but the machines that run the tests
cannot reach huggingface.co. LocalHub is a threaded stdlib HTTP server on 127.0.0.1 that answers the
subset of the Hub protocol that huggingface_hub 2.4 sends for the calls the product makes
(create_repo, upload_folder / create_commit, PyTorchModelHubMixin push_to_hub / from_pretrained,
hf_hub_download, snapshot_download, create_branch, create_tag, list_repo_refs, model_info / repo_info),
so the tests run the real client over real HTTP. Point the client at it with HF_ENDPOINT, which
huggingface_hub reads once, at import (see tests/conftest.py).

Implemented (`{type}` is models, datasets or spaces; `{rev}` a branch, a tag or a full commit sha):

    GET    /api/whoami-v2
    POST   /api/repos/create                     409 with "url" when the repo exists
    DELETE /api/repos/delete
    POST   /api/validate-yaml                    always valid
    GET    /api/{type}/{id}, /api/{type}/{id}/revision/{rev}   id, sha, siblings, dates
    POST   /api/{type}/{id}/preupload/{rev}      every file "regular" (never LFS/Xet), with the current oid
    POST   /api/{type}/{id}/commit/{rev}         NDJSON: header (parentCommit), file (base64),
                                                 deletedFile, deletedFolder
    GET    /api/{type}/{id}/tree/{rev}[/{path}]  ?recursive=true
    GET    /api/{type}/{id}/commits/{rev}        newest first
    GET    /api/{type}/{id}/refs
    POST   /api/{type}/{id}/branch/{name}        {"startingPoint": rev}; DELETE removes it
    POST   /api/{type}/{id}/tag/{rev}            {"tag": name}; DELETE /api/{type}/{id}/tag/{name}
    HEAD   /[datasets/|spaces/]{id}/resolve/{rev}/{path}   X-Repo-Commit, ETag, Content-Length; no body
    GET    the same                              the bytes; honours "Range: bytes=a-b"

Errors are JSON {"error": ...} with the X-Error-Code header the client maps to exceptions:
RepoNotFound -> RepositoryNotFoundError, RevisionNotFound -> RevisionNotFoundError,
EntryNotFound -> EntryNotFoundError. No X-Xet-* header is ever sent, so downloads are plain HTTP.
Not implemented: LFS / Xet uploads (preupload never asks for them; an lfsFile line is a 400), pull
requests (501), repo ids without a namespace (404), gated/private access control.

Storage under `root`: `blobs/<git blob sha1>` and one JSON file per repo. A commit is a full snapshot
{path: blob sha}; its id is a deterministic 40-hex sha1 of (repo, parent, snapshot, message).
Creating a repo makes branch `main` with an "initial commit" holding `.gitattributes`, as the Hub does.

Test helpers: `fail_next(method, path_regex, status=500, times=1)` (status None drops the connection),
`clear_faults()`, `requests` / `count(...)` / `clear_requests()`, `branch_head(repo_id)`.
Beware: the client itself retries 5xx, sleeping 1 s, 2 s, 4 s... on preupload, tree listings and a
resolve HEAD with nothing cached; it does not retry a commit POST when hf_xet is disabled
(HF_HUB_DISABLE_XET=1, as conftest sets), but does when it is enabled. Use a 4xx to fail those fast.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

REPO_TYPES = ("models", "datasets", "spaces")
GITATTRIBUTES = b"*.bin filter=lfs diff=lfs merge=lfs -text\n*.pt filter=lfs diff=lfs merge=lfs -text\n" \
    b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.ckpt filter=lfs diff=lfs merge=lfs -text\n"


class HubError(Exception):
    """An error reply: HTTP status, message and optional X-Error-Code."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


def git_blob_sha(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _check_path(path: str) -> str:
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise HubError(400, f"Invalid path in repo: {path!r}")
    return path


class LocalHub:
    """A Hub-protocol server with on-disk storage. `start()` it, talk to `url`, `stop()` it."""

    def __init__(self, root: str | os.PathLike, host: str = "127.0.0.1", port: int = 0,
                 require_token: bool = True, user: str = "user"):
        self.root = Path(root)
        self.host, self.port, self.require_token, self.user = host, port, require_token, user
        self._lock = threading.RLock()
        self._repos: dict[tuple[str, str], dict] = {}
        self._faults: list[dict] = []
        self._log: list[tuple[str, str, int]] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle and test helpers
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "LocalHub":
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        for f in (self.root / "repos").glob("*/*/*.json"):
            self._repos[(f.parent.parent.name, f"{f.parent.name}/{f.stem}")] = json.loads(f.read_text())
        handler = type("Handler", (_Handler,), {"hub": self})
        self._server = ThreadingHTTPServer((self.host, self.port), handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="LocalHub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = self._thread = None

    def __enter__(self) -> "LocalHub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def fail_next(self, method: str, path_regex: str, status: int | None = 500, times: int = 1,
                  message: str = "injected failure") -> None:
        """Answer the next `times` requests matching METHOD (or "*") and the path regex with `status`
        (re.search on the URL path and query). status=None closes the connection without a reply."""
        with self._lock:
            self._faults.append({"method": method.upper(), "regex": re.compile(path_regex), "status": status,
                                 "times": times, "message": message})

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def requests(self) -> list[tuple[str, str, int]]:
        """(method, path with query, status) of every request so far; status 0 = dropped."""
        with self._lock:
            return list(self._log)

    def count(self, method: str | None = None, path_regex: str | None = None) -> int:
        return sum(1 for m, p, _ in self.requests
                   if (method is None or m == method.upper()) and (path_regex is None or re.search(path_regex, p)))

    def clear_requests(self) -> None:
        with self._lock:
            self._log.clear()

    def branch_head(self, repo_id: str, branch: str = "main", repo_type: str = "model") -> str | None:
        with self._lock:
            repo = self._repos.get((repo_type + "s", repo_id))
            return None if repo is None else repo["branches"].get(branch)

    def _take_fault(self, method: str, path: str) -> dict | None:
        with self._lock:
            for fault in self._faults:
                if fault["method"] in ("*", method) and fault["regex"].search(path):
                    fault["times"] -= 1
                    if fault["times"] <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    # ------------------------------------------------------------------ storage
    def _save(self, rtype: str, repo_id: str) -> None:
        path = self.root / "repos" / rtype / f"{repo_id}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._repos[(rtype, repo_id)], indent=1))
        os.replace(tmp, path)

    def _put_blob(self, data: bytes) -> str:
        sha = git_blob_sha(data)
        path = self.root / "blobs" / sha
        if not path.exists():
            fd, tmp = tempfile.mkstemp(dir=self.root / "blobs")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        return sha

    def _blob(self, sha: str) -> bytes:
        return (self.root / "blobs" / sha).read_bytes()

    def _blob_size(self, sha: str) -> int:
        return (self.root / "blobs" / sha).stat().st_size

    def _repo(self, rtype: str, repo_id: str) -> dict:
        repo = self._repos.get((rtype, repo_id))
        if repo is None:
            raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return repo

    @staticmethod
    def _resolve(repo: dict, rev: str) -> str:
        for prefix in ("refs/heads/", "refs/tags/"):
            if rev.startswith(prefix):
                rev = rev[len(prefix):]
        sha = repo["branches"].get(rev) or repo["tags"].get(rev) or (rev if rev in repo["commits"] else None)
        if sha is None:
            raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return sha

    def _new_commit(self, rtype: str, repo_id: str, parent: str | None, tree: dict, title: str,
                    message: str = "") -> str:
        key = json.dumps([rtype, repo_id, parent, sorted(tree.items()), title, message])
        sha = hashlib.sha1(key.encode()).hexdigest()
        self._repos[(rtype, repo_id)]["commits"][sha] = {
            "parent": parent, "tree": dict(tree), "title": title, "message": message, "date": _now()}
        return sha

    def create_repo(self, repo_id: str, repo_type: str = "model", private: bool = False, sdk: str | None = None):
        """Create a repo directly (also what POST /api/repos/create does). Returns False if it existed."""
        rtype = repo_type + "s"
        with self._lock:
            if (rtype, repo_id) in self._repos:
                return False
            self._repos[(rtype, repo_id)] = {"private": private, "sdk": sdk, "created": _now(),
                                             "commits": {}, "branches": {}, "tags": {}}
            tree = {".gitattributes": self._put_blob(GITATTRIBUTES)}
            self._repos[(rtype, repo_id)]["branches"]["main"] = self._new_commit(
                rtype, repo_id, None, tree, "initial commit")
            self._save(rtype, repo_id)
            return True


class _Handler(BaseHTTPRequestHandler):
    hub: LocalHub
    protocol_version = "HTTP/1.1"
    server_version = "LocalHub/1.0"
    disable_nagle_algorithm = True  # headers and body go out in two writes: avoid 40 ms delayed-ACK stalls

    def log_message(self, *args) -> None:  # silence stderr; requests are kept in hub.requests
        pass

    def do_GET(self):
        self._handle()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

    # ------------------------------------------------------------------ plumbing
    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                chunk = self.rfile.read(size)
                self.rfile.readline()
                if size == 0:
                    return b"".join(chunks)
                chunks.append(chunk)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _handle(self) -> None:
        hub, method = self.hub, self.command
        status, headers, body = 500, {}, b""
        try:
            self.body = self._read_body()
            fault = hub._take_fault(method, self.path)
            if fault is not None and fault["status"] is None:
                with hub._lock:
                    hub._log.append((method, self.path, 0))
                self.close_connection = True
                return
            if fault is not None:
                raise HubError(fault["status"], fault["message"])
            status, headers, body = self._route(method)
        except HubError as e:
            status, body = e.status, json.dumps({"error": e.message}).encode()
            headers = {"Content-Type": "application/json", "X-Error-Message": e.message, **e.headers}
            if e.code:
                headers["X-Error-Code"] = e.code
        except Exception as e:  # a bug here must become a 500, never a hung connection
            status, body = 500, json.dumps({"error": f"LocalHub internal error: {e!r}"}).encode()
            headers = {"Content-Type": "application/json", "X-Error-Message": f"LocalHub internal error: {e!r}"}
            self.close_connection = True  # the request may not have been read to its end
        with hub._lock:
            hub._log.append((method, self.path, status))
        length = headers.pop("_length", len(body))  # HEAD: the size of the body a GET would send
        try:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, str(v))
            self.send_header("Content-Length", str(length))
            self.end_headers()
            if method != "HEAD":
                self.wfile.write(body)
        except OSError:
            self.close_connection = True

    def _json(self, obj, status: int = 200):
        return status, {"Content-Type": "application/json"}, json.dumps(obj).encode()

    def _payload(self) -> dict:
        try:
            return json.loads(self.body or b"{}")
        except ValueError:
            raise HubError(400, "Request body is not valid JSON")

    def _check_auth(self) -> None:
        if self.hub.require_token and not self.headers.get("Authorization", "").startswith("Bearer "):
            raise HubError(401, "You must be authenticated (Authorization: Bearer <token>) to do this")

    # ------------------------------------------------------------------ routing
    def _route(self, method: str):
        parts = urlsplit(self.path)
        segs = [unquote(s) for s in parts.path.split("/")[1:]]
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        if method in ("POST", "PUT", "DELETE", "PATCH"):
            self._check_auth()
        if segs[:1] != ["api"]:
            rtype = segs.pop(0) if segs[:1] in (["datasets"], ["spaces"]) else "models"
            if len(segs) >= 5 and segs[2] == "resolve" and method in ("GET", "HEAD"):
                return self._resolve_file(rtype, f"{segs[0]}/{segs[1]}", segs[3], "/".join(segs[4:]))
            raise HubError(404, f"Not found: {parts.path}")
        api = segs[1:]
        if api == ["whoami-v2"]:
            self._check_auth()
            return self._json({"type": "user", "name": self.hub.user, "fullname": self.hub.user, "orgs": [],
                               "auth": {"type": "access_token", "accessToken": {"role": "write"}}})
        if api == ["validate-yaml"] and method == "POST":
            return self._json({"errors": [], "warnings": []})
        if api == ["repos", "create"] and method == "POST":
            return self._create_repo(self._payload())
        if api == ["repos", "delete"] and method == "DELETE":
            p = self._payload()
            rtype, repo_id = (p.get("type") or "model") + "s", f"{p.get('organization') or self.hub.user}/{p['name']}"
            with self.hub._lock:
                self.hub._repo(rtype, repo_id)
                del self.hub._repos[(rtype, repo_id)]
                (self.hub.root / "repos" / rtype / f"{repo_id}.json").unlink(missing_ok=True)
            return self._json({})
        if len(api) >= 3 and api[0] in REPO_TYPES:
            rtype, repo_id, rest = api[0], f"{api[1]}/{api[2]}", api[3:]
            with self.hub._lock:
                return self._repo_api(method, rtype, repo_id, rest, query)
        raise HubError(404, f"Not found: {parts.path}")

    def _repo_api(self, method: str, rtype: str, repo_id: str, rest: list[str], query: dict):
        hub = self.hub
        repo = hub._repo(rtype, repo_id)
        action = (method, rest[0] if rest else "")
        if action == ("GET", "") or (action == ("GET", "revision") and len(rest) == 2):
            return self._json(self._info(rtype, repo_id, repo, rest[1] if rest else "main",
                                         blobs=query.get("blobs") in ("true", "True", "1")))
        if action == ("GET", "refs"):
            def refs(kind, prefix):
                return [{"name": n, "ref": prefix + n, "targetCommit": s} for n, s in sorted(repo[kind].items())]
            return self._json({"branches": refs("branches", "refs/heads/"), "tags": refs("tags", "refs/tags/"),
                               "converts": [], "pullRequests": []})
        if action == ("GET", "tree") and len(rest) >= 2:
            tree = repo["commits"][hub._resolve(repo, rest[1])]["tree"]
            return self._json(self._tree(tree, "/".join(rest[2:]), query.get("recursive", "").lower() in ("1", "true")))
        if action == ("GET", "commits") and len(rest) == 2:
            sha, out = hub._resolve(repo, rest[1]), []
            while sha is not None:
                c = repo["commits"][sha]
                out.append({"id": sha, "title": c["title"], "message": c["message"], "date": c["date"],
                            "authors": [{"user": hub.user if c["parent"] else "system"}]})
                sha = c["parent"]
            return self._json(out)
        if action == ("POST", "preupload") and len(rest) == 2:
            return self._preupload(repo, rest[1], query)
        if action == ("POST", "commit") and len(rest) == 2:
            return self._commit(rtype, repo_id, repo, rest[1], query)
        if action == ("POST", "branch") and len(rest) == 2:
            if rest[1] in repo["branches"]:
                raise HubError(409, f"Branch {rest[1]} already exists")
            repo["branches"][rest[1]] = hub._resolve(repo, self._payload().get("startingPoint") or "main")
        elif action == ("DELETE", "branch") and len(rest) == 2:
            if repo["branches"].pop(rest[1], None) is None:
                raise HubError(404, f"Branch {rest[1]} not found", "RevisionNotFound")
        elif action == ("POST", "tag") and len(rest) == 2:
            tag = self._payload().get("tag") or ""
            if not tag:
                raise HubError(400, "Missing tag name")
            if tag in repo["tags"]:
                raise HubError(409, f"Tag {tag} already exists")
            repo["tags"][tag] = hub._resolve(repo, rest[1])
        elif action == ("DELETE", "tag") and len(rest) == 2:
            if repo["tags"].pop(rest[1], None) is None:
                raise HubError(404, f"Tag {rest[1]} not found", "RevisionNotFound")
        else:
            raise HubError(501, f"LocalHub does not implement {method} /api/{rtype}/{repo_id}/{'/'.join(rest)}")
        hub._save(rtype, repo_id)
        return self._json({})

    # ------------------------------------------------------------------ endpoints
    def _create_repo(self, p: dict):
        if not p.get("name"):
            raise HubError(400, "Missing repo name")
        repo_type = p.get("type") or "model"
        if repo_type + "s" not in REPO_TYPES:
            raise HubError(400, f"Invalid repo type {repo_type!r}")
        repo_id = f"{p.get('organization') or self.hub.user}/{p['name']}"
        prefix = "" if repo_type == "model" else repo_type + "s/"
        url = f"http://{self.headers.get('Host') or f'{self.hub.host}:{self.hub.port}'}/{prefix}{repo_id}"
        private = p.get("private") or p.get("visibility") == "private"
        if not self.hub.create_repo(repo_id, repo_type, bool(private), p.get("sdk")):
            return self._json({"error": "You already created this repo", "url": url}, 409)
        return self._json({"url": url, "name": repo_id, "id": repo_id})

    def _info(self, rtype: str, repo_id: str, repo: dict, rev: str, blobs: bool = False) -> dict:
        sha = self.hub._resolve(repo, rev)
        commit = repo["commits"][sha]
        siblings = [{"rfilename": p} for p in sorted(commit["tree"])]
        if blobs:  # files_metadata=True: each file's size and blob id, as the Hub answers ?blobs=true
            for sib in siblings:
                blob = commit["tree"][sib["rfilename"]]
                sib.update(size=self.hub._blob_size(blob), blobId=blob)
        info = {"_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24], "id": repo_id,
                "author": repo_id.split("/")[0], "sha": sha, "private": repo["private"], "disabled": False,
                "gated": False, "downloads": 0, "likes": 0, "tags": [], "createdAt": repo["created"],
                "lastModified": commit["date"], "siblings": siblings,
                "usedStorage": sum(self.hub._blob_size(b) for b in commit["tree"].values())}
        if rtype == "models":
            info["modelId"] = repo_id
        if rtype == "spaces":
            info["sdk"] = repo.get("sdk")
        return info

    def _tree(self, tree: dict, base: str, recursive: bool) -> list[dict]:
        prefix = base.rstrip("/") + "/" if base else ""
        files = sorted(p for p in tree if p.startswith(prefix))
        if base and not files:
            raise HubError(404, f"Path {base} not found in tree", "EntryNotFound")
        entries, dirs = [], set()
        for path in files:
            rel = path[len(prefix):].split("/")
            for depth in range(1, len(rel) if recursive else min(2, len(rel))):
                dirs.add(prefix + "/".join(rel[:depth]))
            if recursive or len(rel) == 1:
                entries.append({"type": "file", "oid": tree[path], "size": self.hub._blob_size(tree[path]),
                                "path": path})
        for d in sorted(dirs):
            listing = json.dumps(sorted((p, b) for p, b in tree.items() if p.startswith(d + "/")))
            entries.append({"type": "directory", "oid": hashlib.sha1(listing.encode()).hexdigest(), "path": d})
        return entries

    def _preupload(self, repo: dict, rev: str, query: dict):
        if query.get("create_pr"):
            raise HubError(501, "LocalHub does not implement pull requests")
        tree = repo["commits"][self.hub._resolve(repo, rev)]["tree"]
        files = self._payload().get("files") or []
        return self._json({"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                                      "oid": tree.get(f["path"])} for f in files]})

    def _commit(self, rtype: str, repo_id: str, repo: dict, rev: str, query: dict):
        hub = self.hub
        if query.get("create_pr"):
            raise HubError(501, "LocalHub does not implement pull requests")
        if rev not in repo["branches"]:
            hub._resolve(repo, rev)  # 404 RevisionNotFound if unknown at all
            raise HubError(400, f"Can only commit to a branch, not to {rev!r}")
        head = repo["branches"][rev]
        tree = dict(repo["commits"][head]["tree"])
        title, message = "", ""
        for line in self.body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item.get("key"), item.get("value") or {}
            if key == "header":
                title, message = value.get("summary") or "", value.get("description") or ""
                parent = value.get("parentCommit")
                if parent is not None and parent != head:
                    raise HubError(412, f"A commit has happened since {parent}; the head of {rev} is {head}")
            elif key == "file":
                if value.get("encoding", "base64") != "base64":
                    raise HubError(400, f"Unsupported encoding {value.get('encoding')!r}")
                tree[_check_path(value["path"])] = hub._put_blob(base64.b64decode(value["content"]))
            elif key == "deletedFile":
                if tree.pop(value["path"], None) is None:
                    raise HubError(404, f"A file with this name doesn't exist: {value['path']}", "EntryNotFound")
            elif key == "deletedFolder":
                folder = value["path"].rstrip("/") + "/"
                doomed = [p for p in tree if p.startswith(folder)]
                if not doomed:
                    raise HubError(404, f"A folder with this name doesn't exist: {value['path']}", "EntryNotFound")
                for p in doomed:
                    del tree[p]
            elif key in ("lfsFile", "deletedEntries"):
                raise HubError(400, f"LocalHub does not accept {key!r} operations (it answers uploadMode=regular)")
            else:
                raise HubError(400, f"Unknown commit operation {key!r}")
        if not title:
            raise HubError(400, "Missing commit header with a summary")
        sha = hub._new_commit(rtype, repo_id, head, tree, title, message)
        repo["branches"][rev] = sha
        hub._save(rtype, repo_id)
        host = self.headers.get("Host") or f"{hub.host}:{hub.port}"
        prefix = "" if rtype == "models" else rtype + "/"
        return self._json({"success": True, "commitOid": sha, "pullRequestUrl": None,
                           "commitUrl": f"http://{host}/{prefix}{repo_id}/commit/{sha}"})

    def _resolve_file(self, rtype: str, repo_id: str, rev: str, path: str):
        with self.hub._lock:
            repo = self.hub._repo(rtype, repo_id)
            sha = self.hub._resolve(repo, rev)
            blob = repo["commits"][sha]["tree"].get(path)
        if blob is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": sha})
        headers = {"X-Repo-Commit": sha, "ETag": f'"{blob}"', "Accept-Ranges": "bytes",
                   "Content-Type": "application/octet-stream",
                   "Content-Disposition": f'inline; filename="{path.rsplit("/", 1)[-1]}"'}
        if self.command == "HEAD":
            return 200, {**headers, "_length": self.hub._blob_size(blob)}, b""
        data = self.hub._blob(blob)
        m = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", "").strip())
        if m and (m.group(1) or m.group(2)):
            start = int(m.group(1)) if m.group(1) else max(len(data) - int(m.group(2)), 0)
            end = min(int(m.group(2)), len(data) - 1) if m.group(1) and m.group(2) else len(data) - 1
            if start >= len(data) or start > end:
                raise HubError(416, "Requested range not satisfiable", headers={"Content-Range": f"bytes */{len(data)}"})
            return 206, {**headers, "Content-Range": f"bytes {start}-{end}/{len(data)}"}, data[start:end + 1]
        return 200, headers, data
