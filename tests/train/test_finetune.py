"""Fine-tuning on a synthetic captioned set: the adapter learns the data, and caching changes nothing.

A random tiny VAE makes pixel closeness to the data meaningless, so the checks are in latent space: the
denoising loss on the training set (identical seeded noise with the adapter on and off) and the latents a
generation of the trained prompt ends in.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from lorahub_cli.pipeline.schedulers import SCHEDULERS
from lorahub_cli.train import TrainConfig, train
from tests.fixtures.pipelines import RESOLUTION
from tests.train.conftest import colour_set

pytestmark = pytest.mark.slow

CAPACITY = ["to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2", "proj_in", "proj_out"]


def _load(path):
    from safetensors.torch import load_file

    return load_file(str(path))


def _training_set_tensors(pipe, folder):
    """VAE means and prompt embeddings of the training images (what the loss is measured on)."""
    from lorahub_cli.train.data import load_captioned, pixels
    from lorahub_cli.train.models import encode_prompts, tokenize

    examples = load_captioned(str(folder))
    px = torch.stack([pixels(e, RESOLUTION, center_crop=True) for e in examples])
    with torch.no_grad():
        latents = pipe.vae.encode(px).latent_dist.mean * pipe.vae.config.scaling_factor
        embeds = encode_prompts(pipe.text_encoder, tokenize(pipe.tokenizer, [e.caption for e in examples]))
    return latents, embeds


def test_adapter_lowers_the_denoising_loss_and_changes_generations(tiny_base, tmp_path, tmp_home):
    from diffusers import DDPMScheduler, StableDiffusionPipeline

    from lorahub_cli.train.objective import denoising_loss

    data = colour_set(tmp_path / "data")
    result = train(TrainConfig(base=str(tiny_base), data=str(data), name="colours", resolution=RESOLUTION,
                               batch_size=4, max_steps=30, lr=1e-2, rank=8, targets=CAPACITY, seed=1,
                               checkpointing_steps=1000))
    assert result.steps == 30 and result.world_size == 1 and "latents cached" in result.cache

    pipe = StableDiffusionPipeline.from_pretrained(tiny_base, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    noise_scheduler = DDPMScheduler.from_pretrained(tiny_base, subfolder="scheduler")
    latents, embeds = _training_set_tensors(pipe, data)

    def loss() -> float:
        return denoising_loss(pipe.unet, latents, embeds, noise_scheduler, generator=torch.Generator().manual_seed(0),
                              draws=8)

    def generation():
        return pipe("lower", num_inference_steps=4, height=RESOLUTION, width=RESOLUTION, output_type="latent",
                    generator=torch.Generator().manual_seed(0)).images

    base_loss, base_latents = loss(), generation()
    pipe.load_lora_weights(result.run_dir, weight_name=Path(result.adapter).name, adapter_name="colours")
    assert pipe.get_list_adapters() == {"unet": ["colours"]}
    trained_loss, trained_latents = loss(), generation()
    assert trained_loss < 0.95 * base_loss, (trained_loss, base_loss)
    change = (trained_latents - base_latents).abs().mean().item()
    assert change > 0.05 * base_latents.abs().mean().item(), change

    pipe.disable_lora()   # the comparison is fair: the same draws give the base loss back
    assert loss() == pytest.approx(base_loss, abs=1e-6)


def test_file_layout_metadata_and_card(tiny_base, tmp_path, tmp_home):
    import yaml

    from lorahub_cli.inspect import inspect_file

    data = colour_set(tmp_path / "data", captions="txt")
    result = train(TrainConfig(base=str(tiny_base), data=str(data), name="layout", resolution=RESOLUTION,
                               batch_size=2, max_steps=2, rank=4, alpha=2, seed=0, checkpointing_steps=1,
                               checkpoints_total_limit=1, validation_prompt="lower", validation_images=1,
                               validation_every=1, validation_inference_steps=2))
    assert Path(result.adapter).name == "layout.safetensors"   # named after the run, as UIs show it
    report = inspect_file(result.adapter)
    assert report.format == "diffusers" and report.rank == 4 and report.alpha == 2.0
    assert report.components == ["unet"]
    training = json.loads(report.metadata["lorahub.training"])
    assert training["config"]["lr"] == 1e-4 and training["summary"]["steps"] == 2
    # kohya's keys, which metadata viewers show; the tiny base (text context 32) is of no family: no ModelSpec
    assert (report.metadata["ss_network_module"], report.metadata["ss_network_dim"],
            report.metadata["ss_network_alpha"]) == ("networks.lora", "4", "2.0")
    assert "modelspec.architecture" not in report.metadata
    card = (tmp_home / "runs" / "layout" / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["base_model"] == str(tiny_base) and "lora" in front["tags"]
    assert front["lorahub"]["training"]["rank"] == 4
    # checkpoints: the limit keeps the newest one only
    assert [p.name for p in (tmp_home / "runs" / "layout" / "checkpoints").iterdir()] == ["checkpoint-2"]
    # validation images carry the `lora generate` recipe: readable by `lora recipe`, re-runnable with --from
    from lorahub_cli.inspect.hashing import sha256_file
    from lorahub_cli.pipeline.recipe import read_parameters, read_recipe

    during, final = result.validation_images          # step 1 (--validation-every 1), then the end (step 2)
    recipe = read_recipe(final)
    assert (recipe.prompt, recipe.seed, recipe.steps, recipe.width) == ("lower", 0, 2, RESOLUTION)
    assert recipe.base_id == str(tiny_base.resolve()) and recipe.scheduler in SCHEDULERS
    assert recipe.adapters == [{"name": "layout", "sha256": sha256_file(result.adapter), "weight": 1.0,
                                "path": result.adapter}]
    sampler = read_parameters(final)["settings"]["Sampler"]
    assert sampler == SCHEDULERS[recipe.scheduler].a1111     # A1111's name, not a diffusers class name
    early = read_recipe(during)
    assert early.adapters[0]["name"] == "layout-step-1"
    assert early.adapters[0]["sha256"] == sha256_file(early.adapters[0]["path"]) != recipe.adapters[0]["sha256"]
    assert json.loads(Image.open(during).text["lorahub"])["training"]["step"] == 1


def test_a_validation_image_is_made_again_from_its_recipe(tiny_base, tmp_path, tmp_home):
    import numpy as np

    from lorahub_cli.pipeline import Library

    data = colour_set(tmp_path / "data")
    result = train(TrainConfig(base=str(tiny_base), data=str(data), name="again", resolution=RESOLUTION,
                               batch_size=2, max_steps=2, lr=1e-2, seed=0, checkpointing_steps=1000,
                               validation_prompt="lower", validation_images=1, validation_inference_steps=2,
                               register=False))
    (image,) = result.validation_images
    with Library() as lib:
        (shot,) = lib.rerun(image, output_dir=tmp_path / "again")
    want = np.asarray(Image.open(image).convert("RGB"), dtype=np.int16)
    got = np.asarray(Image.open(shot.path).convert("RGB"), dtype=np.int16)
    assert np.abs(got - want).max() <= 2      # training's PEFT layers vs generate's fp32 merge: rounding only


def test_cached_and_uncached_training_give_the_same_weights(tiny_base, tmp_path, tmp_home):
    """The cache keeps the latent distribution and both flips, so it is exact, not an approximation."""
    data = colour_set(tmp_path / "data")
    common = dict(base=str(tiny_base), data=str(data), resolution=RESOLUTION, batch_size=2, max_steps=3,
                  lr=1e-3, seed=3, random_flip=True, checkpointing_steps=1000, register=False)
    cached = train(TrainConfig(name="cached", cache="on", **common))
    uncached = train(TrainConfig(name="uncached", cache="off", **common))
    assert "latents cached (both flips)" in cached.cache and "caching off" in uncached.cache
    a, b = _load(cached.adapter), _load(uncached.adapter)
    assert a.keys() == b.keys()
    ups = [k for k in a if "lora_B" in k]
    assert any(a[k].abs().max() > 0 for k in ups)   # trained (B starts at zero)
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < 1e-6, worst
