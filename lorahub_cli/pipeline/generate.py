"""One image from a prepared pipeline, and its PNG on disk.

Noise comes from a CPU ``torch.Generator`` seeded with the recipe's seed, so the starting latents are the
same on every device; on one device and dtype the same recipe gives the same pixels. Files are named
``NNNNN-<seed>.png`` (the next free number in the folder, never overwriting) and appear atomically: written
to a temp file, then linked to the final name, which fails rather than replace a file.
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from lorahub_cli.errors import UsageError
from lorahub_cli.pipeline.schedulers import scheduler_for, set_scheduler
from lorahub_cli.values import (check_guidance, check_seed, check_side, check_steps, check_text,  # noqa: F401
                                parse_size)   # check_guidance and parse_size: also this module's API

if TYPE_CHECKING:
    from PIL.Image import Image

    from lorahub_cli.pipeline.recipe import Recipe

DEFAULT_STEPS = 25        # the diffusers LoRA blog's setting
DEFAULT_GUIDANCE = 7.5
_NUMBERED = re.compile(r"^(\d{5,})-")


@dataclass
class GenerateSettings:
    """What to generate; ``None`` size means the base's own (its U-Net sample size times the VAE factor)."""

    prompt: str
    negative_prompt: str = ""
    steps: int = DEFAULT_STEPS
    guidance: float = DEFAULT_GUIDANCE
    seed: Optional[int] = None
    width: Optional[int] = None
    height: Optional[int] = None
    scheduler: Optional[str] = None   # None: the base's kind's default (schedulers.scheduler_for)

    def resolved(self, pipe: Any) -> "GenerateSettings":
        """A copy with the seed drawn (when not given) and the size filled in and checked for this pipeline.
        Every value goes through the checks the command line uses (``lorahub_cli.values``)."""
        scheduler = scheduler_for(pipe, self.scheduler)
        check_text(self.prompt, "the prompt")
        check_text(self.negative_prompt, "the negative prompt")
        steps = check_steps(self.steps)
        guidance = check_guidance(self.guidance)
        seed = check_seed(self.seed) if self.seed is not None else secrets.randbelow(2**32)
        default = default_size(pipe)
        width = check_side(self.width, "--size width") if self.width is not None else default
        height = check_side(self.height, "--size height") if self.height is not None else default
        factor = int(getattr(pipe, "vae_scale_factor", 8))
        if width % factor or height % factor:
            raise UsageError(f"--size {width}x{height}: both sides must be positive multiples of {factor}")
        return replace(self, steps=steps, guidance=guidance, seed=seed, width=width, height=height,
                       scheduler=scheduler)


def default_size(pipe: Any) -> int:
    denoiser = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
    sample = getattr(getattr(denoiser, "config", None), "sample_size", None) or 64
    return int(sample) * int(getattr(pipe, "vae_scale_factor", 8))


def generate_image(pipe: Any, settings: GenerateSettings) -> tuple["Image", bool]:
    """The image for fully resolved ``settings``, and whether the safety checker blanked it.

    The pipeline returns floats (``output_type="np"``) and they are turned into pixels here, as diffusers' own
    "pil" output does (x 255, rounded): NaN or inf in them (a damaged base, fp16 overflow in the VAE) would
    otherwise round to a black image saved with exit 0, so they are ``NonFinite`` before anything is written."""
    import numpy as np
    import torch

    from lorahub_cli.pipeline.build import oom_as_error

    use_scheduler(pipe, settings.scheduler)
    generator = torch.Generator(device="cpu").manual_seed(int(settings.seed))
    with oom_as_error(f"generating {settings.width}x{settings.height}"), torch.inference_mode():
        out = pipe(prompt=settings.prompt, negative_prompt=settings.negative_prompt or None,
                   num_inference_steps=settings.steps, guidance_scale=settings.guidance, width=settings.width,
                   height=settings.height, generator=generator, output_type="np")
    pixels = np.asarray(out.images)
    if not np.isfinite(pixels).all():
        from lorahub_cli.errors import NonFinite

        dtype = getattr(getattr(pipe, "lorahub", None), "dtype", "this")
        raise NonFinite(f"the image came out NaN or infinite in the {dtype} pipeline; nothing was written",
                        hint="fp16 overflows in some bases' VAE: try --dtype fp32 (or bf16), or smaller adapter "
                             "weights; `lora inspect` checks the adapters.")
    flagged = getattr(out, "nsfw_content_detected", None)
    return pipe.numpy_to_pil(pixels)[0], bool(flagged and flagged[0])


def use_scheduler(pipe: Any, name: str) -> None:
    """Give ``pipe`` the scheduler we call ``name`` (remembered as ``pipe._lorahub_scheduler``).
    Rebuilt only when it changes; always from the base's scheduler config, never from a previous swap's."""
    if getattr(pipe, "_lorahub_scheduler", None) == name:
        return
    original = getattr(pipe, "_lorahub_base_scheduler", None)
    if original is None:
        pipe._lorahub_base_scheduler = original = pipe.scheduler
    pipe.scheduler = original
    set_scheduler(pipe, name)
    pipe._lorahub_scheduler = name


# --- files ------------------------------------------------------------------------------------------
def save_png(image: "Image", recipe: "Recipe", folder: Path) -> Path:
    """Write ``image`` with its recipe as ``folder/NNNNN-<seed>.png`` (next free number), atomically
    (``registry.publish``; never replacing a file, so parallel runs into one folder each get their own name)."""
    from lorahub_cli.pipeline.recipe import png_info
    from lorahub_cli.targets import check_folder_output
    from registry.publish import temp_file

    folder = Path(folder)
    check_folder_output(folder)   # the CLI checked it before loading the model; Python callers get it here
    with temp_file(folder, suffix=".png.tmp") as tmp:
        image.save(tmp.path, format="PNG", pnginfo=png_info(recipe))
        number = next_number(folder)
        while True:
            try:
                return tmp.publish(folder / f"{number:05d}-{recipe.seed}.png", replace=False)
            except FileExistsError:
                number += 1


def next_number(folder: Path) -> int:
    highest = 0
    for entry in os.scandir(folder):
        m = _NUMBERED.match(entry.name)
        if m:
            highest = max(highest, int(m[1]))
    return highest + 1


def read_batch_file(path: Path) -> list[str]:
    """One prompt per line; blank lines and lines starting with # are skipped."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        from lorahub_cli.errors import NotFound

        raise NotFound(f"cannot read --batch-file {path}: {exc.strerror or exc}") from None
    prompts = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not prompts:
        raise UsageError(f"--batch-file {path} has no prompts (one per line)")
    return prompts
