"""A Hub-compatible HTTP server (stdlib only) for the real huggingface_hub client.

Serves what ../shared/reference/hub.md lists: model info (with ``?blobs=true`` LFS facts and cardData parsed
from the README), tree listings, HEAD/GET ``/resolve`` with ``X-Repo-Commit``/``ETag``/``X-Linked-*`` headers,
typed errors through ``X-Error-Code``, Range (206/416), an optional LFS redirect to a "CDN" on another host
name, and ``/static/...`` files for URL sources. Never sends Xet headers, so the client always uses HTTP.
"""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional
from urllib.parse import parse_qs, quote, unquote, urlsplit

from tests.hubserver.repo import FakeHub, FakeRepo, Request, StoredFile

CHUNK = 1 << 20
DATE = "2024-01-01T00:00:00.000Z"


def _truthy(values: list[str]) -> bool:
    # 0.x clients send True/False, newer ones true/false
    return bool(values) and values[-1].lower() in ("1", "true")


def _parse_range(header: Optional[str], size: int) -> Optional[tuple[int, int]]:
    """``bytes=a-`` / ``bytes=a-b`` / ``bytes=-n`` -> inclusive (start, end); (-1, -1) when unsatisfiable."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first, _, last = header[6:].strip().partition("-")
    try:
        if first == "":
            n = int(last)
            return (max(size - n, 0), size - 1) if n > 0 and size else (-1, -1)
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return None
    if start >= size or end < start:
        return (-1, -1)
    return start, min(end, size - 1)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64
    allow_reuse_address = True

    def __init__(self, address, handler, hub: FakeHub, owner: "HubServer"):
        super().__init__(address, handler)
        self.hub = hub
        self.owner = owner
        self.connections: set[socket.socket] = set()
        self.conn_lock = threading.Lock()

    def handle_error(self, request, client_address):  # clients hanging up mid-body are expected
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True   # else Nagle + delayed ACK add ~40 ms per response
    server: _Server

    # --- plumbing ----------------------------------------------------------------------------------
    def setup(self) -> None:
        super().setup()
        with self.server.conn_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.server.conn_lock:
                self.server.connections.discard(self.connection)

    def log_message(self, format, *args):  # quiet
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def _dispatch(self, method: str) -> None:
        self._record = Request(method, self.path, {k: v for k, v in self.headers.items()})
        self.server.hub.log(self._record)
        try:
            if method in ("POST", "PUT") or self.path.startswith("/api/whoami"):
                return self._write(method)
            self._route(method)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _write(self, method: str) -> None:
        """Repos, branches, uploads and commits (``commits.py``)."""
        from tests.hubserver.commits import read_body, route_write

        body = read_body(self) if method in ("POST", "PUT") else b""
        parts = [unquote(p) for p in urlsplit(self.path).path.split("/")[1:]]
        if not route_write(self, method, parts, body):
            self._error(404, None, "Not Found")

    def _token(self) -> Optional[str]:
        auth = self.headers.get("Authorization", "")
        return auth[7:].strip() if auth.lower().startswith("bearer ") else None

    def _send(self, status: int, body: bytes = b"", headers: Optional[dict] = None,
              content_type: str = "application/json") -> None:
        self._record.status = status
        self.send_response(status)
        for key, value in {"Content-Type": content_type, "Content-Length": str(len(body)),
                           **(headers or {})}.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _json(self, data, status: int = 200, headers: Optional[dict] = None) -> None:
        self._send(status, json.dumps(data).encode(), headers)

    def _error(self, status: int, code: Optional[str], message: str, headers: Optional[dict] = None) -> None:
        extra = {"X-Error-Message": message, **(headers or {})}
        if code:
            extra["X-Error-Code"] = code
        self._json({"error": message}, status, extra)

    # --- routing -----------------------------------------------------------------------------------
    def _route(self, method: str) -> None:
        split = urlsplit(self.path)
        # split on the raw "/" first: a revision such as refs/pr/1 arrives as refs%2Fpr%2F1
        parts = [unquote(p) for p in split.path.split("/")[1:]]
        query = parse_qs(split.query)
        if parts[:2] == ["api", "agent-harnesses"]:
            return self._json({"standardEnvVars": [], "harnesses": {}})
        if parts[:2] == ["api", "models"] and len(parts) >= 4 and method == "GET":
            return self._api_model(parts[2] + "/" + parts[3], parts[4:], query)
        if parts[:1] == ["static"]:
            return self._static("/".join(parts[1:]))
        if parts[:1] == ["cdn"] and len(parts) >= 3:
            return self._cdn(parts[1] + "/" + parts[2], query)
        if len(parts) >= 5 and parts[2] == "resolve":
            return self._resolve(parts[0] + "/" + parts[1], parts[3], "/".join(parts[4:]))
        self._error(404, None, "Not Found")

    # --- access ------------------------------------------------------------------------------------
    def _repo_or_error(self, repo_id: str) -> Optional[FakeRepo]:
        repo = self.server.hub.repos.get(repo_id)
        token = self._token()
        if repo is None or (repo.private and token not in repo.allowed_tokens):
            # the Hub answers 401 to anonymous callers and 404 to logged-in ones
            self._error(404 if token else 401, "RepoNotFound", "Repository not found")
            return None
        return repo

    def _gate(self, repo: FakeRepo) -> bool:
        """True when the caller may download files of ``repo``; otherwise answers the GatedRepo error."""
        token = self._token()
        if not repo.gated or token in repo.allowed_tokens:
            return True
        message = (f"Access to model {repo.repo_id} is restricted. You must have access to it and be "
                   "authenticated to access it. Please log in.")
        self._error(403 if token else 401, "GatedRepo", message)
        return False

    def _revision_or_error(self, repo: FakeRepo, revision: Optional[str]) -> Optional[str]:
        sha = repo.resolve(revision)
        if sha is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return sha

    # --- API ---------------------------------------------------------------------------------------
    def _api_model(self, repo_id: str, rest: list[str], query: dict) -> None:
        repo = self._repo_or_error(repo_id)
        if repo is None:
            return
        if rest[:1] == ["tree"] and len(rest) >= 2:
            sha = self._revision_or_error(repo, rest[1])
            if sha is not None:
                self._tree(repo, sha, "/".join(rest[2:]), _truthy(query.get("recursive", [])))
            return
        revision = rest[1] if rest[:1] == ["revision"] and len(rest) >= 2 else None
        sha = self._revision_or_error(repo, revision)
        if sha is not None:
            self._json(self._model_info(repo, sha, _truthy(query.get("blobs", []))))

    def _model_info(self, repo: FakeRepo, sha: str, blobs: bool) -> dict:
        card = repo.card_data(sha)
        tags = list((card or {}).get("tags") or [])
        base = (card or {}).get("base_model")
        for b in [base] if isinstance(base, str) else (base or []):
            tags.append(f"base_model:{b}")
        siblings = []
        for path, f in sorted(repo.files_at(sha).items()):
            entry: dict = {"rfilename": path}
            if blobs:
                entry.update(size=f.size, blobId=f.blob_id)
                if f.lfs:
                    entry["lfs"] = {"sha256": f.sha256, "size": f.size, "pointerSize": f.pointer_size}
            siblings.append(entry)
        owner = repo.repo_id.split("/")[0]
        return {
            "_id": sha[:24], "id": repo.repo_id, "modelId": repo.repo_id, "author": owner, "sha": sha,
            "lastModified": DATE, "createdAt": DATE, "private": repo.private,
            "gated": "manual" if repo.gated else False, "disabled": False, "downloads": 0, "likes": 0,
            "library_name": (card or {}).get("library_name"), "tags": tags,
            "pipeline_tag": (card or {}).get("pipeline_tag"), "cardData": card, "siblings": siblings,
            "spaces": [], "usedStorage": sum(f.size for f in repo.files_at(sha).values()),
        }

    def _tree(self, repo: FakeRepo, sha: str, prefix: str, recursive: bool) -> None:
        prefix = prefix.strip("/")
        entries, folders = [], set()
        for path, f in sorted(repo.files_at(sha).items()):
            if prefix and not path.startswith(prefix + "/"):
                continue
            rel = path[len(prefix) + 1:] if prefix else path
            if "/" in rel:
                parts = rel.split("/")
                base = prefix + "/" if prefix else ""
                for i in range(1, len(parts) if recursive else 2):
                    folders.add(base + "/".join(parts[:i]))
                if not recursive:
                    continue
            entry = {"type": "file", "oid": f.blob_id, "size": f.size, "path": path}
            if f.lfs:
                entry["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": f.pointer_size}
            entries.append(entry)
        if prefix and not entries and not folders:
            return self._error(404, "EntryNotFound", f"{prefix} does not exist on {sha}",
                               {"X-Repo-Commit": sha})
        dirs = [{"type": "directory", "oid": "0" * 40, "size": 0, "path": d} for d in sorted(folders)]
        self._json(dirs + entries)

    # --- files -------------------------------------------------------------------------------------
    def _resolve(self, repo_id: str, revision: str, path: str) -> None:
        repo = self._repo_or_error(repo_id)
        if repo is None:
            return
        sha = self._revision_or_error(repo, revision)
        if sha is None:
            return
        f = repo.files_at(sha).get(path)
        if f is None:
            return self._error(404, "EntryNotFound", f"{path} does not exist on \"{revision}\"",
                               {"X-Repo-Commit": sha})
        # like the Hub, the card and attributes stay readable; the weights are gated
        if path not in ("README.md", ".gitattributes") and not self._gate(repo):
            return
        headers = {"X-Repo-Commit": sha, "ETag": f'"{f.etag}"',
                   "Content-Disposition": f'inline; filename*=UTF-8\'\'{quote(path.split("/")[-1])}; '
                                          f'filename="{path.split("/")[-1]}";'}
        if f.lfs:
            headers.update({"X-Linked-Etag": f'"{f.sha256}"', "X-Linked-Size": str(f.size)})
        if f.lfs and self.server.owner.lfs_redirect:
            cdn = f"{self.server.owner.cdn_url}/cdn/{repo_id}?sha256={f.sha256}&path={quote(path)}"
            headers["Location"] = cdn
            return self._send(302, b"", headers)
        self._body(repo_id, f.path, f.data, headers, content_type="application/octet-stream")

    def _cdn(self, repo_id: str, query: dict) -> None:
        repo = self.server.hub.repos.get(repo_id)
        sha256 = (query.get("sha256") or [""])[0]
        path = (query.get("path") or [""])[0]
        for tree in (repo.commits.values() if repo else []):
            f: Optional[StoredFile] = tree.get(path)
            if f is not None and f.sha256 == sha256:
                return self._body(repo_id, path, f.data, {"ETag": f'"{sha256}"'})
        self._send(404, b"NoSuchKey", content_type="text/plain")

    def _static(self, path: str) -> None:
        item = self.server.hub.static.get(path)
        if item is None:
            return self._send(404, b"<html><body>404 Not Found</body></html>", content_type="text/html")
        headers = {"ETag": f'"{item.etag}"'} if item.etag else {}
        self._body("static", path, item.data, headers, content_type=item.content_type,
                   ranges=item.accept_ranges)

    def _body(self, target: str, path: str, data: bytes, headers: dict, *,
              content_type: str = "application/octet-stream", ranges: bool = True) -> None:
        """Send file bytes honouring Range/If-Range, with the faults registered for this file."""
        hub = self.server.hub
        status_fault = hub.take_fault(target, path, "status") if self.command == "GET" else None
        if status_fault:
            return self._send(status_fault.status, b'{"error": "Internal Error"}')
        corrupt = hub.take_fault(target, path, "corrupt") if self.command == "GET" else None
        if corrupt:
            data = _flip(data, corrupt.offset, corrupt.length)
        size = len(data)
        status, start, end = 200, 0, size - 1
        wanted = _parse_range(self.headers.get("Range"), size) if ranges else None
        if_range = self.headers.get("If-Range")
        if wanted and if_range and if_range != headers.get("ETag"):
            wanted = None  # the file changed since the partial copy: send it whole
        if wanted == (-1, -1):
            return self._send(416, b"", {"Content-Range": f"bytes */{size}", **headers}, content_type)
        if wanted:
            status, (start, end) = 206, wanted
            headers = {**headers, "Content-Range": f"bytes {start}-{end}/{size}"}
        if ranges:
            headers = {**headers, "Accept-Ranges": "bytes"}
        self._record.status = status
        self.send_response(status)
        for key, value in {"Content-Type": content_type, "Content-Length": str(end - start + 1),
                           **headers}.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command == "HEAD":
            return
        drop = hub.take_fault(target, path, "drop")
        stop = min(end + 1, start + drop.after) if drop else end + 1
        view = memoryview(data)
        for pos in range(start, stop, CHUNK):
            self.wfile.write(view[pos:min(pos + CHUNK, stop)])
        if drop:
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)


def _flip(data: bytes, offset: Optional[int], length: int) -> bytes:
    start = len(data) // 2 if offset is None else offset
    out = bytearray(data)
    for i in range(start, min(start + length, len(out))):
        out[i] ^= 0xFF
    return bytes(out)


class HubServer:
    """The fake Hub on a free loopback port. Use as a context manager, or ``start()``/``stop()``.

    ``lfs_redirect=True`` answers LFS files with a 302 to a "CDN" at ``http://localhost:<port>`` (another host
    name, as on the real Hub, so the client neither follows the HEAD redirect nor sends its token there).
    """

    def __init__(self, hub: Optional[FakeHub] = None, *, lfs_redirect: bool = False):
        self.hub = hub or FakeHub()
        self.lfs_redirect = lfs_redirect
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None

    @property
    def port(self) -> int:
        assert self._server is not None, "server not started"
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def static_url(self, path: str) -> str:
        """A static file's URL on another host name than HF_ENDPOINT: a plain web server, not the Hub."""
        return f"http://localhost:{self.port}/static/{path.lstrip('/')}"

    @property
    def cdn_url(self) -> str:
        return f"http://localhost:{self.port}"

    def env(self) -> dict[str, str]:
        """HF_* variables pointing a client (in this process or a child) at this server."""
        return {"HF_ENDPOINT": self.url, "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_XET": "1",
                "HF_HUB_DISABLE_PROGRESS_BARS": "1", "NO_PROXY": "127.0.0.1,localhost",
                "no_proxy": "127.0.0.1,localhost"}

    def start(self) -> "HubServer":
        self._server = _Server(("127.0.0.1", 0), _Handler, self.hub, self)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        name="fake-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        # kept-alive connections would go on being served after shutdown(): cut them
        with self._server.conn_lock:
            for conn in list(self._server.connections):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self._server.server_close()
        self._server = None

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
