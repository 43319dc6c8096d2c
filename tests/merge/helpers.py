"""Test-side helpers: fixture adapters as CanonicalAdapters, and dense reference arithmetic.

``fixture_adapter`` reads a generated file's keys back with tests/archs/keymap.py (written from the formats'
descriptions, independently of the fixture writers) into the canonical form, so the merge tests run on real
SD-family layer names and shapes. The dense helpers are the slow, obvious reference the engine is held to.
"""

from __future__ import annotations

import json
from typing import Iterable, Optional

import torch

from lorahub_cli.archs import family_of, module_table, resolve_alias
from lorahub_cli.canonical import CanonicalAdapter, LoraPair
from tests.archs.keymap import group
from tests.fixtures.adapters import FIXTURE_CACHE, default_components, make_adapter


def fixture_adapter(family: str, fmt: str, *, rank: int = 4, alpha: Optional[float] = None, seed: int = 0,
                    targets: str = "attn", components: Optional[Iterable[str]] = None, dtype: str = "float64",
                    only: Optional[Iterable[str]] = None) -> CanonicalAdapter:
    """A generated adapter of ``family`` in layout ``fmt``, read into the canonical form.

    The alpha is read where the layout stores it (kohya ``.alpha`` tensors, diffusers' lora_adapter_metadata);
    for peft (adapter_config.json, not in the tensors) the given ``alpha`` is used. ``only`` keeps just the
    modules whose canonical key is listed (to keep dense reference checks small)."""
    alias = resolve_alias(family)
    comps = list(components) if components is not None else default_components(alias, fmt)
    tensors, meta = make_adapter(alias, fmt, rank=rank, alpha=alpha if fmt != "peft" else None, seed=seed,
                                 targets=targets, components=comps, dtype=dtype)
    tables = {c: module_table(alias, c, cache_dir=FIXTURE_CACHE) for c in comps}
    meta_alpha = _metadata_alpha(meta)
    keep = set(only) if only is not None else None
    modules: dict[str, LoraPair] = {}
    for (comp, name), roles in group(fmt, alias, list(tensors), tables, component=comps[0]).items():
        key = f"{comp}.{name}"
        if keep is not None and key not in keep:
            continue
        stored = float(tensors[roles["alpha"]]) if "alpha" in roles else None
        pair_alpha = stored if stored is not None else meta_alpha if meta_alpha is not None else (
            alpha if fmt == "peft" else None)
        modules[key] = LoraPair(down=tensors[roles["down"]], up=tensors[roles["up"]], alpha=pair_alpha)
    return CanonicalAdapter(family=family_of(alias), modules=modules)


def _metadata_alpha(meta: dict[str, str]) -> Optional[float]:
    raw = meta.get("lora_adapter_metadata")
    if not raw:
        return None
    values = {v for k, v in json.loads(raw).items() if k.endswith("lora_alpha")}
    assert len(values) == 1
    return float(values.pop())


def dense_sum(adapters: list[CanonicalAdapter], weights: list[float], key: str) -> torch.Tensor:
    """sum_i w_i * scale_i * up_i @ down_i for one module, in float64, flattened to [out, in*kh*kw]."""
    total = None
    for adapter, w in zip(adapters, weights):
        pair = adapter.modules.get(key)
        if pair is None:
            continue
        d = w * pair.delta(torch.float64).reshape(pair.up.shape[0], -1)
        total = d if total is None else total + d
    assert total is not None, key
    return total


def flat_delta(pair: LoraPair) -> torch.Tensor:
    return pair.delta(torch.float64).reshape(pair.up.shape[0], -1)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.linalg.norm(a - b) / torch.linalg.norm(b))


def probe(pair: LoraPair, x: torch.Tensor) -> torch.Tensor:
    """The update applied to the columns of ``x`` ([in*kh*kw, k]) without forming it: scale * up @ (down @ x)."""
    up = pair.up.reshape(pair.up.shape[0], -1).double()
    down = pair.down.reshape(pair.rank, -1).double()
    return pair.scale * (up @ (down @ x))


def probe_sum(adapters: list[CanonicalAdapter], weights: list[float], key: str, x: torch.Tensor) -> torch.Tensor:
    """sum_i w_i * update_i @ x: a random sketch of the weighted sum; two different updates give different
    sketches with probability 1, at a fraction of the dense cost (for checks over every module of a model)."""
    terms = [w * probe(a.modules[key], x) for a, w in zip(adapters, weights) if key in a.modules]
    assert terms, key
    return torch.stack(terms).sum(0)


def probes(cols: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(cols, 8, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
