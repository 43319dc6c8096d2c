"""Fixtures for `lora check`: real base configs in plain folders, generated adapters, a seeded home.

The Hub fixtures (a local Hub-compatible server, HF_* pointed at it) are re-exported from tests/hub.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lorahub_cli.archs import base_components, config_dir, module_table
from tests.fixtures.adapters import FIXTURE_CACHE, kohya_metadata, write_adapter
from tests.hub.conftest import hf_cache, hf_env, hub, hub_server, offline  # noqa: F401  (re-exported fixtures)

ALIASES = ("sd15", "sd21", "sdxl")
FAMILY = {"sd15": "sd1", "sd21": "sd2", "sdxl": "sdxl", "flux": "flux"}


@pytest.fixture(scope="session")
def warm_tables() -> Path:
    """The bases' module tables, built once into the fixture cache (only a first run ever imports torch)."""
    for alias in (*ALIASES, "flux"):
        for component in base_components(alias):
            module_table(alias, component, cache_dir=FIXTURE_CACHE)
    return FIXTURE_CACHE


@pytest.fixture
def home(tmp_home: Path, warm_tables: Path) -> Path:
    """A fresh LORAHUB_HOME whose module-table cache is seeded, so no test pays for a meta-device build."""
    shutil.copytree(warm_tables, tmp_home / "cache" / "modules")
    return tmp_home


@pytest.fixture(scope="session")
def base_folders(tmp_path_factory) -> dict[str, Path]:
    """Each base's real configs (model_index.json + component config.json, no weights) in a plain folder."""
    root = tmp_path_factory.mktemp("bases")
    return {alias: Path(shutil.copytree(config_dir(alias), root / f"my-{alias}")) for alias in ALIASES}


@pytest.fixture(scope="session")
def adapters(tmp_path_factory, warm_tables) -> dict[str, Path]:
    """Generated adapters with each base's real layer names and shapes.

    sd15 / sd21 / sdxl: kohya with the text encoder(s) (SDXL U-Net in SAI input_blocks names);
    *-diffusers: PEFT keys; sdxl-diffusers-names: kohya with diffusers down_blocks names;
    sd15-te: an SD1 text-encoder-only kohya LoRA; flux: kohya's BFL fused names.
    """
    root = tmp_path_factory.mktemp("adapters")
    specs = {
        "sd15": ("sd15", "kohya", {"metadata": kohya_metadata("sd15", 4)}),
        "sd21": ("sd21", "kohya", {"metadata": kohya_metadata("sd21", 4)}),
        "sdxl": ("sdxl", "kohya", {"metadata": kohya_metadata("sdxl", 4)}),
        "sd15-diffusers": ("sd15", "diffusers", {}),
        "sd21-diffusers": ("sd21", "diffusers", {}),
        "sdxl-diffusers": ("sdxl", "diffusers", {}),
        "sdxl-diffusers-names": ("sdxl", "kohya", {"sdxl_naming": "diffusers"}),
        "sd15-te": ("sd15", "kohya", {"components": ["text_encoder"]}),
        "sd15-locon": ("sd15", "locon", {}),
        "flux": ("flux", "kohya-flux", {}),
    }
    return {name: write_adapter(root / f"{name}.safetensors", family, fmt, **kw)
            for name, (family, fmt, kw) in specs.items()}
