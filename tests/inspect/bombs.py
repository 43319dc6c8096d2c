"""Input bombs, built by code (no binary fixtures): small files that ask a reader for gigabytes, and a helper
that runs `lora` on them under an address-space limit, so a regression fails instead of eating the machine."""

from __future__ import annotations

import io
import json
import os
import resource
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

MEMORY_LIMIT = 1536 << 20   # RLIMIT_AS for the child: torch imports in well under this


def run_limited(*args: str, home: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """`lora ARGS` in a child whose address space is capped at MEMORY_LIMIT."""
    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

    env = {**os.environ, "LORAHUB_HOME": str(home), "LORAHUB_NO_PROGRESS": "1", "COLUMNS": "200"}
    env.pop("LORAHUB_DATABASE_URL", None)
    return subprocess.run([sys.executable, "-m", "lorahub_cli", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, preexec_fn=cap)


def error_code(proc: subprocess.CompletedProcess) -> str:
    """The code of the one failure in an `inspect --json` answer."""
    (item,) = json.loads(proc.stdout)
    return item["error"]["code"]


def memo_reuse_bomb(path: Path, levels: int = 8, fan_out: int = 100) -> Path:
    """A torch.save dict whose list holds one nested list ``fan_out`` times, ``levels`` deep: 3 KB, 100**8
    leaves to walk."""
    import torch

    x: list = []
    for _ in range(levels):
        x = [x] * fan_out
    torch.save({"state": x}, path)
    return path


def stride_zero_bomb(path: Path) -> Path:
    """One stored float viewed as a 100000 x 100000 tensor (stride 0): 40 GB once made contiguous."""
    import torch

    torch.save({"m.lora_up.weight": torch.zeros(1).expand(100_000, 100_000),
                "m.lora_down.weight": torch.zeros(2, 4)}, path)
    return path


def deflate_bomb(path: Path, chunks: int = 100, chunk: int = 1 << 24) -> Path:
    """A torch zip checkpoint whose storage member is DEFLATEd zeros: 1.6 MB on disk, 1.6 GiB inflated."""
    import torch

    buf = io.BytesIO()
    torch.save({"w": torch.zeros(1)}, buf)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    members = []
    for info in src.infolist():
        data = src.read(info)
        if "/data/" in info.filename:
            members.append((info.filename, zipfile.ZIP_DEFLATED, *_deflated_zeros(chunks, chunk)))
        else:
            members.append((info.filename, zipfile.ZIP_STORED, data, zlib.crc32(data), len(data)))
    path.write_bytes(_zip(members))
    return path


def _deflated_zeros(chunks: int, chunk: int) -> tuple[bytes, int, int]:
    """Raw DEFLATE of chunks x chunk zero bytes, compressed once: after a full flush every chunk compresses
    to the same bytes."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    zeros = bytes(chunk)
    first = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)
    again = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(chunks):
        crc = zlib.crc32(zeros, crc)
    return first + again * (chunks - 1) + c.flush(), crc, chunks * chunk


def _zip(members: list[tuple[str, int, bytes, int, int]]) -> bytes:
    """A zip written by hand (zipfile cannot store already-compressed bytes): local headers, central directory."""
    out, central = io.BytesIO(), []
    for name, method, data, crc, size in members:
        offset, raw = out.tell(), name.encode()
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0x21, crc, len(data), size, len(raw), 0))
        out.write(raw + data)
        central.append(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0x21, crc, len(data),
                                   size, len(raw), 0, 0, 0, 0, 0, offset) + raw)
    start, directory = out.tell(), b"".join(central)
    out.write(directory)
    out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(directory), start, 0))
    return out.getvalue()


def sparse_pickle_head(path: Path, size: int = 2 << 30) -> Path:
    """A sparse file of ``size`` bytes that starts like a protocol-2 pickle (takes no disk space)."""
    with open(path, "wb") as f:
        f.write(b"\x80\x02")
        f.truncate(size)
    return path
