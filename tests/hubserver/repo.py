"""In-memory state of the fake Hub: model repositories (commits, refs, files), static files, faults.

Everything the server answers is derived from here, so a test builds exactly the Hub it needs and then
checks what the client asked for in ``FakeHub.requests``.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from typing import Mapping, Optional, Union

import yaml

# Files the real Hub stores in LFS through the default .gitattributes of a new model repo.
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".gguf")

FileData = Union[bytes, str]


def git_blob_sha1(data: bytes) -> str:
    """The id git gives a blob; the Hub uses it as the ETag of regular (non-LFS) files."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(data: bytes) -> bytes:
    """The Git LFS pointer text committed in place of a large file."""
    sha = hashlib.sha256(data).hexdigest()
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize {len(data)}\n".encode()


class StoredFile:
    """One file of one commit, with the facts the Hub reports about it."""

    def __init__(self, path: str, data: bytes, lfs: Optional[bool] = None):
        self.path = path
        self.data = data
        self.size = len(data)
        self.lfs = path.lower().endswith(LFS_SUFFIXES) if lfs is None else lfs
        self.sha256 = hashlib.sha256(data).hexdigest() if self.lfs else None
        pointer = lfs_pointer(data) if self.lfs else None
        self.pointer_size = len(pointer) if pointer else None
        self.blob_id = git_blob_sha1(pointer if pointer else data)

    @property
    def etag(self) -> str:
        # Hub convention: sha256 for LFS files, the git blob id for the others (it names the cache blob)
        return self.sha256 if self.lfs else self.blob_id


def parse_front_matter(readme: bytes) -> Optional[dict]:
    """cardData the way the Hub computes it server-side: the README's YAML front matter."""
    text = readme.decode("utf-8", errors="replace")
    if not text.startswith("---"):
        return None
    end = text.find("\n---", 3)
    if end < 0:
        return None
    try:
        data = yaml.safe_load(text[3:end])
    except yaml.YAMLError:
        return None
    return data if isinstance(data, dict) else None


class FakeRepo:
    """A model repository: a linear history of commits, branches and tags pointing into it."""

    def __init__(self, repo_id: str, *, gated: bool = False, private: bool = False,
                 allowed_tokens: tuple[str, ...] = ()):
        self.repo_id = repo_id
        self.gated = gated
        self.private = private
        self.allowed_tokens = set(allowed_tokens)
        self.writers: set[str] = set()          # users besides the namespace's owner who may push
        self.commits: dict[str, dict[str, StoredFile]] = {}
        self.refs: dict[str, str] = {}
        self.history: list[str] = []

    def commit(self, files: Mapping[str, Optional[FileData]], *, branch: str = "main",
               message: str = "update", lfs: Optional[Mapping[str, bool]] = None) -> str:
        """Add a commit on ``branch`` (created if new) changing ``files`` (None deletes); returns its sha."""
        parent = self.refs.get(branch)
        tree = dict(self.commits[parent]) if parent else {}
        for path, data in files.items():
            if data is None:
                tree.pop(path, None)
                continue
            raw = data.encode() if isinstance(data, str) else bytes(data)
            tree[path] = StoredFile(path, raw, (lfs or {}).get(path))
        seed = f"{self.repo_id}\n{parent}\n{message}\n{len(self.history)}\n" + "\n".join(
            f"{p}:{f.blob_id}" for p, f in sorted(tree.items()))
        sha = hashlib.sha1(seed.encode()).hexdigest()
        self.commits[sha] = tree
        self.history.append(sha)
        self.refs[branch] = sha
        return sha

    def tag(self, name: str, revision: str = "main") -> str:
        sha = self.resolve(revision)
        if sha is None:
            raise KeyError(revision)
        self.refs[name] = sha
        return sha

    def resolve(self, revision: Optional[str]) -> Optional[str]:
        """A branch/tag name or a full commit sha -> commit sha (None when unknown), as the Hub does."""
        revision = revision or "main"
        if revision in self.refs:
            return self.refs[revision]
        if revision in self.commits:
            return revision
        return None

    def files_at(self, sha: str) -> dict[str, StoredFile]:
        return self.commits[sha]

    def card_data(self, sha: str) -> Optional[dict]:
        readme = self.commits[sha].get("README.md")
        return parse_front_matter(readme.data) if readme else None


@dataclass
class Fault:
    """A misbehaviour of the server for one file. ``times`` None: until cleared."""

    kind: str                      # "corrupt" | "drop" | "status"
    times: Optional[int] = 1
    after: int = 0                 # drop: body bytes sent before the connection is cut
    offset: Optional[int] = None   # corrupt: first byte flipped (default: the middle of the file)
    length: int = 16               # corrupt: how many bytes are flipped
    status: int = 500              # status: the HTTP status answered

    def use(self) -> bool:
        """Whether the fault fires for this request (and count it)."""
        if self.times is None:
            return True
        if self.times <= 0:
            return False
        self.times -= 1
        return True


@dataclass
class StaticFile:
    """A file on a plain web server (for URL sources): no Hub headers, an ETag, Range support."""

    data: bytes
    content_type: str = "application/octet-stream"
    etag: Optional[str] = None
    accept_ranges: bool = True


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    status: int = 0


class FakeHub:
    """The whole fake Hub: repositories, static files, faults, and a log of requests served."""

    def __init__(self) -> None:
        self.repos: dict[str, FakeRepo] = {}
        self.static: dict[str, StaticFile] = {}
        self.faults: dict[tuple[str, str], list[Fault]] = {}
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        # the write side (tests/hubserver/commits.py): token -> user, user -> orgs, uploaded LFS objects
        self.users: dict[str, str] = {}
        self.orgs: dict[str, tuple[str, ...]] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.commits_made: list[tuple[str, str]] = []   # (repo, commit) of every commit a client made
        # LFS multipart: objects larger than this are uploaded in parts of this size (None: always one PUT);
        # uploads under way (oid -> {"count", "parts"}) and the ones completed (oid, parts)
        self.multipart_chunk_size: Optional[int] = None
        self.lfs_parts: dict[str, dict] = {}
        self.multipart_completed: list[tuple[str, int]] = []

    # --- building ----------------------------------------------------------------------------------
    def create_repo(self, repo_id: str, files: Optional[Mapping[str, Optional[FileData]]] = None, *,
                    gated: bool = False, private: bool = False, allowed_tokens: tuple[str, ...] = (),
                    lfs: Optional[Mapping[str, bool]] = None) -> FakeRepo:
        repo = FakeRepo(repo_id, gated=gated, private=private, allowed_tokens=allowed_tokens)
        self.repos[repo_id] = repo
        repo.commit({".gitattributes": "*.safetensors filter=lfs diff=lfs merge=lfs -text\n",
                     **(files or {})}, message="initial commit", lfs=lfs)
        return repo

    def add_static(self, path: str, data: FileData, *, content_type: str = "application/octet-stream",
                   etag: Optional[str] = "auto", accept_ranges: bool = True) -> str:
        """Serve ``data`` at ``/static/<path>``; returns that path. ``etag="auto"``: a hash of the bytes."""
        raw = data.encode() if isinstance(data, str) else bytes(data)
        if etag == "auto":
            etag = hashlib.md5(raw).hexdigest()
        self.static[path.lstrip("/")] = StaticFile(raw, content_type, etag, accept_ranges)
        return "/static/" + path.lstrip("/")

    def add_user(self, token: str, name: str, orgs: tuple[str, ...] = ()) -> None:
        """A Hub account that may write to its own namespace (and its orgs') with ``token``."""
        self.users[token], self.orgs[name] = name, orgs

    # --- faults ------------------------------------------------------------------------------------
    def add_fault(self, target: str, path: str, fault: Fault) -> Fault:
        """``target`` is a repo id, or "static" for a static file."""
        with self.lock:
            self.faults.setdefault((target, path), []).append(fault)
        return fault

    def corrupt(self, target: str, path: str, *, offset: Optional[int] = None, times: Optional[int] = None) -> Fault:
        """Serve the file with some bytes flipped but the right size (and the right ETag and LFS sha256)."""
        return self.add_fault(target, path, Fault("corrupt", times=times, offset=offset))

    def drop(self, target: str, path: str, *, after: int, times: int = 1) -> Fault:
        """Cut the connection after ``after`` body bytes, for the next ``times`` downloads."""
        return self.add_fault(target, path, Fault("drop", times=times, after=after))

    def fail(self, target: str, path: str, *, status: int = 500, times: Optional[int] = 1) -> Fault:
        return self.add_fault(target, path, Fault("status", times=times, status=status))

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()

    def take_fault(self, target: str, path: str, kind: str) -> Optional[Fault]:
        with self.lock:
            for fault in self.faults.get((target, path), []):
                if fault.kind == kind and fault.use():
                    return fault
        return None

    # --- observing ---------------------------------------------------------------------------------
    def log(self, request: Request) -> None:
        with self.lock:
            self.requests.append(request)

    def requests_to(self, fragment: str = "", method: Optional[str] = None) -> list[Request]:
        with self.lock:
            return [r for r in self.requests
                    if fragment in r.path and (method is None or r.method == method)]
