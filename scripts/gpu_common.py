"""What the GPU check scripts share: an SD1.5-shaped diffusers folder with random weights, built from the
configs in lorahub_cli/archs/configs/sd15 plus the SD VAE config (no download; timing does not depend on
weight values)."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SD_VAE = {"act_fn": "silu", "block_out_channels": [128, 256, 512, 512], "in_channels": 3, "out_channels": 3,
          "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
          "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32, "sample_size": 512,
          "scaling_factor": 0.18215}
SCHEDULER = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "steps_offset": 1}


def build_sd15(folder: Path, *, scheduler: str = "pndm") -> Path:
    """Save an SD1.5-shaped pipeline to ``folder``; ``scheduler``: "pndm" (SD1.5's own) or "dpm" (DPM++ 2M)."""
    import torch
    from diffusers import (AutoencoderKL, DPMSolverMultistepScheduler, PNDMScheduler, StableDiffusionPipeline,
                           UNet2DConditionModel)
    from transformers import CLIPTextConfig, CLIPTextModel

    from tests.fixtures.pipelines import make_tokenizer

    configs = ROOT / "lorahub_cli" / "archs" / "configs" / "sd15"
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(json.loads((configs / "unet" / "config.json").read_text()))
    text_encoder = CLIPTextModel(CLIPTextConfig(**json.loads((configs / "text_encoder" / "config.json").read_text())))
    vae = AutoencoderKL.from_config(SD_VAE)
    if scheduler == "dpm":
        noise = DPMSolverMultistepScheduler(**SCHEDULER)
    else:
        noise = PNDMScheduler(**SCHEDULER, skip_prk_steps=True, set_alpha_to_one=False)
    pipe = StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=make_tokenizer(),
                                   scheduler=noise, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder
