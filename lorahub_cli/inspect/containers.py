"""Which container a file is, from its first bytes (never its suffix), and the traps found in the wild.

``read_container`` sniffs: Git LFS pointer, PyTorch zip checkpoint, legacy PyTorch pickle, safetensors,
then text/HTML pages and other junk. It only describes what is there: whether the tensors make a LoRA
(not-a-lora, textual-inversion, not-diffusion) is decided by the next stage.
"""

from __future__ import annotations

import os
import re
import struct
import zipfile
from pathlib import Path

from lorahub_cli.errors import LfsPointer, NotAnAdapterFile, Truncated
from lorahub_cli.inspect.model import RawFile
from lorahub_cli.inspect.regular import open_regular
from lorahub_cli.inspect.safetensors_header import MAX_HEADER_SIZE, read_safetensors

SNIFF_BYTES = 4096  # enough for an LFS pointer, a page's doctype and most safetensors headers in one read
_LFS_PREFIXES = (b"version https://git-lfs.github.com/spec/", b"version https://hawser.github.com/spec/")
_ZIP_MAGIC = b"PK\x03\x04"


def read_container(path: Path) -> RawFile:
    """Describe the tensors (names, dtypes, shapes) and string metadata of an adapter file.

    Raises NotAnAdapterFile, LfsPointer, CorruptHeader, Truncated or UnsafePickle (see ARCHITECTURE.md).
    """
    path = Path(path)
    with open_regular(path) as f:   # never a FIFO or a device: they block or never end
        size = _file_size(f)
        head = f.read(SNIFF_BYTES)
        if not head:
            raise NotAnAdapterFile("the file is empty (0 bytes)")
        if head.startswith(_LFS_PREFIXES):
            raise _lfs_pointer(head)
        if head.startswith(_ZIP_MAGIC):
            return _read_torch_zip(path, head, size)
        if is_pickle_head(head, size):
            return _read_pickle(path, size)
        if size < 8:
            raise NotAnAdapterFile(f"the file is only {size} bytes ({_describe_tiny(head)}), "
                                   "far too small for an adapter")
        if not head.strip(b"\0"):
            raise NotAnAdapterFile(f"the file starts with {len(head):,} zero bytes: a placeholder, not an adapter "
                                   "(an interrupted download?)")
        (n,) = struct.unpack("<Q", head[:8])
        opens_json = head[8:9] in (b"{", b"")  # "": the file stops right after the length field
        if n <= MAX_HEADER_SIZE and (8 + n <= size or opens_json):  # a length a writer could have written
            return read_safetensors(path, f, head, size)
        if opens_json and not _looks_like_text(head):  # a safetensors header whose length field is broken
            return read_safetensors(path, f, head, size)
        raise _junk(head, size)  # text has printable bytes where the length's zero high bytes would be


def _file_size(f) -> int:
    return os.fstat(f.fileno()).st_size


# --- Git LFS ----------------------------------------------------------------------------------------
def _lfs_pointer(head: bytes) -> LfsPointer:
    text = head.decode("utf-8", errors="replace")
    oid = re.search(r"^oid (\w+):([0-9a-fA-F]+)\s*$", text, re.M)
    size = re.search(r"^size (\d+)\s*$", text, re.M)
    points_to = f"{int(size.group(1)):,} bytes" if size else "a file of unknown size"
    ident = f"{oid.group(1)} {oid.group(2)}" if oid else "an unknown object"
    return LfsPointer(f"this is a Git LFS pointer ({len(head)} bytes), not the weights: it points to {points_to} "
                      f"with {ident}")


# --- pickles ----------------------------------------------------------------------------------------
def is_pickle_head(head: bytes, size: int) -> bool:
    """Whether a file of ``size`` bytes starting with ``head`` (9 bytes or more) is a raw pickle: torch.save's
    legacy format starts with a protocol-2 pickle; protocols 2-5 are accepted.

    A safetensors header length whose low byte is 0x80 and next byte 2..5 (0x0280, 0x10380, ...) starts
    with the same two bytes, so a length that fits in the file followed by '{' at byte 8 is a safetensors
    file, not a pickle.
    """
    if len(head) < 2 or head[0] != 0x80 or not 2 <= head[1] <= 5:
        return False
    return not (len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < size)


def _read_pickle(path: Path, size: int) -> RawFile:
    from lorahub_cli.inspect.pickle_reader import read_pickle  # imports torch only when a pickle is met

    return read_pickle(path, size)


def _read_torch_zip(path: Path, head: bytes, size: int) -> RawFile:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        if _first_member_name(head).endswith("data.pkl"):
            raise Truncated("a PyTorch zip checkpoint whose zip directory (stored at the end) is missing: "
                            "the file was probably cut short") from None
        raise NotAnAdapterFile("a damaged zip archive, not an adapter file") from None
    if not any(name == "data.pkl" or name.endswith("/data.pkl") for name in names):
        shown = ", ".join(names[:3]) + (", …" if len(names) > 3 else "")
        raise NotAnAdapterFile(f"a zip archive ({len(names)} members: {shown}), not a PyTorch checkpoint")
    return _read_pickle(path, size)


def _first_member_name(head: bytes) -> str:
    """The name in the first zip local header (torch writes '<archive>/data.pkl' first)."""
    if len(head) < 30:
        return ""
    (name_len,) = struct.unpack("<H", head[26:28])
    return head[30:30 + name_len].decode("utf-8", errors="replace")


# --- what else people save under an adapter's name --------------------------------------------------
_TEXT_BYTES = bytes(range(0x20, 0x7F)) + b"\t\n\r\f\b"


def _looks_like_text(head: bytes) -> bool:
    """Mostly printable ASCII/UTF-8: an HTML page, a JSON or Markdown file, an error message."""
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 4:  # allow a multi-byte character cut by the sniff window
            return False
    printable = sum(1 for b in head if b in _TEXT_BYTES or b >= 0x80)
    return printable >= 0.97 * len(head)


def _describe_tiny(head: bytes) -> str:
    if not head.strip():
        return "only whitespace and line breaks" if b"\n" in head or b"\r" in head else "only whitespace"
    return f"the bytes {head!r}"


def _junk(head: bytes, size: int) -> NotAnAdapterFile:
    if _looks_like_text(head):
        text = head.decode("utf-8", errors="replace").lstrip()
        lowered = text[:200].lower()
        if lowered.startswith(("<!doctype html", "<html")) or "<html" in lowered:
            return NotAnAdapterFile(f"this is an HTML page ({size:,} bytes), not an adapter: probably a web page "
                                    "saved instead of the file it links to")
        if text.startswith(("{", "[")):
            return NotAnAdapterFile(f"this is a JSON text file ({size:,} bytes), not an adapter")
        first_line = text.splitlines()[0][:60] if text else ""
        return NotAnAdapterFile(f"this is a text file ({size:,} bytes, starting {first_line!r}), not an adapter")
    return NotAnAdapterFile(f"neither a safetensors file nor a PyTorch checkpoint (it starts with bytes "
                            f"{head[:8].hex(' ')})")
