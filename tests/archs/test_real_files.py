"""Fixtures against the outside world: real files from the corpus, and diffusers' own loaders."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch

from tests.fixtures.adapters import make_adapter, write_adapter


def header_shapes(path: Path) -> tuple[dict[str, tuple[int, ...]], dict[str, str], set[str]]:
    """(shapes, metadata, dtypes) from a safetensors header alone (works on truncated files too)."""
    with open(path, "rb") as fh:
        (length,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(length))
    meta = header.pop("__metadata__", {})
    return {k: tuple(v["shape"]) for k, v in header.items()}, meta, {v["dtype"] for v in header.values()}


def shapes(tensors: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in tensors.items()}


# corpus file -> the fixture that must carry exactly its keys and shapes
EXACT = [
    ("cloneofsimo_analog_svd_rank4.safetensors", "sd15", "cloneofsimo", {"dtype": "float16"}),
    ("wellch4n_pokemon_attnprocs.safetensors", "sd15", "attn-procs", {}),
    ("haseebae_attnprocs_unetprefix.safetensors", "sd15", "attn-procs", {"unet_prefix": True}),
    ("jettooss_diffusers_old.safetensors", "sd15", "diffusers-old", {"components": ["unet"]}),
    ("justinjiang_diffusers_old_sd21.safetensors", "sd21", "diffusers-old", {"components": ["unet"]}),
    ("m000lie_flux_kohya_TRUNCATED.safetensors", "flux", "kohya-flux", {"rank": 32, "dtype": "bfloat16"}),
]
# corpus files that adapt a subset of our "attn" targets (q/k/v without out, or q/v only)
SUBSET = [
    ("faithsang_diffusers_peft_unprefixed.safetensors", "sd15", "diffusers-unprefixed", {}),
    ("hansjohn_sd15_text_encoder_peft.safetensors", "sd15", "peft", {"components": ["text_encoder"], "rank": 8}),
]


@pytest.mark.parametrize("name, family, fmt, kw", EXACT, ids=[e[0] for e in EXACT])
def test_fixture_reproduces_real_file(corpus_dir, name, family, fmt, kw):
    real, real_meta, _ = header_shapes(corpus_dir / name)
    tensors, meta = make_adapter(family, fmt, **kw)
    assert shapes(tensors) == real
    if fmt == "cloneofsimo":   # class lists and per-position ranks, exactly as lora_diffusion wrote them
        assert meta == real_meta


def test_cloneofsimo_positions_follow_the_real_walk(corpus_dir):
    """Per index: GEGLU (320->2560) at 4, attn2 k/v reading 768 at 6-7, mid block last (formats.md §4)."""
    real, _, dtypes = header_shapes(corpus_dir / "cloneofsimo_analog_svd_rank4.safetensors")
    assert dtypes == {"F16"}
    tensors, _ = make_adapter("sd15", "cloneofsimo", dtype="float16")
    for i in range(144):
        assert tuple(tensors[f"unet:{i}:down"].shape) == real[f"unet:{i}:down"], i
        assert tuple(tensors[f"unet:{i}:up"].shape) == real[f"unet:{i}:up"], i
    assert real["unet:4:up"] == (2560, 4) and real["unet:6:down"] == (4, 768) and real["unet:143:down"] == (4, 1280)


@pytest.mark.parametrize("name, family, fmt, kw", SUBSET, ids=[e[0] for e in SUBSET])
def test_fixture_covers_real_file(corpus_dir, name, family, fmt, kw):
    real, _, _ = header_shapes(corpus_dir / name)
    ours = shapes(make_adapter(family, fmt, **kw)[0])
    assert {k: ours.get(k) for k in real} == real


def test_pickled_fixtures_match_real_pickles(corpus_dir):
    listed = torch.load(corpus_dir / "wchesley_lora_weight.pt", map_location="cpu", weights_only=True)
    ours = make_adapter("sd15", "cloneofsimo-pt")[0]
    assert [tuple(t.shape) for t in listed] == [tuple(t.shape) for t in ours.values()]
    procs = torch.load(corpus_dir / "catundchat_sd15_attnprocs.bin", map_location="cpu", weights_only=True)
    assert shapes(procs) == shapes(make_adapter("sd15", "attn-procs-bin")[0])


# --- diffusers reads the fixtures as the formats they claim to be --------------------------------------
def peft_modules(state_dict: dict[str, torch.Tensor], prefix: str) -> dict[str, tuple[tuple, tuple]]:
    """diffusers' own conversion to PEFT names: {module: (lora_A shape, lora_B shape)}."""
    from diffusers.utils import convert_unet_state_dict_to_peft

    part = {k[len(prefix) + 1:]: v for k, v in state_dict.items() if k.startswith(prefix + ".")}
    peft = convert_unet_state_dict_to_peft(part)
    modules = {k.rsplit(".lora_", 1)[0] for k in peft}
    return {m: (tuple(peft[f"{m}.lora_A.weight"].shape), tuple(peft[f"{m}.lora_B.weight"].shape)) for m in modules}


def assert_on_table(modules: dict[str, tuple[tuple, tuple]], table: dict) -> None:
    for name, (a, b) in modules.items():
        layer = table[name]
        assert (a[1], b[0]) == (layer.in_features, layer.out_features), name


def test_diffusers_reads_sd15_diffusers_fixture_and_its_metadata(tmp_path):
    from diffusers import StableDiffusionPipeline

    path = write_adapter(tmp_path / "pytorch_lora_weights.safetensors", "sd15", "diffusers", alpha=8)
    state_dict, alphas, metadata = StableDiffusionPipeline.lora_state_dict(str(path), return_lora_metadata=True)
    written = make_adapter("sd15", "diffusers", alpha=8)[0]
    assert shapes(state_dict) == shapes(written)
    assert metadata["unet.lora_alpha"] == 8 and metadata["text_encoder.r"] == 4
    assert "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k" in metadata["unet.target_modules"]


@pytest.mark.parametrize("fmt, targets", [("kohya", "kohya"), ("locon", "conv")])
def test_diffusers_converts_sd15_kohya_fixture_onto_the_table(tmp_path, fmt, targets, table):
    from diffusers import StableDiffusionPipeline

    path = write_adapter(tmp_path / "k.safetensors", "sd15", fmt, targets=targets, alpha=2)
    state_dict, alphas = StableDiffusionPipeline.lora_state_dict(str(path))   # raises on keys it cannot rename
    unet = peft_modules(state_dict, "unet")
    assert len(unet) == (192 if fmt == "kohya" else len(make_adapter("sd15", fmt, components=["unet"])[0]) // 3)
    assert_on_table(unet, table("sd15", "unet"))
    assert set(alphas.values()) == {2.0}


@pytest.mark.parametrize("naming", ["sai", "diffusers"])
def test_diffusers_maps_sdxl_kohya_fixture_onto_the_table(tmp_path, naming, table):
    from diffusers import StableDiffusionXLPipeline
    from diffusers.configuration_utils import FrozenDict

    from lorahub_cli.archs import config_dir

    unet_config = FrozenDict(json.loads((config_dir("sdxl") / "unet" / "config.json").read_text()))
    path = write_adapter(tmp_path / "x.safetensors", "sdxl", "kohya", targets="kohya", sdxl_naming=naming)
    state_dict, _ = StableDiffusionXLPipeline.lora_state_dict(str(path), unet_config=unet_config)
    unet = peft_modules(state_dict, "unet")
    assert len(unet) == 722
    assert_on_table(unet, table("sdxl", "unet"))
    assert sum(k.startswith("text_encoder_2.") for k in state_dict) == 192 * 2


def test_diffusers_splits_flux_kohya_fixture_onto_the_table(tmp_path, table):
    from diffusers import FluxPipeline

    path = write_adapter(tmp_path / "f.safetensors", "flux", "kohya-flux", rank=2)
    state_dict = FluxPipeline.lora_state_dict(str(path))
    dit = table("flux", "transformer")
    modules = {k[len("transformer."):].rsplit(".lora_", 1)[0] for k in state_dict}
    assert len(modules) == 19 * 14 + 38 * 6   # each qkv splits into 3, linear1 into q, k, v, proj_mlp
    for key, value in state_dict.items():
        layer = dit[key[len("transformer."):].rsplit(".lora_", 1)[0]]
        assert value.shape[1 if ".lora_A." in key else 0] == (layer.in_features if ".lora_A." in key else layer.out_features)


@pytest.mark.parametrize("fmt, kw", [("diffusers-old", {}),
                                     ("attn-procs", {"components": ["unet", "text_encoder"], "unet_prefix": True})])
def test_diffusers_recognises_old_text_encoder_layouts(tmp_path, fmt, kw, table):
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers, convert_state_dict_to_peft

    path = write_adapter(tmp_path / "old.safetensors", "sd15", fmt, **kw)
    state_dict, _ = StableDiffusionPipeline.lora_state_dict(str(path))
    te = {k[len("text_encoder."):]: v for k, v in state_dict.items() if k.startswith("text_encoder.")}
    peft = convert_state_dict_to_peft(convert_state_dict_to_diffusers(te))   # raises on an unknown layout
    modules = {k.rsplit(".lora_", 1)[0] for k in peft}
    assert len(modules) == 48 and modules <= set(table("sd15", "text_encoder"))
    assert len(peft_modules(state_dict, "unet")) == 128
