"""CanonicalAdapter -> the state dict (and header entries) of a target layout. No arithmetic on the weights:
every tensor written is a tensor that was read (reshaped or sliced at most), so the output can be checked bit
for bit.

* ``diffusers``: what ``StableDiffusion(XL)Pipeline.load_lora_weights`` of the pinned diffusers loads:
  "<component>.<path>.lora_A.weight" / "lora_B.weight" and, in the header, ``lora_adapter_metadata`` holding one
  LoraConfig per component (r, lora_alpha, rank_pattern, alpha_pattern, target_modules), so every module keeps
  its own rank and alpha. Text-encoder keys keep CLIP's "text_model." level (diffusers 0.42 strips it for
  transformers >= 5.6, older stacks need it); their config patterns leave it out, so peft's suffix matching finds
  the layers with and without it.
* ``kohya``: the A1111 / ComfyUI layout for SD1 / SD2 / SDXL: lora_unet_ / lora_te_ (lora_te1_ / lora_te2_ for
  SDXL, whose U-Net takes kohya's SAI names), lora_down / lora_up and a 0-dim ``alpha``.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import TYPE_CHECKING, Any, Optional, Union

from lorahub_cli.archs.naming import kohya_name, kohya_prefix, sai_unet_names
from lorahub_cli.canonical import CanonicalAdapter, LoraPair
from lorahub_cli.errors import UnsupportedConversion

if TYPE_CHECKING:
    import torch

Tensors = dict[str, "torch.Tensor"]
KOHYA_FAMILIES = ("sd1", "sd2", "sdxl")
_CLIP_NEST = "text_model."


class _Owned:
    """Gives every written tensor its own memory: safetensors refuses two names on one storage (a fused layer's
    shared down, the row slices of its up)."""

    def __init__(self) -> None:
        self.seen: set[int] = set()

    def __call__(self, t: "torch.Tensor") -> "torch.Tensor":
        t = t.contiguous()
        if t.untyped_storage().data_ptr() in self.seen:
            t = t.clone()
        self.seen.add(t.untyped_storage().data_ptr())
        return t


def by_component(adapter: CanonicalAdapter) -> dict[str, list[tuple[str, LoraPair]]]:
    out: dict[str, list[tuple[str, LoraPair]]] = {}
    for name, pair in adapter.modules.items():
        component, path = name.split(".", 1)
        out.setdefault(component, []).append((path, pair))
    return out


# --- diffusers ---------------------------------------------------------------------------------------
def diffusers_layout(adapter: CanonicalAdapter, tables: dict[str, dict]) -> tuple[Tensors, dict[str, str]]:
    """State dict and header entries that today's diffusers loads with every rank and alpha intact."""
    own = _Owned()
    tensors: Tensors = {}
    config: dict[str, Any] = {}
    for component, items in by_component(adapter).items():
        for path, pair in items:
            tensors[f"{component}.{path}.lora_A.weight"] = own(pair.down)
            tensors[f"{component}.{path}.lora_B.weight"] = own(pair.up)
        for key, value in lora_config(items, tables.get(component, {})).items():
            config[f"{component}.{key}"] = value
    return tensors, {"lora_adapter_metadata": json.dumps(config, sort_keys=True)}


def lora_config(items: list[tuple[str, LoraPair]], table: dict) -> dict[str, Any]:
    """One component's LoraConfig: the most common rank / alpha, the others as patterns (as diffusers does)."""
    ranks = {path: pair.rank for path, pair in items}
    alphas = {path: (pair.rank if pair.alpha is None else _number(pair.alpha)) for path, pair in items}
    r = Counter(ranks.values()).most_common(1)[0][0]
    alpha = Counter(alphas.values()).most_common(1)[0][0]
    return {
        "r": r,
        "lora_alpha": alpha,
        "rank_pattern": {_pattern_key(p): v for p, v in ranks.items() if v != r},
        "alpha_pattern": {_pattern_key(p): v for p, v in alphas.items() if v != alpha},
        "target_modules": target_modules(list(ranks), table),
        "use_dora": False, "use_rslora": False, "lora_bias": False, "bias": "none", "init_lora_weights": True,
    }


def _number(value: float) -> Union[int, float]:
    return int(value) if float(value).is_integer() else float(value)


def _peft_name(path: str) -> str:
    """CLIP paths without "text_model.": a suffix of the layer's name in nested and flattened CLIP alike."""
    return path[len(_CLIP_NEST):] if path.startswith(_CLIP_NEST) else path


def _pattern_key(path: str) -> str:
    # peft matches pattern keys as regexes at the end of a name; "^" pins a U-Net / DiT path to the root so a
    # top-level "proj_out" cannot also match "single_transformer_blocks.0.proj_out" (CLIP names never collide)
    return _peft_name(path) if path.startswith(_CLIP_NEST) else f"^{path}"


def target_modules(paths: list[str], table: dict) -> Union[list[str], str]:
    """peft matches a list entry as the whole name or a dotted suffix of it; where that would also catch a layer
    the file does not adapt, a regex that names exactly these layers is written instead."""
    names = [_peft_name(p) for p in paths]
    suffixes: Counter[str] = Counter()
    for layer in table:
        parts = layer.split(".")
        suffixes.update({".".join(parts[i:]) for i in range(len(parts))})
    if all(suffixes[n] <= 1 for n in names):
        return sorted(names)
    nest = r"(?:text_model\.)?" if any(p.startswith(_CLIP_NEST) for p in paths) else ""
    return f"^{nest}(?:{'|'.join(re.escape(n) for n in sorted(names))})$"


# --- kohya -------------------------------------------------------------------------------------------
def kohya_layout(adapter: CanonicalAdapter, tables: dict[str, dict]) -> tuple[Tensors, dict[str, str]]:
    """lora_unet_* / lora_te*_* with lora_down, lora_up and alpha, as kohya's sd-scripts write them."""
    import torch

    family = adapter.family
    if family not in KOHYA_FAMILIES:
        raise UnsupportedConversion(f"--to kohya writes the A1111 / ComfyUI layout of SD1, SD2 and SDXL; this is a "
                                    f"{family} adapter", hint="Convert it --to diffusers instead.")
    own = _Owned()
    tensors: Tensors = {}
    ranks: Counter[int] = Counter()
    alphas: Counter[float] = Counter()
    for component, items in by_component(adapter).items():
        sai = sai_unet_names(tables[component]) if family == "sdxl" and component == "unet" else {}
        prefix = kohya_prefix(family, component)
        for path, pair in items:
            stem = kohya_name(prefix, sai.get(path, path))
            tensors[f"{stem}.lora_down.weight"] = own(pair.down)
            tensors[f"{stem}.lora_up.weight"] = own(pair.up)
            alpha = float(pair.rank if pair.alpha is None else pair.alpha)
            tensors[f"{stem}.alpha"] = _alpha_tensor(alpha, pair.down.dtype, torch)
            ranks[pair.rank] += 1
            alphas[alpha] += 1
    meta = {"ss_network_module": "networks.lora", "ss_network_dim": str(ranks.most_common(1)[0][0]),
            "ss_network_alpha": str(alphas.most_common(1)[0][0])}
    return tensors, meta


def _alpha_tensor(alpha: float, dtype: "torch.dtype", torch: Any) -> "torch.Tensor":
    """kohya stores alpha in the weights' dtype; float32 where that dtype would round it."""
    candidate = torch.tensor(alpha, dtype=dtype if dtype.is_floating_point else torch.float32)
    return candidate if float(candidate.item()) == alpha else torch.tensor(alpha, dtype=torch.float32)


def tokens_left_out(adapter: CanonicalAdapter) -> Optional[str]:
    if not adapter.tokens:
        return None
    names = ", ".join(list(adapter.tokens)[:5])
    return (f"{len(adapter.tokens)} embedded textual-inversion token(s) ({names}) were left out: a LoRA layout has no "
            "place for them (load them with load_textual_inversion from the source file)")
