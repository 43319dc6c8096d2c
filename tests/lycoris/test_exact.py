"""Every LyCORIS form, read from a real file on SD1.5's real module tables, equals its float64 dense update."""

from __future__ import annotations

import pytest
import torch

from lorahub_cli.convert.load import read_source, to_canonical
from tests.lycoris.forms import reference, write_file

FORMS = ("loha", "lokr", "lokr-both", "lokr-full", "locon", "diff")


def _rel(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.to(torch.float64) - want).norm() / want.norm())


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lyco")
    return {form: (folder / f"{form}.safetensors", write_file(folder / f"{form}.safetensors", form, seed=i))
            for i, form in enumerate(FORMS)}


@pytest.mark.parametrize("form", FORMS)
def test_each_layer_is_the_exact_update(files, form):
    path, truth = files[form]
    adapter, _ = to_canonical(read_source(path))
    assert set(adapter.modules) == set(truth)
    for key, (roles, alpha) in truth.items():
        want = reference(roles, alpha)
        pair = adapter.modules[key]
        got = pair.delta(torch.float32)
        assert got.reshape(got.shape[0], -1).shape == want.shape, key
        assert _rel(got.reshape(want.shape), want) < 1e-6, key


def test_factored_pairs_stay_small(files):
    """A LoHa of rank 4 is applied through rank 16, never a dense matrix (the ff layer is 1280 x 5120)."""
    adapter, _ = to_canonical(read_source(files["loha"][0]))
    assert adapter.modules["unet.mid_block.attentions.0.transformer_blocks.0.ff.net.2"].rank == 16
    adapter, _ = to_canonical(read_source(files["lokr"][0]))
    q = adapter.modules["unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"]
    assert q.rank <= 16 * 4


def test_alpha_scales_like_lycoris(tmp_path):
    """The same factors with alpha 2r give twice the update of alpha r."""
    a = to_canonical(read_source(_written(tmp_path / "a.safetensors", 4.0)))[0]
    b = to_canonical(read_source(_written(tmp_path / "b.safetensors", 8.0)))[0]
    for key in a.modules:
        assert torch.allclose(b.modules[key].delta() , 2 * a.modules[key].delta(), rtol=1e-5, atol=1e-9)


def _written(path, alpha):
    write_file(path, "loha", alpha=alpha, seed=7)
    return path
