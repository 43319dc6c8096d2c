"""What the GPU check scripts share: an SD1.5-shaped diffusers folder with random weights, built from the
configs in lorahub_cli/archs/configs/sd15 plus the SD VAE config (no download; timing does not depend on
weight values); the training benchmarks' captioned noise images, a worker's peak memory, and the
samples/s of a `lora train` run read from its progress events."""

from __future__ import annotations

import json
import resource
import time
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


# --- training benchmarks (gpu_check_train.py, bench_train_families.py) ------------------------------------
def build_data(folder: Path, resolution: int, images: int) -> Path:
    """``images`` random-noise PNGs with two captions alternating, in a metadata.jsonl folder."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(images):
        Image.fromarray(rng.integers(0, 256, (resolution, resolution, 3), dtype=np.uint8)).save(folder / f"{i}.png")
        rows.append({"file_name": f"{i}.png", "text": "lower newer" if i % 2 else "wider lowest"})
    (folder / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return folder


def peak_gib() -> float:
    """Peak torch.cuda allocation on a GPU; the process's peak RSS on a CPU."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


class StepClock:
    """A `lora train` progress callback that notes when each step ended; ``rate(warmup)`` is steps/s over
    the steps after the first ``warmup``, ``cpu_rate(warmup)`` steps per second of this process's CPU time
    (on a shared CPU, what the work costs, whatever else the machine is doing)."""

    def __init__(self) -> None:
        self.marks: list[tuple[int, float, float]] = []

    def __call__(self, event) -> None:
        if event.kind == "step":
            self.marks.append((event.step, time.perf_counter(), time.process_time()))

    def rate(self, warmup: int) -> float:
        return self._rate(warmup, 1)

    def cpu_rate(self, warmup: int) -> float:
        return self._rate(warmup, 2)

    def _rate(self, warmup: int, clock: int) -> float:
        timed = [m for m in self.marks if m[0] >= warmup]
        first, last = timed[0], timed[-1]
        return (last[0] - first[0]) / (last[clock] - first[clock])
