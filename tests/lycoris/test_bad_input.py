"""LyCORIS inputs we cannot compute here: each names itself with a stable code (GLoRA: not implemented; DoRA and
(IA)^3: their update needs the base weight), and nothing is written."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

STEM = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_k"


def _ia3(path):
    save_file({f"{STEM}.weight": torch.zeros(320), f"{STEM}.on_input": torch.tensor(False)}, str(path))
    return path


def _glora(path):
    save_file({f"{STEM}.a1.weight": torch.zeros(4, 320), f"{STEM}.a2.weight": torch.zeros(320, 4),
               f"{STEM}.b1.weight": torch.zeros(4, 320), f"{STEM}.b2.weight": torch.zeros(320, 4)},
              str(path), metadata={"ss_base_model_version": "sd_v1"})
    return path


def _dora(path):
    save_file({f"{STEM}.lora_down.weight": torch.randn(4, 320), f"{STEM}.lora_up.weight": torch.randn(320, 4),
               f"{STEM}.dora_scale": torch.ones(320, 1)}, str(path), metadata={"ss_base_model_version": "sd_v1"})
    return path


@pytest.mark.parametrize("make, code, words", [(_ia3, "needs-base", "(IA)^3"), (_glora, "not-supported", "GLoRA"),
                                               (_dora, "needs-base", "base")])
@pytest.mark.parametrize("command", [("convert", "--to", "lora", "--rank", "2"), ("resize", "--rank", "2")])
def test_refused_with_its_name_and_nothing_written(run_cli, tmp_path, make, code, words, command):
    src = make(tmp_path / "in.safetensors")
    out = tmp_path / "out.safetensors"
    res = run_cli(command[0], str(src), *command[1:], "-o", str(out), "--json")
    assert res.returncode != 0
    err = res.json()["error"]
    assert err["code"] == code and words in err["message"], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.safetensors"]
