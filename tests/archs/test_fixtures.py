"""Generated adapters carry exactly the base's layer names and shapes, in every format."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tests.archs.keymap import group, layers_of
from tests.fixtures.adapters import FAMILIES, FORMATS, default_components, make_adapter, write_adapter

INVALID = {  # (family, format) pairs no tool ever wrote
    **{(f, fmt): "U-Net only" for f in ("sd3", "flux")
       for fmt in ("diffusers-old", "attn-procs", "attn-procs-bin", "cloneofsimo", "cloneofsimo-pt")},
    **{(f, "kohya-flux"): "flux only" for f in FAMILIES if f != "flux"},
    **{(f, "kohya-sd3"): "sd3 only" for f in FAMILIES if f != "sd3"},
}
VALID = [(f, fmt) for f in FAMILIES for fmt in FORMATS if (f, fmt) not in INVALID]


def check_layer(layer, shapes: dict[str, tuple[int, ...]], rank: int) -> None:
    """The stored factors of one layer have the shapes that network type gives that layer."""
    kernel = tuple(layer.kernel) if layer.kernel else ()
    k = math.prod(kernel) if kernel else 1
    fan_in, fan_out = layer.in_features, layer.out_features
    if "alpha" in shapes:
        assert shapes.pop("alpha") == ()
    if "hada_w1_a" in shapes:
        assert shapes == {"hada_w1_a": (fan_out, rank), "hada_w1_b": (rank, fan_in * k),
                          "hada_w2_a": (fan_out, rank), "hada_w2_b": (rank, fan_in * k)}
    elif "lokr_w1" in shapes:
        a, c = shapes["lokr_w1"]
        if "lokr_w2" in shapes:
            b, d = shapes["lokr_w2"][0], math.prod(shapes["lokr_w2"][1:])
        else:
            (b, r1), (r2, d) = shapes["lokr_w2_a"], shapes["lokr_w2_b"]
            assert r1 == r2 == rank
        assert (a * b, c * d) == (fan_out, fan_in * k)
    else:
        assert shapes == {"down": (rank, fan_in, *kernel), "up": (fan_out, rank, *((1, 1) if kernel else ()))}


def check_against_tables(family, fmt, tensors, table, *, rank, components=None):
    comps = components or default_components(family, fmt)
    tables = {c: table(family, c) for c in comps}
    groups = group(fmt, family, list(tensors), tables, component=comps[0])
    layers = layers_of(family, tables)
    for (comp, name), roles in groups.items():
        check_layer(layers[comp][name], {r: tuple(tensors[k].shape) for r, k in roles.items()}, rank)
    assert sum(len(roles) for roles in groups.values()) == len(tensors)   # every key was accounted for
    return groups


@pytest.mark.parametrize("family, fmt", VALID)
def test_every_fixture_maps_onto_the_module_tables(family, fmt, table):
    tensors, _ = make_adapter(family, fmt, rank=2)
    groups = check_against_tables(family, fmt, tensors, table, rank=2)
    assert {comp for comp, _ in groups} == set(default_components(family, fmt))


@pytest.mark.parametrize("family, fmt", sorted(INVALID))
def test_formats_refuse_bases_they_never_existed_for(family, fmt):
    with pytest.raises(ValueError):
        make_adapter(family, fmt)


@pytest.mark.parametrize("family, fmt, targets, components, modules", [
    ("sd15", "kohya", "kohya", None, 72 + 192),                       # formats.md §2.1
    ("sd21", "kohya", "kohya", ["text_encoder"], 23 * 6),              # §2.2
    ("sdxl", "kohya", "kohya", ["text_encoder", "text_encoder_2"], 72 + 192),  # §2.3
    ("sdxl", "kohya", "kohya", ["unet"], 722),
    ("flux", "kohya-flux", "attn", None, 19 * 10 + 38 * 3),          # §2.4
    ("sd15", "diffusers", "attn", None, 16 * 8 + 12 * 4),
    ("flux", "diffusers", "attn", None, 19 * 4 + 38 * 3),            # single blocks have no to_out
])
def test_module_counts(family, fmt, targets, components, modules, table):
    tensors, _ = make_adapter(family, fmt, rank=1, targets=targets, components=components)
    assert len(check_against_tables(family, fmt, tensors, table, rank=1, components=components)) == modules


def test_locon_adapts_3x3_resnet_convs_with_3x3_downs(table):
    tensors, _ = make_adapter("sd15", "locon", rank=4, components=["unet"])
    down = tensors["lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight"]
    up = tensors["lora_unet_down_blocks_0_resnets_0_conv1.lora_up.weight"]
    assert tuple(down.shape) == (4, 320, 3, 3) and tuple(up.shape) == (320, 4, 1, 1)
    assert tuple(tensors["lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight"].shape) == (4, 320, 1, 1)
    assert "lora_unet_up_blocks_0_upsamplers_0_conv.alpha" in tensors


def test_sdxl_diffusers_naming_option():
    tensors, _ = make_adapter("sdxl", "kohya", components=["unet"], sdxl_naming="diffusers")
    assert "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight" in tensors
    assert not any("input_blocks" in k for k in tensors)


def test_options_rank_alpha_dtype_seed_zero_up():
    tensors, _ = make_adapter("sd15", "kohya", rank=8, alpha=2.5, dtype="float16", seed=3)
    key = "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_k"
    assert tuple(tensors[f"{key}.lora_down.weight"].shape) == (8, 768)
    assert tensors[f"{key}.alpha"].item() == 2.5 and tensors[f"{key}.alpha"].dtype == torch.float16
    again, _ = make_adapter("sd15", "kohya", rank=8, alpha=2.5, dtype="float16", seed=3)
    other, _ = make_adapter("sd15", "kohya", rank=8, alpha=2.5, dtype="float16", seed=4)
    assert torch.equal(again[f"{key}.lora_up.weight"], tensors[f"{key}.lora_up.weight"])
    assert not torch.equal(other[f"{key}.lora_up.weight"], tensors[f"{key}.lora_up.weight"])
    zero, _ = make_adapter("sd15", "diffusers", zero_up=True)
    assert all(not v.any() for k, v in zero.items() if "lora_B" in k)
    assert all(v.any() for k, v in zero.items() if "lora_A" in k)


def test_metadata_is_merged_and_formats_without_alpha_refuse_one():
    _, meta = make_adapter("sd15", "kohya", metadata={"ss_network_dim": "4"})
    assert meta == {"ss_network_dim": "4"}
    with pytest.raises(ValueError):
        make_adapter("sd15", "attn-procs", alpha=4)


def test_written_containers(tmp_path):
    from safetensors import safe_open

    path = write_adapter(tmp_path / "k.safetensors", "sd15", "kohya", metadata={"ss_v2": "False"})
    with safe_open(str(path), "pt") as fh:
        assert fh.metadata() == {"format": "pt", "ss_v2": "False"}
        assert len(list(fh.keys())) == (16 * 8 + 12 * 4) * 3
    listed = torch.load(write_adapter(tmp_path / "w.pt", "sd15", "cloneofsimo-pt"), weights_only=True)
    assert isinstance(listed, list) and len(listed) == 288 and tuple(listed[0].shape) == (320, 4)  # up first
    procs = torch.load(write_adapter(tmp_path / "p.bin", "sd15", "attn-procs-bin"), weights_only=True)
    assert isinstance(procs, dict) and len(procs) == 256
    write_adapter(tmp_path / "peft" / "adapter_model.safetensors", "sd15", "peft", components=["text_encoder"],
                  rank=8, alpha=16)
    config = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], config["peft_type"]) == (8, 16, "LORA")
    assert "text_model.encoder.layers.0.self_attn.q_proj" in config["target_modules"]
