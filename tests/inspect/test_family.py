"""Base-family detection: shapes first, then header metadata, then cards; conflicts become warnings."""

from __future__ import annotations

import pytest

from lorahub_cli.inspect.describe import describe
from lorahub_cli.inspect.facts import Facts, FamilyClaim, metadata_facts
from lorahub_cli.inspect.family import detect_family, family_from_shapes
from lorahub_cli.inspect.layout import detect_layout
from tests.inspect.test_layout import (
    _unet_transformers, attn_procs_keys, clip_text_modules, cloneofsimo_keys, diffusers_keys, diffusers_old_keys,
    flux_diffusers_modules, flux_kohya_modules, kohya_keys, make_raw, sd3_diffusers_modules, sd3_kohya_modules,
    t5_modules, to_sgm, unet_attention_modules,
)


def family_of(keys, metadata=None, claims=()):
    raw = make_raw(keys, metadata)
    facts = metadata_facts(raw.metadata)
    facts.family_claims += list(claims)
    return detect_family(raw, detect_layout(raw), facts)


CONTEXT_WORDS = {"sd1": "768", "sd2": "1024", "sdxl": "2048"}
UNET_WRITERS = {
    "diffusers": lambda mods: diffusers_keys(mods, "unet."),
    "diffusers-unprefixed": lambda mods: diffusers_keys(mods, ""),
    "diffusers-old": lambda mods: diffusers_old_keys(mods, "unet."),
    "attn-procs": lambda mods: attn_procs_keys([m for m in mods if ".attn" in m[0]], ""),
    "peft": lambda mods: {f"base_model.model.{k}": v for k, v in diffusers_keys(mods, "").items()},
    "kohya": lambda mods: kohya_keys(mods),
}


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
@pytest.mark.parametrize("writer", sorted(UNET_WRITERS))
def test_unet_family_from_cross_attention_context_width(family, writer):
    fam, evidence, warnings = family_of(UNET_WRITERS[writer](unet_attention_modules(family)))
    assert fam == family
    assert "attn2.to_k/to_v" in evidence and CONTEXT_WORDS[family] in evidence
    assert warnings == []


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_cloneofsimo_positional_family_from_downs_that_are_no_unet_width(family):
    mods = unet_attention_modules(family, only=("to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj"))
    fam, evidence, _ = family_of(cloneofsimo_keys(mods))
    assert fam == family
    assert CONTEXT_WORDS[family] in evidence and "not a UNet channel width" in evidence


def test_sdxl_kohya_sgm_names_without_cross_attention_by_block_structure():
    # only self-attention: no context width to read, but input_blocks 4/5/7/8 and 10 transformer blocks say SDXL
    mods = to_sgm(unet_attention_modules("sdxl", ff=False, only=(".attn1.to_q", ".attn1.to_v")))
    fam, evidence, _ = family_of(kohya_keys(mods))
    assert fam == "sdxl"
    assert "transformer_blocks index up to 9" in evidence


def test_sdxl_first_transformer_block_only_by_block_positions():
    mods = [m for m in to_sgm(unet_attention_modules("sdxl", ff=False, only=(".attn1.to_q",)))
            if ".transformer_blocks.0." in m[0]]
    fam, evidence, _ = family_of(kohya_keys(mods))
    assert fam == "sdxl" and "input_blocks 4/5/7/8" in evidence


def test_sd1_or_sd2_self_attention_only_needs_metadata_to_choose():
    keys = kohya_keys(unet_attention_modules("sd2", ff=False, only=(".attn1.to_q",)))
    fam, evidence, _ = family_of(keys)
    assert fam == "unknown" and "SD1 from SD2" in evidence
    fam, evidence, warnings = family_of(keys, {"ss_v2": "True", "ss_base_model_version": "sd_v2"})
    assert fam == "sd2" and "metadata:" in evidence and warnings == []


def test_text_encoder_only_sd1_sd2_sdxl():
    sd1 = kohya_keys(clip_text_modules(768, 12), "lora_te")
    sd2 = kohya_keys(clip_text_modules(1024, 23), "lora_te")
    sdxl = kohya_keys(clip_text_modules(768, 12), "lora_te1") | kohya_keys(clip_text_modules(1280, 32), "lora_te2")
    fam, evidence, _ = family_of(sd1)
    assert fam == "sd1" and "768" in evidence and "12 layers" in evidence
    fam, evidence, _ = family_of(sd2)
    assert fam == "sd2" and "1024" in evidence and "23 layers" in evidence
    fam, evidence, _ = family_of(sdxl)
    assert fam == "sdxl" and "1280" in evidence


def test_clip_l_only_text_encoder_lets_the_card_choose_among_families_that_share_it():
    keys = diffusers_keys(clip_text_modules(768, 12), "text_encoder.")
    claim = FamilyClaim("sdxl", "card:README.md", "base model 'stabilityai/stable-diffusion-xl-base-1.0'")
    fam, evidence, warnings = family_of(keys, claims=[claim])
    assert fam == "sdxl" and "card:README.md" in evidence and warnings == []
    fam, _, warnings = family_of(keys, claims=[FamilyClaim("sd2", "card:README.md", "base model 'sd2'")])
    assert fam == "sd1" and any("rule it out" in w for w in warnings)


def test_flux_kohya_and_diffusers_by_blocks_and_hidden_width():
    for keys in (kohya_keys(flux_kohya_modules(), rank=32), diffusers_keys(flux_diffusers_modules(), "transformer.")):
        fam, evidence, _ = family_of(keys)
        assert fam == "flux" and "3072" in evidence


def test_flux_double_stream_only_diffusers_lora():
    fam, evidence, _ = family_of(diffusers_keys(flux_diffusers_modules(19, 0), "transformer."))
    assert fam == "flux" and "add_q_proj" in evidence


def test_sd3_kohya_joint_blocks_and_diffusers_hidden_1536():
    fam, evidence, _ = family_of(kohya_keys(sd3_kohya_modules(24)))
    assert fam == "sd3" and "joint_blocks" in evidence and "medium" in evidence
    fam, evidence, _ = family_of(diffusers_keys(sd3_diffusers_modules(38), "transformer."))
    assert fam == "sd3" and "2432" in evidence


def test_other_dit_is_unknown_and_metadata_cannot_force_flux():
    # Wan-style blocks through kohya's lora_unet_ prefix: hidden 5120, no Flux or SD3 names
    mods = [(f"blocks.{i}.cross_attn.{p}", 5120, 5120) for i in range(4) for p in "qkvo"]
    fam, evidence, warnings = family_of(kohya_keys(mods), {"modelspec.architecture": "flux-1-dev/lora"})
    assert fam == "unknown" and "5120" in evidence
    assert any("Flux.1" in w and "rule it out" in w for w in warnings)


def test_metadata_that_agrees_is_named_in_the_evidence():
    keys = kohya_keys(flux_kohya_modules(2, 2), rank=32)
    fam, evidence, warnings = family_of(keys, {"modelspec.architecture": "flux-1-dev/lora",
                                               "ss_base_model_version": "flux1"})
    assert fam == "flux" and "modelspec.architecture" in evidence and "agrees" in evidence
    assert warnings == []


def test_metadata_that_disagrees_is_a_warning_and_shapes_win():
    keys = attn_procs_keys(unet_attention_modules("sd1", ff=False), "unet.")
    fam, evidence, warnings = family_of(keys, {"ss_base_model_version": "sdxl_base_v1-0"})
    assert fam == "sd1"
    assert len(warnings) == 1
    assert "SDXL" in warnings[0] and "SD1" in warnings[0] and "ss_base_model_version" in warnings[0]


def test_card_claim_conflict_reaches_the_report(tmp_path):
    # the haseebae case: prose says SDXL, the shapes are SD1
    (tmp_path / "README.md").write_text("# Roads\nA streamlit app that uses a fine tuned SDXL model.\n")
    raw = make_raw(attn_procs_keys(unet_attention_modules("sd1", ff=False), "unet."), {"format": "pt"},
                   name="pytorch_lora_weights.safetensors", folder=tmp_path)
    report, _ = describe(raw, raw.path)
    assert report.family == "sd1"
    assert any("card:README.md" in w and "SDXL" in w and "trusting the shapes" in w for w in report.warnings)


def test_text_encoder_that_contradicts_the_unet_is_flagged():
    keys = kohya_keys(unet_attention_modules("sd1", ff=False)) | kohya_keys(clip_text_modules(1024, 23), "lora_te")
    verdict, warnings = family_from_shapes(detect_layout(make_raw(keys)))
    assert verdict.family == "sd1"
    assert warnings and "1024" in warnings[0]


def test_flux_t5_text_encoder_is_reported_as_text_encoder_2():
    keys = (kohya_keys(flux_kohya_modules(2, 2), rank=16) | kohya_keys(clip_text_modules(768, 12), "lora_te1", rank=16)
            | kohya_keys(t5_modules(), "lora_te3", rank=16))
    raw = make_raw(keys)
    report, layout = describe(raw, raw.path)
    assert report.family == "flux"
    assert report.components == ["transformer", "text_encoder", "text_encoder_2"]


def test_sd3_keeps_t5_as_text_encoder_3():
    keys = (kohya_keys(sd3_kohya_modules(2), rank=16) | kohya_keys(clip_text_modules(768, 2), "lora_te1")
            | kohya_keys(clip_text_modules(1280, 2), "lora_te2") | kohya_keys(t5_modules(), "lora_te3"))
    raw = make_raw(keys)
    report, _ = describe(raw, raw.path)
    assert report.family == "sd3"
    assert report.components == ["transformer", "text_encoder", "text_encoder_2", "text_encoder_3"]


def test_no_evidence_at_all_is_unknown():
    raw = make_raw(kohya_keys([("conv_in", 4, 320)]))
    fam, evidence, warnings = detect_family(raw, detect_layout(raw), Facts())
    assert fam == "unknown" and evidence and warnings == []


def test_sd1_unet_blocks_are_the_real_ones():
    # guard for the builders the other tests rely on: SD1 has 16 attention blocks, SDXL 70 transformer blocks
    assert len(_unet_transformers("sd1")) == 16
    assert sum(n for _, _, n in _unet_transformers("sdxl")) == 70
