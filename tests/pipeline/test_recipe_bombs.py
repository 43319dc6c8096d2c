"""`lora recipe` on hostile PNGs (issue 13 C5): every one is `bad-recipe` (exit 1), never `internal`, and
none costs more than a fixed amount of memory.

Each file is built here, byte by byte, and read by a real `lora recipe` process under RLIMIT_AS (1.5 GB), so
a regression that inflates or decodes what it should not fails the test instead of swapping the machine.
"""

from __future__ import annotations

import json
import os
import resource
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from lorahub_cli.errors import BadRecipe, NoRecipe
from lorahub_cli.pipeline.pngtext import MAX_CHUNK_TEXT, read_text_chunks
from lorahub_cli.pipeline.recipe import parse_parameters, png_text

LIMIT = 1536 << 20
BOMB = 960 << 20    # inflates to 960 MiB from under 1 MiB: within the chunk bound, far past the text bound


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(*chunks: bytes, width: int = 4, height: int = 4) -> bytes:
    """A valid 4x4 grey PNG (or the given size's header) with ``chunks`` before its image data."""
    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    pixels = zlib.compress(b"\0" * (width + 1) * 4)   # a few rows is enough: nothing decodes them
    return b"\x89PNG\r\n\x1a\n" + header + b"".join(chunks) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def inflating(size: int) -> bytes:
    """zlib data that inflates to ``size`` zero bytes, about size/1000 long. Built without compressing it all:
    one fully flushed deflate block of 1 MiB of zeros (it refers to nothing before it) repeated, then the
    end block and the Adler-32 of the whole."""
    mib = b"\0" * (1 << 20)
    raw = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = raw.compress(mib) + raw.flush(zlib.Z_FULL_FLUSH)
    adler = 1
    for _ in range(size >> 20):
        adler = zlib.adler32(mib, adler)
    return b"\x78\xda" + block * (size >> 20) + raw.flush(zlib.Z_FINISH) + struct.pack(">I", adler)


def run_recipe(path: Path, home: Path) -> subprocess.CompletedProcess:
    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))

    env = {**os.environ, "LORAHUB_HOME": str(home), "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "lorahub_cli", "recipe", str(path), "--json"], env=env,
                          capture_output=True, text=True, preexec_fn=cap, timeout=300)


def _bad_recipe(proc: subprocess.CompletedProcess) -> bool:
    text = proc.stdout + proc.stderr
    return proc.returncode == 1 and '"bad-recipe"' in text and "internal" not in text


def _ztxt_bomb(tmp: Path) -> Path:
    path = tmp / "ztxt.png"
    path.write_bytes(png(chunk(b"zTXt", b"lorahub\0\0" + inflating(BOMB))))
    return path


def _itxt_bomb(tmp: Path) -> Path:
    path = tmp / "itxt.png"
    path.write_bytes(png(chunk(b"iTXt", b"parameters\0\1\0\0\0" + inflating(BOMB))))
    return path


def _huge_text_chunk(tmp: Path) -> Path:
    """A real 200 MB tEXt chunk, written sparse (the disk holds a hole, the reader sees 200 MB of zeros)."""
    path = tmp / "huge.png"
    size = 200 << 20
    head = png()[:33]                                        # signature + IHDR
    with open(path, "wb") as f:
        f.write(head + struct.pack(">I", size) + b"tEXt" + b"Comment\0")
        f.seek(size - len(b"Comment\0"), os.SEEK_CUR)
        body_crc = zlib.crc32(b"\0" * (size - 8), zlib.crc32(b"tEXtComment\0"))
        f.write(struct.pack(">I", body_crc) + chunk(b"IEND", b""))
    return path


def _pixel_bomb(tmp: Path) -> Path:
    path = tmp / "pixels.png"
    path.write_bytes(png(chunk(b"tEXt", b"parameters\0a cat\nSteps: 20, Seed: 1"), width=100_000, height=100_000))
    return path


def _deep_json(tmp: Path) -> Path:
    path = tmp / "deep.png"
    path.write_bytes(png(chunk(b"iTXt", b"lorahub\0\0\0\0\0" + b"[" * 100_000 + b"]" * 100_000)))
    return path


def _bad_a1111_quote(tmp: Path) -> Path:
    path = tmp / "quote.png"
    path.write_bytes(png(chunk(b"tEXt", b'parameters\0a cat\nSteps: 20, Sampler: "abc\\x", Seed: 1')))
    return path


@pytest.mark.parametrize("build", [_ztxt_bomb, _itxt_bomb, _huge_text_chunk, _pixel_bomb, _deep_json,
                                   _bad_a1111_quote], ids=lambda f: f.__name__.strip("_"))
def test_hostile_pngs_are_bad_recipes_within_a_memory_cap(build, tmp_path):
    path = build(tmp_path)
    proc = run_recipe(path, tmp_path / "home")
    assert _bad_recipe(proc), (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])


# --- the reader itself (in process: cheap) ------------------------------------------------------------
def test_text_after_the_image_data_is_read_too(tmp_path):
    data = png(chunk(b"tEXt", b"before\0one"))
    data = data[:-12] + chunk(b"iTXt", b"after\0\0\0\0\0" + "zwei ü".encode()) + data[-12:]
    (tmp_path / "a.png").write_bytes(data)
    assert read_text_chunks(tmp_path / "a.png") == {"before": "one", "after": "zwei ü"}


def test_compressed_text_within_the_bound_reads_like_pillow(tmp_path):
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_itxt("lorahub", json.dumps({"a": "é" * 5000}), zip=True)
    info.add_text("parameters", "x" * 3000, zip=True)
    info.add_text("plain", "latin ÿ")
    path = tmp_path / "p.png"
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    with Image.open(path) as image:
        image.load()
        expected = dict(image.text)
    assert png_text(path) == expected


def test_the_bomb_is_what_it_claims():
    data = inflating(8 << 20)
    assert zlib.decompress(data) == b"\0" * (8 << 20) and len(inflating(BOMB)) < MAX_CHUNK_TEXT


def test_text_that_inflates_to_just_the_bound_is_kept(tmp_path):
    (tmp_path / "a.png").write_bytes(png(chunk(b"zTXt", b"k\0\0" + zlib.compress(b"x" * MAX_CHUNK_TEXT))))
    assert len(read_text_chunks(tmp_path / "a.png")["k"]) == MAX_CHUNK_TEXT
    (tmp_path / "b.png").write_bytes(png(chunk(b"zTXt", b"k\0\0" + zlib.compress(b"x" * (MAX_CHUNK_TEXT + 1)))))
    with pytest.raises(BadRecipe, match="inflates to more than"):
        read_text_chunks(tmp_path / "b.png")


@pytest.mark.parametrize("data, error, match", [
    (b"GIF89a" + b"\0" * 20, NoRecipe, "not an image"),
    (png(chunk(b"tEXt", b"k\0v"))[:-20], BadRecipe, "past the file's end"),
    (png(chunk(b"tEXt", b"k\0v")).replace(b"k\0v", b"k\0w"), BadRecipe, "checksum"),
    (png(chunk(b"tEXt", b"\0nokeyword")), BadRecipe, "keyword"),
    (png(chunk(b"zTXt", b"k\0\0not zlib")), BadRecipe, "not valid compressed"),
])
def test_damaged_pngs_are_refused_with_a_reason(tmp_path, data, error, match):
    (tmp_path / "x.png").write_bytes(data)
    with pytest.raises(error, match=match):
        read_text_chunks(tmp_path / "x.png")


def test_a1111_values_that_are_valid_json_quotes_still_parse():
    parsed = parse_parameters('a cat\nSteps: 20, Sampler: "a, \\"b\\"", Seed: 1')
    assert parsed["settings"] == {"Steps": "20", "Sampler": 'a, "b"', "Seed": "1"}
