"""Real SD1.5 files (diffusers, kohya, legacy attn-procs, cloneofsimo) name real SD1.5 layers: their pairs land on
the modules of an SD1.5 U-Net and CLIP text encoder built from the packaged configs on the meta device (real
names and shapes, no weights), through the family path the tiny tests do not take."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from lorahub_cli.pipeline.adapters import ResolvedAdapter, check, load_pairs
from lorahub_cli.pipeline.stack import _fits, live_layer
from tests.fixtures.adapters import write_adapter

CONFIGS = Path(__file__).resolve().parents[2] / "lorahub_cli" / "archs" / "configs" / "sd15"


@pytest.fixture(scope="module")
def sd15_modules():
    import torch
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(json.loads((CONFIGS / "unet" / "config.json").read_text()))
        text = CLIPTextModel(CLIPTextConfig(**json.loads((CONFIGS / "text_encoder" / "config.json").read_text())))
    return SimpleNamespace(unet=unet, text_encoder=text)


@pytest.mark.parametrize("fmt, alpha", [("diffusers", 8.0), ("kohya", 2.0), ("attn-procs", None),
                                        ("cloneofsimo", None)])
def test_sd15_files_land_on_sd15_layers(sd15_modules, tmp_path, fmt, alpha):
    from lorahub_cli.bases import resolve_base
    from lorahub_cli.inspect import inspect_file

    path = write_adapter(tmp_path / "a.safetensors", "sd15", fmt, rank=4, alpha=alpha, seed=1)
    report = inspect_file(path, hash=False)
    from lorahub_cli.inspect.hashing import sha256_file

    # the real sha256: the bytes read are verified against what the adapter claims
    adapter = ResolvedAdapter(ref=str(path), name="a", path=path, sha256=sha256_file(path), weight=1.0,
                              in_library=False)
    base = resolve_base("sd15")
    assert check(adapter, base).verdict == "compatible"
    pairs = load_pairs(adapter, base)
    assert len(pairs.modules) == report.n_modules and pairs.components() == sorted(report.components)
    for key, pair in pairs.modules.items():
        layer = live_layer(sd15_modules, key)
        assert layer is not None and _fits(layer.weight, pair), key
    scales = {pair.scale for pair in pairs.modules.values()}
    assert scales == {1.0 if alpha is None else alpha / 4}
