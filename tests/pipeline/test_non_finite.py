"""NaN and infinity never reach a PNG or a fused folder (issue 13 M2): `generate` used to write a black PNG with
exit 0. A NaN adapter is refused before the base loads, an update that overflows a layer is refused before
that layer changes (the base restored), and an image that still comes out NaN is refused before it is saved."""

from __future__ import annotations

import copy

import pytest
import torch

from lorahub_cli.canonical import CanonicalAdapter, LoraPair
from lorahub_cli.errors import NonFinite
from lorahub_cli.pipeline.stack import MergedStack
from tests.pipeline.helpers import PROMPT, STEPS, layer_shapes, load_plain, random_adapter, write_diffusers


class _Pipe:
    """The part of a pipeline MergedStack touches: components by name (here two real fp16 Linear layers)."""

    def __init__(self):
        torch.manual_seed(0)
        self.unet = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 8)).half()


def _adapter(value: float, keys=("unet.0", "unet.1")) -> CanonicalAdapter:
    return CanonicalAdapter(family="unknown", modules={
        k: LoraPair(down=torch.full((2, 8), value), up=torch.full((8, 2), value)) for k in keys})


@pytest.mark.parametrize("keep", [True, False])
def test_an_update_that_overflows_fp16_is_refused_and_the_base_kept(keep):
    pipe = _Pipe()
    before = copy.deepcopy(pipe.unet.state_dict())
    stack = MergedStack(pipe)
    # layer 0 gets a small update (applied first), layer 1 one past fp16's 65504: 2 * 200 * 200 = 80000
    small, big = _adapter(0.1, ("unet.0",)), _adapter(200.0, ("unet.1",))
    with pytest.raises(NonFinite, match=r"layer unet\.1 NaN or infinite in float16"):
        stack.apply([(small, 1.0), (big, 1.0)], keep_originals=keep)
    assert torch.equal(pipe.unet[1].weight, before["1.weight"])          # the failing layer never changed
    if keep:                                                              # and the undo put layer 0 back
        assert all(torch.equal(v, before[k]) for k, v in pipe.unet.state_dict().items())
    assert torch.isfinite(pipe.unet[0].weight).all()


def test_the_same_update_fits_an_fp32_layer():
    pipe = _Pipe()
    pipe.unet.float()
    report = MergedStack(pipe).apply([(_adapter(200.0), 1.0)])
    assert report.layers == 2 and all(torch.isfinite(p).all() for p in pipe.unet.parameters())


@pytest.fixture(scope="module")
def nan_file(world, tmp_path_factory):
    shapes = layer_shapes(load_plain(world.base))
    adapter = random_adapter(shapes, [k for k in shapes if k.startswith("unet.") and ".attn1." in k], rank=2,
                             alpha=None, seed=7)
    key = next(iter(adapter.pairs))
    adapter.pairs[key][1][0, 0] = float("nan")
    return write_diffusers(adapter, tmp_path_factory.mktemp("nan") / "nan.safetensors")


def test_generate_refuses_a_nan_adapter_and_writes_nothing(lib_env, nan_file, tmp_path, capsys):
    from lorahub_cli.__main__ import main

    code = main(["generate", PROMPT, "--base", str(lib_env.base), "-a", str(nan_file), "--steps", str(STEPS),
                 "-o", str(tmp_path / "out"), "--json"])
    captured = capsys.readouterr()
    assert code == 1 and '"non-finite"' in captured.out + captured.err, captured
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_fuse_refuses_a_nan_adapter_and_writes_nothing(lib_env, nan_file, tmp_path, capsys):
    from lorahub_cli.__main__ import main

    code = main(["fuse", "--base", str(lib_env.base), "-a", str(nan_file), "-o", str(tmp_path / "fused"), "--json"])
    captured = capsys.readouterr()
    assert code == 1 and '"non-finite"' in captured.out + captured.err, captured
    assert not (tmp_path / "fused").exists()


def test_an_image_that_comes_out_nan_is_not_saved(world, tmp_path):
    from lorahub_cli.pipeline import Library

    with Library(home=world.home) as lib:
        pipe = lib.pipeline(str(world.base), device="cpu")
        with torch.no_grad():   # a damaged base: one VAE decoder weight is NaN
            pipe.vae.decoder.conv_out.weight[0, 0, 0, 0] = float("nan")
        with pytest.raises(NonFinite, match="came out NaN"):
            lib.generate(PROMPT, pipe=pipe, steps=STEPS, seed=1, output_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
