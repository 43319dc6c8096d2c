"""SDXL LoRA training on a tiny SDXL pipeline: the adapter lowers the denoising loss of its own data (both
encoders' embeddings, pooled embeddings and size/crop conditioning as the diffusers SDXL scripts build them),
the file loads in diffusers' SDXL pipeline and into the library, and a resumed DreamBooth run that trains
both text encoders ends with exactly the weights of an uninterrupted one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lorahub_cli.train import TrainConfig, register_result, train
from tests.fixtures.pipelines import RESOLUTION, make_tiny_sdxl_pipeline
from tests.train.conftest import colour_set, sdxl_denoising_losses, write_images

pytestmark = pytest.mark.slow

CAPACITY = ["to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2", "proj_in", "proj_out"]


@pytest.fixture(scope="session")
def tiny_sdxl(tmp_path_factory) -> Path:
    return make_tiny_sdxl_pipeline(tmp_path_factory.mktemp("bases") / "tiny-sdxl", seed=0)


def _sdxl_loss(pipe, folder, draws: int = 8) -> float:
    """Mean denoising loss of ``pipe.unet`` on the training images (VAE means), conditioned as in training,
    on noise and timesteps from a fixed seed (the same draws for every call)."""
    from lorahub_cli.train.data import load_captioned

    losses = sdxl_denoising_losses(pipe, load_captioned(str(folder)), RESOLUTION, draws,
                                   torch.Generator().manual_seed(0))
    return sum(losses) / draws


def test_sdxl_adapter_lowers_its_own_loss_loads_in_diffusers_and_registers(tiny_sdxl, tmp_path, tmp_home):
    from diffusers import StableDiffusionXLPipeline

    from lorahub_cli.inspect import inspect_file
    from registry.api import Registry

    data = colour_set(tmp_path / "data")
    result = train(TrainConfig(base=str(tiny_sdxl), data=str(data), name="xl-colours", resolution=RESOLUTION,
                               batch_size=4, max_steps=20, lr=1e-2, rank=8, targets=CAPACITY, seed=1,
                               checkpointing_steps=1000))
    assert result.steps == 20 and "latents cached; prompt embeddings cached" in result.cache

    pipe = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl, local_files_only=True)
    base_loss = _sdxl_loss(pipe, data)
    pipe.load_lora_weights(result.run_dir, weight_name=Path(result.adapter).name, adapter_name="xl")
    assert pipe.get_list_adapters() == {"unet": ["xl"]}
    trained_loss = _sdxl_loss(pipe, data)
    assert trained_loss < 0.97 * base_loss, (trained_loss, base_loss)

    report = inspect_file(result.adapter)
    assert report.metadata["ss_base_model_version"] == "sdxl_base_v1-0"
    assert report.metadata["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
    added = register_result(result)
    assert added.to_dict()["name"] == "xl-colours"
    assert Registry().get("xl-colours").sources[0].kind == "trained"


def test_sdxl_dreambooth_with_both_text_encoders_resumes_bit_for_bit(tiny_sdxl, tmp_path, tmp_home):
    from safetensors.torch import load_file

    data = write_images(tmp_path / "dog", [((200, 120, 40), ""), ((190, 110, 50), "")], captions="none")
    settings = dict(base=str(tiny_sdxl), data=str(data), mode="dreambooth", instance_prompt="wider lowest",
                    train_text_encoder=True, resolution=RESOLUTION, batch_size=1, checkpointing_steps=1, seed=5,
                    lr=1e-3, register=False)
    reference = train(TrainConfig(name="xl-ref", max_steps=2, validation_prompt="wider lowest",
                                  validation_images=1, validation_inference_steps=1, **settings))
    assert "prompts encoded every step" in reference.cache
    assert len(reference.validation_images) == 1
    train(TrainConfig(name="xl-resumed", max_steps=1, **settings))
    resumed = train(TrainConfig(name="xl-resumed", max_steps=2, resume="latest", **settings))
    assert resumed.resumed_from == 1 and resumed.steps == 2

    expected, got = load_file(reference.adapter), load_file(resumed.adapter)
    assert {k.split(".")[0] for k in got} == {"unet", "text_encoder", "text_encoder_2"}
    assert expected.keys() == got.keys()
    assert all(expected[k].equal(got[k]) for k in expected)


def test_time_ids_are_original_size_crop_origin_and_target():
    from lorahub_cli.train.sdxl import time_ids

    # 64x32 (w x h) at 32: resized to 64x32, center crop starts at x=16
    assert time_ids((64, 32), 32, center_crop=True, crop_u=0.5, crop_v=0.5) == [32, 64, 0, 16, 32, 32]
    # a random crop at the far right edge
    assert time_ids((64, 32), 32, center_crop=False, crop_u=0.999, crop_v=0.0) == [32, 64, 0, 32, 32, 32]
    assert time_ids(None, 32, center_crop=False, crop_u=0.3, crop_v=0.3) == [32, 32, 0, 0, 32, 32]
    # mirrored after cropping: the right-edge crop is the left edge of the mirrored image (diffusers flips first)
    assert time_ids((64, 32), 32, center_crop=False, crop_u=0.999, crop_v=0.0, flip=True) == [32, 64, 0, 0, 32, 32]
    assert time_ids((64, 32), 32, center_crop=True, crop_u=0.5, crop_v=0.5, flip=True) == [32, 64, 0, 16, 32, 32]


def test_sdxl_trains_both_encoders_in_two_gloo_processes_with_buckets(tiny_sdxl, tmp_path, tmp_home,
                                                                      run_cli_subprocess):
    """accelerate launch, two gloo workers: DDP-wrapped UNet and text encoders, buckets split per step."""
    from safetensors import safe_open

    from tests.train.test_buckets import mixed_set

    data = mixed_set(tmp_path / "data")
    result = run_cli_subprocess("train", "--base", tiny_sdxl, "--data", data, "-o", "xl-ddp", "--resolution",
                                RESOLUTION, "--buckets", "--bucket-step", 8, "--train-text-encoder",
                                "--batch-size", 1, "--max-steps", 3, "--checkpointing-steps", 3, "--seed", 1,
                                "--num-processes", 2, "--json", timeout=400)
    assert result.returncode == 0, result
    out = result.json()
    assert out["world_size"] == 2 and out["steps"] == 3 and out["library"]["status"] == "added"
    assert out["buckets"] == {"24x40": 2, "32x32": 2, "40x24": 2}
    ckpt = tmp_home / "runs" / "xl-ddp" / "checkpoints" / "checkpoint-3"
    assert sorted(p.name for p in ckpt.glob("random_states_*.pkl")) == ["random_states_0.pkl",
                                                                          "random_states_1.pkl"]
    with safe_open(out["adapter"], framework="pt") as f:
        assert {k.split(".")[0] for k in f.keys()} == {"unet", "text_encoder", "text_encoder_2"}
        summary = json.loads(f.metadata()["lorahub.training"])["summary"]
    assert summary["world_size"] == 2 and summary["effective_batch_size"] == 2
