"""A download is hashed once, as its bytes are written (issue 16's pull overhead): the digests equal those of
a full read of the file (whole-file sha256, AutoV3 data sha256, all-zero up weights, non-finite tensors); a
resumed download hashes the kept prefix from disk (damage in it is caught as hash-mismatch, not trusted);
and the digest is used only for a file of exactly the size hashed."""

from __future__ import annotations

import hashlib
import json
import struct

import numpy as np
import pytest

from lorahub_cli.errors import HashMismatch, NetworkError
from lorahub_cli.inspect import inspect_file_full
from lorahub_cli.inspect.hashing import StreamHasher
from lorahub_cli.sources.url import fetch_url, staging_paths
from lorahub_cli.sources.verify import verify_and_inspect
from tests.hubserver import lora_safetensors

NAME = "styles/stream.safetensors"


def _safetensors(tensors: dict[str, np.ndarray]) -> bytes:
    header, offset, data = {}, 0, b""
    for key, value in tensors.items():
        raw = value.tobytes()
        header[key] = {"dtype": {"float32": "F32", "float16": "F16"}[str(value.dtype)], "shape": list(value.shape),
                       "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        data += raw
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def _kohya(up: np.ndarray) -> bytes:
    stem = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
    rng = np.random.default_rng(0)
    return _safetensors({f"{stem}.lora_down.weight": rng.standard_normal((4, 768), dtype=np.float32),
                         f"{stem}.lora_up.weight": up, f"{stem}.alpha": np.array([4.0], dtype=np.float32)})


@pytest.mark.parametrize("data", [
    lora_safetensors(rank=8),
    _kohya(np.zeros((320, 4), dtype=np.float32)),                                  # untrained: all-zero up
    _kohya(np.full((320, 4), np.nan, dtype=np.float32)),                           # diverged: NaN
], ids=["lora", "zero-up", "nan"])
@pytest.mark.parametrize("chunk", [1, 13, 4096, 1 << 20])
def test_streamed_digests_equal_a_full_read(tmp_path, data, chunk):
    path = tmp_path / "x.safetensors"
    path.write_bytes(data)
    hasher = StreamHasher()
    for i in range(0, len(data), chunk):
        hasher.update(data[i:i + chunk])
    streamed, _raw, _layout = inspect_file_full(path, known=hasher.hashes)
    read, _raw, _layout = inspect_file_full(path)
    assert hasher.hashes is not None and streamed.sha256 == hashlib.sha256(data).hexdigest()
    assert (streamed.sha256, streamed.tensor_sha256, streamed.warnings) == (read.sha256, read.tensor_sha256,
                                                                            read.warnings)


def test_a_digest_is_used_only_for_a_file_of_the_size_hashed(tmp_path):
    data = lora_safetensors()
    path = tmp_path / "x.safetensors"
    path.write_bytes(data)
    hasher = StreamHasher()
    hasher.update(data[:-8])   # fed less than the file holds: the file is read and hashed instead
    report, _container = verify_and_inspect(path, what="x", expected_sha256=hashlib.sha256(data).hexdigest(),
                                            streamed=hasher)
    assert report.sha256 == hashlib.sha256(data).hexdigest()


def test_a_download_is_not_read_again_after_it_is_written(hub, hub_server, tmp_path, monkeypatch):
    import lorahub_cli.inspect.hashing as hashing

    weights = lora_safetensors(rank=16)
    hub.add_static(NAME, weights)

    def no_second_read(*args, **kwargs):
        raise AssertionError("the downloaded file was read again to hash it")

    monkeypatch.setattr(hashing, "hash_file", no_second_read)
    got = fetch_url(hub_server.static_url(NAME), tmp_path)
    assert got.sha256 == hashlib.sha256(weights).hexdigest() and got.report.tensor_sha256


def test_a_resumed_download_hashes_the_kept_prefix_from_disk(hub, hub_server, tmp_path):
    weights = lora_safetensors(rank=16)
    hub.add_static(NAME, weights)
    hub.drop("static", NAME, after=250_000, times=1)
    url = hub_server.static_url(NAME)
    with pytest.raises(NetworkError):
        fetch_url(url, tmp_path, retries=0)
    part = staging_paths(url, tmp_path).part
    damaged = bytearray(part.read_bytes())
    damaged[200_000] ^= 0xFF           # a byte of the kept partial changed on disk (a crash, a bad sector)
    part.write_bytes(bytes(damaged))
    got = fetch_url(url, tmp_path)     # resumed from byte 250,000: the digest covers what is on disk
    assert got.sha256 == hashlib.sha256(bytes(damaged) + weights[250_000:]).hexdigest() != hashlib.sha256(
        weights).hexdigest()
    assert hub.requests_to("/static/", "GET")[-1].headers.get("Range") == "bytes=250000-"


def test_a_resumed_civitai_download_with_a_damaged_prefix_is_a_hash_mismatch(civitai_lora, run_cli, tmp_home):
    catalogue, data = civitai_lora
    catalogue.cut_after = 200_000
    cut = run_cli("pull", "civitai:31@301", "--json")   # cut, then a 500: the partial is kept for a resume
    assert cut.returncode == 3 and json.loads(cut.stdout)["error"]["code"] == "network"
    (part,) = (tmp_home / "staging").glob("*.part")
    damaged = bytearray(part.read_bytes())
    damaged[100_000] ^= 0xFF
    part.write_bytes(bytes(damaged))
    resumed = run_cli("pull", "civitai:31@301", "--json")
    assert resumed.returncode == 1 and json.loads(resumed.stdout)["error"]["code"] == "hash-mismatch"
    assert [r["range"] for r in catalogue.requests if r["server"] == "storage"][-1] == "bytes=200000-"
    assert json.loads(run_cli("list", "--json").stdout) == []
    again = run_cli("pull", "civitai:31@301", "--json")   # the bad copy was removed: a clean download
    assert again.returncode == 0 and json.loads(again.stdout)["sha256"] == hashlib.sha256(data).hexdigest()


@pytest.fixture
def civitai_lora(monkeypatch, tmp_path):
    from tests.civitai.server import CFile, CivitaiServer, CModel, CVersion

    server = CivitaiServer()
    monkeypatch.setenv("CIVITAI_ENDPOINT", server.url)
    monkeypatch.delenv("CIVITAI_API_TOKEN", raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    data = lora_safetensors(rank=16, seed=3)
    server.add_model(CModel(31, "Streamed", versions=[CVersion(301, 31, "v1", [CFile(3001, "s.safetensors", data)])]))
    yield server, data
    server.stop()


def test_hash_mismatch_is_raised_from_the_streamed_digest(tmp_path):
    data = lora_safetensors()
    path = tmp_path / "x.safetensors"
    path.write_bytes(data)
    hasher = StreamHasher()
    hasher.update(data)
    with pytest.raises(HashMismatch):
        verify_and_inspect(path, what="x", expected_sha256="0" * 64, streamed=hasher)
