"""`lora merge --base`: adapters made for a custom model (no known family) are named on that model's layers."""

from __future__ import annotations

import pytest
import torch

from lorahub_cli.errors import UnmappedModules
from lorahub_cli.merge.job import merge_files
from tests.pipeline.helpers import layer_shapes, load_plain, random_adapter, write_diffusers

WEIGHTS = (1.0, -0.5)


@pytest.fixture(scope="module")
def custom(tmp_path_factory):
    """A tiny SD-shaped base (its widths match no family) and two adapters written on its own layers."""
    from tests.fixtures.pipelines import make_tiny_sd_pipeline

    root = tmp_path_factory.mktemp("custom")
    base = make_tiny_sd_pipeline(root / "tiny-sd", seed=0)
    shapes = layer_shapes(load_plain(base))
    attn1 = [k for k in shapes if ".attn1." in k]
    refs = [random_adapter(shapes, attn1, rank=4, alpha=8.0, seed=1),
            random_adapter(shapes, attn1[:3] + ["unet.down_blocks.0.resnets.0.conv1"], rank=2, alpha=None, seed=2)]
    files = [write_diffusers(a, root / f"{i}.safetensors") for i, a in enumerate(refs)]
    return base, files, refs


def _delta(down: torch.Tensor, up: torch.Tensor, scale: float) -> torch.Tensor:
    return scale * (up.flatten(1).double() @ down.flatten(1).double())


def test_without_a_base_the_error_says_to_give_one(custom, tmp_path, tmp_home):
    _, files, _ = custom
    with pytest.raises(UnmappedModules) as err:
        merge_files([str(f) for f in files], str(tmp_path / "m.safetensors"))
    assert "--base" in err.value.hint
    assert not (tmp_path / "m.safetensors").exists()


def test_with_the_base_the_merge_is_the_weighted_sum_and_loads_on_it(custom, tmp_path, tmp_home):
    from lorahub_cli.bases import resolve_base
    from lorahub_cli.pipeline.adapters import ResolvedAdapter, load_pairs

    base, files, refs = custom
    out = tmp_path / "m.safetensors"
    specs = [f"{f}:{w}" for f, w in zip(files, WEIGHTS)]
    outcome = merge_files(specs, str(out), base=str(base))
    assert outcome.family == "unknown" and outcome.n_modules == len(set(refs[0].pairs) | set(refs[1].pairs))
    # read back as `lora generate` reads it on this base
    merged = load_pairs(ResolvedAdapter(ref=str(out), name="m", path=out, sha256=outcome.sha256, weight=1.0,
                                        in_library=False), resolve_base(str(base)))
    assert set(merged.modules) == set(refs[0].pairs) | set(refs[1].pairs)
    for key, pair in merged.modules.items():
        want = sum(w * _delta(*ref.pairs[key], ref.scale) for ref, w in zip(refs, WEIGHTS) if key in ref.pairs)
        got = _delta(pair.down, pair.up, pair.scale)
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-6), key
