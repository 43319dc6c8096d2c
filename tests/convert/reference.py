"""The effective update of every module of a file, read the way each layout means it, in float64.

Written from the formats' descriptions (formats.md §1.0, §5; diffusers.md §2), using the independent key
grouping of tests/archs/keymap.py and peft's own pattern matching, never the converter's code, so a
converter that changed what an adapter does cannot agree with it by construction.

    delta = scale * up.reshape(out, r) @ down.reshape(r, -1)
    kohya: scale = alpha / r (no alpha: 1); diffusers / peft: the LoraConfig's lora_alpha / r (patterns
    matched by peft.utils.other.get_pattern_key); attn-procs, diffusers-old, cloneofsimo: 1.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch

from lorahub_cli.archs import base_components, module_table
from lorahub_cli.archs.fused import flux_layers, sd3_layers
from tests.archs.keymap import group
from tests.fixtures.adapters import FIXTURE_CACHE

Factors = tuple[torch.Tensor, torch.Tensor, float]   # (down, up, scale) of one module
Deltas = dict[str, Factors]        # "<component>.<module path>" -> the factors whose update is compared


def read_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and header metadata; pickles with the weights-only loader (a bare list named cloneofsimo-style)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if isinstance(obj, list):
        component = "text_encoder" if path.name.endswith(".text_encoder.pt") else "unet"
        return {f"{component}:{i // 2}:{'up' if i % 2 == 0 else 'down'}": t for i, t in enumerate(obj)}, {}
    return dict(obj), {}


def tables_of(alias: str) -> dict[str, dict]:
    return {c: module_table(alias, c, cache_dir=FIXTURE_CACHE) for c in base_components(alias)}


def delta(factors: Factors) -> torch.Tensor:
    """float64 [out, in * kh * kw] update of one module (computed one module at a time: an SDXL adapter's
    updates together would need gigabytes)."""
    down, up, scale = factors
    r = down.shape[0]
    return (up.double().reshape(up.shape[0], r) * scale) @ down.double().reshape(r, -1)


def assert_same_updates(got: Deltas, want: Deltas) -> None:
    """Same modules, and for each the float64 update scale * up @ down is equal."""
    assert set(got) == set(want), (sorted(set(want) - set(got))[:3], sorted(set(got) - set(want))[:3])
    for name in want:
        a, b = delta(got[name]), delta(want[name])
        assert a.shape == b.shape, name
        assert torch.equal(a, b), f"{name}: max |diff| {(a - b).abs().max().item():.3g}"


def source_deltas(path: Path, alias: str, fmt: str, *, component: Optional[str] = None,
                  peft_config: Optional[dict] = None, extra: Optional[Path] = None) -> Deltas:
    """Deltas of an input file in fixture format ``fmt`` (tests/fixtures/adapters.py names)."""
    tensors, meta = read_file(path)
    if extra is not None:          # cloneofsimo's X.text_encoder.pt
        tensors.update(read_file(extra)[0])
    tables = tables_of(alias)
    groups = group(fmt, _family(alias), [k for k in tensors], tables, component=component)
    configs = _configs(meta, peft_config)
    out: Deltas = {}
    for (comp, name), roles in groups.items():
        down, up = tensors[roles["down"]], tensors[roles["up"]]
        if "alpha" in roles:
            scale = float(tensors[roles["alpha"]]) / down.shape[0]
        elif fmt in ("diffusers", "diffusers-unprefixed", "peft"):
            scale = _peft_scale(configs.get(comp, configs.get("")), name, down.shape[0])
        else:
            scale = 1.0
        out.update(_split(alias, comp, name, (down, up, scale), tables))
    return out


def diffusers_deltas(path: Path) -> Deltas:
    """Deltas of a file in today's diffusers layout: <component>.<path>.lora_A/B + lora_adapter_metadata."""
    tensors, meta = read_file(path)
    configs = _configs(meta, None)
    out: Deltas = {}
    for key in tensors:
        if key.endswith(".lora_A.weight"):
            stem = key[: -len(".lora_A.weight")]
            comp, name = stem.split(".", 1)
            down, up = tensors[key], tensors[f"{stem}.lora_B.weight"]
            out[stem] = (down, up, _peft_scale(configs.get(comp), name, down.shape[0]))
    return out


def kohya_deltas(path: Path, alias: str) -> Deltas:
    tensors, _ = read_file(path)
    out: Deltas = {}
    for (comp, name), roles in group("kohya", _family(alias), list(tensors), tables_of(alias)).items():
        down, up = tensors[roles["down"]], tensors[roles["up"]]
        out[f"{comp}.{name}"] = (down, up, float(tensors[roles["alpha"]]) / down.shape[0])
    return out


def _family(alias: str) -> str:
    return alias   # tests/archs/keymap.py is keyed by alias


def _configs(meta: dict[str, str], peft_config: Optional[dict]) -> dict[str, dict]:
    """component ("" for a flat config) -> LoraConfig dict."""
    if peft_config is not None:
        return {"": peft_config}
    if "lora_adapter_metadata" not in meta:
        return {}
    data = json.loads(meta["lora_adapter_metadata"])
    per: dict[str, dict] = {}
    for key, value in data.items():
        comp, dot, rest = key.partition(".")
        if dot and comp in ("unet", "transformer", "text_encoder", "text_encoder_2", "text_encoder_3"):
            per.setdefault(comp, {})[rest] = value
    return per or {"": data}


def _peft_scale(config: Optional[dict], name: str, rank: int) -> float:
    """lora_alpha / r as peft computes it for the layer ``name`` (flattened CLIP names, as transformers 5 has)."""
    from peft.utils.other import get_pattern_key

    if not config:
        return 1.0
    peft_name = name.removeprefix("text_model.")
    r_key = get_pattern_key((config.get("rank_pattern") or {}).keys(), peft_name)
    a_key = get_pattern_key((config.get("alpha_pattern") or {}).keys(), peft_name)
    r = (config.get("rank_pattern") or {}).get(r_key, config.get("r", rank))
    alpha = (config.get("alpha_pattern") or {}).get(a_key, config.get("lora_alpha", r))
    assert r == rank, f"{name}: the config says rank {r}, the tensors {rank}"
    return float(alpha) / float(r)


def _split(alias: str, comp: str, name: str, factors: Factors, tables: dict[str, dict]) -> Deltas:
    """A Flux / SD3 fused layer (rows of up stacked q, k, v, ...) as the diffusers layers it stands for: the rows
    of its update that belong to each part are that part's update."""
    if comp == "transformer" and name not in tables[comp]:
        down, up, scale = factors
        fused = (flux_layers if alias == "flux" else sd3_layers)(tables[comp])[name]
        sizes = [tables[comp][p].out_features for p in fused.parts]
        return {f"{comp}.{p}": (down, part, scale) for p, part in zip(fused.parts, up.split(sizes, dim=0))}
    return {f"{comp}.{name}": factors}
