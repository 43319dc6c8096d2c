"""The write side of the fake Hub, as huggingface_hub's HTTP (non-Xet) upload path uses it:

* ``POST /api/repos/create`` {name, organization, visibility|private} -> {"url"}; 409 when it exists;
* ``POST /api/validate-yaml`` (a README in a commit) -> no errors;
* ``GET /api/whoami-v2`` -> {"name", "type", "orgs"} for a known token, 401 otherwise;
* ``POST /api/models/{repo}/branch/{branch}`` (create_branch);
* ``POST /api/models/{repo}/preupload/{rev}`` {files: [{path, sample, size}]} -> each file's uploadMode
  (lfs for the LFS suffixes, else regular) and the oid it has at ``rev`` (sha256 for LFS, the git blob id
  for regular files): the client skips files whose oid matches, and an empty commit altogether;
* ``POST /{repo}.git/info/lfs/objects/batch`` -> an upload action per object the server lacks;
* ``PUT /lfs-upload/{oid}`` (the action's href): the bytes, checked against their sha256;
* multipart, as the Hub answers large files (``FakeHub.multipart_chunk_size`` set and the object larger): the
  action's header holds ``chunk_size`` and one part URL per chunk under its number ("1", "2", ...);
  ``PUT /lfs-multipart/{oid}/{n}`` stores part n and answers its ETag (an S3-style quoted md5);
  ``POST /lfs-multipart/{oid}`` (the action's href, the completion) {oid, parts: [{partNumber, etag}]} joins
  the parts once every one is there with its ETag, and checks the sha256 (else 400, nothing stored);
* ``POST /api/models/{repo}/commit/{rev}`` (NDJSON header / file / lfsFile / deletedFile lines) -> a new
  commit, {"commitUrl", "commitOid"}; an lfsFile whose object was never uploaded is refused (422).

Xet is left out: its upload is hf_xet's own protocol (a CAS service with short-lived write tokens, content-
defined chunks deduplicated into xorbs and shards) spoken by a Rust client, not the HTTP this server answers;
the server's environment sets HF_HUB_DISABLE_XET=1, so the client takes the LFS path above, as it does on
a Hub repo without Xet storage.

Writes need a token that ``FakeHub.users`` knows, whose user owns the namespace (or an org of theirs, or is
in ``FakeRepo.writers``): else 401 (no token) or 403, before any byte is stored.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import TYPE_CHECKING, Optional

from tests.hubserver.repo import LFS_SUFFIXES, FakeRepo, git_blob_sha1

if TYPE_CHECKING:
    from tests.hubserver.server import _Handler


def read_body(h: "_Handler") -> bytes:
    """The request body, sized by Content-Length or sent chunked."""
    if h.headers.get("Transfer-Encoding", "").lower() == "chunked":
        out = bytearray()
        while True:
            size = int(h.rfile.readline().strip().split(b";")[0], 16)
            if size == 0:
                h.rfile.readline()
                return bytes(out)
            out += h.rfile.read(size)
            h.rfile.readline()
    n = int(h.headers.get("Content-Length") or 0)
    return h.rfile.read(n) if n else b""


def route_write(h: "_Handler", method: str, parts: list[str], body: bytes) -> bool:
    """Answer a write request; False when the path is none of the write endpoints."""
    if method == "POST" and parts[:3] == ["api", "repos", "create"]:
        return _create_repo(h, body) or True
    if method == "POST" and parts[:2] == ["api", "validate-yaml"]:   # a README's front matter, before a commit
        return h._json({"errors": [], "warnings": []}) or True
    if method == "GET" and parts[:2] == ["api", "whoami-v2"]:
        return _whoami(h) or True
    if method == "POST" and parts[:2] == ["api", "models"] and len(parts) >= 6:
        repo_id, action, rev = parts[2] + "/" + parts[3], parts[4], "/".join(parts[5:])
        if action in ("preupload", "commit", "branch"):
            repo = _writable(h, repo_id)
            if repo is not None:
                {"preupload": _preupload, "commit": _commit, "branch": _branch}[action](h, repo, rev, body)
            return True
    if method == "POST" and len(parts) == 6 and parts[1].endswith(".git") and parts[2:] == [
            "info", "lfs", "objects", "batch"]:
        repo = _writable(h, parts[0] + "/" + parts[1][:-4])
        if repo is not None:
            _lfs_batch(h, body)
        return True
    if method == "PUT" and parts[:1] == ["lfs-upload"] and len(parts) == 2:
        return _lfs_put(h, parts[1], body) or True
    if method == "PUT" and parts[:1] == ["lfs-multipart"] and len(parts) == 3 and parts[2].isdigit():
        return _part_put(h, parts[1], int(parts[2]), body) or True
    if method == "POST" and parts[:1] == ["lfs-multipart"] and len(parts) == 2:
        return _complete(h, parts[1], body) or True
    return False


def _user(h: "_Handler") -> Optional[str]:
    return h.server.hub.users.get(h._token() or "")


def _may_write(h: "_Handler", namespace: str, repo: Optional[FakeRepo] = None) -> bool:
    user = _user(h)
    if user is None:
        return False
    return namespace == user or namespace in h.server.hub.orgs.get(user, ()) or (
        repo is not None and user in repo.writers)


def _writable(h: "_Handler", repo_id: str) -> Optional[FakeRepo]:
    hub = h.server.hub
    repo = hub.repos.get(repo_id)
    if h._token() is None or _user(h) is None:
        h._error(401, None, "Invalid credentials in Authorization header")
        return None
    if repo is None or (repo.private and not _may_write(h, repo_id.split("/")[0], repo)):
        h._error(404, "RepoNotFound", "Repository not found")
        return None
    if not _may_write(h, repo_id.split("/")[0], repo):
        h._error(403, None, f"You don't have the rights to write to {repo_id}")
        return None
    return repo


def _whoami(h: "_Handler") -> None:
    user = _user(h)
    if user is None:
        return h._error(401, None, "Invalid credentials in Authorization header")
    orgs = [{"name": o, "type": "org"} for o in h.server.hub.orgs.get(user, ())]
    h._json({"type": "user", "name": user, "orgs": orgs, "auth": {"accessToken": {"role": "write"}}})


def _create_repo(h: "_Handler", body: bytes) -> None:
    data = json.loads(body or b"{}")
    namespace = data.get("organization") or _user(h)
    if _user(h) is None:
        return h._error(401, None, "Invalid credentials in Authorization header")
    repo_id = f"{namespace}/{data.get('name')}"
    hub = h.server.hub
    if not _may_write(h, namespace):
        return h._error(403, None, f"You don't have the rights to create a model under the namespace {namespace}")
    if repo_id in hub.repos:
        # the Hub's 409 names the repo's url too: create_repo(exist_ok=True) returns it
        return h._json({"error": "You already created this model repo", "url": f"{h.server.owner.url}/{repo_id}"},
                       409, {"X-Error-Message": "You already created this model repo"})
    private = data.get("private") is True or data.get("visibility") == "private"
    # a private repo is readable with its creator's tokens (the read side checks allowed_tokens)
    hub.create_repo(repo_id, private=private,
                    allowed_tokens=tuple(t for t, u in hub.users.items() if u == _user(h)))
    h._json({"url": f"{h.server.owner.url}/{repo_id}", "name": repo_id})


def _branch(h: "_Handler", repo: FakeRepo, branch: str, body: bytes) -> None:
    if branch in repo.refs:
        return h._error(409, None, f"Reference already exists: refs/heads/{branch}")
    start = (json.loads(body or b"{}") or {}).get("startingPoint") or "main"
    repo.refs[branch] = repo.resolve(start)
    h._json({})


def _is_lfs(path: str) -> bool:
    return path.lower().endswith(LFS_SUFFIXES)


def _preupload(h: "_Handler", repo: FakeRepo, rev: str, body: bytes) -> None:
    sha = repo.resolve(rev)
    tree = repo.files_at(sha) if sha else {}
    files = []
    for f in json.loads(body)["files"]:
        have = tree.get(f["path"])
        oid = (have.sha256 if have.lfs else git_blob_sha1(have.data)) if have else None
        files.append({"path": f["path"], "uploadMode": "lfs" if _is_lfs(f["path"]) else "regular",
                      "shouldIgnore": False, "oid": oid})
    h._json({"files": files, "commitOid": sha})


def _lfs_batch(h: "_Handler", body: bytes) -> None:
    objects = []
    for obj in json.loads(body)["objects"]:
        entry = {"oid": obj["oid"], "size": obj["size"]}
        if obj["oid"] not in h.server.hub.lfs_objects:   # known objects need no upload
            entry["actions"] = {"upload": _upload_action(h, obj["oid"], int(obj["size"]))}
        objects.append(entry)
    h._send(200, json.dumps({"transfer": "basic", "objects": objects}).encode(),
            content_type="application/vnd.git-lfs+json")


def _upload_action(h: "_Handler", oid: str, size: int) -> dict:
    """A single PUT, or (an object larger than the hub's multipart chunk size) one PUT per part plus the
    completion, as the Hub's batch answer lays them out."""
    base = h.server.owner.url
    chunk = h.server.hub.multipart_chunk_size
    if not chunk or size <= chunk:
        return {"href": f"{base}/lfs-upload/{oid}"}
    count = -(-size // chunk)
    header = {"chunk_size": str(chunk), **{str(n): f"{base}/lfs-multipart/{oid}/{n}" for n in range(1, count + 1)}}
    h.server.hub.lfs_parts[oid] = {"count": count, "parts": {}}
    return {"href": f"{base}/lfs-multipart/{oid}", "header": header}


def _etag(data: bytes) -> str:
    return '"' + hashlib.md5(data).hexdigest() + '"'


def _part_put(h: "_Handler", oid: str, number: int, body: bytes) -> None:
    upload = h.server.hub.lfs_parts.get(oid)
    if upload is None or not 1 <= number <= upload["count"]:
        return h._error(404, None, f"no multipart upload of {oid} has a part {number}")
    upload["parts"][number] = body
    h._send(200, b"", {"ETag": _etag(body)})


def _complete(h: "_Handler", oid: str, body: bytes) -> None:
    hub = h.server.hub
    upload = hub.lfs_parts.get(oid)
    data = json.loads(body or b"{}")
    if upload is None or data.get("oid") != oid:
        return h._error(404, None, f"no multipart upload of {oid}")
    given = {p.get("partNumber"): p.get("etag") for p in data.get("parts") or []}
    parts = upload["parts"]
    if sorted(given) != list(range(1, upload["count"] + 1)) or sorted(parts) != sorted(given):
        return h._error(400, None, f"the completion names parts {sorted(given)}; {upload['count']} were expected")
    if any(given[n] != _etag(parts[n]) for n in given):
        return h._error(400, None, "a part's ETag does not match its bytes")
    joined = b"".join(parts[n] for n in sorted(parts))
    if hashlib.sha256(joined).hexdigest() != oid:
        return h._error(400, None, "the joined parts do not have the announced sha256")
    hub.lfs_objects[oid] = joined
    hub.multipart_completed.append((oid, upload["count"]))
    del hub.lfs_parts[oid]
    h._json({"success": True})


def _lfs_put(h: "_Handler", oid: str, body: bytes) -> None:
    if hashlib.sha256(body).hexdigest() != oid:
        return h._error(400, None, "the uploaded bytes do not have the announced sha256")
    h.server.hub.lfs_objects[oid] = body
    h._send(200, b"")


def _commit(h: "_Handler", repo: FakeRepo, rev: str, body: bytes) -> None:
    hub = h.server.hub
    changes: dict[str, Optional[bytes]] = {}
    lfs: dict[str, bool] = {}
    summary = "update"
    for line in body.splitlines():
        if not line.strip():
            continue
        item = json.loads(line)
        key, value = item["key"], item["value"]
        if key == "header":
            summary = value.get("summary") or summary
        elif key == "file":
            changes[value["path"]] = base64.b64decode(value["content"])
            lfs[value["path"]] = False
        elif key == "lfsFile":
            data = hub.lfs_objects.get(value["oid"])
            if data is None:
                return h._error(422, None, f"LFS object {value['oid']} of {value['path']} was never uploaded")
            changes[value["path"]], lfs[value["path"]] = data, True
        elif key in ("deletedFile", "deletedFolder"):
            changes[value["path"]] = None
    if rev not in repo.refs and repo.resolve(rev) is None:
        return h._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
    sha = repo.commit(changes, branch=rev, message=summary, lfs=lfs)
    hub.commits_made.append((repo.repo_id, sha))
    h._json({"commitUrl": f"{h.server.owner.url}/{repo.repo_id}/commit/{sha}", "commitOid": sha,
             "success": True})

