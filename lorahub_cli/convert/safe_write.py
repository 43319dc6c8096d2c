"""Write a safetensors file so that it is either complete and verified, or not there at all.

The tensors go to a temporary file in the target folder, which is read back and compared bit for bit (every
byte of every tensor, the key set, dtypes, shapes and the header metadata), then published over the target by
``registry.publish`` (fsync, rename, folder fsync); a failed check removes it and raises ``verify-failed``.
Bytes are compared, not values, so a NaN or a -0.0 must survive exactly too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

import numpy as np

from lorahub_cli.errors import AlreadyExists, VerifyFailed
from registry.publish import shareable_mode, temp_file  # noqa: F401 - shareable_mode: re-exported

if TYPE_CHECKING:
    import torch

Tensors = dict[str, "torch.Tensor"]


def write_verified(dst: Path, tensors: Tensors, metadata: dict[str, str], *, force: bool = False,
                   check: Optional[Callable[[Path, Tensors], None]] = None,
                   on_verify: Optional[Callable[[], None]] = None, data_hash: bool = False) -> dict[str, str]:
    """Atomically write ``tensors`` + ``metadata`` to ``dst``; ``check(tmp_path, reloaded)`` may refuse the file.
    Returns the header metadata as written.

    Published through ``registry.publish`` (unique temp, fsync, rename, folder fsync; a full disk or a file-size
    limit is ``disk-full`` and leaves nothing). ``on_verify`` is called when writing is done and reading back
    begins (for progress reports). ``data_hash``: the header carries the file's own tensor hash as kohya's
    ``sshs_model_hash`` and ModelSpec's ``hash_sha256`` (A1111's LoRA hash, Civitai's AutoV3); a value copied
    from a source file (whose tensors differ) is replaced, never kept.
    """
    from safetensors.torch import save_file

    dst = Path(dst)
    if os.path.lexists(dst) and not force:
        raise AlreadyExists(f"{dst} exists already", hint="Pass --force to replace it, or -o to write elsewhere.")
    if data_hash:   # same-length placeholders, filled in place once the data section is written
        metadata = {**metadata, **{k: v for k, v in _DATA_HASH_PLACEHOLDERS.items()}}
    with temp_file(dst.parent, name=dst.name) as tmp:
        save_file(tensors, str(tmp.path), metadata=metadata)
        if data_hash:
            from lorahub_cli.export.conventions import data_sha256

            digest = data_sha256(tmp.path)
            metadata.update({"sshs_model_hash": digest, "modelspec.hash_sha256": "0x" + digest})
            _sort_metadata(tmp.path, fill=metadata)
        else:
            _sort_metadata(tmp.path)
        if on_verify is not None:
            on_verify()
        reloaded = verify_file(tmp.path, tensors, metadata)
        if check is not None:
            check(tmp.path, reloaded)
        tmp.publish(dst)
    return metadata


_DATA_HASH_PLACEHOLDERS = {"sshs_model_hash": "0" * 64, "modelspec.hash_sha256": "0x" + "0" * 64}


def _sort_metadata(path: Path, fill: Optional[dict[str, str]] = None) -> None:
    """safetensors writes ``__metadata__`` in hash-map order, which changes from run to run; sorting it makes
    the same conversion give the same bytes, so the library sees a re-added pickle as a duplicate. ``fill``:
    the final values of the data-hash placeholders (same length: the header keeps its size and the data its
    offsets)."""
    import json

    with open(path, "r+b") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        meta = header.pop("__metadata__", None)
        if not meta:
            return
        for key in _DATA_HASH_PLACEHOLDERS:
            if fill is not None and key in fill:
                meta[key] = fill[key]
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
