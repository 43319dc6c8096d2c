"""SDXL's conditioning for training, as diffusers' ``train_text_to_image_lora_sdxl.py`` and
``train_dreambooth_lora_sdxl.py`` build it.

- Two CLIP text encoders: the UNet's context is both encoders' penultimate hidden states concatenated on the
  width axis, and the second (projection) encoder's pooled output is the ``text_embeds`` extra input.
- Size and crop conditioning: ``time_ids`` = original (height, width) + crop top-left (y, x) + target
  (height, width), six numbers per image (the scripts' ``compute_time_ids``).
- LoRA on the UNet's attention projections (``to_k/q/v/out.0``), optionally on both text encoders
  (``q/k/v/out_proj``); the file is written by ``StableDiffusionXLPipeline.save_lora_weights`` (keys
  ``unet.``, ``text_encoder.``, ``text_encoder_2.``), which diffusers, ComfyUI and Forge load.

The shared loop (loop.py) calls these where SD1's single encoder would be used.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

PIPELINE = "StableDiffusionXLPipeline"


def load_parts(source: str, local_files_only: bool) -> dict:
    """An SDXL base's parts (float32, CPU, frozen), by the names ``models.Base`` gives them."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    kw = {"local_files_only": local_files_only}
    parts = {"noise_scheduler": DDPMScheduler.from_pretrained(source, subfolder="scheduler", **kw),
             "tokenizer": CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", **kw),
             "tokenizer_2": CLIPTokenizer.from_pretrained(source, subfolder="tokenizer_2", **kw),
             "text_encoder": CLIPTextModel.from_pretrained(source, subfolder="text_encoder", **kw),
             "text_encoder_2": CLIPTextModelWithProjection.from_pretrained(source, subfolder="text_encoder_2",
                                                                           **kw),
             "vae": AutoencoderKL.from_pretrained(source, subfolder="vae", **kw),
             "unet": UNet2DConditionModel.from_pretrained(source, subfolder="unet", **kw)}
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        parts[name].requires_grad_(False)
    return parts


# --- prompts ------------------------------------------------------------------------------------------
def tokenize(base: Any, captions: list[str]) -> Any:
    """Both tokenizers' ids (padded to 77, truncated beyond, as the scripts), stacked: (B, 2, 77)."""
    import torch

    def one(tokenizer):
        return tokenizer(captions, max_length=tokenizer.model_max_length, padding="max_length", truncation=True,
                         return_tensors="pt").input_ids

    return torch.stack([one(base.tokenizer), one(base.tokenizer_2)], dim=1)


def encode(text_encoders: Sequence[Any], ids: Any) -> tuple[Any, Any]:
    """(prompt embeddings, pooled embeddings) of stacked ids: penultimate hidden states of both encoders
    concatenated, and the last encoder's pooled projection (the scripts' ``encode_prompt``)."""
    import torch

    hidden, pooled = [], None
    for i, encoder in enumerate(text_encoders):
        device = next(encoder.parameters()).device   # a DDP-wrapped encoder has no .device
        out = encoder(ids[:, i].to(device), output_hidden_states=True, return_dict=False)
        pooled = out[0]
        hidden.append(out[-1][-2])
    return torch.cat(hidden, dim=-1), pooled


# --- size and crop conditioning -------------------------------------------------------------------------
def time_ids(size: Optional[tuple[int, int]], target: Any, *, center_crop: bool, crop_u: float,
             crop_v: float, flip: bool = False) -> list[float]:
    """original (h, w) + crop top-left (y, x) in the resized image + target (h, w); ``target`` is the square
    side or the aspect-ratio bucket's (width, height). An image of unknown size (a Hub dataset item) is taken
    as already at the target size. ``flip``: the crop was mirrored after it was cut, so its left edge is
    measured in the mirrored image, as train_text_to_image_lora_sdxl.py (flip, then crop) reports it."""
    from lorahub_cli.train.data import crop_origin, resized_size, target_wh

    tw, th = target_wh(target)
    if size is None:
        return [th, tw, 0, 0, th, tw]
    resized = resized_size(size, target)
    top, left = crop_origin(resized, target, center_crop=center_crop, crop_u=crop_u, crop_v=crop_v)
    if flip:
        left = resized[0] - left - tw
    w, h = size
    return [h, w, top, left, th, tw]


def unet_kwargs(pooled: Any, ids: Any, dtype: Any) -> dict:
    return {"added_cond_kwargs": {"text_embeds": pooled.to(dtype), "time_ids": ids.to(dtype)}}


# --- the adapter file ---------------------------------------------------------------------------------
def save_lora(folder: str, layers: dict, metadata: dict) -> None:
    """``layers``/``metadata`` by component (unet, text_encoder, text_encoder_2)."""
    from diffusers import StableDiffusionXLPipeline

    kwargs = {}
    for name in layers:
        kwargs[f"{name}_lora_layers"] = layers[name]
        kwargs[f"{name}_lora_adapter_metadata"] = metadata[name]
    StableDiffusionXLPipeline.save_lora_weights(folder, safe_serialization=True, **kwargs)


# --- validation -----------------------------------------------------------------------------------------
def build_pipeline(base: Any, scheduler: Any) -> Any:
    from diffusers import StableDiffusionXLPipeline

    return StableDiffusionXLPipeline(vae=base.vae, text_encoder=base.text_encoder,
                                     text_encoder_2=base.text_encoder_2, tokenizer=base.tokenizer,
                                     tokenizer_2=base.tokenizer_2, unet=base.unet, scheduler=scheduler)


def is_sdxl(base: Any) -> bool:
    return getattr(base, "family", None) == "sdxl"
