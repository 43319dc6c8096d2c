"""Write a safetensors file so that it is either complete and verified, or not there at all.

The tensors go to a temporary file in the target folder, which is flushed to disk, read back and compared bit
for bit (every byte of every tensor, the key set, dtypes, shapes and the header metadata) before it is renamed
over the target; a failed check removes it and raises ``verify-failed``. Bytes are compared, not values, so a
NaN or a -0.0 must survive exactly too.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

import numpy as np

from lorahub_cli.errors import AlreadyExists, DiskFull, VerifyFailed

if TYPE_CHECKING:
    import torch

Tensors = dict[str, "torch.Tensor"]


def write_verified(dst: Path, tensors: Tensors, metadata: dict[str, str], *, force: bool = False,
                   check: Optional[Callable[[Path, Tensors], None]] = None,
                   on_verify: Optional[Callable[[], None]] = None) -> None:
    """Atomically write ``tensors`` + ``metadata`` to ``dst``; ``check(tmp_path, reloaded)`` may refuse the file.

    ``on_verify`` is called when writing is done and reading back begins (for progress reports).
    """
    from safetensors.torch import save_file

    dst = Path(dst)
    if dst.exists() and not force:
        raise AlreadyExists(f"{dst} exists already", hint="Pass --force to replace it, or -o to write elsewhere.")
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        _sort_metadata(tmp)
        os.chmod(tmp, shareable_mode())   # mkstemp makes it private (0600); the output is the user's to share
        fsync_file(tmp)
        if on_verify is not None:
            on_verify()
        reloaded = verify_file(tmp, tensors, metadata)
        if check is not None:
            check(tmp, reloaded)
        os.replace(tmp, dst)
        _fsync_dir(dst.parent)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.errno == errno.ENOSPC:
            raise DiskFull(f"no space left on the disk of {dst.parent} while writing {dst.name}") from None
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def shareable_mode(full: int = 0o666) -> int:
    """``full`` (0o666 for a file, 0o777 for a folder) less the process umask: the mode a plain open() /
    mkdir() gives. tempfile makes private 0600 / 0700 entries, which would otherwise become the outputs'."""
    umask = os.umask(0)
    os.umask(umask)
    return full & ~umask


def _sort_metadata(path: Path) -> None:
    """safetensors writes ``__metadata__`` in hash-map order, which changes from run to run; sorting it makes
    the same conversion give the same bytes, so the library sees a re-added pickle as a duplicate."""
    import json

    with open(path, "r+b") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        meta = header.pop("__metadata__", None)
        if not meta:
            return
        ordered = {"__metadata__": dict(sorted(meta.items())), **header}
        raw = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode()
        if len(raw) > n:  # cannot happen for the same content in compact form; leave the file as written
            return
        f.seek(8)
        f.write(raw + b" " * (n - len(raw)))


def verify_file(path: Path, expected: Tensors, metadata: dict[str, str]) -> Tensors:
    """Read ``path`` back and compare it with what was meant to be written; returns the tensors as read."""
    from safetensors import safe_open

    reloaded: Tensors = {}
    with safe_open(str(path), framework="pt") as f:
        header = f.metadata() or {}
        keys = set(f.keys())
        if keys != set(expected):
            missing, extra = sorted(set(expected) - keys), sorted(keys - set(expected))
            raise VerifyFailed(f"{path.name} read back with other tensor names (missing {missing[:3]}, "
                               f"unexpected {extra[:3]})")
        for key in expected:
            reloaded[key] = f.get_tensor(key)
    if header != metadata:
        changed = sorted(k for k in set(header) | set(metadata) if header.get(k) != metadata.get(k))
        raise VerifyFailed(f"{path.name} read back with other header metadata ({', '.join(changed[:5])})")
    for key, want in expected.items():
        if not same_bits(reloaded[key], want):
            raise VerifyFailed(f"tensor {key!r} read back from {path.name} differs from what was read from the source")
    return reloaded


def same_bits(a: "torch.Tensor", b: "torch.Tensor") -> bool:
    """Same dtype, shape and bytes (a NaN equals itself, -0.0 differs from 0.0)."""
    if a.dtype != b.dtype or tuple(a.shape) != tuple(b.shape):
        return False
    return np.array_equal(_bytes(a), _bytes(b))


def _bytes(t: "torch.Tensor") -> np.ndarray:
    import torch

    return t.detach().contiguous().reshape(-1).view(torch.uint8).numpy()


def fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # not every platform lets a folder be opened; the rename is still atomic
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
