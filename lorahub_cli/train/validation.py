"""Validation images during training: the base's own pipeline with the adapter being trained, seeded, saved
as PNG with the recipe in text chunks (``parameters`` in the A1111 style, ``lorahub.recipe`` as JSON), so
every image can be regenerated."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lorahub_cli.train.config import TrainConfig


def build_pipeline(base: Any, unet: Any, text_encoder: Any):
    """A StableDiffusionPipeline over the models in training, with the base's inference scheduler."""
    import diffusers
    from diffusers import StableDiffusionPipeline

    from lorahub_cli.train.models import _local_only, read_model_index

    index = read_model_index(base.source)
    scheduler_cls = getattr(diffusers, (index.get("scheduler") or [None, "DDIMScheduler"])[1], None)
    if scheduler_cls is None:
        scheduler = diffusers.DDIMScheduler.from_config(base.noise_scheduler.config)
    else:
        scheduler = scheduler_cls.from_pretrained(_source(base.source), subfolder="scheduler",
                                                  local_files_only=_local_only(base.source))
    pipe = StableDiffusionPipeline(vae=base.vae, text_encoder=text_encoder, tokenizer=base.tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   image_encoder=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _source(base: str) -> str:
    p = Path(base).expanduser()
    return str(p) if p.is_dir() else base


def generate(config: TrainConfig, pipe: Any, *, step: int, folder: Path, device: Any, autocast: Any) -> list[Path]:
    """``config.validation_images`` images of the validation prompt (seeds seed, seed+1, ...); their paths."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(config.validation_images):
        seed = int(config.seed or 0) + i
        generator = torch.Generator(device=device).manual_seed(seed)
        with torch.no_grad(), autocast():
            image = pipe(config.validation_prompt, num_inference_steps=config.validation_inference_steps,
                         guidance_scale=config.validation_guidance, height=config.resolution,
                         width=config.resolution, generator=generator).images[0]
        recipe = {"prompt": config.validation_prompt, "seed": seed, "steps": config.validation_inference_steps,
                  "guidance_scale": config.validation_guidance, "width": config.resolution,
                  "height": config.resolution, "scheduler": type(pipe.scheduler).__name__, "base_model": config.base,
                  "adapter": config.name, "adapter_scale": 1.0, "training_step": step}
        out.append(save_png(image, folder / f"step-{step:06d}-{i}.png", recipe))
    return out


def save_png(image: Any, path: Path, recipe: dict) -> Path:
    """Write ``image`` with its recipe in tEXt chunks, atomically."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("parameters", f"{recipe['prompt']}\nSteps: {recipe['steps']}, Sampler: {recipe['scheduler']}, "
                                f"CFG scale: {recipe['guidance_scale']}, Seed: {recipe['seed']}, "
                                f"Size: {recipe['width']}x{recipe['height']}, Model: {recipe['base_model']}, "
                                f"Lora: {recipe['adapter']}")
    info.add_text("lorahub.recipe", json.dumps(recipe, sort_keys=True))
    tmp = path.with_name(f".{path.name}.tmp")
    image.save(tmp, format="PNG", pnginfo=info)
    os.replace(tmp, path)
    return path
