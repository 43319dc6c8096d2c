"""The numeric meaning survives: per module, scale * up @ down of the output equals the input's, in float64.

Inputs are real-shaped fixtures in every low-rank layout (and the real corpus in test_corpus.py); both sides
are read by tests/convert/reference.py, which knows nothing of the converter.
"""

from __future__ import annotations

import json

import pytest
import torch

from lorahub_cli.convert import convert_file
from tests.convert.conftest import thin, write_mixed_kohya
from tests.convert.reference import assert_same_updates, diffusers_deltas, kohya_deltas, read_file, source_deltas
from tests.fixtures.adapters import write_adapter

# (alias, fixture format, write_adapter kwargs)
CASES = [
    ("sd15", "kohya", {"rank": 4, "alpha": 1.0, "targets": "kohya"}),   # + proj_in/out (1x1 convs), ff
    ("sd15", "locon", {"rank": 4, "alpha": 3.0}),                         # 3x3 conv downs
    ("sd15", "diffusers", {"rank": 4, "alpha": 8.0}),
    ("sd15", "diffusers-unprefixed", {"rank": 8, "alpha": 4.0}),
    ("sd15", "attn-procs-bin", {"rank": 4, "dtype": "float16"}),
    ("sd15", "peft", {"rank": 8, "alpha": 16.0, "components": ["text_encoder"]}),
    ("sd15", "cloneofsimo", {"rank": 4, "dtype": "float16", "components": ["text_encoder"]}),
    # a pickled list; the U-Net's positions are costly in float64, the corpus and test_keymap.py cover them
    ("sd15", "cloneofsimo-pt", {"rank": 4, "dtype": "float16", "components": ["text_encoder"]}),
    ("sd21", "diffusers-old", {"rank": 4, "dtype": "bfloat16"}),
    ("sdxl", "kohya", {"rank": 4, "alpha": 2.0}),                         # SAI U-Net names, te1 + te2
    ("sdxl", "attn-procs", {"rank": 4, "unet_prefix": True}),
]
SUFFIX = {"attn-procs-bin": ".bin", "cloneofsimo-pt": ".text_encoder.pt"}
EVERY = {"sd15": 5, "sd21": 6, "sdxl": 24}   # module samples, see conftest.thin
FUSED_SAMPLE = {  # the fused layers (and one plain one) of a Flux / SD3 file
    "flux": "double_blocks_0_img_attn_qkv|double_blocks_1_txt_attn_qkv|single_blocks_0_linear1",
    "sd3": "joint_blocks_0_x_block_attn_qkv|joint_blocks_0_context_block_attn_qkv|joint_blocks_1_x_block_mlp",
}


def _input(tmp_path, alias, fmt, kw):
    path = write_adapter(tmp_path / f"in-{alias}-{fmt}{SUFFIX.get(fmt, '.safetensors')}", alias, fmt, **kw)
    if fmt.startswith("cloneofsimo"):   # positions must stay contiguous: keep the first ones
        thin(path, only=r"^(unet|text_encoder):([0-9]|1[0-5]):")
    else:
        thin(path, EVERY[alias] * (3 if fmt == "locon" else 1))
    component = (kw.get("components") or ["unet"])[0]
    group_fmt = {"attn-procs-bin": "attn-procs"}.get(fmt, "kohya" if fmt == "locon" else fmt)
    peft = json.loads((tmp_path / "adapter_config.json").read_text()) if fmt == "peft" else None
    return path, source_deltas(path, alias, group_fmt, component=component, peft_config=peft)


@pytest.mark.parametrize("alias, fmt, kw", CASES, ids=[f"{a}-{f}-{i}" for i, (a, f, _) in enumerate(CASES)])
def test_update_of_every_module_is_unchanged(tmp_path, alias, fmt, kw):
    path, want = _input(tmp_path, alias, fmt, kw)
    assert want   # the input adapts something
    to_diffusers = convert_file(path, tmp_path / "out.diffusers.safetensors", to="diffusers")
    assert_same_updates(diffusers_deltas(to_diffusers.dst), want)
    to_kohya = convert_file(path, tmp_path / "out.kohya.safetensors", to="kohya")
    assert_same_updates(kohya_deltas(to_kohya.dst, alias), want)
    assert to_diffusers.n_modules == to_kohya.n_modules == len(want)


def test_modules_with_their_own_rank_and_alpha_keep_them(tmp_path):
    alias, dtype = "sd15", "float16"
    # a stride prime to 3 keeps all three kinds of module (see write_mixed_kohya)
    path = thin(write_mixed_kohya(tmp_path / "mixed.safetensors", alias, dtype=dtype), 7)
    want = source_deltas(path, alias, "kohya")
    out = convert_file(path, tmp_path / "mixed.diffusers.safetensors", to="diffusers")
    assert_same_updates(diffusers_deltas(out.dst), want)
    config = json.loads(read_file(out.dst)[1]["lora_adapter_metadata"])
    assert config["unet.rank_pattern"] and config["unet.alpha_pattern"]   # the patterns carry the odd ones
    back = convert_file(out.dst, tmp_path / "mixed.kohya.safetensors", to="kohya")
    assert_same_updates(kohya_deltas(back.dst, alias), want)
    tensors, _ = read_file(back.dst)
    odd = [t for k, t in tensors.items() if k.endswith(".alpha") and abs(float(t) - 0.3) < 1e-6]
    assert odd and all(t.dtype == torch.float32 for t in odd)   # 0.3 would round in float16
    weights = [t for k, t in tensors.items() if k.endswith(".weight")]
    assert {t.dtype for t in weights} == {getattr(torch, dtype)}


@pytest.mark.parametrize("alias, fmt", [("flux", "kohya-flux"), ("sd3", "kohya-sd3")])
def test_fused_kohya_layers_split_into_their_diffusers_parts(tmp_path, alias, fmt):
    path = thin(write_adapter(tmp_path / "fused.safetensors", alias, fmt, rank=4, alpha=2.0), only=FUSED_SAMPLE[alias])
    want = source_deltas(path, alias, fmt)
    out = convert_file(path, tmp_path / "fused.diffusers.safetensors", to="diffusers")
    assert_same_updates(diffusers_deltas(out.dst), want)
    assert any(k.endswith(".attn.to_k") for k in want)   # qkv became to_q / to_k / to_v
