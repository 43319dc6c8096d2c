"""A Civitai-compatible HTTP server (stdlib only) on 127.0.0.1, and a second "storage" host it redirects to.

Serves the public API's response shapes (developer.civitai.com/site/reference): ``GET /api/v1/models/{id}``
(with ``modelVersions``), ``GET /api/v1/model-versions/{id}``, ``GET /api/v1/model-versions/by-hash/{hash}``,
``POST /api/v1/model-versions/by-hash`` (a JSON array of hashes -> an array of versions), and
``/api/download/models/{versionId}`` (302 to the storage host, which serves Range requests). Hashes are
Civitai's: AutoV2 (sha256[:10]), SHA256, AutoV3 (sha256 of the bytes after the safetensors header, [:12]),
upper case.

Faults (set on ``CivitaiServer``): ``token`` + a version's ``needs_token`` (401 without it, 403 with a wrong
one), ``early_access`` (403 whatever the token), ``login_page`` (200 text/html instead of the file),
``rate_limit`` (the next N API requests answer 429 with Retry-After), ``cut_after`` (the storage host drops
the body after N bytes once, then answers 500 once), ``not_json`` (API paths answer an HTML page), a wrong
SHA256 in the listing (``wrong_hash``), and ``replace_file`` (other bytes under the same version).
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional
from urllib.parse import urlsplit

DATE = "2025-06-01T00:00:00.000Z"


def autov3(data: bytes) -> str:
    """A1111's addnet hash (network.py / hashes.py): sha256 of the bytes after the 8-byte length and the
    JSON header, written here independently of the code under test."""
    n = int.from_bytes(data[:8], "little")
    return hashlib.sha256(data[8 + n:]).hexdigest()


@dataclass
class CFile:
    id: int
    name: str
    data: bytes
    type: str = "Model"
    primary: bool = True
    fmt: str = "SafeTensor"
    has_autov3: bool = True        # files hashed before Civitai computed AutoV3 have none
    fixed: Optional[dict] = None   # hashes to list instead of the data's (the benchmark's catalogue of 1,000)

    def hashes(self) -> dict:
        if self.fixed is not None:
            return dict(self.fixed)
        cached = getattr(self, "_hashes", None)
        if cached is not None and cached[0] is self.data and cached[1] == self.has_autov3:
            return dict(cached[2])   # hashing a large file on every request would time the server, not the client
        out = self._compute()
        self._hashes = (self.data, self.has_autov3, out)
        return dict(out)

    def _compute(self) -> dict:
        sha = hashlib.sha256(self.data).hexdigest().upper()
        out = {"AutoV2": sha[:10], "SHA256": sha, "CRC32": "00000000"}
        if self.fmt == "SafeTensor" and self.has_autov3:
            out["AutoV3"] = autov3(self.data).upper()[:12]
        return out


@dataclass
class CVersion:
    id: int
    model_id: int
    name: str
    files: list[CFile]
    base_model: str = "SDXL 1.0"
    trained_words: list[str] = field(default_factory=list)
    images: list[bytes] = field(default_factory=list)
    needs_token: bool = False
    early_access: bool = False
    login_page: bool = False
    wrong_hash: bool = False


@dataclass
class CModel:
    id: int
    name: str
    type: str = "LORA"
    versions: list[CVersion] = field(default_factory=list)      # newest first, as Civitai lists them
    description: str = "<p>A <b>test</b> LoRA &amp; friends.</p><p>Use it well.</p>"
    allow_commercial_use: list[str] = field(default_factory=lambda: ["Image", "Rent"])
    nsfw: bool = False


class CivitaiServer:
    def __init__(self) -> None:
        self.models: dict[int, CModel] = {}
        self.token: Optional[str] = None
        self.rate_limit = 0
        self.retry_after = "0"
        self.cut_after: Optional[int] = None
        self.not_json = False
        self.bandwidth: Optional[float] = None   # bytes/s the storage host sends at (None: as fast as loopback)
        self.requests: list[dict] = []          # method, path, host, authorization, range
        self.lock = threading.Lock()
        self._api = _serve(self, "api")
        self._storage = _serve(self, "storage")

    # --- building the catalogue --------------------------------------------------------------------------
    def add_model(self, model: CModel) -> CModel:
        self.models[model.id] = model
        return model

    def version(self, version_id: int) -> Optional[CVersion]:
        for m in self.models.values():
            for v in m.versions:
                if v.id == version_id:
                    return v
        return None

    def replace_file(self, version_id: int, data: bytes) -> None:
        v = self.version(version_id)
        v.files[0].data = data

    # --- addresses ---------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._api.server_address[1]}"

    @property
    def storage_url(self) -> str:
        return f"http://localhost:{self._storage.server_address[1]}"

    def api_requests(self) -> list[dict]:
        return [r for r in self.requests if r["server"] == "api" and r["path"].startswith("/api/v1/")]

    def stop(self) -> None:
        for s in (self._api, self._storage):
            s.shutdown()
            s.server_close()

    # --- JSON shapes -------------------------------------------------------------------------------------
    def file_json(self, v: CVersion, f: CFile) -> dict:
        hashes = f.hashes()
        if v.wrong_hash:
            hashes["SHA256"] = "0" * 64
        return {"id": f.id, "name": f.name, "type": f.type, "sizeKB": len(f.data) / 1024,
                "metadata": {"format": f.fmt, "size": "pruned", "fp": "fp16"}, "pickleScanResult": "Success",
                "virusScanResult": "Success", "scannedAt": DATE, "hashes": hashes, "primary": f.primary,
                "downloadUrl": f"{self.url}/api/download/models/{v.id}"
                               + ("" if f.primary else f"?type={f.type}&format={f.fmt}")}

    def version_json(self, v: CVersion, *, nested: bool = False) -> dict:
        m = self.models[v.model_id]
        out = {"id": v.id, "modelId": m.id, "name": v.name, "description": "<p>changes</p>",
               "baseModel": v.base_model, "baseModelType": "Standard",
               "air": f"urn:air:sdxl:{m.type.lower()}:civitai:{m.id}@{v.id}", "status": "Published",
               "availability": "EarlyAccess" if v.early_access else "Public", "nsfwLevel": 1,
               "createdAt": DATE, "updatedAt": DATE, "publishedAt": DATE, "trainedWords": list(v.trained_words),
               "stats": {"downloadCount": 1, "thumbsUpCount": 1},
               "files": [self.file_json(v, f) for f in v.files],
               "images": [{"url": f"{self.storage_url}/images/{v.id}/{i}.png", "nsfwLevel": 1, "width": 8,
                           "height": 8, "type": "image", "hash": "U00000fQfQfQfQfQfQfQfQfQfQfQ"}
                          for i, _ in enumerate(v.images)],
               "downloadUrl": f"{self.url}/api/download/models/{v.id}"}
        if not nested:
            out["model"] = {"name": m.name, "type": m.type, "nsfw": m.nsfw, "poi": False}
        return out

    def model_json(self, m: CModel) -> dict:
        return {"id": m.id, "name": m.name, "description": m.description, "type": m.type, "poi": False,
                "nsfw": m.nsfw, "nsfwLevel": 1, "allowNoCredit": True, "allowCommercialUse": m.allow_commercial_use,
                "allowDerivatives": True, "allowDifferentLicense": True, "stats": {"downloadCount": 1},
                "creator": {"username": "tester", "image": None}, "tags": ["style", "test"],
                "modelVersions": [self.version_json(v, nested=True) for v in m.versions]}

    def by_hash(self, digest: str) -> Optional[CVersion]:
        """The version with a file of this hash (an index, rebuilt when the catalogue changed)."""
        key = tuple((m.id, len(m.versions), id(v.files[0].data) if v.files else 0)
                    for m in self.models.values() for v in m.versions)
        if getattr(self, "_index_key", None) != key:
            self._index = {h.upper(): v for m in self.models.values() for v in m.versions for f in v.files
                           for h in f.hashes().values()}
            self._index_key = key
        return self._index.get(digest.upper())


def _serve(owner: CivitaiServer, role: str) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.owner, server.role = owner, role
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        pass

    @property
    def owner(self) -> CivitaiServer:
        return self.server.owner

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        path = urlsplit(self.path).path
        with self.owner.lock:
            self.owner.requests.append({"server": self.server.role, "method": method, "path": path,
                                        "authorization": self.headers.get("Authorization"),
                                        "range": self.headers.get("Range")})
        if self.server.role == "storage":
            return self._storage(path)
        if path.startswith("/api/v1/"):
            with self.owner.lock:
                limited = self.owner.rate_limit > 0
                if limited:
                    self.owner.rate_limit -= 1
            if limited:
                return self._send(429, b'{"error":"Too Many Requests"}', {"Retry-After": self.owner.retry_after})
            if self.owner.not_json:
                return self._send(200, b"<!DOCTYPE html><html><body>Cloudflare</body></html>",
                                  {"Content-Type": "text/html"})
        parts = [p for p in path.split("/") if p]
        if method == "POST" and parts == ["api", "v1", "model-versions", "by-hash"]:
            length = int(self.headers.get("Content-Length") or 0)
            asked = json.loads(self.rfile.read(length) or b"[]")
            found, seen = [], set()
            for digest in asked:
                v = self.owner.by_hash(str(digest))
                if v is not None and v.id not in seen:
                    seen.add(v.id)
                    found.append(self.owner.version_json(v))
            return self._json(found)
        if parts[:4] == ["api", "v1", "model-versions", "by-hash"] and len(parts) == 5:
            v = self.owner.by_hash(parts[4])
            return self._json(self.owner.version_json(v)) if v else self._json({"error": "Model not found"}, 404)
        if parts[:3] == ["api", "v1", "model-versions"] and len(parts) == 4 and parts[3].isdigit():
            v = self.owner.version(int(parts[3]))
            return self._json(self.owner.version_json(v)) if v else self._json({"error": "No model version"}, 404)
        if parts[:3] == ["api", "v1", "models"] and len(parts) == 4 and parts[3].isdigit():
            m = self.owner.models.get(int(parts[3]))
            return self._json(self.owner.model_json(m)) if m else self._json({"error": "No model"}, 404)
        if parts[:3] == ["api", "download", "models"] and len(parts) == 4 and parts[3].isdigit():
            return self._download(int(parts[3]))
        self._json({"error": "Not found"}, 404)

    def _download(self, version_id: int) -> None:
        v = self.owner.version(version_id)
        if v is None:
            return self._json({"error": "No model version"}, 404)
        auth = self.headers.get("Authorization")
        if v.early_access:
            return self._json({"error": "early access"}, 403)
        if v.login_page:
            return self._send(200, b"<!DOCTYPE html><html><head><title>Sign in</title></head><body>Log in to "
                                   b"download</body></html>", {"Content-Type": "text/html"})
        if v.needs_token:
            if not auth:
                return self._json({"error": "Unauthorized"}, 401)
            if auth != f"Bearer {self.owner.token}":
                return self._json({"error": "Forbidden"}, 403)
        query = urlsplit(self.path).query
        f = next((f for f in v.files if f"type={f.type}&format={f.fmt}" in query), None) if query else None
        f = f or next((f for f in v.files if f.primary), v.files[0])
        sha = f.hashes()["SHA256"].lower()
        self._send(302, b"", {"Location": f"{self.owner.storage_url}/blobs/{version_id}/{f.id}?sig={sha[:8]}"})

    def _storage(self, path: str) -> None:
        parts = [p for p in path.split("/") if p]
        if parts[0] == "images":
            v = self.owner.version(int(parts[1]))
            return self._send(200, v.images[int(parts[2].split(".")[0])], {"Content-Type": "image/png"})
        v = self.owner.version(int(parts[1]))
        f = next(f for f in v.files if f.id == int(parts[2]))
        data = f.data
        etag = '"' + f.hashes()["SHA256"].lower()[:16] + '"'
        start = 0
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes=") and self.headers.get("If-Range") in (None, etag):
            start = int(rng[6:].split("-")[0])
        cut = self.owner.cut_after
        if cut == -1:   # the cut happened: the next request fails with a server error once
            self.owner.cut_after = None
            return self._json({"error": "Internal Server Error"}, 500)
        headers = {"ETag": etag, "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream",
                   "Content-Disposition": f'attachment; filename="{f.name}"'}
        if start:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        body = data[start:]
        self.send_response(206 if start else 200)
        for k, val in headers.items():
            self.send_header(k, val)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if cut is not None and cut > 0:
            self.owner.cut_after = -1
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True
            import socket

            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if self.owner.bandwidth:
            return self._paced(body, self.owner.bandwidth)
        self.wfile.write(body)

    def _paced(self, body: bytes, rate: float) -> None:
        """Send ``body`` at ``rate`` bytes/s (a real connection, for the pull benchmark), 256 KiB at a time."""
        import time

        start, step = time.perf_counter(), 256 << 10
        for at in range(0, len(body), step):
            ahead = (at / rate) - (time.perf_counter() - start)
            if ahead > 0:
                time.sleep(ahead)
            self.wfile.write(body[at:at + step])

    def _json(self, data, status: int = 200) -> None:
        self._send(status, json.dumps(data).encode(), {"Content-Type": "application/json"})

    def _send(self, status: int, body: bytes, headers: Optional[dict] = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
