"""hash_file: one pass gives the whole-file sha256, the data-section sha256 and the all-zero up tensors,
checked against hashlib over the same bytes, the manifest's sha256 and values written by a real writer."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from lorahub_cli.inspect.containers import read_container
from lorahub_cli.inspect.hashing import hash_file


def _expected(path: Path) -> tuple[str, str]:
    content = path.read_bytes()
    (n,) = struct.unpack("<Q", content[:8])
    return hashlib.sha256(content).hexdigest(), hashlib.sha256(content[8 + n:]).hexdigest()


def _lora(path: Path, up_scale: float, metadata: dict[str, str] | None = None, dtype=np.float32) -> Path:
    rng = np.random.default_rng(0)
    arrays = {}
    for i in range(3):
        arrays[f"m{i}.lora_down.weight"] = rng.standard_normal((4, 64)).astype(dtype)
        arrays[f"m{i}.lora_up.weight"] = (rng.standard_normal((64, 4)) * up_scale).astype(dtype)
        arrays[f"m{i}.alpha"] = np.array(4.0, dtype)
    save_file(arrays, str(path), metadata=metadata)
    return path


UP = [f"m{i}.lora_up.weight" for i in range(3)]


@pytest.mark.parametrize("threaded", [False, True])
@pytest.mark.parametrize("chunk_size", [7, 64, 4096, 1 << 20])
def test_hashes_equal_hashlib(tmp_path, chunk_size, threaded):
    path = _lora(tmp_path / "a.safetensors", 1.0, {"ss_network_dim": "4"})
    hashes = hash_file(read_container(path), UP, chunk_size=chunk_size, threaded=threaded)
    assert (hashes.sha256, hashes.tensor_sha256) == _expected(path)
    assert hashes.autov2 == hashes.sha256[:10]
    assert hashes.zero_up_keys == []


def test_data_hash_survives_metadata_edits(tmp_path):
    a = hash_file(read_container(_lora(tmp_path / "a.safetensors", 1.0, {"ss_output_name": "a"})), [])
    b = hash_file(read_container(_lora(tmp_path / "b.safetensors", 1.0, {"ss_output_name": "b", "x": "y"})), [])
    assert a.tensor_sha256 == b.tensor_sha256 and a.sha256 != b.sha256


def test_manifest_sha256_of_corpus_files(corpus_dir):
    checked = 0
    for facts in json.loads((corpus_dir / "MANIFEST.json").read_text())["files"]:
        path = corpus_dir / facts["name"]
        try:
            raw = read_container(path)
        except Exception:  # noqa: BLE001 - traps have no RawFile to hash; test_containers covers them
            continue
        hashes = hash_file(raw, [])
        assert hashes.sha256 == facts["sha256"], facts["name"]
        if raw.container == "safetensors":
            assert hashes.tensor_sha256 == _expected(path)[1]
        else:
            assert hashes.tensor_sha256 is None
        checked += 1
    assert checked >= 10


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_zero_up_tensors_are_found(tmp_path, dtype):
    untrained = read_container(_lora(tmp_path / "zero.safetensors", 0.0, dtype=dtype))
    assert hash_file(untrained, UP + ["m0.lora_down.weight", "not.in.file"]).zero_up_keys == UP
    assert hash_file(untrained, UP, threaded=True).zero_up_keys == UP
    trained = read_container(_lora(tmp_path / "trained.safetensors", 1.0, dtype=dtype))
    assert hash_file(trained, UP).zero_up_keys == []


def _hand_built(path: Path, tensors: dict[str, tuple[str, bytes]], pad: int) -> Path:
    """A safetensors file whose header length is not a multiple of 8, so element bytes straddle chunk edges."""
    header, offset = {}, 0
    for name, (dtype, data) in tensors.items():
        width = {"F16": 2, "BF16": 2, "F32": 4, "I32": 4, "F64": 8, "U8": 1}[dtype]
        header[name] = {"dtype": dtype, "shape": [len(data) // width], "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    blob = json.dumps(header).encode() + b" " * pad
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + b"".join(d for _, d in tensors.values()))
    return path


@pytest.mark.parametrize("threaded", [False, True])
@pytest.mark.parametrize("chunk_size", [5, 64, 1 << 20])
@pytest.mark.parametrize("pad", [0, 1, 3])
def test_negative_zero_counts_as_zero_at_any_alignment(tmp_path, chunk_size, pad, threaded):
    minus_zero = np.full(50, -0.0, np.float16).tobytes()
    one_deep_inside = np.zeros(5000, np.float32)
    one_deep_inside[4321] = 1e-30  # past the 4 KiB probe
    sign_only_int = np.full(8, -(2**31), np.int32).tobytes()  # the sign bit alone is a real value for ints
    path = _hand_built(tmp_path / "a.safetensors", {
        "a.up": ("F16", minus_zero),
        "b.up": ("F32", one_deep_inside.tobytes()),
        "c.up": ("I32", sign_only_int),
        "d.up": ("BF16", np.full(9, 0x8000, np.uint16).tobytes()),  # bf16 -0.0
        "e.up": ("F32", np.zeros(7, np.float32).tobytes()),
    }, pad)
    raw = read_container(path)
    keys = ["a.up", "b.up", "c.up", "d.up", "e.up"]
    hashes = hash_file(raw, keys, chunk_size=chunk_size, threaded=threaded)
    assert hashes.zero_up_keys == ["a.up", "d.up", "e.up"]
    assert (hashes.sha256, hashes.tensor_sha256) == _expected(path)


def test_pickle_hashes_whole_file_and_checks_values(tmp_path):
    torch = pytest.importorskip("torch")
    torch.save({"a.lora_up.weight": torch.zeros(8, 2), "b.lora_up.weight": torch.full((8, 2), -0.0),
                "c.lora_up.weight": torch.ones(8, 2)}, tmp_path / "a.bin")
    raw = read_container(tmp_path / "a.bin")
    hashes = hash_file(raw, ["a.lora_up.weight", "b.lora_up.weight", "c.lora_up.weight"], chunk_size=100)
    assert hashes.sha256 == hashlib.sha256((tmp_path / "a.bin").read_bytes()).hexdigest()
    assert hashes.tensor_sha256 is None
    assert hashes.zero_up_keys == ["a.lora_up.weight", "b.lora_up.weight"]


def test_corpus_untrained_positional_pickle(corpus_dir):
    """wchesley_lora_weight.pt: every up tensor (even positions) is zero in the published file."""
    raw = read_container(corpus_dir / "wchesley_lora_weight.pt")
    ups = [k for k in raw.tensors if k.endswith(":up")]
    downs = [k for k in raw.tensors if k.endswith(":down")]
    hashes = hash_file(raw, ups + downs)
    assert hashes.zero_up_keys == ups


_NUMPY = {"F16": np.float16, "F32": np.float32, "F64": np.float64, "I32": np.int32, "U8": np.uint8}


def _values(dtype: str, data: bytes) -> np.ndarray:
    if dtype == "BF16":   # numpy has no bfloat16: its bits are a float32's top half
        return (np.frombuffer(data, np.uint16).astype(np.uint32) << 16).view(np.float32)
    return np.frombuffer(data, _NUMPY[dtype])


def _random_tensor(rng, dtype: str) -> bytes:
    n = int(rng.integers(1, 40))
    kind = rng.choice(["normal", "zero", "minus-zero", "nan", "inf", "one-late"])
    values = rng.standard_normal(n) * 3
    if kind == "zero":
        values[:] = 0.0
    elif kind == "minus-zero":
        values[:] = -0.0
    elif kind in ("nan", "inf"):
        values[int(rng.integers(0, n))] = np.nan if kind == "nan" else -np.inf
    elif kind == "one-late":
        values[:] = -0.0
        values[-1] = 1e-3
    if dtype == "BF16":
        return (values.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16).tobytes()
    if dtype in ("I32", "U8"):
        return np.nan_to_num(values, nan=0, posinf=0, neginf=0).astype(_NUMPY[dtype]).tobytes()
    return values.astype(_NUMPY[dtype]).tobytes()


@pytest.mark.parametrize("seed", range(12))
def test_the_chunked_scans_agree_with_the_decoded_values(tmp_path, seed):
    """Random runs of tensors of every dtype (NaN, -inf, all-zero, all -0.0, -0.0 but the last), odd header
    padding and chunk sizes cutting elements anywhere: the zero and non-finite tensors the byte scans find are
    exactly those their decoded values say."""
    rng = np.random.default_rng(seed)
    runs = [rng.choice(["F16", "BF16", "F32", "F64", "I32", "U8"]) for _ in range(int(rng.integers(1, 5)))]
    tensors = {}
    for r, dtype in enumerate(runs):
        for t in range(int(rng.integers(1, 30))):
            tensors[f"r{r}.t{t}.up"] = (str(dtype), _random_tensor(rng, str(dtype)))
    path = _hand_built(tmp_path / "a.safetensors", tensors, int(rng.integers(0, 8)))
    values = {k: _values(d, b) for k, (d, b) in tensors.items()}
    want_zero = [k for k, v in values.items() if not np.any(v)]
    want_bad = sorted(k for k, (d, _) in tensors.items() if d in ("F16", "BF16", "F32", "F64")
                      and not np.isfinite(values[k]).all())
    raw = read_container(path)
    for chunk_size in (3, 16, 61, 256, 4096, 1 << 20):
        hashes = hash_file(raw, list(tensors), chunk_size=chunk_size, threaded=False)
        assert hashes.zero_up_keys == want_zero, chunk_size
        assert sorted(hashes.nonfinite_keys) == want_bad, chunk_size
        assert (hashes.sha256, hashes.tensor_sha256) == _expected(path)
