"""The pull engine (fetch + record) in-process, with a real library in a temporary folder."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from safetensors import safe_open

from lorahub_cli.errors import NotAnAdapterFile, NotFound, Offline
from lorahub_cli.sources.pull import pull
from registry.api import Registry
from tests.hubserver import HTML_PAGE, diffusers_card, lora_bin, lora_safetensors, model_card

WEIGHTS = "pytorch_lora_weights.safetensors"


@pytest.fixture
def library(tmp_path):
    with Registry(home=tmp_path / "library") as registry:
        yield registry


def test_a_new_revision_is_a_new_version(hub, hf_env, library):
    repo = hub.create_repo("o/evolving", {WEIGHTS: lora_safetensors(seed=1)})
    first = pull("o/evolving", registry=library)
    new_commit = repo.commit({WEIGHTS: lora_safetensors(seed=2)})
    second = pull("o/evolving", registry=library)
    assert (first.status, first.name, first.previous_version) == ("added", "evolving", None)
    assert (second.status, second.name, second.previous_version) == ("added", "evolving-2", "evolving")
    assert second.provenance.commit == new_commit
    assert pull("o/evolving", registry=library).status == "unchanged"
    assert [a.name for a in library.list()] == ["evolving", "evolving-2"]


def test_same_bytes_from_another_repo_are_a_duplicate_with_both_sources(hub, hf_env, library):
    weights = lora_safetensors()
    hub.create_repo("o/first", {WEIGHTS: weights})
    hub.create_repo("o/mirror", {WEIGHTS: weights})
    pull("o/first", registry=library)
    again = pull("o/mirror", registry=library)
    assert (again.status, again.name) == ("duplicate", "first")
    assert [s.repo for s in library.get("first").sources] == ["o/first", "o/mirror"]


def test_offline_pull_into_a_new_library_comes_from_the_hf_cache(hub, hf_env, tmp_path, offline):
    hub.create_repo("o/cached", {"README.md": diffusers_card(instance_prompt="sks"), WEIGHTS: lora_safetensors()})
    with Registry(home=tmp_path / "one") as one:
        pull("o/cached", registry=one)
    served = len(hub.requests)
    offline()
    with Registry(home=tmp_path / "two") as two:
        got = pull("o/cached", registry=two)
        assert got.status == "added" and two.get("cached").trigger_words == ["sks"]
        with pytest.raises(Offline):
            pull("o/never", registry=two)
    assert len(hub.requests) == served


def test_a_pickle_is_stored_converted_with_its_original_hash(hub, hf_env, library):
    weights = lora_bin()
    hub.create_repo("o/old", {"pytorch_lora_weights.bin": weights,
                              "README.md": model_card(base_model="runwayml/stable-diffusion-v1-5")})
    got = pull("o/old", registry=library)
    entry = library.get(got.name)
    assert got.status == "added" and entry.format == "attn-procs"
    assert entry.sources[0].original_sha256 == hashlib.sha256(weights).hexdigest()
    assert entry.sources[0].repo == "o/old" and entry.base_model == "runwayml/stable-diffusion-v1-5"
    assert Path(entry.path).read_bytes()[8:9] == b"{"  # a safetensors file in the store, not the pickle
    assert not list((library.home / "staging").glob("convert-*"))
    with safe_open(entry.path, framework="np") as f:   # named after the repo's file, not the cache blob's hash
        meta = f.metadata()
    assert meta["lorahub.source_name"] == "pytorch_lora_weights.bin"
    assert meta["modelspec.title"] == "pytorch_lora_weights"
    served = len(hub.requests)
    again = pull("o/old", registry=library)   # the pickle's own sha256 is found through its provenance
    assert (again.status, again.name) == ("unchanged", got.name)
    assert not [r for r in hub.requests[served:] if r.method == "GET" and r.path.endswith("pytorch_lora_weights.bin")]


def test_refusals_record_nothing_and_leave_no_staging(hub, hub_server, hf_env, library):
    hub.add_static("page.safetensors", HTML_PAGE, content_type="text/html")
    with pytest.raises(NotAnAdapterFile):
        pull(hub_server.static_url("page.safetensors"), registry=library)
    with pytest.raises(NotFound):
        pull("o/missing", registry=library)
    assert library.list() == []
    staging = library.home / "staging"
    assert not staging.exists() or list(staging.iterdir()) == []


def test_pull_a_url_and_a_local_path(hub, hub_server, hf_env, library, tmp_path):
    weights = lora_safetensors(seed=4)
    hub.add_static("files/pixel_style.safetensors", weights)
    url = pull(hub_server.static_url("files/pixel_style.safetensors"), tags=["pixel"], registry=library)
    assert (url.status, url.name, url.sha256) == ("added", "pixel_style", hashlib.sha256(weights).hexdigest())
    entry = library.get("pixel_style")
    assert entry.tags == ["pixel"] and entry.sources[0].url == hub_server.static_url("files/pixel_style.safetensors")
    assert list((library.home / "staging").iterdir()) == []  # the staged download went into the store
    local = tmp_path / "mine.safetensors"
    local.write_bytes(lora_safetensors(seed=5))
    mine = pull(str(local), name="my-own", registry=library)
    assert mine.name == "my-own" and library.get("my-own").sources[0].path == str(local)


def test_a_hub_file_is_linked_from_the_hf_cache_not_copied(hub, hf_env, hf_cache, library):
    weights = lora_safetensors(seed=11)
    hub.create_repo("o/linked", {WEIGHTS: weights})
    got = pull("o/linked", registry=library)
    stored = Path(library.get(got.name).path)
    cached = [p for p in hf_cache.rglob("blobs/*") if p.is_file()]
    assert cached
    assert any(os.path.samefile(stored, c) for c in cached), "the store holds a second copy of the cached bytes"
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == got.sha256


def test_re_pulling_a_url_is_a_no_op_while_its_etag_holds(hub, hub_server, hf_env, library):
    url = hub_server.static_url("files/etag_style.safetensors")
    hub.add_static("files/etag_style.safetensors", lora_safetensors(seed=21))
    first = pull(url, registry=library)
    assert first.status == "added" and library.get(first.name).sources[0].etag == first.provenance.etag
    served = len(hub.requests)
    again = pull(url, registry=library)
    assert (again.status, again.name, again.provenance.etag) == ("unchanged", first.name, first.provenance.etag)
    assert [r.method for r in hub.requests[served:]] == ["HEAD"]   # asked, not downloaded
    hub.add_static("files/etag_style.safetensors", lora_safetensors(seed=22))   # new bytes, new ETag
    changed = pull(url, registry=library)
    assert changed.status == "added" and changed.sha256 != first.sha256


def test_a_url_without_an_etag_is_downloaded_again(hub, hub_server, hf_env, library):
    url = hub_server.static_url("files/no_etag.safetensors")
    hub.add_static("files/no_etag.safetensors", lora_safetensors(seed=23), etag=None)
    assert pull(url, registry=library).status == "added"
    assert pull(url, registry=library).status == "duplicate"   # nothing to ask the server about
