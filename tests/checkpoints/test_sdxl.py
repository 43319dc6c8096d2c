"""SDXL single files end to end on a tiny SDXL whose two text encoders differ in width (32 / 64, as the real 768 /
1280: diffusers' from_single_file tells them apart by width): folder -> single file (lora's writer) -> pipeline ->
folder bit for bit, with the folder's module tables; `lora train` starts on it and writes an adapter. Flux
single files train too (the BFL file with its parts)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lorahub_cli.archs import module_table
from lorahub_cli.bases import add_base, resolve_base, with_parts
from lorahub_cli.pipeline.build import load_pipeline
from lorahub_cli.pipeline.fuse_file import fuse_to_single_file

PARTS = ("unet", "vae", "text_encoder", "text_encoder_2")


@pytest.fixture(scope="module")
def tiny_xl(tmp_path_factory) -> dict[str, Path]:
    """The tiny SDXL folder (encoders 32 / 64 wide) and the file `fuse --single-file` writes from it (no adapter)."""
    from tests.fixtures.pipelines import make_tiny_sdxl_pipeline

    root = tmp_path_factory.mktemp("tiny-xl")
    folder = make_tiny_sdxl_pipeline(root / "folder", widths=(32, 64))
    out = root / "tiny-xl.safetensors"
    fuse_to_single_file(resolve_base(str(folder)), [], out, dtype="fp32", force=False)
    return {"folder": folder, "file": out}


def _weights(pipe) -> dict[str, torch.Tensor]:
    return {f"{c}.{k}": v for c in PARTS for k, v in getattr(pipe, c).state_dict().items()
            if not k.endswith("position_ids")}


def test_sdxl_round_trip_folder_file_folder(home, tiny_xl, tmp_path):
    from diffusers import StableDiffusionXLPipeline

    on_file, on_folder = resolve_base(str(tiny_xl["file"])), resolve_base(str(tiny_xl["folder"]))
    assert (on_file.family, on_file.holds) == ("sdxl", ("unet", "text_encoder", "text_encoder_2", "vae"))
    assert on_file.components == on_folder.components
    for component in on_folder.components:   # check / list verdicts: the same tables
        assert module_table(on_file.folder, component) == module_table(on_folder.folder, component)
    add_base(str(tiny_xl["file"]), name="xl-file", borrow=tiny_xl["folder"])
    pipe, _ = load_pipeline("xl-file", device="cpu", dtype="fp32")
    want = _weights(StableDiffusionXLPipeline.from_pretrained(tiny_xl["folder"], local_files_only=True))
    got = _weights(pipe)
    assert set(want) == set(got) and [k for k in want if not torch.equal(want[k], got[k])] == []
    pipe.save_pretrained(tmp_path / "again")
    again = _weights(StableDiffusionXLPipeline.from_pretrained(tmp_path / "again", local_files_only=True))
    assert [k for k in want if not torch.equal(want[k], again[k])] == []


def test_train_starts_on_an_sdxl_single_file(home, tiny_xl, tmp_path):
    from safetensors.torch import load_file

    from lorahub_cli.train import TrainConfig, train
    from tests.fixtures.pipelines import RESOLUTION
    from tests.train.conftest import colour_set

    add_base(str(tiny_xl["file"]), name="xl-file", borrow=tiny_xl["folder"])
    result = train(TrainConfig(base="xl-file", data=str(colour_set(tmp_path / "data")), name="xl-from-file",
                               resolution=RESOLUTION, batch_size=1, max_steps=1, rank=2, seed=1,
                               checkpointing_steps=1000, register=False))
    assert result.steps == 1
    keys = load_file(result.adapter)
    assert keys and all(k.startswith("unet.") for k in keys)


def test_train_starts_on_a_flux_single_file_with_its_parts(home, tiny_flux, tmp_path):
    from safetensors.torch import load_file

    from lorahub_cli.train import TrainConfig, train
    from tests.fixtures.pipelines import RESOLUTION
    from tests.train.conftest import colour_set

    # VAE and CLIP-L saved with the base; T5 given to the run (`lora train --text-encoder-2 t5xxl.safetensors`)
    add_base(str(tiny_flux["transformer"]), name="flux-file", borrow=tiny_flux["configs"],
             parts={c: tiny_flux[c] for c in ("vae", "text_encoder")})
    result = train(TrainConfig(base="flux-file", data=str(colour_set(tmp_path / "data")), name="flux-from-file",
                               resolution=RESOLUTION, batch_size=1, max_steps=1, rank=2, seed=1, t5_max_length=8,
                               checkpointing_steps=1000, register=False,
                               text_encoder_2=str(tiny_flux["text_encoder_2"])))
    assert result.steps == 1
    keys = load_file(result.adapter)
    assert keys and all(k.startswith("transformer.") for k in keys)


def test_unet_only_sdxl_file_with_its_parts_apart(home, run_cli, tiny_xl, tmp_path):
    """A U-Net-only SDXL file (as fine-tunes are sometimes shared) with a configs-only folder: missing-component
    names the three flags; the VAE as an original-layout file and both text encoders in transformers' layout (as
    ComfyUI's clip_l / clip_g) load bit for bit."""
    from diffusers import StableDiffusionXLPipeline
    from safetensors.torch import save_file

    from lorahub_cli.archs import ldm
    from lorahub_cli.checkpoints.original import to_original
    from lorahub_cli.errors import MissingComponent
    from tests.checkpoints.conftest import configs_only

    source = StableDiffusionXLPipeline.from_pretrained(tiny_xl["folder"], local_files_only=True)
    files = {"unet": to_original({"unet": source.unet.state_dict()}, "sdxl"),
             "vae": to_original({"vae": source.vae.state_dict()}, "sdxl"),
             "text_encoder": source.text_encoder.state_dict(), "text_encoder_2": source.text_encoder_2.state_dict()}
    paths = {}
    for name, tensors in files.items():
        paths[name] = tmp_path / f"{name}.safetensors"
        save_file({k: v.contiguous() for k, v in tensors.items()}, paths[name])
    assert all(k.startswith(ldm.VAE_ROOT) for k in files["vae"])   # sdxl_vae.safetensors keeps first_stage_model.
    configs = configs_only(tiny_xl["folder"], tmp_path / "configs")
    bare = run_cli("base", "add", str(paths["unet"]), "--name", "xl-unet", "--borrow", str(configs), "--json")
    assert bare.returncode == 0, bare.stdout + bare.stderr
    with pytest.raises(MissingComponent) as err:
        load_pipeline("xl-unet", device="cpu", dtype="fp32")
    assert all(flag in err.value.hint for flag in ("--vae", "--text-encoder", "--text-encoder-2"))
    add_base(str(paths["unet"]), name="xl-unet", borrow=configs,
             parts={c: paths[c] for c in ("vae", "text_encoder", "text_encoder_2")})
    got = _weights(load_pipeline("xl-unet", device="cpu", dtype="fp32")[0])
    want = _weights(source)
    assert set(want) == set(got) and [k for k in want if not torch.equal(want[k], got[k])] == []


def test_a_refiner_needs_no_first_text_encoder(home, tiny_xl):
    """SDXL's refiner runs OpenCLIP-bigG alone: holding U-Net, text_encoder_2 and VAE, it lacks nothing, and
    --text-encoder is not one of its parts."""
    import dataclasses

    from lorahub_cli.checkpoints.load import missing_components
    from lorahub_cli.errors import UsageError

    held = ("unet", "text_encoder_2", "vae")
    refiner = dataclasses.replace(resolve_base(str(tiny_xl["file"])), variants=("refiner",), holds=held)
    assert missing_components(refiner, held) == []
    assert missing_components(dataclasses.replace(refiner, variants=()), held) == ["text_encoder"]
    with pytest.raises(UsageError, match="--text-encoder"):
        with_parts(refiner, parts={"text_encoder": tiny_xl["file"]})


def test_train_takes_a_flux_files_parts_as_flags(home, run_cli, tiny_flux, tmp_path):
    """`lora train --base FILE --borrow CONFIGS --vae ... --text-encoder ... --text-encoder-2 ...`: nothing saved
    beforehand; the parts travel in the run's config, as the missing-component hint promises."""
    from safetensors.torch import load_file

    from lorahub_cli.train import TrainConfig, train
    from tests.fixtures.pipelines import RESOLUTION
    from tests.train.conftest import colour_set

    result = train(TrainConfig(base=str(tiny_flux["transformer"]), data=str(colour_set(tmp_path / "data")),
                               name="flux-parts", resolution=RESOLUTION, batch_size=1, max_steps=1, rank=2, seed=1,
                               t5_max_length=8, checkpointing_steps=1000, register=False,
                               borrow=str(tiny_flux["configs"]), vae=str(tiny_flux["vae"]),
                               text_encoder=str(tiny_flux["text_encoder"]),
                               text_encoder_2=str(tiny_flux["text_encoder_2"])))
    assert result.steps == 1
    assert all(k.startswith("transformer.") for k in load_file(result.adapter))
    # the same flags on a folder base are a usage error before any run folder is made
    refused = run_cli("train", "--base", tiny_flux["configs"], "--data", colour_set(tmp_path / "data2"),
                      "--output", "nope", "--vae", tiny_flux["vae"], "--run-dir", tmp_path / "run", "--json")
    assert refused.returncode == 2, refused
    assert "single-file" in json.loads(refused.stdout)["error"]["message"]
    assert not (tmp_path / "run").exists()
