"""Aspect-ratio buckets (--buckets): kohya's bucket set, each image in the bucket nearest its aspect ratio,
batches of one bucket in a seeded order, SDXL's size/crop conditioning of the bucket, per-bucket latent caches,
small images kept at their size (--small-images bucket), and training that learns a mixed-aspect set and
resumes bit for bit."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from lorahub_cli.errors import ImageTooSmall
from lorahub_cli.train import TrainConfig, train
from lorahub_cli.train.buckets import assign, resolutions
from lorahub_cli.train.data import load_train_data, pixels, resized_size
from lorahub_cli.train.order import BucketSchedule
from tests.fixtures.pipelines import RESOLUTION, make_tiny_sdxl_pipeline
from tests.train.conftest import BLUE, RED, sdxl_denoising_losses

CAPACITY = ["to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2", "proj_in", "proj_out"]
STEP = 8   # the tiny pipelines train at 32 px: buckets of 8 px steps (16..64 px sides)


def mixed_set(folder: Path, items=None) -> Path:
    """Solid-colour PNGs of mixed aspect ratios, captioned by colour in metadata.jsonl."""
    from PIL import Image

    items = items or [(RED, "lower", (64, 32)), (BLUE, "newer", (32, 64)), (RED, "lower", (32, 32)),
                      (BLUE, "newer", (64, 32)), (RED, "lower", (32, 64)), (BLUE, "newer", (32, 32))]
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (colour, caption, size) in enumerate(items):
        Image.new("RGB", size, colour).save(folder / f"{i}.png")
        rows.append(json.dumps({"file_name": f"{i}.png", "text": caption}))
    (folder / "metadata.jsonl").write_text("\n".join(rows) + "\n")
    return folder


def bucket_config(base, data, **kw) -> TrainConfig:
    settings = dict(base=str(base), data=str(data), name="b", resolution=RESOLUTION, buckets=True, bucket_step=STEP,
                    batch_size=2, seed=3, checkpointing_steps=1000)
    return TrainConfig(**{**settings, **kw})


# --- the bucket set and assignment ---------------------------------------------------------------------
def test_bucket_set_is_kohyas_and_images_go_to_the_nearest_aspect_ratio():
    grid = resolutions(512, step=64, min_side=256, max_side=1024)
    assert {(512, 512), (640, 384), (384, 640), (768, 320), (1024, 256)} <= set(grid)
    assert all(w % 64 == 0 and h % 64 == 0 and 256 <= min(w, h) and max(w, h) <= 1024 and w * h <= 512 * 512
               for w, h in grid)
    sizes = [(1920, 1080), (1080, 1920), (1000, 1000), (3000, 1000), (800, 600)]
    plan, refused = assign(sizes, 512, step=64)
    assert refused == [] and not plan.enlarged
    assert [plan.target(i) for i in range(len(sizes))] == [(640, 384), (384, 640), (512, 512), (832, 256),
                                                           (576, 448)]
    assert plan.counts() == {"384x640": 1, "512x512": 1, "576x448": 1, "640x384": 1, "832x256": 1}


def test_batches_hold_one_bucket_cover_every_image_and_follow_the_seed():
    of = (0, 1, 2, 0, 1, 0, 0, 2, 1, 0)   # bucket of each sample
    schedule = BucketSchedule(of, batch_size=2, world=2, seed=5)
    per_epoch = schedule.micro_steps_per_epoch
    assert per_epoch == 2 + 1 + 1            # ceil(5/4) + ceil(3/4) + ceil(2/4)
    for epoch in range(3):
        seen = set()
        for k in range(per_epoch):
            step = epoch * per_epoch + k
            shares = [schedule.batch(step, rank) for rank in (0, 1)]
            assert all(e == epoch and len(ids) == 2 for e, ids in shares)
            ids = shares[0][1] + shares[1][1]
            assert len({of[i] for i in ids}) == 1, ids      # never two buckets in one step, on any process
            seen.update(ids)
        assert seen == set(range(len(of)))
    again = BucketSchedule(of, batch_size=2, world=2, seed=5)
    other = BucketSchedule(of, batch_size=2, world=2, seed=6)
    steps = range(3 * per_epoch)
    assert [again.batch(s, 0) for s in steps] == [schedule.batch(s, 0) for s in steps]
    assert [other.batch(s, 0) for s in steps] != [schedule.batch(s, 0) for s in steps]


def test_small_images_bucket_keeps_them_at_their_size(tmp_path):
    folder = mixed_set(tmp_path / "small", [(RED, "lower", (24, 16)), (BLUE, "newer", (20, 20)),
                                            (RED, "lower", (64, 32))])
    config = bucket_config("b", folder, small_images="bucket", buckets=False).resolved()
    assert config.buckets                                   # --small-images bucket turns buckets on
    data = load_train_data(config)
    targets = data.targets(RESOLUTION)
    assert targets == [(24, 16), (16, 16), (40, 24)]
    for example, (w, h) in zip(data.examples, targets):
        covered = resized_size(example.size, (w, h))
        assert covered[0] <= example.size[0] and covered[1] <= example.size[1]   # never enlarged
        assert pixels(example, (w, h), center_crop=True).shape == (3, h, w)
    assert data.buckets.kept_small == (0, 1) and not data.buckets.enlarged

    upscaled = load_train_data(bucket_config("b", folder).resolved())
    assert upscaled.buckets.enlarged == (0, 1)              # the default enlarges them to the nearest bucket
    with pytest.raises(ImageTooSmall, match=r"2 of 3 images are smaller than their aspect-ratio bucket.*24x16"):
        load_train_data(bucket_config("b", folder, small_images="refuse").resolved())
    tiny = mixed_set(tmp_path / "tiny", [(RED, "lower", (5, 30)), (RED, "lower", (32, 32))])
    with pytest.raises(ImageTooSmall, match=r"1 of 2 images are smaller than one bucket step \(8 px\).*5x30"):
        load_train_data(bucket_config("b", tiny, small_images="bucket").resolved())


def test_bucket_and_recipe_settings_are_checked():
    from lorahub_cli.errors import UsageError

    for bad, message in [(dict(bucket_step=12), "--bucket-step must be a multiple of 8"),
                         (dict(bucket_min_side=20), "--bucket-min-side must be a multiple of --bucket-step"),
                         (dict(bucket_max_side=24), "--bucket-max-side cannot be below --resolution"),
                         (dict(mode="dreambooth", instance_prompt="a sks", class_data="c"),
                          "prior preservation"),
                         (dict(validation_prompt="x", validation_inference_steps=5000),
                          "--validation-steps must be a whole number from 1 to 1000"),
                         # what a validation image's recipe would carry, bounded as `generate --from` checks it
                         (dict(seed=-1), "--seed must be a whole number from 0 to 2"),
                         (dict(validation_prompt="x", seed=2**64 - 2, validation_images=4),
                          "--seed leaves no room for the validation images' seeds"),
                         (dict(resolution=16384, buckets=False), "--resolution must be a whole number of pixels")]:
        with pytest.raises(UsageError, match=message):
            bucket_config("b", "d", **bad).validate()


# --- SDXL: conditioning, caching, learning, resuming ---------------------------------------------------
@pytest.fixture(scope="module")
def tiny_sdxl(tmp_path_factory) -> Path:
    return make_tiny_sdxl_pipeline(tmp_path_factory.mktemp("bases") / "tiny-sdxl", seed=0)


@pytest.mark.slow
def test_sdxl_batches_carry_their_bucket_in_latents_and_time_ids(tiny_sdxl, tmp_path):
    from lorahub_cli.train.batches import BatchMaker
    from lorahub_cli.train.cache import build_latent_cache
    from lorahub_cli.train.models import load_base
    from lorahub_cli.train.sdxl import time_ids

    config = bucket_config(tiny_sdxl, mixed_set(tmp_path / "data"), center_crop=False).resolved()
    data = load_train_data(config)
    base = load_base(config.base)
    accelerator = SimpleNamespace(device=torch.device("cpu"), process_index=0, num_processes=1)
    schedule = BucketSchedule(data.buckets.of, config.batch_size, 1, config.seed)
    maker = BatchMaker(config, base, data, schedule, accelerator)
    f = base.vae_scale_factor
    for micro, batch in enumerate(maker.batches(0, 2 * schedule.micro_steps_per_epoch)):
        epoch, ids = schedule.batch(micro, 0)
        (w, h), = {data.buckets.target(i) for i in ids}
        assert batch.latents.shape[-2:] == (h // f, w // f)
        for row, i in zip(batch.time_ids.tolist(), ids):
            size = data.examples[i].size
            assert row[:2] == [size[1], size[0]] and row[4:] == [h, w]   # original (h, w), target (h, w)
        # the crop offset of the image's random crop within the covering resize
        from lorahub_cli.train.order import augment

        a = augment(config.seed, epoch, ids[0], random_flip=False)
        assert batch.time_ids[0].tolist() == time_ids(data.examples[ids[0]].size, (w, h), center_crop=False,
                                                      crop_u=a.crop_u, crop_v=a.crop_v)
    # 64x32 at bucket 40x24 is resized to 48x24: its random crops start anywhere in x 0..8
    assert time_ids((64, 32), (40, 24), center_crop=True, crop_u=0.5, crop_v=0.5) == [32, 64, 0, 4, 24, 40]

    cache = build_latent_cache(data.examples, targets=data.targets(RESOLUTION), center_crop=True,
                               both_flips=False, vae=base.vae, accelerator=accelerator)
    assert sorted(tuple(t.shape[-2:]) for t in cache.params) == [(12, 20), (16, 16), (20, 12)]
    assert cache.lookup([0, 3], [False, False], "cpu").shape[-2:] == (12, 20)


def _sdxl_bucket_loss(pipe, config: TrainConfig, draws: int = 6) -> float:
    """Mean denoising loss of ``pipe.unet`` on the training images at their buckets (center crops, VAE means,
    size/crop conditioning as in training), on noise and timesteps from a fixed seed."""
    data = load_train_data(config)
    generator = torch.Generator().manual_seed(0)
    losses = []
    for bucket, target in enumerate(data.buckets.sizes):
        examples = [e for e, b in zip(data.examples, data.buckets.of) if b == bucket]
        losses += sdxl_denoising_losses(pipe, examples, target, draws, generator)
    return sum(losses) / len(losses)


@pytest.mark.slow
def test_sdxl_learns_a_mixed_aspect_set_in_buckets(tiny_sdxl, tmp_path, tmp_home):
    from diffusers import StableDiffusionXLPipeline

    data = mixed_set(tmp_path / "data")
    config = bucket_config(tiny_sdxl, data, name="xl-buckets", center_crop=True, max_steps=40, lr=1e-2, rank=8,
                           targets=CAPACITY)
    result = train(config)
    assert result.buckets == {"24x40": 2, "32x32": 2, "40x24": 2}
    assert "latents cached" in result.cache
    from lorahub_cli.inspect import inspect_file

    header = inspect_file(result.adapter).metadata      # kohya's bucket keys, for metadata viewers
    assert header["ss_enable_bucket"] == "True" and header["ss_bucket_no_upscale"] == "False"
    assert json.loads(header["ss_bucket_info"])["buckets"]["0"] == {"resolution": [24, 40], "count": 2}

    pipe = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl, local_files_only=True)
    base_loss = _sdxl_bucket_loss(pipe, config.resolved())
    pipe.load_lora_weights(result.run_dir, weight_name=Path(result.adapter).name)
    trained_loss = _sdxl_bucket_loss(pipe, config.resolved())
    assert trained_loss < 0.95 * base_loss, (trained_loss, base_loss)


@pytest.mark.slow
def test_sdxl_bucketed_run_resumes_bit_for_bit(tiny_sdxl, tmp_path, tmp_home):
    from safetensors.torch import load_file

    data = mixed_set(tmp_path / "data")
    # random crops and flips: latents encoded every step, crop offsets in the time ids
    settings = dict(random_flip=True, lr=1e-3, checkpointing_steps=2, register=False)
    reference = train(bucket_config(tiny_sdxl, data, name="xl-ref", max_steps=4, **settings))
    assert "latents encoded every step" in reference.cache
    train(bucket_config(tiny_sdxl, data, name="xl-resumed", max_steps=2, **settings))
    resumed = train(bucket_config(tiny_sdxl, data, name="xl-resumed", max_steps=4, resume="latest", **settings))
    assert resumed.resumed_from == 2 and resumed.steps == 4
    expected, got = load_file(reference.adapter), load_file(resumed.adapter)
    assert expected.keys() == got.keys()
    assert all(expected[k].equal(got[k]) for k in expected)
    not_bucketed = train(bucket_config(tiny_sdxl, data, name="xl-square", max_steps=4, buckets=False, **settings))
    assert any(not expected[k].equal(load_file(not_bucketed.adapter)[k]) for k in expected)


# --- the command line, SD1 and Flux --------------------------------------------------------------------
@pytest.mark.slow
def test_cli_reports_images_per_bucket(tiny_base, tmp_path, tmp_home, run_cli):
    data = mixed_set(tmp_path / "data")
    result = run_cli("train", "--base", tiny_base, "--data", data, "-o", "sd-buckets", "--resolution", RESOLUTION,
                     "--buckets", "--bucket-step", STEP, "--batch-size", 2, "--max-steps", 3, "--seed", 1,
                     "--no-register", "--json")
    assert result.returncode == 0, result
    out = result.json()
    assert out["buckets"] == {"24x40": 2, "32x32": 2, "40x24": 2} and out["steps"] == 3
    assert out["config"]["buckets"] is True and out["config"]["bucket_step"] == STEP
    plain = run_cli("train", "--base", tiny_base, "--data", data, "-o", "sd-plain", "--resolution", RESOLUTION,
                    "--buckets", "--bucket-step", STEP, "--batch-size", 2, "--max-steps", 1, "--seed", 1,
                    "--no-register")
    assert plain.returncode == 0 and "buckets: 24x40 (2 images), 32x32 (2 images), 40x24 (2 images)" in plain.stdout


def test_validation_steps_beyond_generate_are_refused_before_anything(tmp_path, tmp_home, run_cli):
    result = run_cli("train", "--base", tmp_path / "no-base", "--data", tmp_path, "-o", "v",
                     "--validation-prompt", "x", "--validation-steps", 1001, "--json")
    assert result.returncode == 2
    assert "--validation-steps must be a whole number from 1 to 1000" in result.json()["error"]["message"]
    assert not (tmp_home / "runs" / "v").exists()


@pytest.mark.slow
def test_flux_trains_in_non_square_buckets(tmp_path, tmp_home):
    from tests.fixtures.pipelines import make_tiny_flux_pipeline

    flux = make_tiny_flux_pipeline(tmp_path / "tiny-flux", seed=0, guidance=False)
    data = mixed_set(tmp_path / "data")
    result = train(bucket_config(flux, data, name="flux-buckets", max_steps=3, lr=1e-3, t5_max_length=8,
                                 register=False))
    assert result.steps == 3 and result.final_loss is not None
    assert result.buckets == {"24x40": 2, "32x32": 2, "40x24": 2}
