"""Module tables hold the real layer names and shapes of each base (facts from formats.md §2, §4)."""

from __future__ import annotations

import hashlib
import json
import re
import shutil

import pytest

from lorahub_cli.archs import base_components, config_dir, family_of, module_table, resolve_alias
from lorahub_cli.archs.tables import Layer
from lorahub_cli.errors import NotFound


def blocks(table: dict[str, Layer], pattern: str) -> set[str]:
    """Distinct module prefixes matching ``pattern`` (e.g. every transformer block)."""
    return {m.group(0) for name in table if (m := re.match(pattern, name))}


def test_sd15_unet_cross_attention_reads_clip_l(table):
    unet = table("sd15", "unet")
    assert unet["down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"] == Layer("linear", 768, 320)
    assert unet["down_blocks.0.attentions.0.proj_in"] == Layer("conv", 320, 320, (1, 1))  # SD1: conv 1x1
    assert unet["down_blocks.0.resnets.0.conv1"] == Layer("conv", 320, 320, (3, 3))
    assert len(blocks(unet, r"^.*\.attentions\.\d+\.transformer_blocks\.\d+")) == 16


def test_sd21_unet_reads_openclip_h_with_linear_projection(table):
    unet = table("sd21", "unet")
    assert unet["mid_block.attentions.0.transformer_blocks.0.attn2.to_k"] == Layer("linear", 1024, 1280)
    assert unet["down_blocks.0.attentions.0.proj_in"] == Layer("linear", 320, 320)
    text = table("sd21", "text_encoder")
    assert text["text_model.encoder.layers.22.mlp.fc1"] == Layer("linear", 1024, 4096)
    assert "text_model.encoder.layers.23.mlp.fc1" not in text  # 23 layers (0..22)


def test_sdxl_unet_has_70_transformer_blocks_at_two_levels(table):
    unet = table("sdxl", "unet")
    assert unet["down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k"] == Layer("linear", 2048, 640)
    assert len(blocks(unet, r"^.*\.attentions\.\d+\.transformer_blocks\.\d+")) == 70
    assert len(blocks(unet, r"^.*\.attentions\.\d+(?=\.)")) == 11
    assert not any(n.startswith("down_blocks.0.attentions") for n in unet)  # no attention at 320 channels
    assert unet["add_embedding.linear_1"] == Layer("linear", 2816, 1280)


def test_sdxl_text_encoders_keep_text_model_level_and_projection(table):
    te1, te2 = table("sdxl", "text_encoder"), table("sdxl", "text_encoder_2")
    assert all(n.startswith("text_model.") for n in te1)  # nested even where transformers flattened it
    assert te1["text_model.encoder.layers.11.self_attn.q_proj"] == Layer("linear", 768, 768)
    assert te2["text_model.encoder.layers.31.mlp.fc1"] == Layer("linear", 1280, 5120)
    assert te2["text_projection"] == Layer("linear", 1280, 1280)
    assert [n for n in te2 if not n.startswith("text_model.")] == ["text_projection"]


def test_flux_transformer_19_double_38_single_hidden_3072(table):
    dit = table("flux", "transformer")
    assert len(blocks(dit, r"^transformer_blocks\.\d+")) == 19
    assert len(blocks(dit, r"^single_transformer_blocks\.\d+")) == 38
    assert dit["transformer_blocks.0.attn.to_q"] == Layer("linear", 3072, 3072)
    assert dit["single_transformer_blocks.37.proj_out"] == Layer("linear", 15360, 3072)
    assert dit["context_embedder"] == Layer("linear", 4096, 3072)
    # FLUX.1-dev is guidance-distilled: it embeds the guidance scale like the timestep
    assert dit["time_text_embed.guidance_embedder.linear_1"] == Layer("linear", 256, 3072)


def test_sd3_transformer_24_joint_blocks_hidden_1536(table):
    dit = table("sd3", "transformer")
    assert len(blocks(dit, r"^transformer_blocks\.\d+")) == 24
    assert dit["transformer_blocks.0.attn.add_q_proj"] == Layer("linear", 1536, 1536)
    assert dit["context_embedder"] == Layer("linear", 4096, 1536)
    assert "transformer_blocks.23.ff_context.net.2" not in dit  # last block: context is pre-only
    assert not any(n.startswith("single_transformer_blocks") for n in dit)


def test_t5_encoder_tables(table):
    t5 = table("sd3", "text_encoder_3")
    assert t5["encoder.block.23.layer.1.DenseReluDense.wi_0"] == Layer("linear", 4096, 10240)
    assert t5["encoder.block.0.layer.0.SelfAttention.q"] == Layer("linear", 4096, 4096)
    assert table("flux", "text_encoder_2") == t5


def test_base_components_come_from_model_index():
    assert base_components("sd15") == ["text_encoder", "unet"]
    assert base_components("sdxl") == ["text_encoder", "text_encoder_2", "unet"]
    assert base_components("sd3") == ["text_encoder", "text_encoder_2", "text_encoder_3", "transformer"]
    assert base_components("flux") == ["text_encoder", "text_encoder_2", "transformer"]


@pytest.mark.parametrize("name, alias, family", [
    ("sd15", "sd15", "sd1"), ("sd1", "sd15", "sd1"), ("SD2", "sd21", "sd2"),
    ("stabilityai/stable-diffusion-xl-base-1.0", "sdxl", "sdxl"), ("sd3", "sd3", "sd3"),
    ("black-forest-labs/FLUX.1-dev", "flux", "flux"), ("runwayml/stable-diffusion-v1-5", "sd15", "sd1"),
    ("kandinsky", None, "unknown"),
])
def test_aliases_and_families(name, alias, family):
    assert resolve_alias(name) == alias
    assert family_of(name) == family


def test_packaged_sdxl_configs_are_the_hub_files_byte_for_byte():
    # sha256 = the Hub's Git LFS oids for these files in stabilityai/stable-diffusion-xl-base-1.0
    expected = {"unet/config.json": "30ebc70750223e59006f7f2b4e1e6c102570aa19a9c4ae3e1fbe7591332dbae6",
                "text_encoder/config.json": "39b8b2e4b1949e36969caa425b6c81c68bace99198dd9078ce05d16ad401fe7f",
                "model_index.json": "a40ca00944bb33ea9281580f50d009d1e23a434173c0e4e234bb90bd75178874"}
    for rel, sha in expected.items():
        assert hashlib.sha256((config_dir("sdxl") / rel).read_bytes()).hexdigest() == sha, rel


def test_local_folder_base_is_built_from_its_own_config(tmp_path):
    folder = tmp_path / "tiny"
    shutil.copytree(config_dir("sd15"), folder)
    config_path = folder / "unet" / "config.json"
    config = json.loads(config_path.read_text())
    config.update(block_out_channels=[32, 64], down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
                  up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"], cross_attention_dim=16, norm_num_groups=8)
    config_path.write_text(json.dumps(config))
    unet = module_table(folder, "unet", cache_dir=tmp_path / "cache")
    assert unet["down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"] == Layer("linear", 16, 32)
    assert not any(n.startswith("down_blocks.2") for n in unet)


def test_unknown_base_or_component_is_not_found(tmp_path):
    with pytest.raises(NotFound):
        module_table("kandinsky", "unet", cache_dir=tmp_path)
    with pytest.raises(NotFound):
        module_table("sd15", "transformer", cache_dir=tmp_path)
    with pytest.raises(NotFound):
        module_table("sd15", "tokenizer", cache_dir=tmp_path)
