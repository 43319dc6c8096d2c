"""C7: the reader and the writer accept the same set. Two files inspect/add accepted and convert crashed on
(internal) are refused by both with a code: an F6_E2M3 alpha (torch has no F6) and a shape [0, 2**63]
(past int64)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from lorahub_cli.convert import convert_file
from lorahub_cli.errors import LoraError
from lorahub_cli.inspect import inspect_file
from tests.fixtures.adapters import make_adapter

pytest.importorskip("torch")


def _write(path: Path, extra: dict[str, tuple[str, list[int], bytes]], replace_alpha: bool = False) -> Path:
    """A kohya SD1 adapter written by hand, with ``extra`` raw entries (name -> dtype, shape, bytes)."""
    tensors, meta = make_adapter("sd15", "kohya", alpha=1.0)
    entries = {k: ("F32", list(t.shape), t.float().contiguous().numpy().tobytes()) for k, t in tensors.items()}
    if replace_alpha:
        entries.pop(next(k for k in entries if k.endswith(".alpha")))
    entries.update(extra)
    header, data = {"__metadata__": meta}, b""
    for name, (dtype, shape, raw) in entries.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


def _cases(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    tensors, _ = make_adapter("sd15", "kohya", alpha=1.0)
    alpha = next(k for k in tensors if k.endswith(".alpha"))
    return {
        "f6-alpha": (_write(tmp_path / "f6.safetensors", {alpha: ("F6_E2M3", [4], bytes(3))}, replace_alpha=True),
                     "unsupported-dtype"),
        "huge-dim": (_write(tmp_path / "huge.safetensors", {"extra": ("F32", [0, 2**63], b"")}), "corrupt-header"),
    }


@pytest.mark.parametrize("case", ["f6-alpha", "huge-dim"])
def test_inspect_and_convert_refuse_alike(tmp_path, case):
    path, code = _cases(tmp_path)[case]
    with pytest.raises(LoraError) as inspected:
        inspect_file(path, hash=False)
    assert inspected.value.code == code
    out = tmp_path / "out.safetensors"
    with pytest.raises(LoraError) as converted:
        convert_file(path, out, to="diffusers")
    assert converted.value.code == code
    assert not out.exists()
