"""Inputs the converter must refuse, each with its stable code, leaving nothing behind."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from lorahub_cli.convert import convert_file
from lorahub_cli.errors import LoraError
from tests.fixtures.adapters import make_adapter, write_adapter


def _refused(tmp_path, src, code, **kw) -> LoraError:
    before = {p.name for p in tmp_path.iterdir()}
    with pytest.raises(LoraError) as info:
        convert_file(src, tmp_path / "out.safetensors", **kw)
    assert info.value.code == code, info.value.message
    assert {p.name for p in tmp_path.iterdir()} == before
    return info.value


def test_unimplemented_lycoris_networks_name_themselves(tmp_path):
    """LoHa and LoKr convert exactly now (tests/lycoris); OFT is named in a not-supported error."""
    tensors = {"lora_unet_down_blocks_0_attentions_0_proj_in.oft_blocks": torch.zeros(4, 80, 80),
               "lora_unet_down_blocks_0_attentions_0_proj_in.alpha": torch.tensor(1.0)}
    save_file(tensors, str(tmp_path / "oft.safetensors"), metadata={"ss_base_model_version": "sd_v1"})
    err = _refused(tmp_path, tmp_path / "oft.safetensors", "not-supported")
    assert "OFT" in err.message


def test_dora_magnitudes_need_a_base(tmp_path):
    tensors, meta = make_adapter("sd15", "kohya", rank=4, components=["unet"])
    stem = next(k for k in tensors if k.endswith(".lora_up.weight"))[: -len(".lora_up.weight")]
    tensors[f"{stem}.dora_scale"] = torch.ones(tensors[f"{stem}.lora_up.weight"].shape[0], 1)
    save_file(tensors, str(tmp_path / "dora.safetensors"), metadata={"format": "pt", **meta})
    err = _refused(tmp_path, tmp_path / "dora.safetensors", "needs-base")
    assert "DoRA" in err.message and "base" in err.message


def test_kohya_target_is_for_sd_families_only(tmp_path):
    src = write_adapter(tmp_path / "flux.safetensors", "flux", "kohya-flux", rank=2)
    _refused(tmp_path, src, "unsupported-conversion", to="kohya")


def test_modules_that_map_nowhere_are_named(tmp_path):
    tensors, meta = make_adapter("sd15", "kohya", rank=4, components=["unet"])
    tensors["lora_unet_mid_block_made_up_layer.lora_down.weight"] = torch.zeros(4, 1280)
    tensors["lora_unet_mid_block_made_up_layer.lora_up.weight"] = torch.zeros(1280, 4)
    save_file(tensors, str(tmp_path / "odd.safetensors"), metadata={"format": "pt", **meta})
    err = _refused(tmp_path, tmp_path / "odd.safetensors", "unmapped-modules")
    assert "lora_unet_mid_block_made_up_layer" in err.message


def test_what_is_not_a_lora_keeps_the_inspection_code(tmp_path):
    torch.save({"<krk>": torch.zeros(768)}, tmp_path / "embedding.pt")
    _refused(tmp_path, tmp_path / "embedding.pt", "textual-inversion")
    (tmp_path / "page.safetensors").write_text("<!DOCTYPE html><html>not a model</html>" * 10)
    _refused(tmp_path, tmp_path / "page.safetensors", "not-an-adapter-file")


def test_the_source_is_never_the_output(tmp_path):
    src = write_adapter(tmp_path / "a.safetensors", "sd15", "diffusers", rank=2)
    with pytest.raises(LoraError) as info:
        convert_file(src, src, to="safetensors", force=True)
    assert info.value.code == "usage"


def test_two_names_for_one_layer_are_not_silently_merged(tmp_path):
    """kohya accepts SDXL U-Net layers under SAI and diffusers names; a file with both for one layer is refused."""
    from lorahub_cli.archs import module_table
    from lorahub_cli.archs.naming import kohya_name, sai_unet_names
    from tests.fixtures.adapters import FIXTURE_CACHE

    table = module_table("sdxl", "unet", cache_dir=FIXTURE_CACHE)
    layer = "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"
    tensors = {}
    for name in (layer, sai_unet_names(table)[layer]):
        stem = kohya_name("lora_unet", name)
        tensors[f"{stem}.lora_down.weight"] = torch.randn(2, table[layer].in_features)
        tensors[f"{stem}.lora_up.weight"] = torch.randn(table[layer].out_features, 2)
    save_file(tensors, str(tmp_path / "twice.safetensors"),
              metadata={"format": "pt", "ss_base_model_version": "sdxl_base_v1-0"})
    err = _refused(tmp_path, tmp_path / "twice.safetensors", "unsupported-conversion")
    assert "both adapt" in err.message and layer in err.message


def _kohya_sd15(**changes):
    tensors, meta = make_adapter("sd15", "kohya", rank=4, components=["unet"])
    stem = next(k for k in tensors if k.endswith(".lora_up.weight"))[: -len(".lora_up.weight")]
    for role, value in changes.items():
        tensors[f"{stem}.{role}"] = value(tensors[f"{stem}.{role}"])
    return tensors, meta


@pytest.mark.parametrize("change, code", [
    ({"lora_up.weight": lambda t: torch.zeros(t.shape[0], 3)}, "not-a-lora"),         # rank 3 up, rank 4 down
    ({"lora_up.weight": lambda t: torch.zeros(t.shape[0], 4, 3, 3)}, "not-a-lora"),   # up with a kernel
    ({"alpha": lambda t: torch.zeros(0)}, "not-a-lora"),                              # no alpha value at all
    ({"alpha": lambda t: torch.tensor(float("nan"))}, "non-finite"),
])
def test_pairs_that_are_not_scale_up_down_are_refused_with_a_code(tmp_path, change, code):
    tensors, meta = _kohya_sd15(**change)
    save_file(tensors, str(tmp_path / "odd.safetensors"), metadata={"format": "pt", **meta})
    _refused(tmp_path, tmp_path / "odd.safetensors", code)


@pytest.mark.parametrize("config", [
    "not json",
    '{"unet.r": 4, "unet.lora_alpha": "abc"}',
    '{"unet.r": "x", "unet.lora_alpha": 8}',
    '{"unet.r": 0, "unet.lora_alpha": 8}',
    '{"unet.r": 4, "unet.lora_alpha": {"x": 1}}',
    '{"unet.r": 4, "unet.lora_alpha": 8, "unet.alpha_pattern": {"a[": 2}}',
    '{"unet.r": 4, "unet.lora_alpha": 8, "unet.rank_pattern": [1]}',
])
def test_an_unusable_lora_config_is_a_warning_and_scale_one(tmp_path, config):
    from lorahub_cli.convert.load import load_adapter

    tensors, meta = make_adapter("sd15", "diffusers", rank=4, components=["unet"])
    save_file(tensors, str(tmp_path / "a.safetensors"), metadata={**meta, "lora_adapter_metadata": config})
    result = convert_file(tmp_path / "a.safetensors", tmp_path / "out.safetensors")
    assert any("alphas taken as the ranks" in w for w in result.warnings), result.warnings
    assert {p.scale for p in load_adapter(result.dst).modules.values()} == {1.0}
