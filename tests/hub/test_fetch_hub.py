"""Fetching from the Hub with the real huggingface_hub client against the local fake Hub.

Every case of the issue: cards (base_model string/list, none), .bin-only, several weight files, revision
pinning, gated, missing repo/revision/file, corrupted bytes of the right size, interrupted download then
resume, offline from the cache, nothing cached offline, network failure.
"""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import pytest

from lorahub_cli.errors import (Ambiguous, DiskFull, Gated, HashMismatch, LfsPointer, NetworkError, NotFound,
                                Offline)
from lorahub_cli.sources import HubSettings, download_hub, fetch, parse_source, resolve_hub
from lorahub_cli.hubclient import hub_error
from tests.hubserver import HubServer, diffusers_card, lfs_pointer, lora_bin, lora_safetensors, model_card

WEIGHTS = "pytorch_lora_weights.safetensors"


def pull(text: str, tmp_path: Path, **options):
    """parse -> resolve -> download, as `lora pull` does."""
    return fetch(parse_source(text, **options), staging_dir=tmp_path / "staging")


def test_card_with_base_model_string(hub, hf_env, tmp_path):
    weights = lora_safetensors()
    repo = hub.create_repo("sayakpaul/sd-model-finetuned-lora-t4", {
        "README.md": diffusers_card("CompVis/stable-diffusion-v1-4", instance_prompt="a photo of sks dog",
                                    widget=["sks dog in a bucket"]),
        WEIGHTS: weights})
    got = pull("sayakpaul/sd-model-finetuned-lora-t4", tmp_path)
    source = "card:README.md@sayakpaul/sd-model-finetuned-lora-t4"
    assert got.sha256 == hashlib.sha256(weights).hexdigest() and got.size == len(weights)
    assert got.path.read_bytes() == weights and got.container == "safetensors" and not got.owned
    assert got.provenance.commit == repo.refs["main"] and got.provenance.path_in_repo == WEIGHTS
    assert got.provenance.expected_sha256 == got.sha256
    assert got.card.base_model == ["CompVis/stable-diffusion-v1-4"] and got.card.base_model_family == "sd1"
    assert got.card.trigger_words == ["a photo of sks dog", "sks dog in a bucket"]
    assert got.card.trigger_word_sources["a photo of sks dog"] == source
    assert got.card.license == "creativeml-openrail-m" and "lora" in got.card.tags
    assert got.report.base_model is None   # the card's facts stay on the card: ingest merges them, once
    assert got.report.family == "sd1" and not got.card.disagrees_with_shapes and got.warnings == []


def test_card_with_base_model_list_and_a_wrong_family_claim(hub, hf_env, tmp_path):
    # a real pattern: the card says SDXL, the tensors are SD1 -> kept, flagged
    hub.create_repo("o/listed", {"README.md": diffusers_card(["stabilityai/stable-diffusion-xl-base-1.0",
                                                              "other/base"]),
                                 WEIGHTS: lora_safetensors()})
    got = pull("o/listed", tmp_path)
    assert got.card.base_model == ["stabilityai/stable-diffusion-xl-base-1.0", "other/base"]
    assert got.card.disagrees_with_shapes and got.report.family == "sd1"
    assert any("sdxl" in w and "sd1" in w for w in got.warnings)


def test_no_card(hub, hf_env, tmp_path):
    hub.create_repo("o/bare", {WEIGHTS: lora_safetensors()})
    got = pull("o/bare", tmp_path)
    assert got.card is None and got.report.base_model is None and got.sha256


def test_card_without_front_matter_is_no_card(hub, hf_env, tmp_path):
    hub.create_repo("o/prose", {"README.md": model_card("# Just words\n"), WEIGHTS: lora_safetensors()})
    assert pull("o/prose", tmp_path).card is None


def test_bin_only_repo_is_fetched_as_a_pickle(hub, hf_env, tmp_path):
    hub.create_repo("o/old", {"README.md": diffusers_card(), "pytorch_lora_weights.bin": lora_bin()})
    got = pull("o/old", tmp_path)
    assert got.provenance.path_in_repo == "pytorch_lora_weights.bin"
    assert got.container == "pickle" and got.needs_conversion and got.report.family == "sd1"


def test_safetensors_is_preferred_over_the_bin(hub, hf_env, tmp_path):
    hub.create_repo("o/both", {"pytorch_lora_weights.bin": lora_bin(), WEIGHTS: lora_safetensors(),
                               "checkpoint-500/" + WEIGHTS: lora_safetensors(seed=5)})
    assert resolve_hub(parse_source("o/both")).path_in_repo == WEIGHTS


def test_several_weight_files_need_file(hub, hf_env, tmp_path):
    hub.create_repo("o/many", {"style_a.safetensors": lora_safetensors(seed=1),
                               "style_b.safetensors": lora_safetensors(seed=2)})
    with pytest.raises(Ambiguous) as caught:
        pull("o/many", tmp_path)
    assert "style_a.safetensors" in caught.value.message and "style_b.safetensors" in caught.value.message
    assert "--file" in caught.value.hint
    got = pull("o/many", tmp_path, file="style_b.safetensors")
    assert got.sha256 == hashlib.sha256(lora_safetensors(seed=2)).hexdigest()


def test_revision_pinning(hub, hf_env, tmp_path):
    old, new = lora_safetensors(seed=1), lora_safetensors(seed=2)
    repo = hub.create_repo("o/evolving", {"README.md": diffusers_card(), WEIGHTS: old})
    first = repo.refs["main"]
    repo.tag("v1")
    second = repo.commit({WEIGHTS: new})
    for text, commit, data in [("o/evolving", second, new), ("o/evolving@v1", first, old),
                               (f"o/evolving@{first}", first, old)]:
        got = pull(text, tmp_path)
        assert (got.provenance.commit, got.sha256) == (commit, hashlib.sha256(data).hexdigest()), text
    assert pull("o/evolving", tmp_path, revision="v1").provenance.revision == "v1"


def test_gated_repo_says_to_log_in(hub, hf_env, tmp_path, monkeypatch):
    hub.create_repo("o/gated", {"README.md": diffusers_card(), WEIGHTS: lora_safetensors()}, gated=True,
                    allowed_tokens=("hf_granted",))
    with pytest.raises(Gated) as caught:
        pull("o/gated", tmp_path)
    assert caught.value.code == "gated" and caught.value.exit_code == 3
    assert "HF_TOKEN" in caught.value.hint and "hf auth login" in caught.value.hint
    monkeypatch.setenv("HF_TOKEN", "hf_granted")
    assert pull("o/gated", tmp_path).card.base_model == ["CompVis/stable-diffusion-v1-4"]


@pytest.mark.parametrize("text, options, words", [
    ("o/nowhere", {}, "repository not found"),
    ("o/here@no-such-branch", {}, "revision not found"),
    ("o/here", {"file": "missing.safetensors"}, "missing.safetensors is not in o/here"),
])
def test_missing_repo_revision_or_file(hub, hf_env, tmp_path, text, options, words):
    hub.create_repo("o/here", {WEIGHTS: lora_safetensors()})
    with pytest.raises(NotFound) as caught:
        pull(text, tmp_path, **options)
    assert words in caught.value.message and caught.value.code == "not-found"


def test_missing_file_on_download_is_not_found(hub, hf_env, tmp_path):
    repo = hub.create_repo("o/vanishing", {WEIGHTS: lora_safetensors()})
    plan = resolve_hub(parse_source("o/vanishing"))
    repo.commit({WEIGHTS: None})  # deleted between model_info and the download
    with pytest.raises(NotFound) as caught:
        download_hub(plan)
    assert "file not found" in caught.value.message


@pytest.mark.parametrize("offset", [None, 0])  # in the tensors, or in the header (looks like a bad header)
def test_corrupted_bytes_with_the_right_size_are_caught_and_removed(hub, hf_env, hf_cache, tmp_path, offset):
    weights = lora_safetensors()
    hub.create_repo("o/corrupt", {WEIGHTS: weights})
    hub.corrupt("o/corrupt", WEIGHTS, offset=offset, times=1)
    with pytest.raises(HashMismatch) as caught:
        pull("o/corrupt", tmp_path)
    assert hashlib.sha256(weights).hexdigest() in caught.value.message
    blobs = hf_cache / "models--o--corrupt" / "blobs"
    assert not any(p.stat().st_size == len(weights) for p in blobs.iterdir())  # the bad copy is gone
    assert pull("o/corrupt", tmp_path).sha256 == hashlib.sha256(weights).hexdigest()  # a retry downloads again


def test_interrupted_download_resumes(hub, hf_env, tmp_path):
    # the client resumes in 10 MiB steps: cut a 12 MiB file after 11 MiB, expect "Range: bytes=10485760-"
    weights = lora_safetensors(size=12 << 20)
    hub.create_repo("o/big", {WEIGHTS: weights})
    hub.drop("o/big", WEIGHTS, after=11 << 20)
    got = pull("o/big", tmp_path)
    assert got.sha256 == hashlib.sha256(weights).hexdigest()
    gets = hub.requests_to("/o/big/resolve/", "GET")
    assert [g.headers.get("Range") for g in gets] == [None, "bytes=10485760-"]
    assert [g.status for g in gets] == [200, 206]


def test_offline_second_pull_is_served_from_the_cache(hub, hf_env, tmp_path, offline):
    weights = lora_safetensors()
    repo = hub.create_repo("o/cached", {"README.md": diffusers_card(instance_prompt="sks"), WEIGHTS: weights})
    online = pull("o/cached", tmp_path)
    served = len(hub.requests)
    offline()
    got = pull("o/cached", tmp_path)
    assert len(hub.requests) == served  # not one request
    assert got.path == online.path and got.sha256 == online.sha256 == hashlib.sha256(weights).hexdigest()
    assert got.provenance.commit == repo.refs["main"] and got.provenance.expected_sha256 == got.sha256
    assert got.card.base_model == ["CompVis/stable-diffusion-v1-4"] and got.card.trigger_words == ["sks"]
    assert pull(f"o/cached@{repo.refs['main']}", tmp_path).sha256 == got.sha256


def test_offline_with_nothing_cached(hub, hf_env, tmp_path, offline):
    hub.create_repo("o/cached", {WEIGHTS: lora_safetensors(), "other.safetensors": lora_safetensors(seed=3)})
    pull("o/cached", tmp_path)
    offline()
    for text, options in [("o/never-pulled", {}), ("o/cached@v9", {}), ("o/cached", {"file": "other.safetensors"})]:
        with pytest.raises(Offline) as caught:
            pull(text, tmp_path, **options)
        assert caught.value.exit_code == 3 and "HF_HUB_OFFLINE" in caught.value.hint


def test_corrupted_cache_is_caught_offline(hub, hf_env, tmp_path, offline):
    hub.create_repo("o/rot", {WEIGHTS: lora_safetensors()})
    blob = pull("o/rot", tmp_path).path
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    os.chmod(blob, 0o644)
    blob.write_bytes(bytes(data))
    offline()
    with pytest.raises(HashMismatch):
        pull("o/rot", tmp_path)


def test_network_failure_says_retry(hub, hub_server, hf_env, tmp_path):
    hub.create_repo("o/far", {WEIGHTS: lora_safetensors()})
    hub_server.stop()
    with pytest.raises(NetworkError) as caught:
        pull("o/far", tmp_path)
    assert caught.value.code == "network" and "try again" in caught.value.hint


def test_server_errors_are_network_errors(hub, hf_env, tmp_path):
    hub.create_repo("o/flaky", {WEIGHTS: lora_safetensors()})
    hub.fail("o/flaky", WEIGHTS, status=503, times=None)
    with pytest.raises(NetworkError) as caught:
        pull("o/flaky", tmp_path)
    assert "503" in caught.value.message


def test_disk_full_and_unknown_errors_map_cleanly(hub, hf_env):
    full = hub_error(OSError(errno.ENOSPC, "No space left on device"), repo_id="o/r", path="w.safetensors")
    assert isinstance(full, DiskFull) and full.code == "disk-full"
    too_big = hub_error(OSError(errno.EFBIG, "File too large"), repo_id="o/r", path="w.safetensors")
    assert isinstance(too_big, DiskFull) and "size limit" in too_big.message  # ulimit -f, not "internal"
    assert hub_error(ValueError("a bug"), repo_id="o/r") is None  # not ours to explain: it propagates


def test_lfs_pointer_committed_as_the_file_is_refused(hub, hf_env, tmp_path):
    # someone pushed without git-lfs: the Hub serves the pointer text itself
    hub.create_repo("o/pointer", {WEIGHTS: lfs_pointer(lora_safetensors())}, lfs={WEIGHTS: False})
    with pytest.raises(LfsPointer):
        pull("o/pointer", tmp_path)


def test_progress_reports_bytes(hub, hf_env, tmp_path):
    weights = lora_safetensors()
    hub.create_repo("o/progress", {WEIGHTS: weights})
    seen: list[tuple[int, int]] = []
    settings = HubSettings.current()
    download_hub(resolve_hub(parse_source("o/progress"), settings), settings=settings,
                 progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (len(weights), len(weights))


def test_lfs_files_behind_a_cdn_redirect(hf_env, tmp_path, monkeypatch):
    with HubServer(lfs_redirect=True) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_TOKEN", "hf_secret")
        weights = lora_safetensors()
        server.hub.create_repo("o/cdn", {WEIGHTS: weights}, gated=True, allowed_tokens=("hf_secret",))
        assert pull("o/cdn", tmp_path).sha256 == hashlib.sha256(weights).hexdigest()
        cdn = server.hub.requests_to("/cdn/o/cdn", "GET")
        assert len(cdn) == 1 and "Authorization" not in cdn[0].headers  # the token stays on the Hub
