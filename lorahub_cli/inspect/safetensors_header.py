"""safetensors: read and validate the header (8-byte length + JSON) without reading the tensor data.

The checks follow the reference Rust crate (``safetensors/src/tensor.rs``; formats.md §3.1): a header a
loader would refuse is refused here too, with a message that says which tensor and which bytes are wrong.
numpy, json and struct only: torch is never imported on this path.
"""

from __future__ import annotations

import functools
import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Optional

if TYPE_CHECKING:
    import numpy as np

from lorahub_cli.errors import CorruptHeader, Truncated, UnsupportedDtype
from lorahub_cli.inspect.model import RawFile, TensorSpec
from lorahub_cli.inspect.regular import open_regular

MAX_HEADER_SIZE = 100_000_000  # the Rust crate's limit; ComfyUI uses the same
_U64_LIMIT = 2**64             # offsets and element counts are usize in the reference reader

# Width in bits of every dtype the reference crate (0.8) accepts; sub-byte types must end on a byte boundary.
DTYPE_BITS = {
    "BOOL": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "U8": 8, "I8": 8,
    "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32,
    "C64": 64, "F64": 64, "I64": 64, "U64": 64,
}


@dataclass(frozen=True)
class Header:
    tensors: dict[str, TensorSpec]   # in header order
    metadata: dict[str, str]
    data_len: int                    # bytes the offsets cover (the data section must be exactly this long)


# --- reading a file ---------------------------------------------------------------------------------
def read_safetensors(path: Path, f: BinaryIO, head: bytes, size: int) -> RawFile:
    """Describe a safetensors file whose first ``len(head)`` bytes were already read from ``f``.

    Reads the rest of the header (at most one more read) and never the tensor data.
    """
    (n,) = struct.unpack("<Q", head[:8])
    if n > MAX_HEADER_SIZE:
        raise CorruptHeader(f"the header length field says {n:,} bytes, over the safetensors limit of "
                            f"{MAX_HEADER_SIZE:,}; the file is {size:,} bytes")
    data_start = 8 + n
    if data_start > size:
        raise _header_past_end(f, head, n, size)
    header = head[8:data_start]
    if len(head) < data_start:
        header += _read_exact(f, data_start - len(head))
    parsed = parse_header(header)
    present = size - data_start
    if parsed.data_len > present:
        raise Truncated(
            f"the header promises {parsed.data_len:,} bytes of tensor data but only {present:,} are present "
            f"({_percent(present, parsed.data_len)}): the file should be {data_start + parsed.data_len:,} bytes, "
            f"it is {size:,}")
    if parsed.data_len < present:
        raise CorruptHeader(
            f"{present - parsed.data_len:,} bytes after the last tensor are described by no header entry "
            f"(the tensors cover {parsed.data_len:,} of the {present:,} data bytes; safetensors requires an exact fit)")
    return RawFile(path=path, size=size, container="safetensors", tensors=parsed.tensors,
                   metadata=parsed.metadata, data_start=data_start,
                   read_values=make_value_reader(path, data_start, parsed.tensors))


def _read_exact(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:  # the file shrank between stat and read
        raise Truncated(f"the file ended while reading its header ({len(data):,} of {n:,} bytes)")
    return data


def _header_past_end(f: BinaryIO, head: bytes, n: int, size: int) -> Exception:
    """The length field points past the end: a download cut inside the header, or a wrong length field
    (the JSON is complete and tensor bytes follow it)."""
    text = (head[8:] + f.read(size - len(head))).decode("utf-8", errors="replace")
    try:
        obj, end = json.JSONDecoder().raw_decode(text)
        data_follows = isinstance(obj, dict) and text[end:].strip() != ""
    except (ValueError, RecursionError):
        data_follows = False
    if data_follows:
        return CorruptHeader(f"the header length field says {n:,} bytes but the file has only {size - 8:,} "
                             f"after it, and its JSON ends after {end:,}: the length field is wrong")
    return Truncated(f"the file ends inside its header: the header declares {n:,} bytes but only "
                     f"{size - 8:,} follow the length field")


def _percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "100%"


# --- validating the header --------------------------------------------------------------------------
class _DuplicateKey(ValueError):
    pass


def _pairs_without_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # Python's json accepts NaN/Infinity; serde (the reference) does not


def _int_or_negative_float(text: str) -> Any:
    # serde reads any negative number (even "-0") as a float, never a usize; keep "-0" from passing as 0
    return float(text) if text.startswith("-") else int(text)


def parse_header(header: bytes) -> Header:
    """Parse and validate the JSON header bytes (everything between the length field and the data)."""
    try:
        text = header.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CorruptHeader(f"the header is not valid UTF-8 (byte {e.start:,} of {len(header):,})") from None
    if not text.startswith("{"):
        start = text[:20].encode("unicode_escape").decode("ascii")
        raise CorruptHeader(f"the header does not start with '{{' (it starts {start!r}); "
                            "this is not a safetensors header")
    try:
        # "-0" must not pass as a count (serde reads it as a float); only pay the per-number hook when it can occur
        doc = json.loads(text, object_pairs_hook=_pairs_without_duplicates, parse_constant=_no_constants,
                         parse_int=_int_or_negative_float if "-0" in text else None)
    except _DuplicateKey as e:
        raise CorruptHeader(f"the header repeats the key {_show(str(e))}") from None
    except json.JSONDecodeError as e:
        raise CorruptHeader(f"the header is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except (ValueError, RecursionError) as e:
        raise CorruptHeader(f"the header is not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise CorruptHeader("the header is not a JSON object")

    metadata: dict[str, str] = {}
    entries: dict[str, tuple[str, tuple[int, ...], tuple[int, int]]] = {}
    for name, entry in doc.items():
        _check_text(name, "a tensor name")
        if name == "__metadata__":
            metadata = _check_metadata(entry)
        else:
            entries[name] = _check_entry(name, entry)
    tensors = {name: TensorSpec(dtype, shape, offsets) for name, (dtype, shape, offsets) in entries.items()}
    return Header(tensors=tensors, metadata=metadata, data_len=_check_layout(entries))


def _show(name: str, limit: int = 80) -> str:
    return repr(name if len(name) <= limit else name[:limit] + "…")


def _check_text(value: str, what: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise CorruptHeader(f"{what} in the header holds an unpaired UTF-16 surrogate escape: "
                            f"{_show(value)}") from None


def _check_metadata(entry: Any) -> dict[str, str]:
    if entry is None:  # the reference reader treats null as "no metadata"
        return {}
    if not isinstance(entry, dict):
        raise CorruptHeader(f"__metadata__ must be an object of strings, not {_json_type(entry)}")
    for key, value in entry.items():
        if not isinstance(value, str):
            raise CorruptHeader(f"__metadata__ must map strings to strings, but {_show(key)} holds {_json_type(value)}")
        _check_text(key, "a __metadata__ key")
        _check_text(value, f"__metadata__[{_show(key)}]")
    return dict(entry)


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "an integer",
             float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _is_count(value: Any) -> bool:
    """A JSON non-negative integer that fits a u64 (bool is an int in Python but not in JSON)."""
    return type(value) is int and 0 <= value < _U64_LIMIT


def _check_entry(name: str, entry: Any) -> tuple[str, tuple[int, ...], tuple[int, int]]:
    if (type(entry) is dict and len(entry) == 3 and type(entry.get("dtype")) is str and entry["dtype"] in DTYPE_BITS
            and type(entry.get("shape")) is list and type(entry.get("data_offsets")) is list
            and len(entry["data_offsets"]) == 2 and all(_is_count(d) for d in entry["shape"])
            and _is_count(entry["data_offsets"][0]) and _is_count(entry["data_offsets"][1])):
        # the well-formed case, checked without building error text (headers hold thousands of entries)
        return entry["dtype"], tuple(entry["shape"]), (entry["data_offsets"][0], entry["data_offsets"][1])
    where = f"tensor {_show(name)}"
    if not isinstance(entry, dict):
        raise CorruptHeader(f"{where}: expected an object with dtype, shape and data_offsets, got {_json_type(entry)}")
    missing = [k for k in ("dtype", "shape", "data_offsets") if k not in entry]
    if missing:
        raise CorruptHeader(f"{where}: missing {', '.join(missing)}")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        raise CorruptHeader(f"{where}: unknown dtype {dtype!r} (known: {', '.join(DTYPE_BITS)})")
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise CorruptHeader(f"{where}: shape must be a list of non-negative integers, got {_clip(shape)}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_count(o) for o in offsets)):
        raise CorruptHeader(f"{where}: data_offsets must be [begin, end] as non-negative integers, "
                            f"got {_clip(offsets)}")
    return dtype, tuple(shape), (offsets[0], offsets[1])


def _clip(value: Any, limit: int = 80) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[:limit] + "…"


def _check_layout(entries: dict[str, tuple[str, tuple[int, ...], tuple[int, int]]]) -> int:
    """Offsets must tile the data section from 0 with no hole or overlap, each span matching shape x dtype."""
    expected, previous = 0, None
    for name, (dtype, shape, (begin, end)) in sorted(entries.items(), key=lambda item: item[1][2]):
        if begin == expected and end >= begin:  # the common case: contiguous; only the size is left to check
            count = math.prod(shape)
            bits = count * DTYPE_BITS[dtype]
            if bits % 8 == 0 and end - begin == bits // 8 and count < _U64_LIMIT and bits < _U64_LIMIT * 8:
                expected, previous = end, name
                continue
        where = f"tensor {_show(name)}"
        if end < begin:
            raise CorruptHeader(f"{where}: data_offsets [{begin:,}, {end:,}] end before they begin")
        if begin < expected:
            raise CorruptHeader(f"{where}: data_offsets [{begin:,}, {end:,}] overlap tensor {_show(previous)}, "
                                f"which ends at {expected:,}")
        if begin > expected:
            before = f"tensor {_show(previous)}" if previous is not None else "the start of the data"
            raise CorruptHeader(f"{where}: bytes {expected:,}..{begin:,} between {before} and this tensor "
                                "belong to no tensor (a hole in the data section)")
        count = math.prod(shape)
        if count >= _U64_LIMIT or count * DTYPE_BITS[dtype] >= _U64_LIMIT * 8:
            raise CorruptHeader(f"{where}: shape {list(shape)} is too large to address")
        bits = count * DTYPE_BITS[dtype]
        if bits % 8:
            raise CorruptHeader(f"{where}: {dtype} x {list(shape)} is {bits} bits, not a whole number of bytes")
        if end - begin != bits // 8:
            raise CorruptHeader(f"{where}: {dtype} x {list(shape)} needs {bits // 8:,} bytes but data_offsets "
                                f"[{begin:,}, {end:,}] span {end - begin:,}")
        expected, previous = end, name
    return expected


# --- reading one tensor's values --------------------------------------------------------------------
def make_value_reader(path: Path, data_start: int, tensors: dict[str, TensorSpec]) -> Callable[[str], np.ndarray]:
    """name -> numpy array, reading only that tensor's bytes (one seek, one read). Many alpha scalars at
    once go through ``read_scalars``, which opens the file once for all of them."""

    def read_values(name: str) -> np.ndarray:
        spec = tensors[name]
        begin, end = spec.offsets
        with open_regular(path) as f:   # the path may have been swapped for a FIFO or device since the header
            f.seek(data_start + begin)
            buf = f.read(end - begin)
        if len(buf) != end - begin:
            raise Truncated(f"tensor {_show(name)}: only {len(buf):,} of its {end - begin:,} bytes are in the file")
        return decode_values(buf, spec.dtype, spec.shape)

    return read_values


_PLAIN = {"BOOL": "?", "U8": "u1", "I8": "i1", "I16": "<i2", "U16": "<u2", "I32": "<i4", "U32": "<u4",
          "I64": "<i8", "U64": "<u8", "F16": "<f2", "F32": "<f4", "F64": "<f8", "C64": "<c8"}


def decode_values(buf: bytes, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """Little-endian bytes -> array; every real float type comes back as float64."""
    import numpy as np  # only when values are read: header-only inspection never pays for numpy

    if dtype in _PLAIN:
        values = np.frombuffer(buf, dtype=_PLAIN[dtype])
        if values.dtype.kind == "f":
            values = values.astype(np.float64)
    elif dtype == "BF16":  # bfloat16 is the top half of a float32
        values = (np.frombuffer(buf, dtype="<u2").astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    elif dtype in _FP8_FORMATS or dtype == "F8_E8M0":
        values = _fp8_table(dtype)[np.frombuffer(buf, dtype=np.uint8)]
    else:
        raise UnsupportedDtype(f"reading the values of {dtype} tensors is not supported")
    return values.reshape(shape)


def _minifloat_table(exp_bits: int, man_bits: int, bias: int, special: str) -> np.ndarray:
    """All 256 values of an 8-bit float. special: "ieee" (inf/nan at max exponent), "fn" (nan only at all-ones),
    "fnuz" (no negative zero: 0x80 is nan; no inf)."""
    import numpy as np

    table = np.empty(256, dtype=np.float64)
    max_exp, max_man = (1 << exp_bits) - 1, (1 << man_bits) - 1
    for byte in range(256):
        sign = -1.0 if byte & 0x80 else 1.0
        exp, man = (byte >> man_bits) & max_exp, byte & max_man
        if special == "fnuz" and byte == 0x80:
            value = math.nan
        elif special == "ieee" and exp == max_exp:
            value = sign * math.inf if man == 0 else math.nan
        elif special == "fn" and exp == max_exp and man == max_man:
            value = math.nan
        elif exp == 0:
            value = sign * man * 2.0 ** (1 - bias - man_bits)
        else:
            value = sign * (1 + man / (1 << man_bits)) * 2.0 ** (exp - bias)
        table[byte] = value
    return table


def _e8m0_table() -> np.ndarray:
    import numpy as np

    table = 2.0 ** (np.arange(256, dtype=np.float64) - 127)
    table[255] = math.nan
    return table


_FP8_FORMATS = {  # exponent bits, mantissa bits, bias, special-value convention
    "F8_E4M3": (4, 3, 7, "fn"), "F8_E5M2": (5, 2, 15, "ieee"),
    "F8_E4M3FNUZ": (4, 3, 8, "fnuz"), "F8_E5M2FNUZ": (5, 2, 16, "fnuz"),
}


@functools.lru_cache(maxsize=None)
def _fp8_table(dtype: str) -> np.ndarray:
    return _e8m0_table() if dtype == "F8_E8M0" else _minifloat_table(*_FP8_FORMATS[dtype])


def _open_fd(path: Path) -> int:
    """A descriptor of the regular file at ``path`` (never a FIFO or a device), for ``os.pread``."""
    f = open_regular(path, buffering=0)
    try:
        return os.dup(f.fileno())
    finally:
        f.close()


_SCALAR_FORMATS = {"F16": "<e", "F32": "<f", "F64": "<d", "I32": "<i", "I64": "<q"}


def read_scalars(raw: RawFile, keys: list[str]) -> list[float]:
    """The values of single-element tensors (kohya alphas) with one open file and no numpy; other dtypes and
    pickles go through ``raw.read_values``."""
    values: list[float] = []
    fd: Optional[int] = None
    try:
        for key in keys:
            spec = raw.tensors[key]
            fmt = _SCALAR_FORMATS.get(spec.dtype)
            if raw.container != "safetensors" or spec.offsets is None or math.prod(spec.shape) != 1 or (
                    fmt is None and spec.dtype != "BF16"):
                values.append(float(raw.read_values(key).reshape(-1)[0]))
                continue
            if fd is None:
                fd = _open_fd(raw.path)
            begin, end = spec.offsets
            buf = os.pread(fd, end - begin, raw.data_start + begin)
            if len(buf) != end - begin:
                raise Truncated(f"tensor {_show(key)}: only {len(buf):,} of its {end - begin:,} bytes are in the file")
            if spec.dtype == "BF16":  # bfloat16 is the top half of a float32
                values.append(struct.unpack("<f", b"\0\0" + buf)[0])
            else:
                values.append(float(struct.unpack(fmt, buf)[0]))
    finally:
        if fd is not None:
            os.close(fd)
    return values
