"""Flux LoRA training on tiny Flux pipelines (dev: with the guidance embedding; schnell: without): the
adapter lowers the flow-matching loss of its own data and loads in diffusers' FluxPipeline; a resumed run
ends bit for bit where an uninterrupted one does; a base without its T5 encoder is `missing-component`
until --text-encoder-2 supplies one; an 8-bit optimizer without CUDA is `missing-dependency`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lorahub_cli.train import TrainConfig, train
from tests.fixtures.pipelines import RESOLUTION, make_tiny_flux_pipeline
from tests.train.conftest import colour_set

pytestmark = pytest.mark.slow

FAST = dict(resolution=RESOLUTION, t5_max_length=8, checkpointing_steps=1000, register=False)


@pytest.fixture(scope="session")
def tiny_flux(tmp_path_factory) -> Path:
    return make_tiny_flux_pipeline(tmp_path_factory.mktemp("bases") / "tiny-flux-dev", seed=0)


@pytest.fixture(scope="session")
def tiny_schnell(tmp_path_factory) -> Path:
    return make_tiny_flux_pipeline(tmp_path_factory.mktemp("bases") / "tiny-flux-schnell", seed=0, guidance=False)


def _flow_loss(pipe, folder, draws: int = 6) -> float:
    """Mean flow-matching loss of ``pipe.transformer`` on the training images (VAE means), conditioned as in
    training, with noise and timesteps from a fixed seed (the same draws for every call)."""
    from types import SimpleNamespace

    from lorahub_cli.train import flux
    from lorahub_cli.train.batches import Batch
    from lorahub_cli.train.data import load_captioned, pixels
    from lorahub_cli.train.models import Base

    examples = load_captioned(str(folder))
    px = torch.stack([pixels(e, RESOLUTION, center_crop=True) for e in examples])
    base = Base("", "", pipe.transformer, pipe.vae, pipe.text_encoder, pipe.tokenizer, pipe.scheduler,
                text_encoder_2=pipe.text_encoder_2, tokenizer_2=pipe.tokenizer_2, family="flux")
    settings = SimpleNamespace(guidance=3.5, weighting_scheme="none", logit_mean=0.0, logit_std=1.0, mode_scale=1.29)
    generator = torch.Generator().manual_seed(0)
    total = 0.0
    with torch.no_grad():
        latents = pipe.vae.encode(px).latent_dist.mean * pipe.vae.config.scaling_factor
        hidden, pooled = flux.encode(base, [e.caption for e in examples], 8)
        for _ in range(draws):
            d = flux.draw(generator, tuple(latents.shape), pipe.scheduler, latents.device, settings)
            batch = Batch(latents, d, encoder_hidden_states=hidden, pooled=pooled)
            total += flux.per_sample_loss(pipe.transformer, pipe.transformer.config, batch, base.vae_scale_factor,
                                          settings).mean().item()
    return total / draws


def test_flux_dev_adapter_lowers_its_own_flow_loss_and_loads_in_diffusers(tiny_flux, tmp_path, tmp_home):
    from diffusers import FluxPipeline

    from lorahub_cli.inspect import inspect_file

    data = colour_set(tmp_path / "data")
    result = train(TrainConfig(base=str(tiny_flux), data=str(data), name="flux-colours", batch_size=4,
                               max_steps=20, lr=1e-2, rank=8, seed=1, gradient_checkpointing=True,
                               weighting_scheme="logit_normal", **FAST))
    assert result.steps == 20 and "text encoders freed" in result.cache

    pipe = FluxPipeline.from_pretrained(tiny_flux, local_files_only=True)
    base_loss = _flow_loss(pipe, data)
    pipe.load_lora_weights(result.run_dir, weight_name=Path(result.adapter).name, adapter_name="fx")
    assert pipe.get_list_adapters() == {"transformer": ["fx"]}
    trained_loss = _flow_loss(pipe, data)
    assert trained_loss < 0.97 * base_loss, (trained_loss, base_loss)

    report = inspect_file(result.adapter)
    assert report.components == ["transformer"]
    assert report.metadata["ss_base_model_version"] == "flux1"
    # the script's layers: both streams' attention and feed-forwards
    recorded = __import__("json").loads(report.metadata["lorahub.training"])["config"]
    assert "ff_context.net.2" in recorded["targets"] and "attn.to_add_out" in recorded["targets"]


def test_flux_schnell_resumes_bit_for_bit(tiny_schnell, tmp_path, tmp_home):
    from safetensors.torch import load_file

    data = colour_set(tmp_path / "data")
    settings = dict(base=str(tiny_schnell), data=str(data), batch_size=2, seed=4, lr=1e-3, mode="dreambooth",
                    instance_prompt="wider", weighting_scheme="mode", **{**FAST, "checkpointing_steps": 1})
    reference = train(TrainConfig(name="fs-ref", max_steps=2, **settings))
    train(TrainConfig(name="fs-resumed", max_steps=1, **settings))
    resumed = train(TrainConfig(name="fs-resumed", max_steps=2, resume="latest", **settings))
    assert resumed.resumed_from == 1
    expected, got = load_file(reference.adapter), load_file(resumed.adapter)
    assert expected.keys() == got.keys() and all(k.startswith("transformer.") for k in got)
    assert all(expected[k].equal(got[k]) for k in expected)


def test_flux_base_without_t5_is_missing_component_until_supplied(tiny_flux, tmp_path, tmp_home, run_cli):
    no_t5 = make_tiny_flux_pipeline(tmp_path / "no-t5", seed=0, with_t5=False)
    data = colour_set(tmp_path / "data")
    args = ["train", "--base", no_t5, "--data", data, "-o", "no-t5", "--resolution", RESOLUTION,
            "--t5-max-length", 8, "--max-steps", 1, "--batch-size", 1, "--no-register", "--json"]
    refused = run_cli(*args)
    assert refused.returncode == 1, refused
    error = refused.json()["error"]
    assert error["code"] == "missing-component" and "--text-encoder-2" in error["hint"]
    assert not (tmp_home / "runs" / "no-t5").exists()

    done = run_cli(*args, "--text-encoder-2", tiny_flux / "text_encoder_2")
    assert done.returncode == 0, done
    assert done.json()["steps"] == 1


def test_8bit_optimizer_without_cuda_is_missing_dependency(tiny_flux, tmp_path, tmp_home, run_cli):
    data = colour_set(tmp_path / "data")
    result = run_cli("train", "--base", tiny_flux, "--data", data, "-o", "eight", "--optimizer", "adamw8bit",
                     "--device", "cpu", "--json")
    assert result.returncode == 3, result
    assert result.json()["error"]["code"] == "missing-dependency"
    assert not (tmp_home / "runs" / "eight").exists()


def test_resolution_not_a_multiple_of_the_latent_packing_is_a_usage_error(tiny_flux, tmp_path):
    from diffusers import AutoencoderKL

    from lorahub_cli.errors import UsageError
    from lorahub_cli.train.loop import _family_settings
    from lorahub_cli.train.models import Base

    # a VAE that downsamples 8x, as Flux's: packed 2x2, the latents need a multiple of 16 pixels
    vae = AutoencoderKL(block_out_channels=[8, 8, 8, 8], down_block_types=["DownEncoderBlock2D"] * 4,
                        up_block_types=["UpDecoderBlock2D"] * 4, latent_channels=4, norm_num_groups=8)
    base = Base("x", "FluxPipeline", None, vae, None, None, None, family="flux")
    config = TrainConfig(base="x", data=str(tmp_path), name="r", resolution=24).resolved()
    with pytest.raises(UsageError, match="multiple of 16"):
        _family_settings(config, base)
    assert _family_settings(config.replace(resolution=32), base).resolution == 32


def test_fp8_base_keeps_the_frozen_weights_in_float8_and_still_trains(tiny_flux, tmp_path, tmp_home):
    from safetensors.torch import load_file

    from lorahub_cli.train.models import load_base
    from lorahub_cli.train.setup import fp8_storage
    from lorahub_cli.train.weights import add_lora

    base = load_base(str(tiny_flux))
    add_lora(base.unet, rank=4, alpha=4, targets=["attn.to_q"])
    fp8_storage(base.unet, torch.float32, torch.device("cpu"))
    weights = dict(base.unet.named_parameters())
    assert weights["transformer_blocks.0.attn.to_q.base_layer.weight"].dtype == torch.float8_e4m3fn
    assert weights["transformer_blocks.0.attn.to_q.lora_A.default.weight"].dtype == torch.float32

    data = colour_set(tmp_path / "data")
    result = train(TrainConfig(base=str(tiny_flux), data=str(data), name="fp8", batch_size=2, max_steps=2,
                               lr=1e-2, seed=2, fp8_base=True, **FAST))
    assert result.config["fp8_base"] is True
    trained = load_file(result.adapter)
    assert any(v.abs().sum() > 0 for k, v in trained.items() if "lora_B" in k)   # B starts at zero


def test_flux_trains_in_two_gloo_processes(tiny_flux, tmp_path, tmp_home, run_cli_subprocess):
    data = colour_set(tmp_path / "data")
    result = run_cli_subprocess("train", "--base", tiny_flux, "--data", data, "-o", "flux-ddp", "--resolution",
                                RESOLUTION, "--t5-max-length", 8, "--batch-size", 1, "--max-steps", 2,
                                "--checkpointing-steps", 2, "--seed", 1, "--num-processes", 2, "--json", timeout=400)
    assert result.returncode == 0, result
    out = result.json()
    assert out["world_size"] == 2 and out["steps"] == 2 and out["library"]["status"] == "added"
    ckpt = tmp_home / "runs" / "flux-ddp" / "checkpoints" / "checkpoint-2"
    assert sorted(p.name for p in ckpt.glob("random_states_*.pkl")) == ["random_states_0.pkl",
                                                                          "random_states_1.pkl"]
