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
