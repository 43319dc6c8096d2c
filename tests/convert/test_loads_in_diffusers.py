"""Converted files load into real SD1.5 / SD2.1 / SDXL pipelines (real configs, meta-built weights) with every
module an active adapter layer holding the file's weights and scale; the legacy sources do not (see proof.py)."""

from __future__ import annotations

import json

import pytest

from lorahub_cli.convert import convert_file
from tests.convert.conftest import thin, write_mixed_kohya
from tests.convert.pipelines import build_components, load_lora_weights
from tests.convert.proof import ERROR, MISSCALED, NOOP, SAME, assert_loaded_as, prove_it_loads
from tests.convert.reference import source_deltas
from tests.fixtures.adapters import write_adapter

pytest.importorskip("peft")

# (alias, fixture format, write_adapter kwargs, module sample stride, what plain diffusers does with the source)
CASES = [
    ("sd15", "attn-procs-bin", {"rank": 4}, 3, NOOP),
    ("sd15", "diffusers-unprefixed", {"rank": 4, "alpha": 8.0}, 3, NOOP),
    ("sd15", "peft", {"rank": 8, "alpha": 16.0, "components": ["text_encoder"]}, 2, NOOP),
    ("sd15", "locon", {"rank": 4, "alpha": 2.0}, 13, SAME),
    ("sd21", "kohya", {"rank": 4, "alpha": 1.0}, 5, SAME),
]
SUFFIX = {"attn-procs-bin": ".bin"}


@pytest.mark.parametrize("alias, fmt, kw, every, legacy", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_converted_fixture_loads_and_the_source_does_not(tmp_path, alias, fmt, kw, every, legacy):
    src = thin(write_adapter(tmp_path / f"src{SUFFIX.get(fmt, '.safetensors')}", alias, fmt, **kw), every)
    component = (kw.get("components") or ["unet"])[0]
    peft = json.loads((tmp_path / "adapter_config.json").read_text()) if fmt == "peft" else None
    group_fmt = {"attn-procs-bin": "attn-procs", "locon": "kohya"}.get(fmt, fmt)
    want = source_deltas(src, alias, group_fmt, component=component, peft_config=peft)
    prove_it_loads(src, alias, want, legacy, tmp_path)


def test_per_module_ranks_and_alphas_reach_peft(tmp_path):
    """A kohya file with three kinds of module (rank 4 alpha 2, rank 2 alpha 1, alpha 0.3): after conversion
    peft builds each layer with its own rank and scaling. diffusers 0.42.1 reading the kohya file itself gets
    the factors right but not every scale (its alpha_pattern keys match no module), which is why the converter
    maps alphas with its own code."""
    alias = "sd15"
    src = thin(write_mixed_kohya(tmp_path / "mixed.safetensors", alias, dtype="float16"), 7)
    want = source_deltas(src, alias, "kohya")
    assert len({(d.shape[0], s) for d, _, s in want.values()}) == 3
    prove_it_loads(src, alias, want, MISSCALED, tmp_path)


def test_sdxl_kohya_output_loads_in_diffusers_with_the_source_weights(tmp_path):
    """--to kohya for SDXL writes kohya's SAI U-Net names and lora_te1_ / lora_te2_: diffusers' own kohya reader
    (which remaps SAI blocks with the U-Net config) must find every module of the source with its weights."""
    src = thin(write_adapter(tmp_path / "src.safetensors", "sdxl", "diffusers-old", rank=4,
                             components=["unet", "text_encoder", "text_encoder_2"]), 11)
    want = source_deltas(src, "sdxl", "diffusers-old")
    assert {k.split(".")[0] for k in want} == {"unet", "text_encoder", "text_encoder_2"}
    as_kohya = convert_file(src, tmp_path / "src.kohya.safetensors", to="kohya").dst
    assert_loaded_as(load_lora_weights("sdxl", build_components("sdxl"), as_kohya), want)


def test_a_cloneofsimo_pair_of_pickles_loads_as_one_adapter(tmp_path):
    unet = write_adapter(tmp_path / "lora.pt", "sd15", "cloneofsimo-pt", rank=4, dtype="float16")
    text = write_adapter(tmp_path / "lora.text_encoder.pt", "sd15", "cloneofsimo-pt", rank=4, dtype="float16",
                         components=["text_encoder"], seed=3)
    want = source_deltas(unet, "sd15", "cloneofsimo-pt", extra=text)
    assert {k.split(".")[0] for k in want} == {"unet", "text_encoder"}
    prove_it_loads(unet, "sd15", want, ERROR, tmp_path)


@pytest.mark.parametrize("alias, fmt, only, legacy", [
    ("sd3", "kohya-sd3", "joint_blocks_0_", NOOP),       # SD3's loader has no kohya reader: keys ignored
    ("flux", "kohya-flux", "double_blocks_0_|single_blocks_0_", SAME),
])
def test_fused_dit_layers_load_as_their_diffusers_parts(tmp_path, alias, fmt, only, legacy):
    """kohya's fused qkv / linear1 of SD3 and Flux become the diffusers layers they stand for, each with its rows
    of the up matrix and the shared down, and load into the real transformer with the file's scale."""
    src = thin(write_adapter(tmp_path / "src.safetensors", alias, fmt, rank=4, alpha=2.0), only=only)
    want = source_deltas(src, alias, fmt)
    assert any(k.endswith(".attn.to_v") for k in want)
    prove_it_loads(src, alias, want, legacy, tmp_path)
