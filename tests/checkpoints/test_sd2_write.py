"""`fuse --single-file` from an SD2 folder: the merged pipeline in SD2's original layout (OpenCLIP-H text encoder at
cond_stage_model.model., its never-run last layer written as zeros), loaded back through from_single_file bit for
bit at fp32, with the same module tables as the folder and SD2 768-v's ModelSpec."""

from __future__ import annotations

import dataclasses
import json
import struct

import pytest
import torch

from lorahub_cli.archs import module_table
from lorahub_cli.bases import add_base, resolve_base
from lorahub_cli.pipeline import Library
from lorahub_cli.pipeline.build import load_pipeline
from lorahub_cli.pipeline.fuse_file import fuse_to_single_file
from tests.checkpoints.test_check import _tiny_adapters

COMPONENTS = ("unet", "vae", "text_encoder")


@pytest.fixture(scope="module")
def sd2_folder(tmp_path_factory):
    """The tiny SD pipeline as an SD2 768-v base (v-prediction); tiny widths read as family "unknown", so the
    tests label its Base sd2, which picks SD2's layout in the writer."""
    from tests.fixtures.pipelines import make_tiny_sd_pipeline

    root = tmp_path_factory.mktemp("tiny-sd2")
    folder = make_tiny_sd_pipeline(root / "folder", prediction_type="v_prediction")
    return {"folder": folder, "adapters": _tiny_adapters(folder, root / "adapters")}


def _weights(pipe) -> dict[str, torch.Tensor]:
    return {f"{c}.{k}": v for c in COMPONENTS for k, v in getattr(pipe, c).state_dict().items()
            if not k.endswith("position_ids")}


def test_sd2_folder_to_single_file_is_bit_for_bit(home, sd2_folder, tmp_path):
    folder, adapter = sd2_folder["folder"], f"{sd2_folder['adapters']['fits']}:0.7"
    own = resolve_base(str(folder))
    out = tmp_path / "sd2-fused.safetensors"
    with Library() as lib:
        loaded = lib._load(lib._resolve([adapter]), own)
        written = fuse_to_single_file(dataclasses.replace(own, family="sd2"), loaded, out, dtype="fp32", force=False)
        want = _weights(lib.pipeline(own, [adapter], fuse=True, device="cpu", dtype="fp32"))
    assert written.layers > 0
    with open(out, "rb") as f:   # the header as A1111 / ComfyUI read it
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
    meta = header.pop("__metadata__")
    assert meta["modelspec.architecture"] == "stable-diffusion-v2-768-v" and meta["modelspec.prediction_type"] == "v"
    text = sorted(k for k in header if k.startswith("cond_stage_model.model.transformer.resblocks."))
    assert {k.split(".")[4] for k in text} == {"0", "1", "2"}   # the folder's 2 layers and SD2's unused last one
    with torch.no_grad():
        from safetensors import safe_open

        with safe_open(str(out), framework="pt") as f:
            assert all(f.get_tensor(k).abs().sum() == 0 for k in text if ".resblocks.2." in k)
    on_file = resolve_base(str(out))
    assert on_file.variants == ("v-prediction",)   # ModelSpec's prediction type, read back
    for component in own.components:   # check / list verdicts: the file's tables are the folder's
        assert module_table(on_file.folder, component) == module_table(own.folder, component)
    add_base(str(out), name="sd2-fused", borrow=folder)
    got = _weights(load_pipeline("sd2-fused", device="cpu", dtype="fp32")[0])
    assert set(got) == set(want)
    assert [k for k in want if not torch.equal(want[k], got[k])] == []
