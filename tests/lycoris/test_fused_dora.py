"""A DoRA magnitude on a fused layer (a kohya Flux file's double_blocks.N.img_attn.qkv) splits with the layer's
rows: each of to_q / to_k / to_v gets its own rows' norms, and the three parts' updates stacked equal the
fused layer's DoRA update. A magnitude per input channel (its norm spans all three parts) is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from lorahub_cli.convert.load import canonical_tables, low_rank_pairs, map_layout, read_source
from lorahub_cli.errors import UnsupportedConversion
from lorahub_cli.lycoris.based import based_delta
from tests.fixtures.adapters import write_adapter

STEM = "lora_unet_double_blocks_0_img_attn_qkv"
PARTS = [f"transformer.transformer_blocks.0.attn.to_{p}" for p in "qkv"]


def _flux_dora(tmp_path: Path, magnitude_shape) -> Path:
    plain = write_adapter(tmp_path / "flux.safetensors", "flux", "kohya-flux", rank=4, alpha=4.0)
    tensors = load_file(plain)
    tensors[f"{STEM}.dora_scale"] = _magnitude(magnitude_shape)
    with safe_open(str(plain), "pt") as f:
        metadata = f.metadata()
    out = tmp_path / "flux-dora.safetensors"
    save_file(tensors, str(out), metadata)
    return out


def _magnitude(shape) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(3)) + 0.5


def _pairs(path: Path):
    source = read_source(path)
    keymap = map_layout(source.layout, source.report.family)
    return low_rank_pairs(source, keymap, canonical_tables(keymap.family)).modules


def test_a_per_row_magnitude_splits_with_the_fused_rows(tmp_path):
    fused_rows = 3 * 3072
    pairs = _pairs(_flux_dora(tmp_path, (fused_rows, 1)))
    parts = [pairs[k] for k in PARTS]
    assert [tuple(p.magnitude.shape) for p in parts] == [(3072, 1)] * 3
    w0 = torch.randn(fused_rows, parts[0].down.shape[1], generator=torch.Generator().manual_seed(4))
    stacked = torch.cat([based_delta(w, p, 0.7) for w, p in zip(w0.split(3072), parts)])
    # the fused layer's own DoRA update: per-row norms of W + scale * up @ down, blended at 0.7
    v = w0 + parts[0].scale * torch.cat([p.up for p in parts]) @ parts[0].down
    magnitude = _magnitude((fused_rows, 1))   # as written into the file, not as the parts came back
    want = 0.7 * (v * (magnitude / v.norm(dim=1, keepdim=True)) - w0)
    assert torch.allclose(stacked, want, rtol=1e-5, atol=1e-6)


def test_a_per_input_magnitude_on_a_fused_layer_is_refused(tmp_path):
    with pytest.raises(UnsupportedConversion, match="fused layer"):
        _pairs(_flux_dora(tmp_path, (1, 3072)))
