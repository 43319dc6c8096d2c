"""Single-file checkpoint (original Stability/LDM, OpenCLIP and BFL) layer names <-> diffusers module names.

Pure string work, no torch, in both directions:

- ``unet_from_ldm``: ``input_blocks.4.1.proj_in`` -> ``down_blocks.1.attentions.0.proj_in`` (the inverse of
  ``naming.sai_unet_names``, which the writer uses the other way);
- ``CLIP_HF_LEAVES`` / ``OPENCLIP`` rules: a text encoder kept as a transformers CLIP (SD1, SDXL's first) or as
  OpenCLIP (SD2, SDXL's second), whose attention is one fused ``in_proj_weight``;
- ``FLUX_TOP``: the BFL Flux layers outside the blocks (the blocks' fused layers are ``fused.FLUX_DOUBLE`` /
  ``FLUX_SINGLE``).

The roots below are where each component sits in a checkpoint's flat key space; a component is present when
any key starts with its root.
"""

from __future__ import annotations

import re
from typing import Iterable, Optional

# component roots in an SD1/SD2/SDXL checkpoint (A1111, ComfyUI, Civitai; sd-scripts model_util)
UNET_ROOT = "model.diffusion_model."
VAE_ROOT = "first_stage_model."
SD1_TEXT_ROOT = "cond_stage_model.transformer."        # transformers CLIPTextModel
SD2_TEXT_ROOT = "cond_stage_model.model."              # OpenCLIP ViT-H
SDXL_TEXT_ROOT = "conditioner.embedders.0.transformer."   # CLIP-L (transformers layout)
SDXL_TEXT2_ROOT = "conditioner.embedders.1.model."        # OpenCLIP bigG
REFINER_TEXT2_ROOT = "conditioner.embedders.0.model."     # the refiner holds bigG only, as embedder 0
# roots of the DiT checkpoints: BFL Flux / SAI SD3, bare or under ComfyUI's model.diffusion_model.
DIT_ROOTS = ("model.diffusion_model.", "")


def architecture_of(keys: Iterable[str]) -> Optional[tuple[str, str]]:
    """(architecture, denoiser root) of a checkpoint's keys, None when no known denoiser is there."""
    tensors = list(keys)
    if any(k.startswith(UNET_ROOT + "input_blocks.") for k in tensors):
        return "ldm-unet", UNET_ROOT
    for root in DIT_ROOTS:
        if any(k.startswith(root + "double_blocks.") for k in tensors) and \
                any(k.startswith(root + "single_blocks.") for k in tensors):
            return "flux", root
        if any(k.startswith(root + "joint_blocks.") for k in tensors):
            return "sd3", root
    return None



# --- U-Net -----------------------------------------------------------------------------------------------
_RESNET_LEAVES = {"in_layers.2": "conv1", "out_layers.3": "conv2", "emb_layers.1": "time_emb_proj",
                  "skip_connection": "conv_shortcut"}
_TOP_LEVEL = {"input_blocks.0.0": "conv_in", "time_embed.0": "time_embedding.linear_1",
              "time_embed.2": "time_embedding.linear_2", "label_emb.0.0": "add_embedding.linear_1",
              "label_emb.0.2": "add_embedding.linear_2", "out.2": "conv_out"}
_INPUT = re.compile(r"^input_blocks\.(\d+)\.(\d+)\.(.+)$")
_OUTPUT = re.compile(r"^output_blocks\.(\d+)\.(\d+)\.(.+)$")
_MIDDLE = re.compile(r"^middle_block\.(\d+)\.(.+)$")
_DOWNSAMPLER = re.compile(r"^input_blocks\.(\d+)\.0\.op$")


def blocks_per_level(ldm_modules: Iterable[str]) -> int:
    """Resnets per level of the down path: the first downsampler sits at input_blocks[per_block + 1]."""
    names = list(ldm_modules)
    ops = sorted(int(m.group(1)) for n in names if (m := _DOWNSAMPLER.match(n)))
    if ops:
        return ops[0] - 1
    inputs = {int(m.group(1)) for n in names if (m := _INPUT.match(n))}
    return max(1, len(inputs - {0}))   # one level, no downsampler: every input block is a resnet


def unet_from_ldm(ldm_modules: Iterable[str]) -> dict[str, str]:
    """LDM U-Net module name (below ``model.diffusion_model.``) -> diffusers name, for the names that map.

    Level i of the down path is input_blocks 1+i*(L+1) .. i*(L+1)+L, each [resnet, attention], then the
    downsampler ("op"); the up path has L+1 blocks per level, the upsampler last inside the level's last block.
    """
    names = list(ldm_modules)
    per_block = blocks_per_level(names)
    out = {}
    for name in names:
        found = _from_ldm(name, per_block)
        if found:
            out[name] = found
    return out


def _from_ldm(name: str, per_block: int) -> str | None:
    if name in _TOP_LEVEL:
        return _TOP_LEVEL[name]
    if m := _DOWNSAMPLER.match(name):
        return f"down_blocks.{int(m.group(1)) // (per_block + 1) - 1}.downsamplers.0.conv"
    if m := _INPUT.match(name):
        n, slot, rest = int(m.group(1)), int(m.group(2)), m.group(3)
        level, j = divmod(n - 1, per_block + 1)
        return _inside(f"down_blocks.{level}", j, slot, rest)
    if m := _OUTPUT.match(name):
        n, slot, rest = int(m.group(1)), int(m.group(2)), m.group(3)
        level, j = divmod(n, per_block + 1)
        if slot > 0 and rest == "conv":
            return f"up_blocks.{level}.upsamplers.0.conv"
        return _inside(f"up_blocks.{level}", j, slot, rest)
    if m := _MIDDLE.match(name):
        slot, rest = int(m.group(1)), m.group(2)
        if slot == 1:
            return f"mid_block.attentions.0.{rest}"
        leaf = _RESNET_LEAVES.get(rest)
        return f"mid_block.resnets.{slot // 2}.{leaf}" if leaf else None
    return None


def _inside(block: str, j: int, slot: int, rest: str) -> str | None:
    if slot == 0:
        leaf = _RESNET_LEAVES.get(rest)
        return f"{block}.resnets.{j}.{leaf}" if leaf else None
    if slot == 1:
        return f"{block}.attentions.{j}.{rest}"
    return None


# --- text encoders -----------------------------------------------------------------------------------------
# OpenCLIP resblock leaf -> transformers CLIP leaf; the fused in_proj is split into q, k, v (equal thirds)
OPENCLIP_LEAVES = {"attn.out_proj": "self_attn.out_proj", "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
OPENCLIP_QKV = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")
_RESBLOCK = re.compile(r"^transformer\.resblocks\.(\d+)\.(.+)$")


def openclip_layer(name: str) -> tuple[int, tuple[str, ...]] | None:
    """(layer index, transformers leaves) of an OpenCLIP resblock parameter name (``...attn.in_proj_weight``
    or ``...mlp.c_fc.weight``), None for anything else (norms, biases, embeddings)."""
    m = _RESBLOCK.match(name)
    if not m:
        return None
    index, rest = int(m.group(1)), m.group(2)
    if rest == "attn.in_proj_weight":
        return index, OPENCLIP_QKV
    leaf = OPENCLIP_LEAVES.get(rest.removesuffix(".weight")) if rest.endswith(".weight") else None
    return (index, (leaf,)) if leaf else None


def clip_name(index: int, leaf: str) -> str:
    """The transformers name of one CLIP encoder layer (tables always keep the ``text_model.`` level)."""
    return f"text_model.encoder.layers.{index}.{leaf}"


# --- Flux (BFL) --------------------------------------------------------------------------------------------
FLUX_TOP = {"img_in": "x_embedder", "txt_in": "context_embedder",
            "time_in.in_layer": "time_text_embed.timestep_embedder.linear_1",
            "time_in.out_layer": "time_text_embed.timestep_embedder.linear_2",
            "guidance_in.in_layer": "time_text_embed.guidance_embedder.linear_1",
            "guidance_in.out_layer": "time_text_embed.guidance_embedder.linear_2",
            "vector_in.in_layer": "time_text_embed.text_embedder.linear_1",
            "vector_in.out_layer": "time_text_embed.text_embedder.linear_2",
            "final_layer.linear": "proj_out", "final_layer.adaLN_modulation.1": "norm_out.linear"}
