"""URL sources against the same local server: streaming, resume with Range, traps refused, errors."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from lorahub_cli.errors import DiskFull, Gated, LfsPointer, NetworkError, NotAnAdapterFile, NotFound, Truncated
from lorahub_cli.sources import URL, fetch, fetch_url, parse_source
from lorahub_cli.sources.url import staging_paths
from tests.hubserver import HTML_PAGE, lfs_pointer, lora_safetensors
from tests.registry.limits import run_on_full_disk, run_read_only, run_with_file_size_limit

NAME = "styles/my_lora.safetensors"


def url_of(server, path: str) -> str:
    return server.static_url(path)


def test_url_download_is_staged_verified_and_described(hub, hub_server, tmp_path):
    weights = lora_safetensors()
    hub.add_static(NAME, weights)
    seen: list[tuple[int, int]] = []
    source = parse_source(url_of(hub_server, NAME))
    got = fetch(source, staging_dir=tmp_path, progress=lambda done, total: seen.append((done, total)))
    assert source.kind == URL and got.owned and got.path.parent == tmp_path
    assert got.path.read_bytes() == weights and got.sha256 == hashlib.sha256(weights).hexdigest()
    assert got.provenance.url == url_of(hub_server, NAME) and got.provenance.filename == "my_lora.safetensors"
    assert got.provenance.etag == f'"{hub.static[NAME].etag}"' and got.report.family == "sd1"
    assert seen[-1] == (len(weights), len(weights))
    assert sorted(p.name for p in tmp_path.iterdir()) == [got.path.name]  # no partial or state left over


def test_interrupted_download_resumes_in_the_same_run(hub, hub_server, tmp_path):
    weights = lora_safetensors(rank=16)
    hub.add_static(NAME, weights)
    hub.drop("static", NAME, after=300_000)
    got = fetch_url(url_of(hub_server, NAME), tmp_path)
    assert got.sha256 == hashlib.sha256(weights).hexdigest()
    gets = hub.requests_to("/static/", "GET")
    assert [g.headers.get("Range") for g in gets] == [None, "bytes=300000-"]
    assert gets[1].headers.get("If-Range") == f'"{hub.static[NAME].etag}"' and gets[1].status == 206


def test_interrupted_download_resumes_in_the_next_run(hub, hub_server, tmp_path):
    weights = lora_safetensors(rank=16)
    hub.add_static(NAME, weights)
    hub.drop("static", NAME, after=250_000, times=1)
    url = url_of(hub_server, NAME)
    with pytest.raises(NetworkError) as caught:
        fetch_url(url, tmp_path, retries=0)
    assert "run the same command again" in caught.value.hint.lower()
    part = staging_paths(url, tmp_path)[0]
    assert part.stat().st_size == 250_000
    got = fetch_url(url, tmp_path)
    assert got.path.read_bytes() == weights
    assert hub.requests_to("/static/", "GET")[-1].headers.get("Range") == "bytes=250000-"


def test_a_file_changed_since_the_partial_copy_is_fetched_whole(hub, hub_server, tmp_path):
    hub.add_static(NAME, lora_safetensors(rank=16, seed=1))
    hub.drop("static", NAME, after=200_000)
    url = url_of(hub_server, NAME)
    with pytest.raises(NetworkError):
        fetch_url(url, tmp_path, retries=0)
    new = lora_safetensors(rank=16, seed=2)
    hub.add_static(NAME, new)  # new bytes, new ETag: If-Range makes the server send all of it
    assert fetch_url(url, tmp_path).sha256 == hashlib.sha256(new).hexdigest()
    assert hub.requests_to("/static/", "GET")[-1].status == 200


def test_a_server_without_range_support_restarts_cleanly(hub, hub_server, tmp_path):
    weights = lora_safetensors(rank=16)
    hub.add_static(NAME, weights, accept_ranges=False)
    hub.drop("static", NAME, after=100_000)
    assert fetch_url(url_of(hub_server, NAME), tmp_path).path.read_bytes() == weights


@pytest.mark.parametrize("body, content_type, error", [
    (HTML_PAGE, "text/html; charset=utf-8", NotAnAdapterFile),
    (lfs_pointer(b"x" * 1000), "text/plain", LfsPointer),
    (lora_safetensors()[:50_000], "application/octet-stream", Truncated),
])
def test_traps_are_refused_and_removed(hub, hub_server, tmp_path, body, content_type, error):
    hub.add_static("trap.safetensors", body, content_type=content_type)
    with pytest.raises(error):
        fetch_url(url_of(hub_server, "trap.safetensors"), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_http_errors_have_their_codes(hub, hub_server, tmp_path):
    with pytest.raises(NotFound):
        fetch_url(url_of(hub_server, "nothing.safetensors"), tmp_path)
    hub.add_static("locked.safetensors", b"x")
    hub.fail("static", "locked.safetensors", status=403)
    with pytest.raises(Gated):
        fetch_url(url_of(hub_server, "locked.safetensors"), tmp_path)
    hub.fail("static", "locked.safetensors", status=502)
    with pytest.raises(NetworkError):
        fetch_url(url_of(hub_server, "locked.safetensors"), tmp_path)
    with pytest.raises(NetworkError):
        fetch_url("http://127.0.0.1:9/lora.safetensors", tmp_path)  # nothing listens on the discard port


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_disk_full_is_reported_and_nothing_is_left(hub, hub_server, tmp_path):
    hub.add_static(NAME, lora_safetensors())
    url = url_of(hub_server, NAME)
    part = staging_paths(url, tmp_path)[0]
    os.symlink("/dev/full", part)  # every write to the partial file fails with ENOSPC, as on a full disk
    with pytest.raises(DiskFull) as caught:
        fetch_url(url, tmp_path)
    assert caught.value.code == "disk-full" and caught.value.exit_code == 3
    assert list(tmp_path.iterdir()) == []


def test_hub_urls_on_the_endpoint_go_through_the_hub(hub, hub_server, hf_env, tmp_path):
    weights = lora_safetensors()
    repo = hub.create_repo("o/web", {"pytorch_lora_weights.safetensors": weights})
    source = parse_source(f"{hub_server.url}/o/web/blob/main/pytorch_lora_weights.safetensors")
    staging = tmp_path / "staging"
    got = fetch(source, staging_dir=staging)
    assert got.provenance.kind == "hub" and got.provenance.commit == repo.refs["main"]
    assert got.sha256 == hashlib.sha256(weights).hexdigest() and not staging.exists()  # HF cache only


def test_a_url_pull_that_cannot_write_says_why_and_leaves_no_partial(hub, hub_server, tmp_home, run_cli):
    # real limits on real `lora pull` processes (tests.registry.limits): ulimit -f, a read-only home, a full disk
    hub.add_static("first.safetensors", lora_safetensors(rank=4, seed=3))
    assert run_cli("pull", hub_server.static_url("first.safetensors")).returncode == 0  # the library exists
    hub.add_static(NAME, lora_safetensors(rank=8))  # 3 MB
    url = url_of(hub_server, NAME)
    for label, run, code in (("ulimit -f", lambda: run_with_file_size_limit(tmp_home, 1 << 20, "pull", url, "--json"),
                              "disk-full"),
                             ("read-only", lambda: run_read_only(tmp_home, "pull", url, "--json"), "read-only"),
                             ("full disk", lambda: run_on_full_disk(tmp_home, "pull", url, "--json", room=200_000),
                              "disk-full")):
        proc = run()
        error = json.loads(proc.stderr or proc.stdout)["error"]
        assert (proc.returncode, error["code"]) == (3, code), (label, proc.stdout, proc.stderr)
        assert list((tmp_home / "staging").glob("url-*")) == [], label
