"""Every real file of the corpus through ``inspect_file``, against expectations written from MANIFEST.json
and from reading the files' headers and sidecars (not from this code's output)."""

from __future__ import annotations

import json

import pytest

from lorahub_cli.errors import LoraError
from lorahub_cli.inspect import inspect_file

# name: (format, family, rank, components, n_tensors, dtype)
LORAS = {
    "cloneofsimo_analog_svd_rank4.safetensors": ("cloneofsimo", "sd1", 4, ["unet", "text_encoder"], 384, "F16"),
    "wchesley_lora_weight.pt": ("cloneofsimo", "sd1", 4, ["unet"], 288, "F16"),
    "catundchat_sd15_attnprocs.bin": ("attn-procs", "sd1", 4, ["unet"], 256, "F32"),
    "wellch4n_pokemon_attnprocs.safetensors": ("attn-procs", "sd1", 4, ["unet"], 256, "F32"),
    "haseebae_attnprocs_unetprefix.safetensors": ("attn-procs", "sd1", 4, ["unet"], 256, "F32"),
    "justinjiang_diffusers_old_sd21.safetensors": ("diffusers-old", "sd2", 4, ["unet"], 256, "F32"),
    "jettooss_diffusers_old.safetensors": ("diffusers-old", "sd1", 4, ["unet"], 256, "F32"),
    "hansjohn_sd15_text_encoder_peft.safetensors": ("peft", "sd1", 8, ["text_encoder"], 48, "F32"),
    "faithsang_diffusers_peft_unprefixed.safetensors": ("diffusers", "sd1", 4, ["unet"], 192, "F32"),
}

TRAPS = {
    "NEG_hirvita6_crlf_2bytes.safetensors": "not-an-adapter-file",
    "NEG_meankitdas_sdxl_lfs_pointer.safetensors": "lfs-pointer",
    "NEG_wchesley_html_page.safetensors": "not-an-adapter-file",
    "m000lie_flux_kohya_TRUNCATED.safetensors": "truncated",
    "NEG_monsy101_fake_lora_unsafe_pickle.bin": "unsafe-pickle",
    "NEG_wchesley_textual_inversion.ti.pt": "textual-inversion",
    "NEG_hyunwoo_llm_lora.pth": "not-diffusion",
}


@pytest.fixture(scope="module")
def manifest(corpus_dir):
    return {f["name"]: f for f in json.loads((corpus_dir / "MANIFEST.json").read_text())["files"]}


@pytest.fixture(scope="module")
def reports(corpus_dir):
    """One inspection per real LoRA, shared by the tests below (pickles load torch once)."""
    return {name: inspect_file(corpus_dir / name) for name in LORAS}


def test_the_expectations_cover_the_whole_corpus(manifest):
    assert set(manifest) == set(LORAS) | set(TRAPS)


@pytest.mark.parametrize("name", sorted(LORAS))
def test_real_lora(name, reports, manifest):
    fmt, family, rank, components, n_tensors, dtype = LORAS[name]
    r = reports[name]
    assert (r.format, r.family, r.rank, r.components, r.n_tensors, r.dtype) == (
        fmt, family, rank, components, n_tensors, dtype)
    assert r.ranks == manifest[name]["ground_truth"]["ranks"]
    assert r.sha256 == manifest[name]["sha256"]
    assert r.network == "lora"
    assert r.family_evidence


@pytest.mark.parametrize("name, code", sorted(TRAPS.items()))
def test_trap_is_refused_with_its_code(corpus_dir, name, code):
    with pytest.raises(LoraError) as err:
        inspect_file(corpus_dir / name)
    assert err.value.code == code
    assert err.value.message


def test_unet_evidence_is_the_cross_attention_width(reports):
    assert "768" in reports["jettooss_diffusers_old.safetensors"].family_evidence
    assert "1024" in reports["justinjiang_diffusers_old_sd21.safetensors"].family_evidence
    assert "not a UNet channel width" in reports["cloneofsimo_analog_svd_rank4.safetensors"].family_evidence


def test_haseebae_card_says_sdxl_but_shapes_say_sd1(reports):
    r = reports["haseebae_attnprocs_unetprefix.safetensors"]
    assert r.family == "sd1"
    assert any("SDXL" in w and "haseebae_attnprocs_unetprefix.README.md" in w for w in r.warnings)


def test_hansjohn_base_model_is_the_cards_local_path(reports):
    r = reports["hansjohn_sd15_text_encoder_peft.safetensors"]
    assert r.base_model.startswith("E:\\huggingface_cache") and "stable-diffusion-v1-5" in r.base_model
    assert r.base_model_source == "card:hansjohn_sd15_text_encoder_peft.README.md"
    assert any("local path" in w for w in r.warnings)
    assert r.alpha == 8.0                                           # adapter_config lora_alpha


def test_faithsang_alpha_lives_only_in_lora_adapter_metadata(reports):
    assert reports["faithsang_diffusers_peft_unprefixed.safetensors"].alpha == 16.0


def test_catundchat_card_agrees_with_the_shapes(reports):
    r = reports["catundchat_sd15_attnprocs.bin"]
    assert "agrees" in r.family_evidence and not any("SD" in w for w in r.warnings)


def test_untrained_cloneofsimo_list_is_flagged(reports):
    r = reports["wchesley_lora_weight.pt"]
    assert any("untrained" in w for w in r.warnings)
    assert not any("untrained" in w for w in reports["cloneofsimo_analog_svd_rank4.safetensors"].warnings)


def test_cloneofsimo_metadata_is_kept_raw(reports):
    meta = reports["cloneofsimo_analog_svd_rank4.safetensors"].metadata
    assert json.loads(meta["unet"]) == ["CrossAttention", "Attention", "GEGLU"]
    assert len(meta) == 194


# --------------------------------------------------------------------------------------------------
# Generated adapters: complete files with the real names and shapes of each base (tests/fixtures)
# --------------------------------------------------------------------------------------------------

FAMILY_OF_FIXTURE = {"sd15": "sd1", "sd21": "sd2", "sdxl": "sdxl", "sd3": "sd3", "flux": "flux"}
# fixture format -> (format, network) as ARCHITECTURE.md names them
EXPECTED_LAYOUT = {
    "diffusers": ("diffusers", "lora"), "diffusers-unprefixed": ("diffusers", "lora"),
    "diffusers-old": ("diffusers-old", "lora"), "attn-procs": ("attn-procs", "lora"),
    "attn-procs-bin": ("attn-procs", "lora"), "peft": ("peft", "lora"), "kohya": ("kohya", "lora"),
    "kohya-flux": ("kohya", "lora"), "kohya-sd3": ("kohya", "lora"), "cloneofsimo": ("cloneofsimo", "lora"),
    "cloneofsimo-pt": ("cloneofsimo", "lora"), "loha": ("lycoris", "loha"), "lokr": ("lycoris", "lokr"),
    "locon": ("kohya", "locon"),
}
# every format once on SD1, and on each other base the formats its trainers really wrote
GENERATED = (
    [("sd15", f) for f in ("diffusers", "diffusers-unprefixed", "diffusers-old", "attn-procs", "attn-procs-bin",
                           "peft", "kohya", "cloneofsimo", "cloneofsimo-pt", "loha", "lokr", "locon")]
    + [("sd21", f) for f in ("diffusers-old", "kohya", "cloneofsimo")]
    + [("sdxl", f) for f in ("diffusers", "peft", "kohya", "cloneofsimo", "lokr")]
    + [("sd3", f) for f in ("diffusers", "kohya-sd3", "lokr")]
    + [("flux", f) for f in ("diffusers-unprefixed", "kohya-flux", "loha")]
)
_SUFFIX = {"attn-procs-bin": ".bin", "cloneofsimo-pt": ".pt"}


@pytest.mark.parametrize("family, fmt", GENERATED, ids=[f"{a}-{b}" for a, b in GENERATED])
def test_generated_adapter(tmp_path, family, fmt):
    from tests.fixtures.adapters import default_components, write_adapter

    path = write_adapter(tmp_path / f"adapter{_SUFFIX.get(fmt, '.safetensors')}", family, fmt, rank=8)
    r = inspect_file(path, hash=False)
    assert (r.format, r.network) == EXPECTED_LAYOUT[fmt]
    assert r.family == FAMILY_OF_FIXTURE[family], r.family_evidence
    assert sorted(r.components) == sorted(default_components(family, fmt))
    assert r.ranks == [8]
    assert not [w for w in r.warnings if "says" in w or "not understood" in w or "incomplete" in w]


@pytest.mark.parametrize("family, fmt, components, expected", [
    ("sd15", "peft", ["text_encoder"], ["text_encoder"]),
    ("sd21", "kohya", ["text_encoder"], ["text_encoder"]),
    ("sdxl", "kohya", ["text_encoder", "text_encoder_2"], ["text_encoder", "text_encoder_2"]),
    # kohya names Flux's T5 lora_te3_; in the Flux pipeline it is text_encoder_2
    ("flux", "kohya", ["text_encoder", "text_encoder_2"], ["text_encoder", "text_encoder_2"]),
])
def test_generated_text_encoder_adapters(tmp_path, family, fmt, components, expected):
    from tests.fixtures.adapters import write_adapter

    path = write_adapter(tmp_path / "te.safetensors", family, fmt, components=components)
    r = inspect_file(path, hash=False)
    assert r.family == FAMILY_OF_FIXTURE[family], r.family_evidence
    assert r.components == expected


def test_generated_untrained_adapter_is_flagged(tmp_path):
    from tests.fixtures.adapters import kohya_metadata, write_adapter

    path = write_adapter(tmp_path / "zero.safetensors", "sdxl", "kohya", rank=4, alpha=2, zero_up=True,
                         metadata=kohya_metadata("sdxl", 4, 2))
    r = inspect_file(path)
    assert r.alpha == 2.0 and r.family == "sdxl"
    assert "agrees" in r.family_evidence
    assert any("untrained" in w for w in r.warnings)
