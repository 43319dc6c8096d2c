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


# --- the writer's direction: every diffusers parameter name -> its original name ---------------------------
_RESNET_PARAMS = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0", "conv2": "out_layers.3",
                  "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}
_UNET_TOP = {"conv_in": "input_blocks.0.0", "time_embedding.linear_1": "time_embed.0",
             "time_embedding.linear_2": "time_embed.2", "add_embedding.linear_1": "label_emb.0.0",
             "add_embedding.linear_2": "label_emb.0.2", "conv_norm_out": "out.0", "conv_out": "out.2"}
_PARAM_BLOCK = re.compile(r"^(down_blocks|up_blocks)\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)$")
_PARAM_MID = re.compile(r"^mid_block\.(resnets|attentions)\.(\d+)\.(.+)$")
_PARAM_SAMPLER = re.compile(r"^(down_blocks|up_blocks)\.(\d+)\.(downsamplers|upsamplers)\.0\.conv\.(.+)$")


def unet_params_to_ldm(keys: Iterable[str]) -> dict[str, str]:
    """diffusers U-Net state-dict key -> LDM key (below ``model.diffusion_model.``); keys that have no place in
    the original layout are left out (the caller refuses a component it cannot write whole)."""
    names = list(keys)
    per_block = 1 + max((int(k.split(".")[3]) for k in names if k.startswith("down_blocks.0.resnets.")), default=0)
    up_attn = {int(k.split(".")[1]) for k in names if k.startswith("up_blocks.") and ".attentions." in k}
    out = {}
    for key in names:
        found = _param_to_ldm(key, per_block, up_attn)
        if found:
            out[key] = found
    return out


def _resnet_param(rest: str) -> str | None:
    module, _, param = rest.rpartition(".")
    leaf = _RESNET_PARAMS.get(module)
    return f"{leaf}.{param}" if leaf else None


def _param_to_ldm(key: str, per_block: int, up_attn: set[int]) -> str | None:
    module, _, param = key.rpartition(".")
    if module in _UNET_TOP:
        return f"{_UNET_TOP[module]}.{param}"
    if m := _PARAM_SAMPLER.match(key):
        level, rest = int(m.group(2)), m.group(4)
        if m.group(1) == "down_blocks":
            return f"input_blocks.{(level + 1) * (per_block + 1)}.0.op.{rest}"
        return f"output_blocks.{level * (per_block + 1) + per_block}.{2 if level in up_attn else 1}.conv.{rest}"
    if m := _PARAM_BLOCK.match(key):
        path, level, kind, j, rest = m.group(1), int(m.group(2)), m.group(3), int(m.group(4)), m.group(5)
        inner = _resnet_param(rest) if kind == "resnets" else rest
        if inner is None:
            return None
        n = 1 + level * (per_block + 1) + j if path == "down_blocks" else level * (per_block + 1) + j
        side = "input_blocks" if path == "down_blocks" else "output_blocks"
        return f"{side}.{n}.{int(kind == 'attentions')}.{inner}"
    if m := _PARAM_MID.match(key):
        kind, j, rest = m.group(1), int(m.group(2)), m.group(3)
        if kind == "attentions":
            return f"middle_block.1.{rest}"
        inner = _resnet_param(rest)
        return f"middle_block.{2 * j}.{inner}" if inner else None
    return None


_VAE_TOP = {"conv_in": "conv_in", "conv_out": "conv_out", "conv_norm_out": "norm_out"}
_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
_VAE_BLOCK = re.compile(r"^(encoder|decoder)\.(down_blocks|up_blocks)\.(\d+)\.(resnets\.(\d+)|downsamplers\.0|"
                        r"upsamplers\.0)\.(.+)$")
_VAE_MID = re.compile(r"^(encoder|decoder)\.mid_block\.(resnets|attentions)\.(\d+)\.(.+)$")


def vae_params_to_ldm(keys: Iterable[str]) -> dict[str, str]:
    """diffusers AutoencoderKL key -> LDM key (below ``first_stage_model.``). The mid attention's Linears are
    1x1 convs there (the writer reshapes them); the decoder's up path is numbered from the bottom."""
    names = list(keys)
    ups = 1 + max((int(k.split(".")[2]) for k in names if k.startswith("decoder.up_blocks.")), default=-1)
    out = {}
    for key in names:
        module, _, param = key.rpartition(".")
        side, _, rest = module.partition(".")
        if rest in _VAE_TOP or module in ("quant_conv", "post_quant_conv"):
            out[key] = f"{side}.{_VAE_TOP[rest]}.{param}" if rest in _VAE_TOP else key
        elif m := _VAE_BLOCK.match(key):
            side, path, level, inner, tail = m.group(1), m.group(2), int(m.group(3)), m.group(4), m.group(6)
            where = f"down.{level}" if path == "down_blocks" else f"up.{ups - 1 - level}"
            if inner.startswith("resnets."):
                tail = tail.replace("conv_shortcut", "nin_shortcut")
                out[key] = f"{side}.{where}.block.{m.group(5)}.{tail}"
            else:
                out[key] = f"{side}.{where}.{'downsample' if path == 'down_blocks' else 'upsample'}.{tail}"
        elif m := _VAE_MID.match(key):
            side, kind, j, tail = m.group(1), m.group(2), int(m.group(3)), m.group(4)
            if kind == "resnets":
                out[key] = f"{side}.mid.block_{j + 1}.{tail.replace('conv_shortcut', 'nin_shortcut')}"
            else:
                leaf, _, param = tail.rpartition(".")
                if leaf in _VAE_ATTN:
                    out[key] = f"{side}.mid.attn_1.{_VAE_ATTN[leaf]}.{param}"
    return out


_OPENCLIP_TOP = {"text_model.embeddings.position_embedding.weight": "positional_embedding",
                 "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
                 "text_model.final_layer_norm.weight": "ln_final.weight",
                 "text_model.final_layer_norm.bias": "ln_final.bias",
                 "text_projection.weight": "text_projection"}
_OPENCLIP_PARAMS = {"self_attn.out_proj": "attn.out_proj", "layer_norm1": "ln_1", "layer_norm2": "ln_2",
                    "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}
_CLIP_LAYER = re.compile(r"^text_model\.encoder\.layers\.(\d+)\.(.+)\.(weight|bias)$")


def openclip_params_to_ldm(key: str) -> str | tuple[str, int] | None:
    """A transformers CLIP key (with ``text_model.``) -> its OpenCLIP key; q/k/v give (fused key, part index)."""
    if key in _OPENCLIP_TOP:
        return _OPENCLIP_TOP[key]
    m = _CLIP_LAYER.match(key)
    if not m:
        return None
    index, leaf, param = int(m.group(1)), m.group(2), m.group(3)
    if leaf in OPENCLIP_QKV:
        return f"transformer.resblocks.{index}.attn.in_proj_{param}", OPENCLIP_QKV.index(leaf)
    found = _OPENCLIP_PARAMS.get(leaf)
    return f"transformer.resblocks.{index}.{found}.{param}" if found else None


# --- SD3 (SAI MMDiT) ---------------------------------------------------------------------------------------
SD3_TOP = {"x_embedder.proj": "pos_embed.proj", "context_embedder": "context_embedder",
           "t_embedder.mlp.0": "time_text_embed.timestep_embedder.linear_1",
           "t_embedder.mlp.2": "time_text_embed.timestep_embedder.linear_2",
           "y_embedder.mlp.0": "time_text_embed.text_embedder.linear_1",
           "y_embedder.mlp.2": "time_text_embed.text_embedder.linear_2",
           "final_layer.linear": "proj_out", "final_layer.adaLN_modulation.1": "norm_out.linear"}


# --- Flux (BFL) parameters that are no Linear: the q/k RMSNorm scales (diffusers' ``.weight``) ------------------
FLUX_DOUBLE_NORMS = {"img_attn.norm.query_norm.scale": "attn.norm_q.weight",
                     "img_attn.norm.key_norm.scale": "attn.norm_k.weight",
                     "txt_attn.norm.query_norm.scale": "attn.norm_added_q.weight",
                     "txt_attn.norm.key_norm.scale": "attn.norm_added_k.weight"}
FLUX_SINGLE_NORMS = {"norm.query_norm.scale": "attn.norm_q.weight", "norm.key_norm.scale": "attn.norm_k.weight"}
# BFL's final AdaLayerNorm keeps (shift, scale); diffusers' keeps (scale, shift): the halves swap on the way
FLUX_SWAPPED = ("final_layer.adaLN_modulation.1",)


# --- SD3 (SAI MMDiT) parameters that are no Linear: the q/k RMSNorms (SD3.5) and the position table ------------
SD3_NORMS = {"x_block.attn.ln_q.weight": "attn.norm_q.weight", "x_block.attn.ln_k.weight": "attn.norm_k.weight",
             "context_block.attn.ln_q.weight": "attn.norm_added_q.weight",
             "context_block.attn.ln_k.weight": "attn.norm_added_k.weight",
             "x_block.attn2.ln_q.weight": "attn2.norm_q.weight", "x_block.attn2.ln_k.weight": "attn2.norm_k.weight"}
SD3_POSITIONS = ("pos_embed", "pos_embed.pos_embed")   # (SAI, diffusers): a buffer, saved with the weights
# the final AdaLayerNorm and the last block's context norm (context_pre_only) keep (shift, scale) in SAI's layout
SD3_SWAPPED = ("final_layer.adaLN_modulation.1",)
SD3_LAST_SWAPPED = "context_block.adaLN_modulation.1"
