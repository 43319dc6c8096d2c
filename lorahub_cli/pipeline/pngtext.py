"""A PNG's text chunks (tEXt, zTXt, iTXt), read with fixed bounds and without decoding a single pixel.

A recipe is a few KB of text; an image is untrusted input. Pillow decodes the pixels to reach chunks after
the image data and inflates zTXt/iTXt as far as its own limits allow, so a crafted file (a 200 MB text
chunk, a kilobyte that inflates to gigabytes, 100000x100000 pixels of zeros) costs memory or ends in an
exception nobody named. Here the chunks are walked with the stdlib: the image data is skipped by seeking,
every text chunk and its inflated text is capped, the header's pixel count is bounded, and anything over a
bound is ``bad-recipe`` before it is read. Cost: one pass over the chunk headers, memory under
``MAX_TOTAL_TEXT`` plus one chunk.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

from lorahub_cli.errors import BadRecipe, NoRecipe, NotFound

SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_CHUNK_TEXT = 1 << 20      # one text chunk, as stored and as inflated (a recipe is a few KB)
MAX_TOTAL_TEXT = 4 << 20      # all text chunks of one image together
MAX_PIXELS = 1 << 28          # 16384 x 16384: far beyond any size `lora generate` writes (sides <= 8192)
_TEXT = {b"tEXt", b"zTXt", b"iTXt"}


def read_text_chunks(path: Path) -> dict[str, str]:
    """keyword -> text of every text chunk of the PNG at ``path`` (a later chunk with the same keyword wins,
    as in Pillow). Not a PNG -> ``NoRecipe``; damaged or over a bound -> ``BadRecipe``."""
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"no such image: {path}")
    try:
        with open(path, "rb") as f:
            return _walk(f, os.fstat(f.fileno()).st_size, path)
    except OSError as exc:
        raise NoRecipe(f"cannot read {path}: {exc.strerror or exc}") from None


def _walk(f, size: int, path: Path) -> dict[str, str]:
    if f.read(8) != SIGNATURE:
        raise NoRecipe(f"{path} is not an image lora reads recipes from: only PNG files carry them", hint=None)
    text: dict[str, str] = {}
    total = 0
    first = True
    while True:
        head = f.read(8)
        if len(head) < 8:   # no IEND: a cut-short file; what was read is complete chunks, keep it
            return text
        length, kind = struct.unpack(">I4s", head)
        if length > 0x7FFFFFFF or f.tell() + length + 4 > size:
            raise BadRecipe(f"{path} is damaged: a {_name(kind)} chunk claims {length} bytes past the file's end")
        if first and kind != b"IHDR":
            raise BadRecipe(f"{path} is damaged: it does not start with the PNG header chunk")
        if kind == b"IHDR" or kind in _TEXT:
            if length > MAX_CHUNK_TEXT:
                raise BadRecipe(f"{path} has a {length}-byte {_name(kind)} chunk; a recipe chunk holds at most "
                                f"{MAX_CHUNK_TEXT} bytes")
            data = f.read(length)
            (crc,) = struct.unpack(">I", f.read(4))
            if zlib.crc32(kind + data) != crc:
                raise BadRecipe(f"{path} is damaged: the checksum of a {_name(kind)} chunk does not match")
            if kind == b"IHDR":
                _check_header(data, path)
            else:
                key, value = _decode(kind, data, path)
                total += len(value)
                if total > MAX_TOTAL_TEXT:
                    raise BadRecipe(f"{path} holds more than {MAX_TOTAL_TEXT} bytes of text")
                text[key] = value
        elif kind == b"IEND":
            return text
        else:   # image data and everything else: skipped, never read or decoded
            f.seek(length + 4, os.SEEK_CUR)
        first = False


def _check_header(data: bytes, path: Path) -> None:
    if len(data) != 13:
        raise BadRecipe(f"{path} is damaged: its header chunk has {len(data)} bytes, not 13")
    width, height = struct.unpack(">II", data[:8])
    if width * height > MAX_PIXELS:
        raise BadRecipe(f"{path} claims {width}x{height} pixels, over the {MAX_PIXELS} lora accepts "
                        "(a decompression bomb, or no image `lora generate` wrote)")


def _decode(kind: bytes, data: bytes, path: Path) -> tuple[str, str]:
    keyword, sep, rest = data.partition(b"\0")
    if not sep or not 1 <= len(keyword) <= 79:
        raise BadRecipe(f"{path} is damaged: a {_name(kind)} chunk has no valid keyword")
    key = keyword.decode("latin-1")
    if kind == b"tEXt":
        return key, rest.decode("latin-1")
    if kind == b"zTXt":
        if rest[:1] != b"\0":
            raise BadRecipe(f"{path}: text chunk {key!r} uses an unknown compression method")
        return key, _inflate(rest[1:], key, path).decode("latin-1")
    # iTXt: flag, method, language\0, translated keyword\0, UTF-8 text
    if len(rest) < 2:
        raise BadRecipe(f"{path} is damaged: text chunk {key!r} is cut short")
    compressed, method = rest[0], rest[1]
    _lang, _, rest = rest[2:].partition(b"\0")
    _translated, _, body = rest.partition(b"\0")
    if compressed:
        if method != 0:
            raise BadRecipe(f"{path}: text chunk {key!r} uses an unknown compression method")
        body = _inflate(body, key, path)
    return key, body.decode("utf-8", errors="replace")


def _inflate(data: bytes, key: str, path: Path) -> bytes:
    """zlib data inflated to at most MAX_CHUNK_TEXT bytes: a bomb stops at the bound, it never expands."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, MAX_CHUNK_TEXT)
    except zlib.error as exc:
        raise BadRecipe(f"{path}: text chunk {key!r} is not valid compressed data ({exc})") from None
    if inflater.unconsumed_tail or (len(out) == MAX_CHUNK_TEXT and not inflater.eof):
        raise BadRecipe(f"{path}: text chunk {key!r} inflates to more than {MAX_CHUNK_TEXT} bytes "
                        "(a decompression bomb)")
    return out


def _name(kind: bytes) -> str:
    return kind.decode("latin-1", errors="replace") if kind.isalpha() else repr(kind)
