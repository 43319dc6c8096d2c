"""Fixtures for the Civitai area: a Civitai-compatible server on loopback (tests/civitai/server.py), real
LoRA files in its catalogue, and CIVITAI_ENDPOINT pointing at it."""

from __future__ import annotations

import io
import struct
import zlib

import pytest

from tests.civitai.server import CFile, CivitaiServer, CModel, CVersion


def lora_bytes(tmp_path, seed: int = 0, family: str = "sdxl", metadata=None) -> bytes:
    from tests.fixtures.adapters import write_adapter

    path = write_adapter(tmp_path / f"made-{seed}-{family}.safetensors", family, "kohya", rank=4, seed=seed,
                         metadata=metadata)
    return path.read_bytes()


def png(color: int = 0) -> bytes:
    """A real 1x1 PNG."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"\x00" + bytes([color, color, color])
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


@pytest.fixture
def civitai(monkeypatch):
    server = CivitaiServer()
    monkeypatch.setenv("CIVITAI_ENDPOINT", server.url)
    monkeypatch.delenv("CIVITAI_API_TOKEN", raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    yield server
    server.stop()


@pytest.fixture
def catalogue(civitai, tmp_path):
    """Model 11 (LORA, Pony) with versions 102 (newest) and 101; model 12, a checkpoint."""
    old = CVersion(101, 11, "v1.0", [CFile(1001, "pixel_v1.safetensors", lora_bytes(tmp_path, 1))],
                   base_model="Pony", trained_words=["pxart", "pixel style"], images=[png(10)])
    new = CVersion(102, 11, "v2.0", [CFile(1002, "pixel_v2.safetensors", lora_bytes(tmp_path, 2))],
                   base_model="Pony", trained_words=["pxart"], images=[png(20), png(30)])
    civitai.add_model(CModel(11, "Pixel Art", versions=[new, old]))
    civitai.add_model(CModel(12, "Some Checkpoint", type="Checkpoint",
                             versions=[CVersion(121, 12, "v1", [CFile(1201, "ckpt.safetensors", b"x" * 64)])]))
    return civitai
