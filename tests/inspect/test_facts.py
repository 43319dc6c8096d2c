"""Facts from header metadata and sidecars: model cards, adapter_config.json; every value with its source."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import save_file

from lorahub_cli.inspect.describe import describe
from lorahub_cli.inspect.facts import (
    adapter_config_facts, card_facts, family_from_architecture, family_from_name, family_from_ss_version,
    gather_facts, metadata_facts,
)
from tests.inspect.test_layout import (
    clip_text_modules, diffusers_keys, kohya_keys, make_raw, read_safetensors_header, unet_attention_modules,
)

SDXL_CARD = """---
license: openrail++
base_model: stabilityai/stable-diffusion-xl-base-1.0
instance_prompt: a photo of sks dog
tags:
- stable-diffusion-xl
- lora
widget:
- text: sks dog in a bucket
- text: sks dog on the moon
---

# LoRA DreamBooth
"""


# --------------------------------------------------------------------------------------------------
# Base-model names
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, family", [
    ("runwayml/stable-diffusion-v1-5", "sd1"),
    ("CompVis/stable-diffusion-v1-4", "sd1"),
    ("stabilityai/stable-diffusion-2-1", "sd2"),
    ("stabilityai/stable-diffusion-2-1-base", "sd2"),
    ("stabilityai/stable-diffusion-xl-base-1.0", "sdxl"),
    ("black-forest-labs/FLUX.1-dev", "flux"),
    ("black-forest-labs/FLUX.1-schnell", "flux"),
    ("stabilityai/stable-diffusion-3-medium-diffusers", "sd3"),
    ("stabilityai/stable-diffusion-3.5-large", "sd3"),
    ("sd_xl_base_1.0.safetensors", "sdxl"),
    ("ponyDiffusionV6XL.safetensors", "sdxl"),
    ("v1-5-pruned-emaonly.safetensors", "sd1"),
    ("sd15_anime.ckpt", "sd1"),
    ("v2-1_768-ema-pruned.safetensors", "sd2"),
    ("flux1-dev-fp8.safetensors", "flux"),
    ("sd3.5_medium.safetensors", "sd3"),
])
def test_family_from_known_ids_and_file_names(name, family):
    assert family_from_name(name) == family


@pytest.mark.parametrize("name", ["691639.safetensors", "dreamshaper_8.safetensors", "", "my-model"])
def test_names_that_say_nothing(name):
    assert family_from_name(name) is None


@pytest.mark.parametrize("arch, family", [
    ("stable-diffusion-v1/lora", "sd1"), ("stable-diffusion-v2-768-v/lora", "sd2"),
    ("stable-diffusion-xl-v1-base/lora", "sdxl"), ("stable-diffusion-3-medium/lora", "sd3"),
    ("stable-diffusion-v3-medium/lora", "sd3"), ("flux-1-dev/lora", "flux"), ("lumina-2/lora", None),
])
def test_modelspec_architecture(arch, family):
    assert family_from_architecture(arch) == family


@pytest.mark.parametrize("version, family", [
    ("sd_v1", "sd1"), ("sd_v2_v", "sd2"), ("sdxl_base_v1-0", "sdxl"), ("flux1", "flux"), ("5-large", "sd3"),
    ("lumina2", None),
])
def test_ss_base_model_version(version, family):
    assert family_from_ss_version(version) == family


# --------------------------------------------------------------------------------------------------
# Header metadata
# --------------------------------------------------------------------------------------------------

def test_kohya_and_modelspec_metadata():
    facts = metadata_facts({
        "ss_base_model_version": "sdxl_base_v1-0", "ss_network_dim": "32", "ss_network_alpha": "16.0",
        "ss_sd_model_name": "sd_xl_base_1.0.safetensors", "modelspec.architecture": "stable-diffusion-xl-v1-base/lora",
        "modelspec.trigger_phrase": "ohwx man, portrait", "modelspec.license": "openrail++",
        "modelspec.tags": "portrait, photo", "sshs_model_hash": "0" * 64,
    })
    assert [c.source for c in facts.family_claims] == ["metadata:modelspec.architecture",
                                                       "metadata:ss_base_model_version", "metadata:ss_sd_model_name"]
    assert {c.family for c in facts.family_claims} == {"sdxl"}
    assert (facts.alpha.value, facts.alpha.source) == (16.0, "metadata:ss_network_alpha")
    assert (facts.rank.value, facts.rank.source) == (32, "metadata:ss_network_dim")
    assert [(w.value, w.source) for w in facts.trigger_words] == [
        ("ohwx man", "metadata:modelspec.trigger_phrase"), ("portrait", "metadata:modelspec.trigger_phrase")]
    assert (facts.license.value, facts.license.source) == ("openrail++", "metadata:modelspec.license")
    assert facts.tags == ["portrait", "photo"]
    assert (facts.base_model.value, facts.base_model.source) == ("sd_xl_base_1.0.safetensors",
                                                                 "metadata:ss_sd_model_name")


@pytest.mark.parametrize("config, alpha, rank", [
    ({"r": 4, "lora_alpha": 16, "target_modules": ["to_q", "to_k", "to_v"]}, 16.0, 4),        # flat (diffusers)
    ({"unet.r": 8, "unet.lora_alpha": 8, "text_encoder.r": 8, "text_encoder.lora_alpha": 4,
      "transformer.lora_alpha": 8}, 8.0, 8),                                                  # per component
])
def test_lora_adapter_metadata(config, alpha, rank):
    facts = metadata_facts({"format": "pt", "lora_adapter_metadata": json.dumps(config)})
    assert (facts.alpha.value, facts.alpha.source) == (alpha, "metadata:lora_adapter_metadata")
    assert facts.rank.value == rank


def test_bad_lora_adapter_metadata_is_a_warning():
    facts = metadata_facts({"lora_adapter_metadata": "{not json"})
    assert facts.alpha is None and any("lora_adapter_metadata" in w for w in facts.warnings)


@pytest.mark.parametrize("text", ["[" * 100_000, '{"a":' * 100_000])
def test_deeply_nested_lora_adapter_metadata_is_a_warning(text):
    """Nesting too deep for the json parser: a warning, not a RecursionError."""
    facts = metadata_facts({"lora_adapter_metadata": text})
    assert facts.alpha is None and any("lora_adapter_metadata" in w for w in facts.warnings)


def test_tags_in_every_caption_of_a_kohya_dataset_are_trigger_words():
    frequency = {"10_sks dog": {"sks dog": 12, "grass": 4, "1dog": 12}, "5_style": {"a": 3, "b": 3, "c": 3, "d": 3}}
    folders = {"10_sks dog": {"n_repeats": 10, "img_count": 12}, "5_style": {"n_repeats": 5, "img_count": 3}}
    facts = metadata_facts({"ss_tag_frequency": json.dumps(frequency), "ss_dataset_dirs": json.dumps(folders)})
    # "5_style": four tags in every caption is how the captions were written, not a trigger
    assert [(w.value, w.source) for w in facts.trigger_words] == [("sks dog", "metadata:ss_tag_frequency"),
                                                                  ("1dog", "metadata:ss_tag_frequency")]
    assert metadata_facts({"ss_tag_frequency": "{not json", "ss_dataset_dirs": "[]"}).trigger_words == []


def test_cloneofsimo_embed_markers_are_tokens():
    facts = metadata_facts({"<s1>": "<embed>", "<s2>": "<embed>", "unet": '["CrossAttention"]', "unet:0:rank": "4"})
    assert facts.tokens == ["<s1>", "<s2>"]


def test_v2_flag_alone_claims_sd2_and_false_claims_nothing():
    assert [c.family for c in metadata_facts({"ss_v2": "True"}).family_claims] == ["sd2"]
    assert metadata_facts({"ss_v2": "False"}).family_claims == []


# --------------------------------------------------------------------------------------------------
# Model cards
# --------------------------------------------------------------------------------------------------

def test_card_front_matter():
    facts = card_facts(SDXL_CARD, "README.md")
    assert (facts.base_model.value, facts.base_model.source) == ("stabilityai/stable-diffusion-xl-base-1.0",
                                                                 "card:README.md")
    assert [w.value for w in facts.trigger_words] == ["a photo of sks dog", "sks dog in a bucket",
                                                      "sks dog on the moon"]
    assert {w.source for w in facts.trigger_words} == {"card:README.md"}
    assert (facts.license.value, facts.tags) == ("openrail++", ["stable-diffusion-xl", "lora"])
    assert [(c.family, c.source) for c in facts.family_claims] == [("sdxl", "card:README.md")]
    assert facts.warnings == []


def test_card_base_model_list_uses_the_first_and_says_so():
    card = "---\nbase_model:\n- black-forest-labs/FLUX.1-dev\n- some/other-model\n---\ntext\n"
    facts = card_facts(card, "x.README.md")
    assert facts.base_model.value == "black-forest-labs/FLUX.1-dev"
    assert [c.family for c in facts.family_claims] == ["flux"]
    assert any("2 base models" in w for w in facts.warnings)


def test_bad_yaml_is_a_warning_not_a_failure():
    facts = card_facts("---\nbase_model: [unclosed\nlicense: mit\n---\nSome text about SD 1.5\n", "README.md")
    assert facts.base_model is None and facts.license is None
    assert any("not valid YAML" in w and "card:README.md" in w for w in facts.warnings)


def test_card_without_front_matter_claims_from_its_prose():
    facts = card_facts("# Roads\nstreamlit app that uses a fine tuned SDXL model\n", "README.md")
    assert [(c.family, c.source) for c in facts.family_claims] == [("sdxl", "card:README.md")]
    assert "SDXL" in facts.family_claims[0].what
    assert facts.base_model is None


def test_prose_that_mentions_two_families_equally_claims_nothing():
    assert card_facts("Works with SDXL and with SD 1.5.", "README.md").family_claims == []


def test_adapter_config():
    text = json.dumps({"base_model_name_or_path": "runwayml/stable-diffusion-v1-5", "r": 8, "lora_alpha": 4,
                       "target_modules": ["q_proj", "v_proj"], "peft_type": "LORA"})
    facts = adapter_config_facts(text, "adapter_config.json")
    assert (facts.base_model.value, facts.base_model.source) == ("runwayml/stable-diffusion-v1-5",
                                                                 "adapter_config:adapter_config.json")
    assert (facts.alpha.value, facts.rank.value) == (4.0, 8)
    assert [c.family for c in facts.family_claims] == ["sd1"]


def test_bad_adapter_config_is_a_warning():
    facts = adapter_config_facts("{oops", "adapter_config.json")
    assert facts.base_model is None and facts.warnings


def test_deeply_nested_sidecars_are_warnings():
    card = card_facts("---\nbase_model: " + "[" * 20_000 + "\n---\nSDXL\n", "README.md")
    assert card.base_model is None and any("card:README.md" in w for w in card.warnings)
    config = adapter_config_facts("[" * 100_000, "adapter_config.json")
    assert config.base_model is None and any("adapter_config:adapter_config.json" in w for w in config.warnings)


# --------------------------------------------------------------------------------------------------
# Sidecars on disk, merged with metadata
# --------------------------------------------------------------------------------------------------

def test_stem_named_and_folder_sidecars_are_both_read(tmp_path):
    (tmp_path / "mylora.README.md").write_text(SDXL_CARD)
    (tmp_path / "README.md").write_text("---\nlicense: mit\ntags: [extra]\ninstance_prompt: zzz style\n---\n")
    (tmp_path / "mylora.adapter_config.json").write_text(json.dumps({"r": 8, "lora_alpha": 8}))
    facts = gather_facts({}, tmp_path / "mylora.safetensors")
    assert facts.base_model.source == "card:mylora.README.md"
    assert facts.license.value == "openrail++"                 # the file's own card wins
    assert "extra" in facts.tags and "stable-diffusion-xl" in facts.tags
    assert {w.value: w.source for w in facts.trigger_words}["zzz style"] == "card:README.md"
    assert (facts.alpha.value, facts.alpha.source) == (8.0, "adapter_config:mylora.adapter_config.json")


def test_local_base_model_path_is_kept_and_flagged(tmp_path):
    path = r"E:\cache\hub\models--benjamin-paine--stable-diffusion-v1-5\snapshots\abc\text_encoder"
    (tmp_path / "a.README.md").write_text(f"---\nbase_model: {path}\nlibrary_name: peft\n---\n")
    facts = gather_facts({}, tmp_path / "a.safetensors")
    assert facts.base_model.value == path
    assert any("local path" in w for w in facts.warnings)
    assert [c.family for c in facts.family_claims] == ["sd1"]


def test_hub_id_from_card_beats_a_checkpoint_file_name_in_metadata(tmp_path):
    (tmp_path / "README.md").write_text(SDXL_CARD)
    facts = gather_facts({"ss_sd_model_name": "sd_xl_base_1.0.safetensors"}, tmp_path / "x.safetensors")
    assert (facts.base_model.value, facts.base_model.source) == ("stabilityai/stable-diffusion-xl-base-1.0",
                                                                 "card:README.md")
    assert not any("local path" in w for w in facts.warnings)


def test_a_folder_adapter_config_describes_peft_files_not_the_kohya_files_beside_them(tmp_path):
    """In an A1111 folder of unrelated adapters, a plain adapter_config.json is no kohya file's config."""
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 4, "lora_alpha": 2}))
    assert gather_facts({}, tmp_path / "adapter_model.safetensors", "kohya").alpha.value == 2.0   # PEFT's name
    assert gather_facts({}, tmp_path / "style.safetensors", "peft").alpha.value == 2.0
    assert gather_facts({}, tmp_path / "style.safetensors", "kohya").alpha is None
    assert gather_facts({}, tmp_path / "style.safetensors", "attn-procs").alpha is None


def test_a_base_model_of_another_family_than_the_shapes_is_not_recorded(tmp_path):
    from lorahub_cli.inspect import inspect_file
    from tests.fixtures.adapters import write_adapter

    (tmp_path / "README.md").write_text("---\nbase_model: runwayml/stable-diffusion-v1-5\n---\n")
    xl = inspect_file(write_adapter(tmp_path / "xl.safetensors", "sdxl", "kohya", rank=4), hash=False)
    sd = inspect_file(write_adapter(tmp_path / "sd.safetensors", "sd15", "kohya", rank=4), hash=False)
    assert (xl.family, xl.base_model) == ("sdxl", None)
    assert any("not recorded as the base" in w for w in xl.warnings), xl.warnings
    assert (sd.base_model, sd.base_model_source) == ("runwayml/stable-diffusion-v1-5", "card:README.md")


def test_report_from_a_real_safetensors_file(tmp_path):
    """A small kohya file written with safetensors: alpha read from its own tensor, metadata kept raw."""
    rng = np.random.default_rng(0)
    tensors = {}
    for name, spec in kohya_keys(unet_attention_modules("sd1", ff=False)[:8], rank=16).items():
        dtype, shape = spec
        tensors[name] = (np.array(4.0, dtype=np.float16) if name.endswith(".alpha")
                         else rng.standard_normal(shape).astype(np.float16))
    meta = {"ss_network_dim": "16", "ss_network_alpha": "4.0", "ss_base_model_version": "sd_v1",
            "sshs_model_hash": "deadbeef" * 8}
    path = tmp_path / "tiny.safetensors"
    save_file(tensors, str(path), metadata=meta)
    (tmp_path / "tiny.README.md").write_text("---\nlicense: mit\ninstance_prompt: tnyx\n---\n")
    raw = read_safetensors_header(path)
    report, layout = describe(raw, path)
    assert (report.format, report.network, report.rank, report.alpha) == ("kohya", "lora", 16, 4.0)
    assert report.n_tensors == 24 and report.n_modules == 8 and report.dtype == "F16"
    assert report.metadata == meta
    assert report.sha256 is None                       # metadata hashes are never copied into the report
    assert (report.license, report.license_source) == ("mit", "card:tiny.README.md")
    assert report.trigger_word_sources == {"tnyx": "card:tiny.README.md"}
    assert sorted(k for m in layout.modules for k in m.up_keys) == sorted(k for k in tensors if "lora_up" in k)


def test_rank_in_metadata_that_the_tensors_contradict_is_a_warning():
    raw = make_raw(diffusers_keys(clip_text_modules(768, 2), "text_encoder.", rank=8),
                   {"lora_adapter_metadata": json.dumps({"r": 4, "lora_alpha": 4})})
    report, _ = describe(raw, raw.path)
    assert report.rank == 8 and report.alpha == 4.0
    assert any("rank 4" in w and "rank 8" in w for w in report.warnings)
