"""Validation images during training: the base's own pipeline with the adapter being trained, seeded, saved
as PNG with the same recipe `lora generate` writes (``lorahub`` JSON and A1111 ``parameters``), so every
image is readable with `lora recipe` and can be made again with `lora generate --from IMAGE`.

The recipe names the adapter file the image was made with: the run's adapter at the end (the same bytes the
library registers, found there by sha256), and a copy of the adapter at that step for images made during
training (``validation/step-NNNNNN/``), since the weights keep changing after them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lorahub_cli.train.config import TrainConfig

_DTYPES = {"no": "fp32", "fp16": "fp16", "bf16": "bf16"}   # accelerate's mixed precision -> a recipe dtype


def build_pipeline(base: Any, unet: Any, text_encoder: Any):
    """A StableDiffusionPipeline over the models in training, with the base's inference scheduler under the
    name `lora generate` knows it by (so a re-run builds the same one)."""
    import diffusers
    from diffusers import StableDiffusionPipeline

    from lorahub_cli.train.models import _local_only, read_model_index

    if getattr(base, "scheduler", None) is not None:   # a single-file base: its pipeline's own scheduler
        scheduler = base.scheduler
    else:
        index = read_model_index(base.source)
        scheduler_cls = getattr(diffusers, (index.get("scheduler") or [None, "DDIMScheduler"])[1], None)
        if scheduler_cls is None:
            scheduler = diffusers.DDIMScheduler.from_config(base.noise_scheduler.config)
        else:
            scheduler = scheduler_cls.from_pretrained(_source(base.source), subfolder="scheduler",
                                                      local_files_only=_local_only(base.source))
    if getattr(base, "family", "sd") == "sdxl":
        from lorahub_cli.train.sdxl import build_pipeline as build_sdxl

        pipe = build_sdxl(base, scheduler)
    else:
        pipe = StableDiffusionPipeline(vae=base.vae, text_encoder=text_encoder, tokenizer=base.tokenizer,
                                       unet=unet, scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                       image_encoder=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    _name_scheduler(pipe)
    return pipe


def _name_scheduler(pipe: Any) -> None:
    """Rebuild the scheduler as `lora generate --scheduler NAME` does (from the base's config with our
    options); a class we have no name for gives way to the default sampler."""
    from lorahub_cli.pipeline.generate import use_scheduler
    from lorahub_cli.pipeline.schedulers import DEFAULT_SCHEDULER, name_of_class

    use_scheduler(pipe, name_of_class(type(pipe.scheduler).__name__) or DEFAULT_SCHEDULER)


def _source(base: str) -> str:
    p = Path(base).expanduser()
    return str(p) if p.is_dir() else base


def generate(config: TrainConfig, pipe: Any, *, step: int, folder: Path, device: Any, autocast: Any,
             adapter: Path, adapter_name: str, mixed_precision: str = "no") -> list[Path]:
    """``config.validation_images`` images of the validation prompt (seeds seed, seed+1, ...); their paths.
    ``adapter`` is the file holding the weights the images are made with, recorded in each recipe."""
    from dataclasses import replace

    import torch

    folder.mkdir(parents=True, exist_ok=True)
    # one recipe (the adapter hashed once); each image differs only by its seed
    recipe = make_recipe(config, seed=int(config.seed or 0), scheduler=pipe._lorahub_scheduler, adapter=adapter,
                         adapter_name=adapter_name, device=str(device), mixed_precision=mixed_precision)
    extra = {"training": {"step": step, "run": str(folder.parent)}}
    out = []
    for i in range(config.validation_images):
        seed = int(config.seed or 0) + i
        # noise from a CPU generator, as `lora generate` draws it: the same starting latents on every device
        generator = torch.Generator(device="cpu").manual_seed(seed)
        with torch.no_grad(), autocast():
            image = pipe(config.validation_prompt, num_inference_steps=config.validation_inference_steps,
                         guidance_scale=config.validation_guidance, height=config.resolution,
                         width=config.resolution, generator=generator).images[0]
        out.append(save_png(image, folder / f"step-{step:06d}-{i}.png", replace(recipe, seed=seed), extra))
    return out


def make_recipe(config: TrainConfig, *, seed: int, scheduler: str, adapter: Path, adapter_name: str,
                device: str, mixed_precision: str) -> Any:
    """The `lora generate` recipe of one validation image (the adapter at weight 1, no negative prompt)."""
    from lorahub_cli.inspect.hashing import sha256_file
    from lorahub_cli.pipeline.api import library_versions
    from lorahub_cli.pipeline.recipe import Recipe

    base = _base_ref(config.base)
    adapters = [{"name": adapter_name, "sha256": sha256_file(adapter), "weight": 1.0, "path": str(adapter)}]
    return Recipe(prompt=config.validation_prompt or "", seed=seed, steps=config.validation_inference_steps,
                  guidance=float(config.validation_guidance), scheduler=scheduler, width=config.resolution,
                  height=config.resolution, base=base, base_id=base, adapters=adapters,
                  device=device.split(":")[0], dtype=_DTYPES.get(mixed_precision, "fp32"),
                  versions=library_versions())


def _base_ref(base: str) -> str:
    """What a re-run passes as --base: a folder by its absolute path, a Hub id as it is."""
    path = Path(base).expanduser()
    return str(path.resolve()) if path.is_dir() else base


def save_png(image: Any, path: Path, recipe: Any, extra: dict) -> Path:
    """Write ``image`` with its recipe in text chunks, atomically."""
    from lorahub_cli.pipeline.recipe import png_info

    from registry.publish import publish_file

    return publish_file(path, lambda tmp: image.save(tmp, format="PNG", pnginfo=png_info(recipe, extra)))
