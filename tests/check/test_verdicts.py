"""Verdicts and coverage of generated adapters against real base configs (as folders and as aliases)."""

from __future__ import annotations

import pytest

from lorahub_cli.compat.engine import check
from lorahub_cli.compat.model import REASONS
from lorahub_cli.convert.keymap import map_layout
from lorahub_cli.inspect import inspect_file_full
from tests.check.conftest import ALIASES, FAMILY
from tests.fixtures.adapters import write_adapter


def _layout(path):
    report, _raw, layout = inspect_file_full(path, hash=False)
    return report, layout


@pytest.mark.parametrize("adapter", ["sd15", "sd21", "sdxl", "sd15-diffusers", "sd21-diffusers", "sdxl-diffusers",
                                     "sd15-locon"])
@pytest.mark.parametrize("given_as", ["folder", "alias"])
def test_diagonal_is_compatible_with_full_coverage(home, adapters, base_folders, adapter, given_as):
    alias = adapter.split("-")[0]
    base = str(base_folders[alias]) if given_as == "folder" else alias
    report, layout = _layout(adapters[adapter])
    result = check(str(adapters[adapter]), base)
    assert result.verdict == "compatible", result.summary
    assert result.total == len(layout.modules) > 0 and result.matched == result.total
    assert set(result.per_component) == set(report.components)
    assert all(c.matched == c.total > 0 for c in result.per_component.values())
    assert result.unmatched == [] and result.family.match is True
    assert result.family.adapter == result.family.base == FAMILY[alias]


@pytest.mark.parametrize(("adapter", "base"), [(a, b) for a in ALIASES for b in ALIASES if a != b])
def test_off_diagonal_is_incompatible_with_reasons(home, adapters, base_folders, adapter, base):
    result = check(str(adapters[adapter]), str(base_folders[base]))
    assert result.verdict == "incompatible", result.summary
    assert result.per_component["unet"].matched == 0
    assert result.family.match is False and FAMILY[adapter] in result.summary and FAMILY[base] in result.summary
    assert len(result.unmatched) == result.total - result.matched
    assert {u.reason for u in result.unmatched} <= set(REASONS)
    assert all(u.detail for u in result.unmatched)


def test_sd1_on_sdxl_says_why(home, adapters, base_folders):
    result = check(str(adapters["sd15"]), str(base_folders["sdxl"]))
    assert result.verdict == "incompatible" and "U-Net" in result.summary
    by_key = {u.key: u for u in result.unmatched}
    # SDXL has no attention at the 320-channel level; its cross-attention reads 2048, not CLIP-L's 768
    first = by_key["lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"]
    assert first.reason == "missing-module"
    to_k = by_key["lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k"]
    assert to_k.reason == "shape-mismatch" and "768" in to_k.detail and "2048" in to_k.detail
    # same name and shape in SDXL's U-Net, but trained against SD1's weights: not applied
    attn1 = by_key["lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"]
    assert attn1.reason == "family-mismatch"
    te = result.per_component["text_encoder"]
    assert te.matched == te.total > 0
    assert any("CLIP ViT-L" in note for note in result.notes)


def test_text_encoder_only_sd1_on_sdxl_is_partial(home, adapters, base_folders):
    result = check(str(adapters["sd15-te"]), str(base_folders["sdxl"]))
    assert result.verdict == "partial"
    assert list(result.per_component) == ["text_encoder"]
    assert result.matched == result.total > 0 and result.unmatched == []
    assert result.family.adapter == "sd1" and result.family.base == "sdxl" and result.family.match is False
    assert "text encoder" in result.summary
    assert any("CLIP ViT-L" in note and "text_encoder" in note for note in result.notes)
    # on SD2 the text encoder is OpenCLIP ViT-H, 1024 wide: nothing fits
    sd2 = check(str(adapters["sd15-te"]), str(base_folders["sd21"]))
    assert sd2.verdict == "incompatible" and {u.reason for u in sd2.unmatched} == {"shape-mismatch"}


def test_kohya_sdxl_input_blocks_names_map_fully(home, adapters, base_folders):
    _report, layout = _layout(adapters["sdxl"])
    sai = [m.key for m in layout.modules if "input_blocks" in m.key or "output_blocks" in m.key]
    assert sai and not any("down_blocks" in m.key for m in layout.modules)
    result = check(str(adapters["sdxl"]), str(base_folders["sdxl"]))
    assert result.verdict == "compatible" and result.matched == result.total == len(layout.modules)
    # the same layers spelled the diffusers way give the same coverage
    other = check(str(adapters["sdxl-diffusers-names"]), str(base_folders["sdxl"]))
    assert other.verdict == "compatible" and other.total == result.total


def test_sd1_on_sd2_names_match_but_shapes_and_weights_do_not(home, adapters, base_folders):
    result = check(str(adapters["sd15-diffusers"]), "sd21")
    reasons = {u.key: u for u in result.unmatched}
    to_k = reasons["unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"]
    assert to_k.reason == "shape-mismatch" and "768" in to_k.detail and "1024" in to_k.detail
    assert reasons["unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"].reason == "family-mismatch"
    assert result.verdict == "incompatible"


def test_flux_fused_layers_apply_to_flux_only(home, adapters):
    _report, layout = _layout(adapters["flux"])
    assert any("double_blocks" in m.key and m.key.endswith("qkv") for m in layout.modules)
    result = check(str(adapters["flux"]), "flux")
    assert result.verdict == "compatible" and result.matched == len(layout.modules)
    on_sdxl = check(str(adapters["flux"]), "sdxl")
    assert on_sdxl.verdict == "incompatible" and {u.reason for u in on_sdxl.unmatched} == {"missing-component"}


def test_check_counts_exactly_what_the_key_normalisation_maps(home, adapters, tmp_path):
    """check and convert share the keymap: a layer it cannot name is reported with the keymap's own reason."""
    from safetensors.torch import load_file, save_file

    path = adapters["sd15"]
    tensors = load_file(str(path))
    stem = "lora_unet_down_blocks_0_attentions_0_not_a_layer"
    for suffix, source in (("lora_down.weight", "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight"),
                           ("lora_up.weight", "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_up.weight")):
        tensors[f"{stem}.{suffix}"] = tensors[source].clone()
    odd = tmp_path / "odd.safetensors"
    save_file(tensors, str(odd))
    report, layout = _layout(odd)
    keymap = map_layout(layout, report.family)
    result = check(str(odd), "sd15")
    matched = {m.key for m in layout.modules} - {u.key for u in result.unmatched}
    assert matched == set(keymap.mapped)
    (only,) = result.unmatched
    assert only.key == stem and only.reason == "unmapped" and only.detail == keymap.unmapped[stem]
    assert result.verdict == "partial" and result.matched == result.total - 1


def test_adapter_family_unknown_is_judged_on_names_and_shapes(home, tmp_path):
    # an SDXL first-text-encoder LoRA alone cannot be told from an SD1/SD3/Flux CLIP-L one
    path = write_adapter(tmp_path / "te1.safetensors", "sdxl", "kohya", components=["text_encoder"])
    assert _layout(path)[0].family == "unknown"
    result = check(str(path), "sdxl")
    assert result.verdict == "compatible" and result.family.match is None
    assert any("unknown" in note for note in result.notes)


def test_ecosystem_note_when_the_card_names_another_checkpoint_of_the_family(home, tmp_path):
    def adapter(name: str, trained_on: str):
        return write_adapter(tmp_path / name, "sd15", "kohya", metadata={"ss_sd_model_name": trained_on})

    other = check(str(adapter("v14.safetensors", "CompVis/stable-diffusion-v1-4")), "sd15")
    assert other.verdict == "compatible"
    (note,) = other.notes
    assert "CompVis/stable-diffusion-v1-4" in note and "runwayml/stable-diffusion-v1-5" in note and "usually fine" in note
    same = check(str(adapter("v15.safetensors", "runwayml/stable-diffusion-v1-5")), "sd15")
    assert same.verdict == "compatible" and same.notes == []
    # across families there is nothing to reassure about: no such note
    assert not any("usually fine" in n for n in check(str(adapter("x.safetensors", "CompVis/stable-diffusion-v1-4")),
                                                       "sdxl").notes)
