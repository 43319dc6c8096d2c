"""Fixtures for single-file checkpoints: real-shaped header-only files (SD1.5, SD2.1, SDXL, Flux) built once per
session from the packaged configs' module tables, and the check area's seeded home and adapters."""

from __future__ import annotations

from pathlib import Path

import pytest

from lorahub_cli.archs import base_components, module_table
from tests.check.conftest import adapters, base_folders, home, warm_tables  # noqa: F401  (re-exported fixtures)
from tests.checkpoints.headers import checkpoint_keys, write_sparse
from tests.fixtures.adapters import FIXTURE_CACHE

FAMILIES = {"sd15": "sd1", "sd21": "sd2", "sdxl": "sdxl", "flux": "flux"}


def alias_tables(alias: str) -> dict:
    return {c: module_table(alias, c, cache_dir=FIXTURE_CACHE) for c in base_components(alias)}


@pytest.fixture(scope="session")
def real_files(tmp_path_factory, warm_tables) -> dict[str, Path]:  # noqa: F811
    """alias -> a sparse checkpoint with that base's real layer names and shapes (GBs long, a header on disk).

    Flux is transformer-only, as BFL ships flux1-dev.safetensors; the others hold U-Net, text encoder(s), VAE."""
    root = tmp_path_factory.mktemp("checkpoints")
    out = {}
    for alias, family in FAMILIES.items():
        keys = checkpoint_keys(alias_tables(alias), family, vae=family != "flux",
                               components=("transformer",) if family == "flux" else None)
        out[alias] = write_sparse(root / f"{alias}-real.safetensors", keys)
    return out


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> dict[str, dict[str, Path]]:
    """Tiny SD and SDXL diffusers folders (tests/fixtures/pipelines.py) and, beside each, a single-file checkpoint
    of the same layers in the original layout ("folder", "checkpoint"), built once per session."""
    from tests.fixtures.pipelines import make_tiny_sd_pipeline, make_tiny_sdxl_pipeline

    root = tmp_path_factory.mktemp("tiny")
    out = {}
    for name, make, family in (("sd", make_tiny_sd_pipeline, "unknown"), ("sdxl", make_tiny_sdxl_pipeline, "sdxl")):
        folder = make(root / f"tiny-{name}")
        tables = {c: module_table(folder, c, cache_dir=FIXTURE_CACHE) for c in base_components(folder)}
        out[name] = {"folder": folder,
                     "checkpoint": write_sparse(root / f"tiny-{name}.safetensors", checkpoint_keys(tables, family))}
    return out


@pytest.fixture(scope="session")
def tiny_file(tiny) -> dict[str, Path]:
    """The tiny SD pipeline's real weights as one file in the original layout (``checkpoints.original``), and the
    same file without its VAE; built once per session."""
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import save_file

    from lorahub_cli.checkpoints.original import to_original

    folder = tiny["sd"]["folder"]
    pipe = StableDiffusionPipeline.from_pretrained(folder, local_files_only=True)
    tensors = to_original({c: getattr(pipe, c).state_dict() for c in ("unet", "vae", "text_encoder")}, "unknown")
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    full = folder.parent / "tiny-sd-full.safetensors"
    save_file(tensors, full)
    no_vae = folder.parent / "tiny-sd-no-vae.safetensors"
    save_file({k: v for k, v in tensors.items() if not k.startswith("first_stage_model.")}, no_vae)
    return {"full": full, "no_vae": no_vae, "folder": folder}


def configs_only(folder: Path, target: Path) -> Path:
    """A copy of a diffusers folder without any weights: its configs, tokenizers and scheduler, as
    `hf download REPO --include '*.json' '*.txt'` leaves them."""
    import shutil

    shutil.copytree(folder, target, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    return target


@pytest.fixture(scope="session")
def tiny_flux(tmp_path_factory) -> dict[str, Path]:
    """The tiny Flux pipeline (tests/fixtures) and its parts as people download them: the transformer alone in
    BFL's layout (``checkpoints.original`` -> ``checkpoints.dit``, as flux1-dev.safetensors), the VAE in the LDM
    layout without a root (as ae.safetensors), CLIP-L and T5 in transformers' layout (as ComfyUI's clip_l /
    t5xxl files), and a configs-only copy of the folder; built once per session."""
    from diffusers import FluxPipeline
    from safetensors.torch import save_file

    from lorahub_cli.archs import ldm
    from lorahub_cli.checkpoints.original import to_original
    from tests.fixtures.pipelines import make_tiny_flux_pipeline

    root = tmp_path_factory.mktemp("tiny-flux")
    folder = make_tiny_flux_pipeline(root / "folder")
    pipe = FluxPipeline.from_pretrained(folder, local_files_only=True)
    out = {"folder": folder, "configs": configs_only(folder, root / "configs")}
    files = {"transformer": to_original({"transformer": pipe.transformer.state_dict()}, "flux"),
             "vae": {k[len(ldm.VAE_ROOT):]: v for k, v in to_original({"vae": pipe.vae.state_dict()}, "flux").items()},
             "text_encoder": pipe.text_encoder.state_dict(),
             # T5's token embedding is tied: stored once, as save_model and ComfyUI's t5xxl files keep it
             "text_encoder_2": {k: v for k, v in pipe.text_encoder_2.state_dict().items()
                                if k != "encoder.embed_tokens.weight"}}
    for name, tensors in files.items():
        out[name] = root / f"{name}.safetensors"
        save_file({k: v.contiguous() for k, v in tensors.items()}, out[name])
    return out


@pytest.fixture(scope="session")
def tiny_sd3(tmp_path_factory) -> dict[str, Path]:
    """The tiny SD3 pipeline (tests/fixtures) and its parts as people download them: the transformer alone in SAI's
    MMDiT layout (as sd3_medium.safetensors), the VAE in the LDM layout, the three text encoders in transformers'
    layout (ComfyUI's clip_l / clip_g / t5xxl), and a configs-only copy of the folder; built once per session."""
    from diffusers import StableDiffusion3Pipeline
    from safetensors.torch import save_file

    from lorahub_cli.archs import ldm
    from lorahub_cli.checkpoints.original import to_original
    from tests.fixtures.pipelines import make_tiny_sd3_pipeline

    root = tmp_path_factory.mktemp("tiny-sd3")
    folder = make_tiny_sd3_pipeline(root / "folder")
    pipe = StableDiffusion3Pipeline.from_pretrained(folder, local_files_only=True)
    out = {"folder": folder, "configs": configs_only(folder, root / "configs")}
    files = {"transformer": to_original({"transformer": pipe.transformer.state_dict()}, "sd3"),
             "vae": {k[len(ldm.VAE_ROOT):]: v for k, v in to_original({"vae": pipe.vae.state_dict()}, "sd3").items()},
             "text_encoder": pipe.text_encoder.state_dict(), "text_encoder_2": pipe.text_encoder_2.state_dict(),
             "text_encoder_3": {k: v for k, v in pipe.text_encoder_3.state_dict().items()
                                if k != "encoder.embed_tokens.weight"}}
    for name, tensors in files.items():
        out[name] = root / f"{name}.safetensors"
        save_file({k: v.contiguous() for k, v in tensors.items()}, out[name])
    return out
