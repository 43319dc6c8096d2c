"""read_container: the traps found in the wild get their stable codes, real files read with the manifest's
tensor counts and dtypes, every corrupt-header rule of the reference reader is enforced, and a large file is
described from its header alone."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from lorahub_cli.errors import LoraError
from lorahub_cli.inspect.containers import read_container
from lorahub_cli.inspect.model import RawFile
from lorahub_cli.inspect.safetensors_header import decode_values


def st_bytes(header: dict | bytes | str, data: bytes = b"") -> bytes:
    """A safetensors file from a header (dict, JSON text or raw bytes) and a data section, length prefix included."""
    if isinstance(header, dict):
        header = json.dumps(header)
    if isinstance(header, str):
        header = header.encode()
    return struct.pack("<Q", len(header)) + header + data


def entry(dtype: str, shape: list, begin: int, end: int) -> dict:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def write(tmp_path: Path, content: bytes, name: str = "x.safetensors") -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def expect_error(path: Path, code: str, *fragments: str) -> LoraError:
    with pytest.raises(LoraError) as info:
        read_container(path)
    assert info.value.code == code, info.value.message
    for fragment in fragments:
        assert fragment in info.value.message, info.value.message
    return info.value


# --- the corpus -------------------------------------------------------------------------------------
TRAPS = {
    "NEG_hirvita6_crlf_2bytes.safetensors": ("not-an-adapter-file", "2 bytes"),
    "NEG_meankitdas_sdxl_lfs_pointer.safetensors": ("lfs-pointer", "23,390,424 bytes"),
    "NEG_wchesley_html_page.safetensors": ("not-an-adapter-file", "an HTML page"),
    "m000lie_flux_kohya_TRUNCATED.safetensors": ("truncated", "306,315,872"),
    "NEG_monsy101_fake_lora_unsafe_pickle.bin": ("unsafe-pickle", "peft.utils.peft_types.PeftType"),
}


@pytest.mark.parametrize("name", sorted(TRAPS))
def test_corpus_trap_gets_its_code(corpus_dir, name):
    code, fragment = TRAPS[name]
    err = expect_error(corpus_dir / name, code, fragment)
    assert err.exit_code == 1


def test_lfs_pointer_names_the_object(corpus_dir):
    err = expect_error(corpus_dir / "NEG_meankitdas_sdxl_lfs_pointer.safetensors", "lfs-pointer",
                       "sha256 e287e5fe732e2784b636e53e39d99edf627b3cbcc3f82f2fb8abd0e6ee9ed596")
    assert "git lfs pull" in err.hint


def test_truncated_says_promised_and_present(corpus_dir):
    path = corpus_dir / "m000lie_flux_kohya_TRUNCATED.safetensors"
    err = expect_error(path, "truncated", "only 362,326 are present", "should be 306,428,682 bytes")
    assert "475,136" in err.message


def _manifest(corpus_dir: Path) -> list[dict]:
    return json.loads((corpus_dir / "MANIFEST.json").read_text())["files"]


READABLE = ["cloneofsimo_analog_svd_rank4.safetensors", "wellch4n_pokemon_attnprocs.safetensors",
            "haseebae_attnprocs_unetprefix.safetensors", "justinjiang_diffusers_old_sd21.safetensors",
            "jettooss_diffusers_old.safetensors", "hansjohn_sd15_text_encoder_peft.safetensors",
            "faithsang_diffusers_peft_unprefixed.safetensors", "wchesley_lora_weight.pt",
            "catundchat_sd15_attnprocs.bin", "NEG_wchesley_textual_inversion.ti.pt", "NEG_hyunwoo_llm_lora.pth"]


@pytest.mark.parametrize("name", READABLE)
def test_corpus_file_reads_with_manifest_counts(corpus_dir, name):
    facts = next(e for e in _manifest(corpus_dir) if e["name"] == name)
    raw = read_container(corpus_dir / name)
    assert raw.size == facts["size_bytes"]
    assert len(raw.tensors) == facts["ground_truth"]["n_tensors"]
    assert sorted({spec.dtype for spec in raw.tensors.values()}) == sorted(facts["ground_truth"]["dtype"])
    expected_container = "safetensors" if facts["container"] == "safetensors" else "pickle"
    assert raw.container == expected_container
    if raw.container == "safetensors":
        assert raw.data_start and all(spec.offsets is not None for spec in raw.tensors.values())
        assert raw.data_start + sum(spec.nbytes for spec in raw.tensors.values()) == raw.size
    else:
        assert all(spec.offsets is None for spec in raw.tensors.values())


def test_cloneofsimo_metadata_and_values(corpus_dir):
    raw = read_container(corpus_dir / "cloneofsimo_analog_svd_rank4.safetensors")
    assert len(raw.metadata) == 194 and raw.metadata["unet:0:rank"] == "4"
    up = raw.read_values("unet:0:up")
    assert up.dtype == np.float64 and up.shape == raw.tensors["unet:0:up"].shape
    assert np.isfinite(up).all() and np.abs(up).max() > 0


def test_bare_list_pickle_becomes_positional_keys(corpus_dir):
    raw = read_container(corpus_dir / "wchesley_lora_weight.pt")
    assert set(raw.tensors) == {f"unet:{i}:{part}" for i in range(144) for part in ("up", "down")}
    assert raw.tensors["unet:0:up"].shape == (320, 4) and raw.tensors["unet:0:down"].shape == (4, 320)
    assert any("bare positional list of 288 tensors" in note for note in raw.notes)


def test_state_dict_pickle_keeps_its_names(corpus_dir):
    raw = read_container(corpus_dir / "catundchat_sd15_attnprocs.bin")
    assert all(".processor.to_" in name for name in raw.tensors)
    assert Counter(name.rsplit(".", 2)[-2] for name in raw.tensors) == {"up": 128, "down": 128}
    assert raw.read_values(next(iter(raw.tensors))).dtype == np.float64


# --- sniffing: what else hides under an adapter's name ----------------------------------------------
@pytest.mark.parametrize("content, fragment", [
    (b"", "empty"),
    (b"\r\n", "line breaks"),
    (b"oops", "b'oops'"),
    (b"\n\n<!DOCTYPE html>\n<html><body>Sign in</body></html>\n" * 3, "an HTML page"),
    (b'{"base_model_name_or_path": "runwayml/stable-diffusion-v1-5", "r": 4}', "JSON text"),
    (b"404: Not Found\n", "text file"),
    (bytes(5000), "zero bytes"),
    (b"\x93NUMPY\x01\x00v\x00{'descr': '<f4'}" + bytes(64), "neither a safetensors file"),
])
def test_not_an_adapter_file(tmp_path, content, fragment):
    expect_error(write(tmp_path, content), "not-an-adapter-file", fragment)


def test_path_below_a_file_is_not_found(tmp_path):
    (tmp_path / "a.safetensors").write_bytes(b"x")
    expect_error(tmp_path / "a.safetensors" / "b.safetensors", "not-found", "no such file")


def test_sniffs_bytes_not_suffix(tmp_path):
    save_file({"w": np.ones((2, 2), np.float32)}, str(tmp_path / "weights.bin"))
    assert read_container(tmp_path / "weights.bin").container == "safetensors"
    write(tmp_path, b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"ab" * 32 + b"\nsize 12\n", "a.pt")
    expect_error(tmp_path / "a.pt", "lfs-pointer", "12 bytes")


def test_zip_that_is_not_a_checkpoint(tmp_path):
    with zipfile.ZipFile(tmp_path / "a.bin", "w") as z:
        z.writestr("readme.txt", "hello")
    expect_error(tmp_path / "a.bin", "not-an-adapter-file", "zip archive", "readme.txt")


def test_cut_torch_zip_is_truncated(tmp_path):
    torch = pytest.importorskip("torch")
    torch.save({"w": torch.ones(64, 64)}, tmp_path / "full.pt")
    data = (tmp_path / "full.pt").read_bytes()
    expect_error(write(tmp_path, data[: len(data) // 2], "cut.pt"), "truncated", "cut short")


def test_plain_python_pickle_is_not_a_checkpoint(tmp_path):
    pytest.importorskip("torch")
    import pickle

    expect_error(write(tmp_path, pickle.dumps({"r": 4}, protocol=2), "a.pt"), "not-an-adapter-file", "torch.save")


# --- valid safetensors edge cases (the reference reader accepts these) -----------------------------
def test_empty_header_is_a_file_with_no_tensors(tmp_path):
    raw = read_container(write(tmp_path, st_bytes(b"{}      ")))
    assert raw.tensors == {} and raw.metadata == {} and raw.data_start == 16


def test_valid_edge_cases(tmp_path):
    header = {
        "__metadata__": None,  # null means no metadata
        "b": {**entry("F32", [2], 0, 8), "extra": [1, 2]},  # unknown fields are ignored, as the reference does
        "a": entry("U8", [0, 5], 8, 8),  # zero-size tensors are allowed; entries in any order
        "c": entry("F4", [2, 3], 8, 11),  # 6 x 4 bits = 3 whole bytes
    }
    raw = read_container(write(tmp_path, st_bytes(json.dumps(header) + "  \n\t", bytes(11))))
    assert raw.metadata == {}
    assert raw.tensors["a"].shape == (0, 5) and raw.tensors["c"].offsets == (8, 11)
    assert list(raw.tensors) == ["b", "a", "c"]


def test_safetensors_writer_output_reads_back(tmp_path):
    arrays = {"x.alpha": np.array(8.0, np.float32), "x.lora_up.weight": np.arange(6, dtype=np.float16).reshape(3, 2),
              "i": np.array([1, -2], np.int64)}
    save_file(arrays, str(tmp_path / "a.safetensors"), metadata={"ss_network_dim": "4"})
    raw = read_container(tmp_path / "a.safetensors")
    assert raw.metadata == {"ss_network_dim": "4"}
    assert {k: (s.dtype, s.shape) for k, s in raw.tensors.items()} == {
        "x.alpha": ("F32", ()), "x.lora_up.weight": ("F16", (3, 2)), "i": ("I64", (2,))}
    assert raw.read_values("x.alpha") == 8.0 and raw.read_values("x.alpha").dtype == np.float64
    np.testing.assert_array_equal(raw.read_values("x.lora_up.weight"), arrays["x.lora_up.weight"])
    np.testing.assert_array_equal(raw.read_values("i"), [1, -2])


def test_bf16_and_fp8_values_match_torch():
    torch = pytest.importorskip("torch")
    every_byte = torch.arange(256, dtype=torch.uint8)
    for name, dtype in [("F8_E4M3", "float8_e4m3fn"), ("F8_E5M2", "float8_e5m2"),
                        ("F8_E4M3FNUZ", "float8_e4m3fnuz"), ("F8_E5M2FNUZ", "float8_e5m2fnuz"),
                        ("F8_E8M0", "float8_e8m0fnu")]:
        if not hasattr(torch, dtype):
            continue
        expected = every_byte.view(getattr(torch, dtype)).double().numpy()
        np.testing.assert_array_equal(decode_values(every_byte.numpy().tobytes(), name, (256,)), expected,
                                      err_msg=name)
    bf16 = torch.tensor([1.5, -3.25, 1e-3, 65504.0, float("inf")], dtype=torch.bfloat16)
    raw_bytes = bf16.view(torch.int16).numpy().tobytes()
    np.testing.assert_array_equal(decode_values(raw_bytes, "BF16", (5,)), bf16.double().numpy())


# --- every corrupt-header rule ----------------------------------------------------------------------
U8 = entry("U8", [4], 0, 4)
CORRUPT = [
    ("bad json", st_bytes('{"a": {"dtype": "U8",', bytes(4)), "not valid JSON"),
    ("trailing NUL padding", st_bytes(json.dumps({"a": U8}).encode() + b"\0", bytes(4)), "not valid JSON"),
    ("NaN", st_bytes('{"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4], "x": NaN}}', bytes(4)),
     "not valid JSON"),
    ("not an object", st_bytes("[1, 2, 3]"), "does not start with '{'"),
    ("leading space", st_bytes(" " + json.dumps({"a": U8}), bytes(4)), "does not start with '{'"),
    ("invalid utf-8", st_bytes(b'{"a\xff": 1}'), "not valid UTF-8"),
    ("lone surrogate", st_bytes('{"\\ud800": ' + json.dumps(U8) + "}", bytes(4)), "surrogate"),
    ("header over the limit", struct.pack("<Q", 100_000_001) + b'{"a": 1}' + bytes(64), "100,000,000"),
    ("length past end, json complete", struct.pack("<Q", 500) + json.dumps({"a": U8}).encode() + bytes(4),
     "the length field is wrong"),
    ("duplicate tensor", st_bytes('{"a": %s, "a": %s}' % (json.dumps(U8), json.dumps(U8)), bytes(4)),
     "repeats the key 'a'"),
    ("duplicate field", st_bytes('{"a": {"dtype": "U8", "dtype": "U8", "shape": [4], "data_offsets": [0, 4]}}',
                                 bytes(4)), "repeats the key 'dtype'"),
    ("overlap", st_bytes({"a": entry("U8", [4], 0, 4), "b": entry("U8", [4], 2, 6)}, bytes(6)), "overlap"),
    ("hole", st_bytes({"a": entry("U8", [4], 0, 4), "b": entry("U8", [4], 6, 10)}, bytes(10)), "a hole"),
    ("hole at start", st_bytes({"a": entry("U8", [4], 2, 6)}, bytes(6)), "the start of the data"),
    ("end before begin", st_bytes({"a": entry("U8", [0], 4, 0)}, bytes(4)), "end before they begin"),
    ("unknown dtype", st_bytes({"a": entry("F128", [4], 0, 4)}, bytes(4)), "unknown dtype 'F128'"),
    ("lowercase dtype", st_bytes({"a": entry("f32", [1], 0, 4)}, bytes(4)), "unknown dtype 'f32'"),
    ("size mismatch", st_bytes({"a": entry("F16", [4], 0, 4)}, bytes(4)), "needs 8 bytes but"),
    ("negative dim", st_bytes({"a": entry("U8", [-4], 0, 4)}, bytes(4)), "shape must be"),
    ("minus zero dim", st_bytes('{"a": {"dtype": "U8", "shape": [-0, 4], "data_offsets": [0, 0]}}'), "shape must be"),
    ("float dim", st_bytes({"a": entry("U8", [4.0], 0, 4)}, bytes(4)), "shape must be"),
    ("bool dim", st_bytes({"a": entry("U8", [True], 0, 1)}, bytes(1)), "shape must be"),
    ("string dim", st_bytes({"a": entry("U8", ["4"], 0, 4)}, bytes(4)), "shape must be"),
    ("shape not a list", st_bytes({"a": entry("U8", 4, 0, 4)}, bytes(4)), "shape must be"),
    ("three offsets", st_bytes({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4, 8]}}, bytes(4)),
     "data_offsets must be"),
    ("negative offset", st_bytes({"a": entry("U8", [0], -1, -1)}), "data_offsets must be"),
    ("offset past u64", st_bytes({"a": entry("U8", [0], 2**64, 2**64)}), "data_offsets must be"),
    ("huge shape", st_bytes({"a": entry("U8", [2**32, 2**32], 0, 0)}), "too large to address"),
    ("sub-byte tail", st_bytes({"a": entry("F4", [3], 0, 2)}, bytes(2)), "not a whole number of bytes"),
    ("missing field", st_bytes({"a": {"dtype": "U8", "shape": [4]}}, bytes(4)), "missing data_offsets"),
    ("entry not an object", st_bytes({"a": [1, 2]}), "expected an object"),
    ("metadata not an object", st_bytes({"__metadata__": "x", "a": U8}, bytes(4)), "__metadata__ must be an object"),
    ("metadata non-string value", st_bytes({"__metadata__": {"ss_network_dim": 4}, "a": U8}, bytes(4)),
     "'ss_network_dim' holds an integer"),
    ("bytes beyond the tensors", st_bytes({"a": U8}, bytes(6)), "2 bytes after the last tensor"),
]


@pytest.mark.parametrize("content, fragment", [c[1:] for c in CORRUPT], ids=[c[0] for c in CORRUPT])
def test_corrupt_header(tmp_path, content, fragment):
    expect_error(write(tmp_path, content), "corrupt-header", fragment)


def test_file_cut_inside_header_is_truncated(tmp_path):
    full = st_bytes({"a": U8, "b": entry("F32", [100], 4, 404)}, bytes(404))
    expect_error(write(tmp_path, full[:40]), "truncated", "ends inside its header")


def test_data_shorter_than_promised_is_truncated(tmp_path):
    full = st_bytes({"a": U8, "b": entry("F32", [100], 4, 404)}, bytes(404))
    expect_error(write(tmp_path, full[:-1]), "truncated", "404 bytes of tensor data but only 403")


# --- a large file is described from its header alone ------------------------------------------------
def _read_bytes_so_far() -> int | None:
    try:
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("rchar:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def test_2gb_sparse_file_reads_header_only(tmp_path):
    tensor_bytes, count = 16 << 20, 128  # 128 x 16 MiB = 2 GiB of data the reader must not touch
    header = {"__metadata__": {"ss_network_dim": "32"}}
    for i in range(count):
        header[f"lora_unet_block_{i}.lora_up.weight"] = entry("BF16", [tensor_bytes // 2], i * tensor_bytes,
                                                                (i + 1) * tensor_bytes)
    path = tmp_path / "big.safetensors"
    head = st_bytes(header)
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(len(head) + count * tensor_bytes)  # sparse: no data blocks are written
    assert path.stat().st_size > 2 * 10**9

    before = _read_bytes_so_far()
    start = time.perf_counter()
    raw = read_container(path)
    elapsed = time.perf_counter() - start
    after = _read_bytes_so_far()

    assert isinstance(raw, RawFile) and len(raw.tensors) == count and raw.data_start == len(head)
    assert elapsed < 0.25, f"header read took {elapsed:.3f}s"
    if before is not None and after is not None:
        assert after - before < len(head) + 16384, f"read {after - before:,} bytes for a {len(head):,}-byte header"


def test_safetensors_path_never_imports_torch(tmp_path):
    save_file({"w": np.ones(3, np.float32)}, str(tmp_path / "a.safetensors"))
    code = ("import sys; from lorahub_cli.inspect.containers import read_container; "
            f"raw = read_container({str(tmp_path / 'a.safetensors')!r}); raw.read_values('w'); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2], env={**os.environ, "PYTHONPATH": "."})
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("header_len", [0x0280, 0x0380, 0x0480, 0x0580, 0x1_0280, 0x2_0580])
def test_safetensors_whose_length_bytes_look_like_a_pickle_opcode(tmp_path, header_len):
    """A header of 0x0280 bytes starts with b'\\x80\\x02', the pickle protocol-2 opcode: still safetensors."""
    import json
    import struct

    header = {"a.lora_down.weight": {"dtype": "F32", "shape": [1, 1], "data_offsets": [0, 4]}}
    raw = json.dumps(header).encode()
    raw += b" " * (header_len - len(raw))
    path = tmp_path / "x.safetensors"
    path.write_bytes(struct.pack("<Q", header_len) + raw + b"\0\0\0\0")
    from lorahub_cli.convert.load import is_torch_pickle
    from lorahub_cli.inspect.containers import read_container
    from lorahub_cli.normalise import looks_pickled

    assert read_container(path).container == "safetensors"
    # conversion and the library's normalise step decide it the same way (a pickle read would lose the header)
    assert not is_torch_pickle(path) and not looks_pickled(path)
