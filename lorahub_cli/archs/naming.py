"""How other tools name a base model's layers (kohya/A1111, SAI/LDM U-Net), from a module table.

Pure string work, no torch. Every function maps table names (diffusers / transformers spelling) to
another spelling, so a converter or checker can build a reverse index from the real architecture
instead of guessing at underscores.
"""

from __future__ import annotations

import re
from typing import Iterable

# kohya prefixes per family and component (sd-scripts networks/lora*.py LORA_PREFIX_*)
KOHYA_PREFIXES: dict[str, dict[str, str]] = {
    "sd1": {"unet": "lora_unet", "text_encoder": "lora_te"},
    "sd2": {"unet": "lora_unet", "text_encoder": "lora_te"},
    "sdxl": {"unet": "lora_unet", "text_encoder": "lora_te1", "text_encoder_2": "lora_te2"},
    "sd3": {"transformer": "lora_unet", "text_encoder": "lora_te1", "text_encoder_2": "lora_te2",
            "text_encoder_3": "lora_te3"},
    # Flux has no CLIP-G, so kohya keeps "te3" for T5 (networks/lora_flux.py)
    "flux": {"transformer": "lora_unet", "text_encoder": "lora_te1", "text_encoder_2": "lora_te3"},
}


def kohya_prefix(family: str, component: str) -> str:
    try:
        return KOHYA_PREFIXES[family][component]
    except KeyError:
        raise ValueError(f"kohya has no prefix for {family} {component}") from None


def kohya_name(prefix: str, module: str) -> str:
    """kohya joins prefix and module path and turns every "." into "_" (LoRANetwork.create_modules)."""
    return f"{prefix}_{module}".replace(".", "_")


def kohya_index(prefix: str, modules: Iterable[str]) -> dict[str, str]:
    """kohya name -> module name; the reverse of kohya_name over a table's real names."""
    return {kohya_name(prefix, m): m for m in modules}


# --- SDXL: diffusers U-Net names -> SAI / LDM names (input_blocks / middle_block / output_blocks) -------
_RESNET_LEAVES = {"conv1": "in_layers.2", "conv2": "out_layers.3", "time_emb_proj": "emb_layers.1",
                  "conv_shortcut": "skip_connection"}
_TOP_LEVEL = {"conv_in": "input_blocks.0.0", "time_embedding.linear_1": "time_embed.0",
              "time_embedding.linear_2": "time_embed.2", "add_embedding.linear_1": "label_emb.0.0",
              "add_embedding.linear_2": "label_emb.0.2", "conv_out": "out.2"}
_BLOCK = re.compile(r"^(down_blocks|up_blocks)\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)$")
_MID = re.compile(r"^mid_block\.(resnets|attentions)\.(\d+)\.(.+)$")
_SAMPLER = re.compile(r"^(down_blocks|up_blocks)\.(\d+)\.(downsamplers|upsamplers)\.0\.conv$")


def sai_unet_names(modules: Iterable[str]) -> dict[str, str]:
    """diffusers U-Net module name -> SAI/LDM name, for the names this layout has (others left out).

    In the LDM U-Net each level is a run of numbered blocks: level i of the down path holds
    input_blocks 1+i*(L+1) .. with [resnet, attention] inside and the downsampler last ("op"); the up
    path has L+1 blocks per level and its upsampler sits after the attention when there is one.
    """
    names = list(modules)
    per_block = 1 + max((int(m.split(".")[3]) for m in names if m.startswith("down_blocks.0.resnets.")), default=1)
    up_attn = {int(m.split(".")[1]) for m in names if m.startswith("up_blocks.") and ".attentions." in m}
    out = {}
    for name in names:
        sai = _to_sai(name, per_block, up_attn)
        if sai:
            out[name] = sai
    return out


def _to_sai(name: str, per_block: int, up_attn: set[int]) -> str | None:
    if name in _TOP_LEVEL:
        return _TOP_LEVEL[name]
    if m := _BLOCK.match(name):
        path, level, kind, j, rest = m.group(1), int(m.group(2)), m.group(3), int(m.group(4)), m.group(5)
        if kind == "resnets":
            rest = _RESNET_LEAVES.get(rest)
            if rest is None:
                return None
        if path == "down_blocks":
            return f"input_blocks.{1 + level * (per_block + 1) + j}.{int(kind == 'attentions')}.{rest}"
        return f"output_blocks.{level * (per_block + 1) + j}.{int(kind == 'attentions')}.{rest}"
    if m := _MID.match(name):
        kind, j, rest = m.group(1), int(m.group(2)), m.group(3)
        if kind == "attentions":
            return f"middle_block.1.{rest}"
        leaf = _RESNET_LEAVES.get(rest)
        return f"middle_block.{2 * j}.{leaf}" if leaf else None
    if m := _SAMPLER.match(name):
        level = int(m.group(2))
        if m.group(1) == "down_blocks":
            return f"input_blocks.{(level + 1) * (per_block + 1)}.0.op"
        return f"output_blocks.{level * (per_block + 1) + per_block}.{2 if level in up_attn else 1}.conv"
    return None
