"""Other tools' spellings of table names: kohya, SAI/LDM U-Net, BFL Flux and SAI MMDiT fused layers."""

from __future__ import annotations

import re

import pytest

from lorahub_cli.archs.fused import flux_layers, sd3_layers
from lorahub_cli.archs.naming import kohya_index, kohya_name, kohya_prefix, sai_unet_names


def test_kohya_name_replaces_every_dot():
    module = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0"
    assert kohya_name("lora_unet", module) == "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_out_0"
    assert kohya_name("lora_te", "text_model.encoder.layers.3.mlp.fc1") == "lora_te_text_model_encoder_layers_3_mlp_fc1"
    assert kohya_prefix("flux", "text_encoder_2") == "lora_te3"
    with pytest.raises(ValueError):
        kohya_prefix("sd1", "text_encoder_2")


def test_kohya_index_is_one_to_one_over_real_tables(table):
    for base, component, prefix in [("sd15", "unet", "lora_unet"), ("sdxl", "text_encoder_2", "lora_te2"),
                                    ("sd3", "transformer", "lora_unet")]:
        names = table(base, component)
        assert len(kohya_index(prefix, names)) == len(names)


@pytest.mark.parametrize("diffusers, sai", [
    ("down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q", "input_blocks.4.1.transformer_blocks.0.attn1.to_q"),
    ("down_blocks.2.attentions.1.transformer_blocks.9.ff.net.2", "input_blocks.8.1.transformer_blocks.9.ff.net.2"),
    ("mid_block.attentions.0.proj_in", "middle_block.1.proj_in"),
    ("up_blocks.0.attentions.2.proj_out", "output_blocks.2.1.proj_out"),
    ("up_blocks.1.attentions.0.transformer_blocks.1.attn2.to_k", "output_blocks.3.1.transformer_blocks.1.attn2.to_k"),
    ("down_blocks.0.resnets.0.conv1", "input_blocks.1.0.in_layers.2"),
    ("down_blocks.0.resnets.1.conv2", "input_blocks.2.0.out_layers.3"),
    ("down_blocks.1.resnets.0.conv_shortcut", "input_blocks.4.0.skip_connection"),
    ("down_blocks.1.resnets.0.time_emb_proj", "input_blocks.4.0.emb_layers.1"),
    ("mid_block.resnets.1.conv1", "middle_block.2.in_layers.2"),
    ("down_blocks.0.downsamplers.0.conv", "input_blocks.3.0.op"),
    ("down_blocks.1.downsamplers.0.conv", "input_blocks.6.0.op"),
    ("up_blocks.0.upsamplers.0.conv", "output_blocks.2.2.conv"),
    ("up_blocks.1.upsamplers.0.conv", "output_blocks.5.2.conv"),
    ("conv_in", "input_blocks.0.0"), ("add_embedding.linear_2", "label_emb.0.2"), ("conv_out", "out.2"),
])
def test_sdxl_sai_names(table, diffusers, sai):
    assert sai_unet_names(table("sdxl", "unet"))[diffusers] == sai


def test_sdxl_sai_attention_blocks_are_the_ones_kohya_writes(table):
    sai = sai_unet_names(table("sdxl", "unet"))
    assert len(set(sai.values())) == len(sai)
    pattern = r"^((?:input|output)_blocks\.\d+\.1|middle_block\.1)\.transformer_blocks\."
    attention_blocks = {m.group(1) for s in sai.values() if (m := re.match(pattern, s))}
    assert attention_blocks == {"input_blocks.4.1", "input_blocks.5.1", "input_blocks.7.1", "input_blocks.8.1",
                                "middle_block.1", *(f"output_blocks.{i}.1" for i in range(6))}


def test_sd1_upsampler_without_attention_sits_at_index_1(table):
    sai = sai_unet_names(table("sd15", "unet"))
    assert sai["up_blocks.0.upsamplers.0.conv"] == "output_blocks.2.1.conv"   # up_blocks.0 has no attention
    assert sai["up_blocks.1.upsamplers.0.conv"] == "output_blocks.5.2.conv"
    assert sai["down_blocks.0.attentions.1.proj_in"] == "input_blocks.2.1.proj_in"


def test_flux_bfl_layers_have_kohya_shapes(table):
    fused = flux_layers(table("flux", "transformer"))
    assert len(fused) == 19 * 10 + 38 * 3
    # (in, out) from the convert_flux_lora.py docstring (formats.md §2.4)
    expected = {"double_blocks.0.img_attn.qkv": (3072, 9216), "double_blocks.18.txt_attn.proj": (3072, 3072),
                "double_blocks.5.img_mlp.0": (3072, 12288), "double_blocks.5.txt_mlp.2": (12288, 3072),
                "double_blocks.7.img_mod.lin": (3072, 18432), "single_blocks.0.linear1": (3072, 21504),
                "single_blocks.37.linear2": (15360, 3072), "single_blocks.9.modulation.lin": (3072, 9216)}
    for name, (fan_in, fan_out) in expected.items():
        assert (fused[name].in_features, fused[name].out_features) == (fan_in, fan_out), name
    assert fused["single_blocks.3.linear1"].parts == (
        "single_transformer_blocks.3.attn.to_q", "single_transformer_blocks.3.attn.to_k",
        "single_transformer_blocks.3.attn.to_v", "single_transformer_blocks.3.proj_mlp")


def test_sd3_mmdit_layers(table):
    fused = sd3_layers(table("sd3", "transformer"))
    assert fused["joint_blocks.0.x_block.attn.qkv"].out_features == 3 * 1536
    assert fused["joint_blocks.0.context_block.attn.qkv"].parts[0] == "transformer_blocks.0.attn.add_q_proj"
    assert fused["joint_blocks.3.x_block.adaLN_modulation.1"].out_features == 6 * 1536
    assert "joint_blocks.23.context_block.attn.proj" not in fused        # context_pre_only
    assert "joint_blocks.23.context_block.adaLN_modulation.1" in fused
    assert not any(".attn2." in n for n in fused)                         # SD3-medium has no attn2
    assert len(fused) == 23 * 10 + 7
