"""LyCORIS files applied to a real (tiny) pipeline through the Python API, as generate does, and fused to a
folder: every touched weight is the base plus weight times the float64 dense update."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

from lorahub_cli.archs.naming import kohya_name
from tests.lycoris.forms import SUFFIX, live_weight as _live, reference


def _roles(shape, kind: str, g: torch.Generator) -> dict[str, torch.Tensor]:
    out, inp, *kernel = shape
    r = 3

    def f(*s):
        return torch.randn(*s, generator=g) * 0.3

    if kind == "loha-tucker":
        return {"hada_t1": f(r, r, *kernel), "hada_w1_a": f(r, out), "hada_w1_b": f(r, inp),
                "hada_t2": f(r, r, *kernel), "hada_w2_a": f(r, out), "hada_w2_b": f(r, inp)}
    if kind == "loha":
        return {"hada_w1_a": f(out, r), "hada_w1_b": f(r, inp), "hada_w2_a": f(out, r), "hada_w2_b": f(r, inp)}
    if kind == "lokr":      # w1 full [2, 2], w2 low-rank
        return {"lokr_w1": f(2, 2), "lokr_w2_a": f(out // 2, 2), "lokr_w2_b": f(2, inp // 2)}
    return {"diff": f(out, inp, *kernel)}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tests.fixtures.pipelines import make_tiny_sd_pipeline
    from tests.pipeline.helpers import layer_shapes, load_plain

    root = tmp_path_factory.mktemp("lyco-apply")
    base = make_tiny_sd_pipeline(root / "tiny-sd", seed=0)
    plain = load_plain(base)
    shapes = layer_shapes(plain)
    plan = {"unet.down_blocks.0.resnets.0.conv1": "loha-tucker",
            "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q": "loha",
            "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k": "lokr",
            "text_encoder.text_model.encoder.layers.0.self_attn.q_proj": "diff"}
    g = torch.Generator().manual_seed(11)
    tensors, truth = {}, {}
    for key, kind in plan.items():
        component, name = key.split(".", 1)
        shape = shapes.get(key) or shapes[f"{component}.{name.removeprefix('text_model.')}"]
        roles = _roles(shape, kind, g)
        stem = kohya_name("lora_unet" if component == "unet" else "lora_te", name.removeprefix("text_model."))
        for role, t in roles.items():
            tensors[f"{stem}.{SUFFIX.get(role, role)}"] = t.contiguous()
        alpha = None if kind == "diff" else 2.0
        if alpha is not None:
            tensors[f"{stem}.alpha"] = torch.tensor(alpha)
        truth[key] = (roles, alpha)
    path = root / "mixed-lycoris.safetensors"
    save_file(tensors, str(path))
    weights = {k: _live(plain, k).detach().clone() for k in truth}
    return SimpleNamespace(base=base, path=path, truth=truth, weights=weights)



def _expect(tiny, key, weight):
    roles, alpha = tiny.truth[key]
    w0 = tiny.weights[key].to(torch.float64)
    return w0 + weight * reference(roles, alpha).reshape(w0.shape)


def test_pipeline_applies_every_form_exactly(tiny, tmp_path):
    from lorahub_cli.pipeline.api import Library

    with Library(tmp_path / "home") as lib:
        pipe = lib.pipeline(tiny.base, {str(tiny.path): 0.7}, device="cpu")
    assert not pipe.lorahub.report.skipped
    for key in tiny.truth:
        want = _expect(tiny, key, 0.7)
        got = _live(pipe, key).detach().to(torch.float64)
        assert float((got - want).norm() / (want - tiny.weights[key]).norm()) < 1e-6, key


def test_fuse_writes_the_exact_update(tiny, tmp_path):
    from lorahub_cli.pipeline.api import Library
    from tests.pipeline.helpers import load_plain

    with Library(tmp_path / "home") as lib:
        lib.fuse(tiny.base, {str(tiny.path): 1.0}, tmp_path / "fused")
    fused = load_plain(tmp_path / "fused")
    for key in tiny.truth:
        want = _expect(tiny, key, 1.0)
        got = _live(fused, key).detach().to(torch.float64)
        assert float((got - want).norm() / (want - tiny.weights[key]).norm()) < 1e-6, key


@pytest.mark.parametrize("weight", [1.0, 0.5, -1.0, 0.0])
def test_dora_is_applied_against_the_base_weight(tiny, tmp_path, weight):
    """W + w * (m * V / ||V|| - W), V = W + scale * up @ down: per output row ([out, 1]) and per input channel
    ([1, in, 1, 1]); the weight blends the whole update, as A1111 and ComfyUI do (0 is the base itself)."""
    from lorahub_cli.pipeline.api import Library

    g = torch.Generator().manual_seed(12)
    layers = {"unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_v": "out",
              "unet.down_blocks.0.resnets.0.conv1": "in"}
    tensors, want = {}, {}
    for key, axis in layers.items():
        w0 = tiny.weights[key] if key in tiny.weights else _live_base(tiny, key)
        out, inp, *kernel = w0.shape
        down = torch.randn(2, inp, *kernel, generator=g) * 0.2
        up = torch.randn(out, 2, *([1, 1] if kernel else []), generator=g) * 0.2
        mag = torch.rand((out, 1) if axis == "out" else (1, inp, 1, 1), generator=g) + 0.5
        stem = kohya_name("lora_unet", key.split(".", 1)[1])
        tensors.update({f"{stem}.lora_down.weight": down, f"{stem}.lora_up.weight": up,
                        f"{stem}.alpha": torch.tensor(1.0), f"{stem}.dora_scale": mag})
        v = w0.to(torch.float64) + 0.5 * (up.reshape(out, -1).double() @ down.reshape(2, -1).double()).reshape(w0.shape)
        if axis == "out":
            ref = v * (mag.double().reshape(out, *[1] * (v.dim() - 1)) / v.reshape(out, -1).norm(dim=1).reshape(out, *[1] * (v.dim() - 1)))
        else:
            norm = v.transpose(0, 1).reshape(inp, -1).norm(dim=1).reshape(1, inp, 1, 1)
            ref = v * (mag.double() / norm)
        base = w0.to(torch.float64)
        want[key] = (base, base + weight * (ref - base), (ref - base).norm())
    path = tmp_path / "dora.safetensors"
    save_file(tensors, str(path))
    with Library(tmp_path / "home") as lib:
        pipe = lib.pipeline(tiny.base, {str(path): weight}, device="cpu")
    for key, (w0, ref, full) in want.items():
        got = _live(pipe, key).detach().to(torch.float64)
        assert float((got - ref).norm() / full) < 1e-5, key


def _live_base(tiny, key):
    from tests.pipeline.helpers import load_plain

    return _live(load_plain(tiny.base), key).detach().clone()
