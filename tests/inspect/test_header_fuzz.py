"""Fuzzing read_container: random bytes and mutated real headers either describe a file or raise a LoraError with
one of the container codes, never another exception. Where the bytes claim to be safetensors, the verdict is
compared with the reference Rust reader (safetensors.safe_open): we accept exactly what it accepts, except two
documented stricter rules (the header must start with '{'; keys must not repeat)."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.numpy import save

from lorahub_cli.errors import LoraError
from lorahub_cli.inspect.containers import read_container
from lorahub_cli.inspect.model import RawFile

CONTAINER_CODES = {"not-an-adapter-file", "lfs-pointer", "truncated", "corrupt-header", "unsafe-pickle"}
# LORAHUB_FUZZ_EXAMPLES=5000 for a longer campaign; the default keeps the whole file to a few seconds
EXAMPLES = int(os.environ.get("LORAHUB_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

VALID = save({
    "lora_unet_a.lora_down.weight": np.arange(12, dtype=np.float16).reshape(3, 4),
    "lora_unet_a.lora_up.weight": np.ones((4, 3), np.float32),
    "lora_unet_a.alpha": np.array(3.0, np.float32),
    "flag": np.array([True, False]),
}, metadata={"ss_network_dim": "3", "ss_network_alpha": "3.0"})
(N,) = struct.unpack("<Q", VALID[:8])
HEADER = json.loads(VALID[8:8 + N])


@pytest.fixture(scope="module")
def fuzz_file(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "x.safetensors"


def outcome(path: Path, content: bytes) -> RawFile | LoraError:
    path.write_bytes(content)
    try:
        raw = read_container(path)
    except LoraError as err:
        assert err.code in CONTAINER_CODES, (err.code, err.message)
        assert err.message
        return err
    assert isinstance(raw, RawFile)
    for name, spec in raw.tensors.items():
        if spec.dtype not in ("F4", "F6_E2M3", "F6_E3M2"):  # packed sub-byte values are not decoded
            assert raw.read_values(name).shape == spec.shape
    return raw


def reference_accepts(path: Path) -> bool:
    try:
        with safe_open(str(path), framework="numpy"):
            return True
    except Exception:  # noqa: BLE001 - any refusal by the reference reader counts as "rejects"
        return False


def _has_duplicate_keys(text: str) -> bool:
    seen_dup = False

    def hook(pairs):
        nonlocal seen_dup
        keys = [k for k, _ in pairs]
        seen_dup |= len(keys) != len(set(keys))
        return dict(pairs)

    try:
        json.loads(text, object_pairs_hook=hook)
    except ValueError:
        return False
    return seen_dup


def check_against_reference(path: Path, content: bytes) -> None:
    ours = outcome(path, content)
    theirs = reference_accepts(path)
    if isinstance(ours, RawFile):
        assert theirs, "we accepted a file the reference reader refuses"
        return
    if theirs:
        (n,) = struct.unpack("<Q", content[:8])
        header = content[8:8 + n].decode("utf-8", errors="replace")
        stricter = not header.startswith("{") or _has_duplicate_keys(header)
        assert stricter, f"the reference reader accepts what we refused: {ours.code}: {ours.message}"


def with_header(header: dict | str, data: bytes = VALID[8 + N:]) -> bytes:
    text = header if isinstance(header, str) else json.dumps(header)
    blob = text.encode("utf-8", errors="surrogatepass")
    return struct.pack("<Q", len(blob)) + blob + data


def test_the_base_file_is_valid(fuzz_file):
    raw = outcome(fuzz_file, VALID)
    assert isinstance(raw, RawFile) and len(raw.tensors) == 4 and reference_accepts(fuzz_file)


# --- raw bytes -------------------------------------------------------------------------------------
@FUZZ
@given(st.binary(max_size=400))
def test_random_bytes(fuzz_file, content):
    outcome(fuzz_file, content)


@settings(FUZZ, max_examples=max(EXAMPLES // 3, 10))
@given(st.sampled_from([b"\x80\x02", b"\x80\x04\x95", b"PK\x03\x04", b"version https://git-lfs.github.com/spec/v1\n",
                        b"\n\n<!DOCTYPE html>", b"{", bytes(8) + b"{"]),
       st.binary(max_size=300))
def test_random_bytes_behind_known_magics(fuzz_file, magic, rest):
    outcome(fuzz_file, magic + rest)


# --- mutations of a valid file ----------------------------------------------------------------------
@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), min_size=1, max_size=6))
def test_flipped_bytes(fuzz_file, flips):
    content = bytearray(VALID)
    for at, value in flips:
        content[at] = value
    check_against_reference(fuzz_file, bytes(content))


@FUZZ
@given(st.one_of(st.integers(0, 2**64 - 1), st.integers(-16, 16).map(lambda d: max(N + d, 0))))
def test_changed_length_prefix(fuzz_file, n):
    check_against_reference(fuzz_file, struct.pack("<Q", n) + VALID[8:])


@FUZZ
@given(st.integers(0, len(VALID) - 1))
def test_truncated_anywhere(fuzz_file, cut):
    result = outcome(fuzz_file, VALID[:cut])
    assert isinstance(result, LoraError)
    assert result.code == ("truncated" if cut >= 8 else "not-an-adapter-file"), result.message


@FUZZ
@given(st.integers(0, N), st.text(alphabet='{}[]",:0123456789-.eE \\ntruefalsnu', min_size=1, max_size=8))
def test_injected_json_garbage(fuzz_file, at, junk):
    text = VALID[8:8 + N].decode()
    check_against_reference(fuzz_file, with_header(text[:at] + junk + text[at:]))


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**65), 2**65) | st.floats(allow_nan=False) | st.text(max_size=6),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3),
    max_leaves=6)
DIMS = st.lists(st.one_of(st.integers(-2, 40), st.just(2**64), st.floats(-1, 4), st.booleans()), max_size=3)


@FUZZ
@given(st.sampled_from(sorted(HEADER)), st.sampled_from(["dtype", "shape", "data_offsets", "extra", None]),
       st.one_of(JSON_VALUES, DIMS, st.sampled_from(["F16", "BF16", "F32", "U8", "BOOL", "F4", "F8_E4M3", "C64",
                                                       "f16", "Q4_0"])),
       st.booleans())
def test_mutated_entries(fuzz_file, name, field, value, drop):
    header = json.loads(json.dumps(HEADER))
    if field is None:
        header[name] = value  # replace the whole entry (or the metadata object)
    elif isinstance(header[name], dict) and drop and field in header[name]:
        del header[name][field]
    elif isinstance(header[name], dict):
        header[name][field] = value
    check_against_reference(fuzz_file, with_header(header))


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(["F16", "F32", "BF16", "U8", "I64", "F4", "F6_E2M3"]),
                          st.lists(st.integers(0, 5), max_size=3), st.integers(-3, 3)), max_size=5),
       st.integers(-4, 4))
def test_random_layouts(fuzz_file, specs, extra_data):
    """Headers built from scratch: offsets near the right ones, data a little short or long."""
    header, offset = {}, 0
    widths = {"F16": 16, "F32": 32, "BF16": 16, "U8": 8, "I64": 64, "F4": 4, "F6_E2M3": 6}
    for i, (dtype, shape, skew) in enumerate(specs):
        size = int(np.prod(shape)) * widths[dtype] // 8
        header[f"t{i}"] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, max(offset + size + skew, 0)]}
        offset += size
    check_against_reference(fuzz_file, with_header(header, bytes(max(offset + extra_data, 0))))
