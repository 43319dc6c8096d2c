"""`lora fuse --single-file`: the adapters baked into one original-layout file, proven against the fused pipeline:
loaded back with from_single_file, bit for bit at fp32, within one rounding step at fp16 / bf16."""

from __future__ import annotations

import dataclasses
import json
import re
import struct

import pytest
import torch
from safetensors import safe_open

from lorahub_cli.bases import add_base, from_checkpoint
from lorahub_cli.pipeline import Library
from lorahub_cli.pipeline.build import load_pipeline
from lorahub_cli.pipeline.fuse_file import checkpoint_modelspec, fuse_to_single_file
from tests.checkpoints.test_check import _tiny_adapters

COMPONENTS = ("unet", "vae", "text_encoder")


@pytest.fixture(scope="module")
def tiny_adapters(tiny_file, tmp_path_factory):
    return _tiny_adapters(tiny_file["folder"], tmp_path_factory.mktemp("tiny-adapters"))


def _weights(pipe) -> dict[str, torch.Tensor]:
    return {f"{c}.{k}": v for c in COMPONENTS for k, v in getattr(pipe, c).state_dict().items()
            if not k.endswith("position_ids")}


def _reference(folder, adapter, dtype: str) -> dict[str, torch.Tensor]:
    """The diffusers pipeline with the adapter fused by `lora generate`'s own engine (the folder as base)."""
    with Library() as lib:
        pipe = lib.pipeline(str(folder), [f"{adapter}:0.7"], fuse=True, device="cpu", dtype=dtype)
    return _weights(pipe)


def _loaded_back(path, folder, name: str, dtype: str) -> dict[str, torch.Tensor]:
    add_base(str(path), name=name, borrow=folder)
    pipe, _ = load_pipeline(name, device="cpu", dtype=dtype)
    return _weights(pipe)


def _fuse(run_cli, base, adapter, out, *extra):
    result = run_cli("fuse", "--base", str(base), "-a", f"{adapter}:0.7", "--single-file", str(out), *extra,
                     "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    return result.json()


@pytest.mark.parametrize("source", ["checkpoint", "folder"])
def test_fp32_is_bit_for_bit_the_fused_pipeline(home, run_cli, tiny_file, tiny_adapters, tmp_path, source):
    base = tiny_file["full"] if source == "checkpoint" else tiny_file["folder"]
    out = tmp_path / "fused.safetensors"
    row = _fuse(run_cli, base, tiny_adapters["fits"], out, "--dtype", "fp32")
    assert row["layers"] > 0 and row["dtype"] == "fp32"
    got = _loaded_back(out, tiny_file["folder"], "fused", "fp32")
    want = _reference(tiny_file["folder"], tiny_adapters["fits"], "fp32")
    changed = [k for k in want if not torch.equal(want[k], _weights_plain(tiny_file)[k])]
    assert changed   # the adapter did change weights, and the file holds exactly those changes
    assert [k for k in want if not torch.equal(want[k], got[k])] == []


_PLAIN: dict = {}


def _weights_plain(tiny_file) -> dict[str, torch.Tensor]:
    if not _PLAIN:
        from tests.pipeline.helpers import load_plain

        _PLAIN.update(_weights(load_plain(tiny_file["folder"])))
    return _PLAIN


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_half_precision_is_within_one_rounding_step(home, run_cli, tiny_file, tiny_adapters, tmp_path, dtype):
    """fp32 sums cast once (this file) vs the pipeline loaded in half precision and fused there (it rounds the base
    first, then the sum): they differ by at most one step of the half type's grid at the values' magnitude."""
    half = {"fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
    out = tmp_path / f"fused-{dtype}.safetensors"
    _fuse(run_cli, tiny_file["full"], tiny_adapters["fits"], out, "--dtype", dtype)
    with safe_open(str(out), framework="pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {half}
    got = _loaded_back(out, tiny_file["folder"], f"fused-{dtype}", dtype)
    want = _reference(tiny_file["folder"], tiny_adapters["fits"], dtype)
    plain = _weights_plain(tiny_file)
    over = {}
    for key in want:
        a, b, w = got[key].float(), want[key].float(), plain[key].float()
        step = _step(torch.maximum(torch.maximum(a.abs(), b.abs()), w.abs()), half)
        if not bool(((a - b).abs() <= step).all()):
            over[key] = float(((a - b).abs() / step).max())
    assert over == {}
    assert any(not torch.equal(got[k], plain[k].to(half)) for k in want)   # the adapter is in there


def _step(magnitude: torch.Tensor, half: torch.dtype) -> torch.Tensor:
    """The spacing of ``half``'s representable numbers at ``magnitude`` (its subnormal spacing near zero)."""
    info = torch.finfo(half)
    _, exponent = torch.frexp(magnitude.clamp_min(info.smallest_normal))
    return torch.ldexp(torch.ones_like(magnitude), exponent - 1 - (info.bits - 1 - _exponent_bits(half)))


def _exponent_bits(half: torch.dtype) -> int:
    return {torch.float16: 5, torch.bfloat16: 8}[half]


def test_metadata_names_the_base_and_each_adapter(home, run_cli, tiny_file, tiny_adapters, tmp_path):
    out = tmp_path / "fused.safetensors"
    _fuse(run_cli, tiny_file["full"], tiny_adapters["fits"], out)
    with safe_open(str(out), framework="pt") as f:
        meta = f.metadata()
        dtypes = {f.get_tensor(k).dtype for k in f.keys()}
    assert dtypes == {torch.float32}   # no --dtype: the base file's own
    record = json.loads(meta["lorahub.fuse"])
    assert record["adapters"][0]["weight"] == 0.7 and len(record["adapters"][0]["sha256"]) == 64
    assert record["base_id"] == str(tiny_file["full"]) and meta["modelspec.sai_model_spec"]
    assert "modelspec.architecture" not in meta   # an unknown family: never an invented architecture
    # A1111 / ComfyUI read it as the checkpoint it is
    inspected = run_cli("inspect", str(out), "--json", "--no-hash").json()[0]
    assert inspected["kind"] == "checkpoint" and inspected["components"] == ["unet", "text_encoder", "vae"]


def test_nothing_is_half_written(home, run_cli, tiny_file, tiny_adapters, tmp_path):
    out = tmp_path / "fused.safetensors"
    # an overflow (fp16's 65504) stops the write: no file, no temp file beside it
    huge = run_cli("fuse", "--base", str(tiny_file["full"]), "-a", f"{tiny_adapters['fits']}:1e30",
                   "--single-file", str(out), "--dtype", "fp16", "--json")
    assert huge.returncode == 1 and huge.json()["error"]["code"] == "non-finite"
    assert [p.name for p in tmp_path.iterdir() if p.name != "lorahub-home"] == []
    # the base itself is never the output, even with --force
    same = run_cli("fuse", "--base", str(tiny_file["full"]), "-a", str(tiny_adapters["fits"]),
                   "--single-file", str(tiny_file["full"]), "--force", "--json")
    assert same.returncode != 0 and same.json()["error"]["code"] == "unsafe-output"
    # an existing file needs --force
    out.write_bytes(b"keep me")
    again = run_cli("fuse", "--base", str(tiny_file["full"]), "-a", str(tiny_adapters["fits"]),
                    "--single-file", str(out), "--json")
    assert again.returncode == 1 and again.json()["error"]["code"] == "already-exists"
    assert out.read_bytes() == b"keep me"


def test_single_file_and_folder_output_are_exclusive(run_cli, tmp_path):
    both = run_cli("fuse", "--base", "sd15", "-a", "x", "-o", str(tmp_path / "a"), "--single-file",
                   str(tmp_path / "b.safetensors"), "--json")
    assert both.returncode == 2


def test_fused_file_carries_modelspec_for_its_family(home, tiny_file, tmp_path):
    """Issue 17 item 4: a fused checkpoint of a known family names its architecture as ModelSpec does for a
    checkpoint (no "/lora"), with date and resolution, and keeps the lorahub.fuse record. The tiny SD file is
    SD1-shaped but too narrow for the identifier (family "unknown"), so its Base is labelled sd1 here; the file
    itself is written by the real path, tensor by tensor."""
    base = dataclasses.replace(from_checkpoint(tiny_file["full"]), family="sd1")
    out = tmp_path / "fused-sd1.safetensors"
    fuse_to_single_file(base, [], out, dtype=None, force=False)
    with open(out, "rb") as f:   # the header as any UI reads it
        (length,) = struct.unpack("<Q", f.read(8))
        meta = json.loads(f.read(length))["__metadata__"]
    assert meta["modelspec.sai_model_spec"] == "1.0.1"
    assert meta["modelspec.architecture"] == "stable-diffusion-v1"
    assert meta["modelspec.implementation"] == "https://github.com/Stability-AI/generative-models"
    assert meta["modelspec.title"] == "fused-sd1"
    assert meta["modelspec.resolution"] == "512x512"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d", meta["modelspec.date"])
    assert json.loads(meta["lorahub.fuse"])["base_id"] == str(tiny_file["full"])


@pytest.mark.parametrize("family, variants, arch, resolution", [
    ("sd1", (), "stable-diffusion-v1", "512x512"),
    ("sd2", ("v-prediction",), "stable-diffusion-v2-768-v", "768x768"),
    ("sdxl", ("refiner",), "stable-diffusion-xl-v1-refiner", "1024x1024"),
    ("flux", ("schnell",), "flux-1-schnell", "1024x1024"),
    ("flux", ("dev",), "flux-1-dev", "1024x1024"),
])
def test_checkpoint_architecture_ids(family, variants, arch, resolution):
    spec = checkpoint_modelspec(family, variants)
    assert spec["modelspec.architecture"] == arch and spec["modelspec.resolution"] == resolution
    assert checkpoint_modelspec("unknown") == {}   # never an invented architecture
