"""Fixtures for the training tests: one tiny SD pipeline per session, synthetic solid-colour image sets,
and one compute thread (the test machine is shared: oversubscribed OpenMP threads make tiny models crawl)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fixtures.pipelines import RESOLUTION, make_tiny_sd_pipeline

RED, BLUE, GREEN = (220, 30, 30), (30, 30, 220), (30, 200, 60)


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # these tests are about the CPU path, on any machine
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    return make_tiny_sd_pipeline(tmp_path_factory.mktemp("bases") / "tiny-sd", seed=0)


def write_images(folder: Path, items: list[tuple[tuple[int, int, int], str]], *, captions: str = "jsonl",
                 size: tuple[int, int] = (RESOLUTION, RESOLUTION)) -> Path:
    """Solid-colour PNGs ``0.png, 1.png, ...`` with captions as metadata.jsonl, .txt files, or none."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (colour, caption) in enumerate(items):
        Image.new("RGB", size, colour).save(folder / f"{i}.png")
        if captions == "txt":
            (folder / f"{i}.txt").write_text(caption)
        rows.append({"file_name": f"{i}.png", "text": caption})
    if captions == "jsonl":
        (folder / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return folder


def uncaptioned_reds(folder: Path) -> Path:
    """Four 32x32 reds and no captions: textual-inversion runs caption them with their token."""
    reds = [(220, 30, 30), (200, 60, 40), (240, 20, 60), (210, 40, 20)]
    return write_images(folder, [(c, "") for c in reds], captions="none", size=(32, 32))


def colour_set(folder: Path, *, captions: str = "jsonl") -> Path:
    """Two colours, each with its own caption spelt in the tiny tokenizer's vocabulary."""
    return write_images(folder, [(RED, "lower"), (BLUE, "newer"), (RED, "lower"), (BLUE, "newer")],
                        captions=captions)


def sdxl_denoising_losses(pipe, examples, target, draws: int, generator):
    """The denoising loss of ``pipe.unet`` on ``examples`` at ``target`` size (center crops, VAE means, size and
    crop conditioning as in training), one per draw of noise and timesteps from ``generator``."""
    import torch
    from diffusers import DDPMScheduler

    from lorahub_cli.train import sdxl
    from lorahub_cli.train.data import pixels
    from lorahub_cli.train.models import Base

    base = Base("", "", pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer, None,
                text_encoder_2=pipe.text_encoder_2, tokenizer_2=pipe.tokenizer_2, family="sdxl")
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    losses = []
    with torch.no_grad():
        px = torch.stack([pixels(e, target, center_crop=True) for e in examples])
        latents = pipe.vae.encode(px).latent_dist.mean * pipe.vae.config.scaling_factor
        hidden, pooled = sdxl.encode(base.text_encoders, sdxl.tokenize(base, [e.caption for e in examples]))
        ids = torch.tensor([sdxl.time_ids(e.size, target, center_crop=True, crop_u=0.5, crop_v=0.5)
                            for e in examples])
        for _ in range(draws):
            noise = torch.randn(latents.shape, generator=generator)
            t = torch.randint(0, scheduler.config.num_train_timesteps, (len(examples),), generator=generator)
            pred = pipe.unet(scheduler.add_noise(latents, noise, t), t, hidden, return_dict=False,
                             **sdxl.unet_kwargs(pooled, ids, hidden.dtype))[0]
            losses.append(torch.nn.functional.mse_loss(pred, noise).item())
    return losses
