"""The fake Hub itself, driven by the real huggingface_hub client: the parts the engine relies on."""

from __future__ import annotations

import hashlib
import http.client
import urllib.request
from urllib.error import HTTPError

import pytest
from huggingface_hub import HfApi, errors as hf_errors, hf_hub_download

from tests.hubserver import diffusers_card, lfs_pointer, lora_safetensors


def test_model_info_carries_lfs_sha256_and_card_data(hub, hub_server, hf_env):
    weights = lora_safetensors()
    repo = hub.create_repo("o/card", {"README.md": diffusers_card(base_model=["a/b", "c/d"]),
                                      "w.safetensors": weights, "notes.txt": "hi"})
    info = HfApi(endpoint=hub_server.url).model_info("o/card", files_metadata=True)
    siblings = {s.rfilename: s for s in info.siblings}
    assert info.sha == repo.refs["main"]
    assert siblings["w.safetensors"].lfs.sha256 == hashlib.sha256(weights).hexdigest()
    assert siblings["w.safetensors"].size == len(weights)
    assert siblings["notes.txt"].lfs is None and siblings["notes.txt"].blob_id
    assert info.card_data.base_model == ["a/b", "c/d"]
    assert "base_model:a/b" in info.tags


def test_tree_listing_and_revisions(hub, hub_server, hf_env):
    repo = hub.create_repo("o/tree", {"a/b/c.safetensors": b"1" * 10, "top.bin": b"2"})
    first = repo.refs["main"]
    repo.commit({"top.bin": None, "new.safetensors": b"3"})
    repo.tag("v1", first)
    api = HfApi(endpoint=hub_server.url)
    assert sorted(api.list_repo_files("o/tree")) == [".gitattributes", "a/b/c.safetensors", "new.safetensors"]
    assert sorted(api.list_repo_files("o/tree", revision="v1")) == [".gitattributes", "a/b/c.safetensors", "top.bin"]
    entries = {e.path: e for e in api.list_repo_tree("o/tree", recursive=True)}
    assert {"a", "a/b"} <= set(entries) and entries["a/b/c.safetensors"].lfs.sha256


def test_resolve_headers_range_and_errors(hub, hub_server, hf_env):
    data = bytes(range(256)) * 40
    repo = hub.create_repo("o/bytes", {"x.safetensors": data})
    url = f"{hub_server.url}/o/bytes/resolve/main/x.safetensors"
    head = urllib.request.urlopen(urllib.request.Request(url, method="HEAD"))
    assert head.headers["X-Repo-Commit"] == repo.refs["main"]
    assert head.headers["X-Linked-Etag"].strip('"') == hashlib.sha256(data).hexdigest()
    assert head.headers["X-Linked-Size"] == str(len(data))
    part = urllib.request.urlopen(urllib.request.Request(url, headers={"Range": "bytes=100-"}))
    assert part.status == 206 and part.read() == data[100:]
    assert part.headers["Content-Range"] == f"bytes 100-{len(data) - 1}/{len(data)}"
    with pytest.raises(HTTPError) as caught:
        urllib.request.urlopen(urllib.request.Request(url, headers={"Range": f"bytes={len(data)}-"}))
    assert caught.value.code == 416


def test_typed_errors_reach_the_client(hub, hub_server, hf_env, monkeypatch, tmp_path):
    hub.create_repo("o/gated", {"w.safetensors": b"x" * 100}, gated=True, allowed_tokens=("hf_good",))
    kw = {"endpoint": hub_server.url, "cache_dir": tmp_path}
    with pytest.raises(hf_errors.RepositoryNotFoundError):
        HfApi(endpoint=hub_server.url).model_info("o/nothing")
    with pytest.raises(hf_errors.GatedRepoError):
        hf_hub_download("o/gated", "w.safetensors", **kw)
    with pytest.raises(hf_errors.RevisionNotFoundError):
        hf_hub_download("o/gated", "w.safetensors", revision="nope", **kw)
    with pytest.raises(hf_errors.EntryNotFoundError):
        hf_hub_download("o/gated", "missing.bin", **kw)
    monkeypatch.setenv("HF_TOKEN", "hf_bad")
    with pytest.raises(hf_errors.GatedRepoError) as caught:
        hf_hub_download("o/gated", "w.safetensors", **kw)
    assert caught.value.response.status_code == 403
    monkeypatch.setenv("HF_TOKEN", "hf_good")
    assert open(hf_hub_download("o/gated", "w.safetensors", **kw), "rb").read() == b"x" * 100


def test_faults_corrupt_keep_the_size_and_drop_cuts_once(hub, hub_server, hf_env):
    data = lora_safetensors()
    hub.create_repo("o/faulty", {"w.safetensors": data})
    hub.corrupt("o/faulty", "w.safetensors", times=1)
    url = f"{hub_server.url}/o/faulty/resolve/main/w.safetensors"
    served = urllib.request.urlopen(url).read()
    assert len(served) == len(data) and served != data
    assert urllib.request.urlopen(url).read() == data
    hub.drop("o/faulty", "w.safetensors", after=1000)
    with pytest.raises(http.client.IncompleteRead):   # the connection closes 1000 bytes in
        urllib.request.urlopen(url).read()
    assert urllib.request.urlopen(url).read() == data


def test_lfs_pointer_helper_matches_git_lfs():
    pointer = lfs_pointer(b"abc").decode()
    assert pointer.splitlines() == ["version https://git-lfs.github.com/spec/v1",
                                    f"oid sha256:{hashlib.sha256(b'abc').hexdigest()}", "size 3"]
