"""Pickle -> safetensors: planted payloads never run, every tensor arrives bit for bit, metadata says where from.

Malicious pickles are built with pickle.dumps (which only serialises) and are only ever handed to convert_file;
a marker file shows whether anything ran. What the output holds is checked against torch's own weights-only
reading of the source, not against the converter's.
"""

from __future__ import annotations

import builtins
import hashlib
import os
import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from lorahub_cli.convert import convert_file, to_safetensors_for_store
from lorahub_cli.convert.safe_write import same_bits, verify_file, write_verified
from lorahub_cli.errors import LoraError
from tests.fixtures.adapters import write_adapter


class _Reduce:
    """Pickles as a call to ``func(*args)``: the classic __reduce__ gadget."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _payloads(marker: Path) -> dict[str, object]:
    touch = f"open({str(marker)!r}, 'w').write('ran')"
    inner = pickle.dumps(_Reduce(builtins.exec, touch), protocol=2)
    return {"os.system": _Reduce(os.system, f"touch {marker}"),
            "eval": _Reduce(builtins.eval, touch),
            "reduce-gadget": _Reduce(builtins.exec, touch),
            "nested-pickle": _Reduce(pickle.loads, inner)}


def _swap_data_pkl(checkpoint: Path, new_pickle: bytes, out: Path) -> None:
    """A real torch.save zip with its data.pkl replaced: the pickle nested in the archive carries the payload."""
    with zipfile.ZipFile(checkpoint) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            dst.writestr(info, new_pickle if info.filename.endswith("/data.pkl") else src.read(info))


def _files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


@pytest.mark.parametrize("name", ["os.system", "eval", "reduce-gadget", "nested-pickle"])
@pytest.mark.parametrize("container", ["raw-pickle", "torch-zip"])
def test_planted_payloads_are_refused_and_never_run(tmp_path, name, container):
    marker = tmp_path / "PWNED"
    payload = {"down_blocks.0.attn1.processor.to_q_lora.up.weight": _payloads(marker)[name]}
    evil = tmp_path / "pytorch_lora_weights.bin"
    if container == "raw-pickle":
        evil.write_bytes(pickle.dumps(payload, protocol=2, fix_imports=False))
    else:
        real = tmp_path / "real.bin"
        torch.save({"w": torch.zeros(2)}, real)
        _swap_data_pkl(real, pickle.dumps(payload, protocol=2, fix_imports=False), evil)
        real.unlink()
    before = _files(tmp_path)
    for to in ("diffusers", "safetensors"):
        with pytest.raises(LoraError) as info:
            convert_file(evil, tmp_path / f"out.{to}.safetensors", to=to)
        assert info.value.code == "unsafe-pickle", info.value.message
    assert not marker.exists(), "the payload ran"
    assert _files(tmp_path) == before   # no output, no temporary file left behind


def _reference(path: Path) -> dict[str, torch.Tensor]:
    obj = torch.load(path, map_location="cpu", weights_only=True)
    return obj.get("state_dict", obj)


def _read_out(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata())


def test_shared_strided_wrapped_and_typed_tensors_arrive_bit_for_bit(tmp_path):
    base = torch.randn(8, 320, generator=torch.Generator().manual_seed(1))
    up = torch.randn(320, 8, generator=torch.Generator().manual_seed(2))
    stem = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor"
    state = {
        f"{stem}.to_q_lora.down.weight": base,
        f"{stem}.to_k_lora.down.weight": base,                    # a second name on the same storage
        f"{stem}.to_q_lora.up.weight": up.t().contiguous().t(),   # a transposed view: not contiguous
        f"{stem}.to_k_lora.up.weight": up.half(),
        f"{stem}.to_v_lora.down.weight": base.bfloat16(),
        f"{stem}.to_v_lora.up.weight": torch.cat([up, up])[::2],  # a strided slice of a larger storage
    }
    assert not state[f"{stem}.to_q_lora.up.weight"].is_contiguous()
    src = tmp_path / "shared.bin"
    torch.save({"state_dict": state, "epoch": 3}, src)
    result = convert_file(src, tmp_path / "shared.safetensors", to="safetensors")
    want = _reference(src)
    got, meta = _read_out(result.dst)
    assert set(got) == set(want)
    for key in want:
        assert same_bits(got[key], want[key].contiguous()), key
        assert got[key].dtype == want[key].dtype
    assert meta["lorahub.source_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert meta["lorahub.source_container"] == "pickle" and meta["format"] == "pt"
    assert result.source_format == "attn-procs"


def test_a_cloneofsimo_list_and_its_text_encoder_companion_become_one_file(tmp_path):
    unet = write_adapter(tmp_path / "lora_weight.pt", "sd15", "cloneofsimo-pt", rank=4, dtype="float16")
    text = write_adapter(tmp_path / "lora_weight.text_encoder.pt", "sd15", "cloneofsimo-pt", rank=4,
                         dtype="float16", components=["text_encoder"], seed=1)
    unet_list = torch.load(unet, weights_only=True)
    text_list = torch.load(text, weights_only=True)
    kept = convert_file(unet, tmp_path / "kept.safetensors", to="safetensors")
    got, meta = _read_out(kept.dst)
    assert len(got) == len(unet_list) + len(text_list)
    for i, t in enumerate(unet_list):
        assert same_bits(got[f"unet:{i // 2}:{'up' if i % 2 == 0 else 'down'}"], t)
    for i, t in enumerate(text_list):
        assert same_bits(got[f"text_encoder:{i // 2}:{'up' if i % 2 == 0 else 'down'}"], t)
    assert meta["lorahub.companion_sha256"] == hashlib.sha256(text.read_bytes()).hexdigest()
    assert meta["unet:0:rank"] == "4" and "CLIPAttention" in meta["text_encoder"]   # what lora_diffusion reads
    as_diffusers = convert_file(unet, tmp_path / "lora_weight.diffusers.safetensors")
    got, meta = _read_out(as_diffusers.dst)
    components = {k.split(".", 1)[0] for k in got}
    assert components == {"unet", "text_encoder"} and as_diffusers.n_modules == (len(unet_list) + len(text_list)) // 2
    assert "unet:0:rank" not in meta     # positional bookkeeping does not describe the new keys


def test_metadata_keeps_the_original_and_adds_provenance_and_modelspec(tmp_path):
    src = write_adapter(tmp_path / "style.safetensors", "sdxl", "kohya", rank=4, alpha=2.0, components=["unet"],
                        metadata={"ss_output_name": "my-style", "ss_network_dim": "4", "custom": "kept"})
    (tmp_path / "style.README.md").write_text("---\nbase_model: stabilityai/stable-diffusion-xl-base-1.0\n"
                                              "instance_prompt: a photo of sks style\n---\n# style\n")
    result = convert_file(src, tmp_path / "style.diffusers.safetensors")
    _, meta = _read_out(result.dst)
    assert meta["custom"] == "kept" and meta["ss_network_dim"] == "4"
    assert meta["lorahub.source_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert meta["lorahub.family"] == "sdxl" and meta["lorahub.source_format"] == "kohya"
    assert meta["lorahub.base_model"] == "stabilityai/stable-diffusion-xl-base-1.0"
    assert meta["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
    assert meta["modelspec.title"] == "my-style"
    assert meta["modelspec.trigger_phrase"] == "a photo of sks style"
    assert result.metadata == meta


def test_to_safetensors_for_store_writes_into_the_staging_folder(tmp_path):
    src = write_adapter(tmp_path / "in" / "pytorch_lora_weights.bin", "sd15", "attn-procs-bin", rank=4)
    result = to_safetensors_for_store(src, tmp_path / "staging")
    assert result.dst.parent == tmp_path / "staging" and result.dst.suffix == ".safetensors"
    assert result.source_sha256 == hashlib.sha256(src.read_bytes()).hexdigest()
    got, _ = _read_out(result.dst)
    want = _reference(src)
    assert set(got) == set(want) and all(same_bits(got[k], want[k]) for k in want)   # same layout, same bits
    assert result.to_dict()["source_container"] == "pickle" and result.to_dict()["verified"] is True


# --- the write itself -------------------------------------------------------------------------------
def test_read_back_catches_a_changed_byte_and_changed_metadata(tmp_path):
    tensors = {"a.lora_down.weight": torch.arange(12, dtype=torch.float32).reshape(3, 4)}
    path = tmp_path / "x.safetensors"
    save_file(tensors, str(path), metadata={"format": "pt"})
    verify_file(path, tensors, {"format": "pt"})   # intact: passes
    with pytest.raises(LoraError) as info:
        verify_file(path, tensors, {"format": "pt", "extra": "1"})
    assert info.value.code == "verify-failed"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01                                   # one bit of the last float
    path.write_bytes(bytes(data))
    with pytest.raises(LoraError) as info:
        verify_file(path, tensors, {"format": "pt"})
    assert info.value.code == "verify-failed" and "a.lora_down.weight" in info.value.message


def test_same_bits_is_about_bytes_not_values():
    nan = torch.tensor([float("nan"), 1.0])
    assert same_bits(nan, nan.clone())                       # torch.equal says False here
    assert not same_bits(torch.tensor([0.0]), torch.tensor([-0.0]))
    assert not same_bits(torch.zeros(2), torch.zeros(2, dtype=torch.float16))


def test_a_refused_file_leaves_nothing_behind_and_existing_outputs_are_kept(tmp_path):
    tensors = {"w": torch.ones(3)}
    target = tmp_path / "out.safetensors"

    def refuse(tmp: Path, reloaded: dict) -> None:
        assert tmp.exists() and tmp.parent == tmp_path   # the candidate sits beside the target
        raise LoraError("refused by the check", code="verify-failed")

    with pytest.raises(LoraError):
        write_verified(target, tensors, {"format": "pt"}, check=refuse)
    assert list(tmp_path.iterdir()) == []
    write_verified(target, tensors, {"format": "pt"})
    with pytest.raises(LoraError) as info:
        write_verified(target, {"w": torch.zeros(3)}, {"format": "pt"})
    assert info.value.code == "already-exists"
    assert same_bits(_read_out(target)[0]["w"], torch.ones(3))
    write_verified(target, {"w": torch.zeros(3)}, {"format": "pt"}, force=True)
    assert same_bits(_read_out(target)[0]["w"], torch.zeros(3))
