"""Fixtures for the conversion tests: a session-wide library home (so module tables are built once), inputs."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import pytest
import torch

from tests.fixtures.adapters import make_adapter

HOME = Path(tempfile.gettempdir()) / f"lorahub-convert-tests-{getattr(os, 'getuid', lambda: 0)()}"


@pytest.fixture(scope="session", autouse=True)
def _table_cache_home():
    """The engine caches module tables under LORAHUB_HOME; one home for the session keeps them warm.

    The float64 checks here are thousands of small products: on a shared two-core machine torch's thread pool
    makes each one wait for a second core (measured 4x to 30x slower), so this session computes on one thread.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    saved = os.environ.get("LORAHUB_HOME")
    os.environ["LORAHUB_HOME"] = str(HOME)
    os.environ.setdefault("LORAHUB_NO_PROGRESS", "1")
    yield
    torch.set_num_threads(threads)
    if saved is None:
        os.environ.pop("LORAHUB_HOME", None)
    else:
        os.environ["LORAHUB_HOME"] = saved


def write_mixed_kohya(path: Path, alias: str, *, dtype: str = "float32", targets: str = "attn") -> Path:
    """A kohya file whose modules do not share one rank and alpha: every third has rank 2, every third another
    alpha (0.3, which float16 cannot hold exactly), so rank_pattern / alpha_pattern must carry them."""
    from safetensors.torch import save_file

    tensors, meta = make_adapter(alias, "kohya", rank=4, alpha=2.0, dtype=dtype, targets=targets)
    stems = sorted({k.rsplit(".", 2)[0] if k.endswith(".weight") else k.rsplit(".", 1)[0] for k in tensors})
    for i, stem in enumerate(stems):
        if i % 3 == 1:
            tensors[f"{stem}.lora_down.weight"] = tensors[f"{stem}.lora_down.weight"][:2].clone()
            tensors[f"{stem}.lora_up.weight"] = tensors[f"{stem}.lora_up.weight"][:, :2].contiguous().clone()
            tensors[f"{stem}.alpha"] = torch.tensor(1.0, dtype=getattr(torch, dtype))
        elif i % 3 == 2:
            tensors[f"{stem}.alpha"] = torch.tensor(0.3, dtype=torch.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"format": "pt", **meta})
    return path


_ROLE_SUFFIXES = (".lora_down.weight", ".lora_up.weight", ".lora_A.weight", ".lora_B.weight", ".down.weight",
                  ".up.weight", ".alpha")


def _stem(key: str) -> str:
    return next((key[: -len(s)] for s in _ROLE_SUFFIXES if key.endswith(s)), key)


def thin(path: Path, every: int = 1, *, only: str = "") -> Path:
    """Keep every ``every``-th module (by sorted name, so all blocks and components stay represented) among those
    with a key matching ``only``: the float64 update of a whole SDXL or Flux adapter costs seconds per side on
    two cores, and a sample of its names exercises the same mapping."""
    from safetensors.torch import save_file

    from tests.convert.reference import read_file

    tensors, meta = read_file(path)
    stems = sorted({_stem(k) for k in tensors if re.search(only, k)})
    keep = set(stems[::every])
    kept = {k: v for k, v in tensors.items() if _stem(k) in keep}
    if path.suffix == ".safetensors":
        save_file(kept, str(path), metadata=meta)
    elif isinstance(torch.load(path, weights_only=True), list):   # cloneofsimo's bare list stays a list
        order = sorted(kept, key=lambda k: (int(k.split(":")[1]), k.endswith(":down")))
        torch.save([kept[k] for k in order], path)
    else:
        torch.save(kept, path)
    return path
