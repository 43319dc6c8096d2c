"""Bad input given as a base gets a specific code and a non-zero exit, and nothing is written."""

from __future__ import annotations

import io
import json
import os
import pickle

import pytest

from tests.checkpoints.conftest import alias_tables
from tests.checkpoints.headers import checkpoint_keys, write_sparse
from tests.fixtures.adapters import write_adapter


def _refused(run_cli, home, path, code: str) -> dict:
    """`lora base add FILE` and `lora check ... --base FILE` both refuse with ``code``; no bases.json, no tables."""
    added = run_cli("base", "add", str(path), "--name", "bad", "--json")
    assert added.returncode == 1, (added.stdout, added.stderr)
    error = added.json()["error"]
    assert error["code"] == code, error
    lora = write_adapter(home.parent / "a.safetensors", "sd15", "kohya")
    checked = run_cli("check", str(lora), "--base", str(path), "--json")
    assert checked.returncode == 1 and checked.json()["error"]["code"] == code
    assert not (home / "bases.json").exists()
    assert not (home / "cache" / "checkpoints").exists()
    return error


def test_a_lora_given_as_base(home, run_cli, tmp_path):
    lora = write_adapter(tmp_path / "style.safetensors", "sdxl", "kohya")
    error = _refused(run_cli, home, lora, "not-a-checkpoint")
    assert "LoRA" in error["message"] and "lora add" in error["hint"]


def test_an_embedding_given_as_base(home, run_cli, tmp_path):
    path = write_sparse(tmp_path / "emb.safetensors", {"clip_l": (2, 768), "clip_g": (2, 1280)})
    assert "embedding" in _refused(run_cli, home, path, "not-a-checkpoint")["message"]


def test_a_vae_alone(home, run_cli, tmp_path):
    path = write_sparse(tmp_path / "vae.safetensors", {"encoder.conv_in.weight": (128, 3, 3, 3),
                                                        "decoder.conv_out.weight": (3, 128, 3, 3),
                                                        "quant_conv.weight": (8, 8, 1, 1)})
    assert "--vae" in _refused(run_cli, home, path, "not-a-checkpoint")["hint"]


def test_text_encoders_without_a_denoiser(home, run_cli, tmp_path):
    keys = {k: v for k, v in checkpoint_keys(alias_tables("sd15"), "sd1").items()
            if k.startswith("cond_stage_model.")}
    _refused(run_cli, home, write_sparse(tmp_path / "te.safetensors", keys), "missing-component")


def test_a_truncated_checkpoint(home, run_cli, tmp_path):
    path = write_sparse(tmp_path / "cut.safetensors", checkpoint_keys(alias_tables("sd15"), "sd1"), cut=4096)
    _refused(run_cli, home, path, "truncated")


def test_an_unknown_architecture(home, run_cli, tmp_path):
    path = write_sparse(tmp_path / "llm.safetensors", {"model.layers.0.self_attn.q_proj.weight": (64, 64),
                                                        "lm_head.weight": (100, 64)})
    _refused(run_cli, home, path, "unknown-architecture")


class _Reduce:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def test_a_pickled_ckpt_with_unsafe_globals(home, run_cli, tmp_path):
    """A legacy torch checkpoint whose state dict would run os.system: refused, and the command never runs."""
    marker = tmp_path / "PWNED"
    buf = io.BytesIO()
    for part in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True},
                 {"state_dict": {"model.diffusion_model.input_blocks.0.0.weight": _Reduce(os.system, f"touch {marker}")}}):
        pickle.dump(part, buf, protocol=2, fix_imports=False)
    path = tmp_path / "evil.ckpt"
    path.write_bytes(buf.getvalue())
    _refused(run_cli, home, path, "unsafe-pickle")
    assert not marker.exists()


def test_inspect_keeps_the_adapter_codes(run_cli, tmp_path):
    """A file that is neither an adapter nor a checkpoint is still reported with inspect's own codes."""
    path = write_sparse(tmp_path / "llm.safetensors", {"model.layers.0.self_attn.q_proj.weight": (64, 64)})
    result = run_cli("inspect", str(path), "--json", "--no-hash")
    assert result.returncode == 1
    assert json.loads(result.stdout)[0]["error"]["code"] in ("not-a-lora", "not-diffusion")


@pytest.mark.parametrize("suffix", [".ckpt"])
def test_a_safe_pickled_checkpoint_is_identified(home, tmp_path, suffix):
    """A .ckpt in the zip format torch writes, read through the weights-only loader."""
    import torch

    from lorahub_cli.bases import resolve_base

    keys = checkpoint_keys(alias_tables("sd15"), "sd1")
    small = {k: torch.zeros(1) for k in keys}   # names are what identification reads; values stay tiny
    small["model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"] = torch.zeros(320, 768)
    path = tmp_path / f"old{suffix}"
    torch.save({"state_dict": small}, path)
    base = resolve_base(str(path))
    assert (base.kind, base.family) == ("checkpoint", "sd1")
