"""Adapters for the tiny test pipeline, made from its own layer names and shapes, written as real files.

Each adapter is a set of random low-rank pairs (kept here too, as the reference) on chosen layers of the tiny
UNet and text encoder: attention projections, a 3x3 resnet conv, the 1x1 proj_in conv, CLIP attention.
Writers: the diffusers layout (lora_A / lora_B + lora_adapter_metadata, as save_lora_weights writes it) and the
2023 attn-procs layout (unprefixed "...attn1.processor.to_q_lora.down.weight", which plain load_lora_weights
silently ignores).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from tests.fixtures.adapter_formats import lora_config

PROMPT = "lower newer wider"      # spelt from the tiny tokenizer's vocabulary (no <unk>)
STEPS = 2


@dataclass
class TinyAdapter:
    rank: int
    alpha: Optional[float]
    pairs: dict[str, tuple[torch.Tensor, torch.Tensor]]    # "<component>.<live module name>" -> (down, up)

    @property
    def scale(self) -> float:
        return 1.0 if self.alpha is None else self.alpha / self.rank


def layer_shapes(pipe) -> dict[str, tuple[int, ...]]:
    """Weight shape of every layer the test adapters may adapt, by "<component>.<module name>"."""
    out = {}
    for name, mod in pipe.unet.named_modules():
        if name.endswith(("to_q", "to_k", "to_v", "to_out.0", "proj_in")) or name == "down_blocks.0.resnets.0.conv1":
            out[f"unet.{name}"] = tuple(mod.weight.shape)
    for name, mod in pipe.text_encoder.named_modules():
        if name.endswith(("q_proj", "k_proj", "v_proj", "out_proj")):
            out[f"text_encoder.{name}"] = tuple(mod.weight.shape)
    return out


def random_adapter(shapes: dict[str, tuple[int, ...]], keys: list[str], rank: int, alpha: Optional[float],
                   seed: int, magnitude: float = 0.3) -> TinyAdapter:
    gen = torch.Generator().manual_seed(seed)
    pairs = {}
    for key in keys:
        out_f, in_f, *kernel = shapes[key]
        down = torch.randn(rank, in_f, *kernel, generator=gen) * magnitude
        up = torch.randn(out_f, rank, *([1, 1] if kernel else []), generator=gen) * magnitude
        pairs[key] = (down, up)
    return TinyAdapter(rank, alpha, pairs)


def write_diffusers(adapter: TinyAdapter, path: Path) -> Path:
    from safetensors.torch import save_file

    tensors, names = {}, {}
    for key, (down, up) in adapter.pairs.items():
        tensors[f"{key}.lora_A.weight"], tensors[f"{key}.lora_B.weight"] = down.contiguous(), up.contiguous()
        component, module = key.split(".", 1)
        names.setdefault(component, []).append(module)
    meta = {"format": "pt"}
    if adapter.alpha is not None:
        config = {f"{c}.{k}": v for c, mods in names.items()
                  for k, v in lora_config(adapter.rank, adapter.alpha, mods).items()}
        meta["lora_adapter_metadata"] = json.dumps(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=meta)
    return path


def write_attn_procs(adapter: TinyAdapter, path: Path) -> Path:
    """The legacy layout: U-Net attention only, no "unet." prefix, scale 1 (alpha = rank)."""
    from safetensors.torch import save_file

    assert adapter.alpha is None
    leaf = {"to_q": "to_q_lora", "to_k": "to_k_lora", "to_v": "to_v_lora", "to_out.0": "to_out_lora"}
    tensors = {}
    for key, (down, up) in adapter.pairs.items():
        component, module = key.split(".", 1)
        assert component == "unet"
        attention, _, name = module.rpartition(".attn")
        attn_index, _, proj = name.partition(".")
        stem = f"{attention}.attn{attn_index}.processor.{leaf[proj]}"
        tensors[f"{stem}.down.weight"], tensors[f"{stem}.up.weight"] = down.contiguous(), up.contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"format": "pt"})
    return path


def load_plain(folder: Path, dtype=torch.float32):
    """The tiny base with nothing of ours: plain diffusers."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(folder, dtype=dtype, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def render(pipe, seed: int = 5, output_type: str = "np", prompt: str = PROMPT):
    """The pipeline's output for a fixed prompt and seed (DDIM-free: the pipeline's current scheduler)."""
    with torch.inference_mode():
        out = pipe(prompt=prompt, num_inference_steps=STEPS, guidance_scale=6.0,
                   generator=torch.Generator().manual_seed(seed), output_type=output_type)
    return out.images
