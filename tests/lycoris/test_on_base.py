"""DoRA and (IA)^3 against a named base: `convert --to lora --base B --rank R` and `merge --base B`, checked against
float64 references of the effective update computed from the base's real weights (a tiny diffusers folder)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

from lorahub_cli.archs.naming import kohya_name
from tests.lycoris.forms import live_weight

DORA = {"unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_v": "out",   # 64 x 64
        "unet.down_blocks.0.resnets.0.conv1": "in"}                                 # 3x3 conv, per input channel
IA3 = {"unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k": True,     # 64 x 32, on_input
       "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_v": False}


def _live(pipe, key):
    return live_weight(pipe, key).detach().clone()


def dora_reference(w0, down, up, mag, scale, weight, axis):
    """``weight * (m * V / ||V|| - W)`` with ``V = W + scale * up @ down`` (A1111's and ComfyUI's blend), float64,
    flattened [out, in*k*k]."""
    out = w0.shape[0]
    w = w0.to(torch.float64).reshape(out, -1)
    v = w + scale * (up.double().reshape(out, -1) @ down.double().reshape(down.shape[0], -1))
    if axis == "out":
        return weight * (v * (mag.double().reshape(out, 1) / v.norm(dim=1, keepdim=True)) - w)
    inp = w0.shape[1]
    per_in = v.reshape(out, inp, -1)
    norm = per_in.pow(2).sum(dim=(0, 2)).sqrt()
    return weight * ((per_in * (mag.double().reshape(-1) / norm)[None, :, None]).reshape(out, -1) - w)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tests.fixtures.pipelines import make_tiny_sd_pipeline
    from tests.pipeline.helpers import load_plain

    root = tmp_path_factory.mktemp("on-base")
    base = make_tiny_sd_pipeline(root / "tiny-sd", seed=0)
    plain = load_plain(base)
    g = torch.Generator().manual_seed(21)
    dora, dora_truth = {}, {}
    for key, axis in DORA.items():
        w0 = _live(plain, key)
        out, inp, *kernel = w0.shape
        down = torch.randn(3, inp, *kernel, generator=g) * 0.2
        up = torch.randn(out, 3, *([1, 1] if kernel else []), generator=g) * 0.2
        mag = torch.rand((out, 1) if axis == "out" else (1, inp, 1, 1), generator=g) + 0.5
        stem = kohya_name("lora_unet", key.split(".", 1)[1])
        dora.update({f"{stem}.lora_down.weight": down, f"{stem}.lora_up.weight": up,
                     f"{stem}.alpha": torch.tensor(1.5), f"{stem}.dora_scale": mag})
        dora_truth[key] = (w0, down, up, mag, 0.5, axis)
    ia3, ia3_truth = {}, {}
    for key, on_input in IA3.items():
        w0 = _live(plain, key)
        v = torch.randn(w0.shape[1] if on_input else w0.shape[0], generator=g) * 0.3
        stem = kohya_name("lora_unet", key.split(".", 1)[1])
        ia3.update({f"{stem}.weight": v, f"{stem}.on_input": torch.tensor(int(on_input))})
        ia3_truth[key] = (w0, v, on_input)
    lora, lora_truth = {}, {}
    key = "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"
    w0 = _live(plain, key)
    down, up = torch.randn(2, w0.shape[1], generator=g) * 0.2, torch.randn(w0.shape[0], 2, generator=g) * 0.2
    stem = kohya_name("lora_unet", key.split(".", 1)[1])
    lora.update({f"{stem}.lora_down.weight": down, f"{stem}.lora_up.weight": up, f"{stem}.alpha": torch.tensor(2.0)})
    lora_truth[key] = (w0, (up.double() @ down.double()))
    files = {}
    for name, tensors in (("dora", dora), ("ia3", ia3), ("lora", lora)):
        files[name] = root / f"{name}.safetensors"
        save_file(tensors, str(files[name]))
    return SimpleNamespace(base=base, files=files, dora=dora_truth, ia3=ia3_truth, lora=lora_truth)


def _written(path, base):
    """The written file's pairs, named on the base's own layers (as generate reads it)."""
    from lorahub_cli.bases import resolve_base
    from lorahub_cli.compat.on_base import base_tables, map_onto_base, pairs_from_keymap
    from lorahub_cli.convert.load import read_source

    b = resolve_base(str(base))
    source = read_source(path)
    return pairs_from_keymap(source, map_onto_base(source.layout, b), base_tables(b))


def _dora_refs(tiny, weight=1.0):
    return {k: dora_reference(w0, d, u, m, s, weight, a) for k, (w0, d, u, m, s, a) in tiny.dora.items()}


def test_convert_dora_with_base_at_full_rank_is_exact(tiny, run_cli, tmp_path):
    out = tmp_path / "dora-lora.safetensors"
    res = run_cli("convert", str(tiny.files["dora"]), "--to", "lora", "--base", str(tiny.base), "--rank", "64",
                  "-o", str(out), "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    rows = {r["module"]: r for r in res.json()["resize"]["layers"]}
    assert set(rows) == set(DORA) and all(r["rel_error"] < 1e-6 for r in rows.values()), rows
    got = _written(out, tiny.base)
    for key, ref in _dora_refs(tiny).items():
        delta = got.modules[key].delta(torch.float64).reshape(ref.shape[0], -1)
        assert float((delta - ref).norm() / ref.norm()) < 1e-6, key


def test_convert_dora_with_base_to_a_rank_is_eckart_young(tiny, run_cli, tmp_path):
    """At rank 4 the error left, reported and real, is the optimum sqrt(sum of the dropped S^2) of the float64
    effective update."""
    out = tmp_path / "dora-r4.safetensors"
    res = run_cli("convert", str(tiny.files["dora"]), "--to", "lora", "--base", str(tiny.base), "--rank", "4",
                  "-o", str(out), "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    rows = {r["module"]: r for r in res.json()["resize"]["layers"]}
    got = _written(out, tiny.base)
    for key, ref in _dora_refs(tiny).items():
        s = torch.linalg.svdvals(ref)
        optimum = float(s[4:].pow(2).sum().sqrt())
        assert rows[key]["rank_after"] == 4
        assert abs(rows[key]["error"] - optimum) <= 1e-4 * optimum, (key, rows[key], optimum)
        delta = got.modules[key].delta(torch.float64).reshape(ref.shape[0], -1)
        assert abs(float((delta - ref).norm()) - optimum) <= 1e-4 * optimum, key


def test_convert_ia3_with_base_is_exact(tiny, run_cli, tmp_path):
    out = tmp_path / "ia3-lora.safetensors"
    res = run_cli("convert", str(tiny.files["ia3"]), "--to", "lora", "--base", str(tiny.base), "--rank", "64",
                  "-o", str(out), "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    got = _written(out, tiny.base)
    for key, (w0, v, on_input) in tiny.ia3.items():
        w = w0.double()
        ref = w * (v.double()[None, :] if on_input else v.double()[:, None])
        delta = got.modules[key].delta(torch.float64).reshape(ref.shape)
        assert float((delta - ref).norm() / ref.norm()) < 1e-6, key


def test_convert_dora_with_base_but_no_rank_is_a_usage_error(tiny, run_cli, tmp_path):
    out = tmp_path / "x.safetensors"
    res = run_cli("convert", str(tiny.files["dora"]), "--to", "lora", "--base", str(tiny.base), "-o", str(out),
                  "--json")
    assert res.returncode == 2 and "--rank" in res.json()["error"]["hint"], res.stdout
    assert not out.exists()


def test_merge_with_dora_needs_the_base(tiny, run_cli, tmp_path):
    out = tmp_path / "m.safetensors"
    res = run_cli("merge", str(tiny.files["dora"]), str(tiny.files["lora"]), "-o", str(out), "--json")
    assert res.returncode != 0 and res.json()["error"]["code"] == "needs-base", res.stdout
    assert not out.exists()


def test_merge_stack_with_base_equals_generating_with_the_inputs(tiny, run_cli, tmp_path):
    """DoRA at 0.7, (IA)^3 at 0.5 and a LoRA at 1, stacked with --base: the merged file at weight 1 changes every
    layer as the three inputs applied together do (float64 reference, rel. error < 1e-6)."""
    out = tmp_path / "merged.safetensors"
    res = run_cli("merge", f"{tiny.files['dora']}:0.7", f"{tiny.files['ia3']}:0.5", str(tiny.files["lora"]),
                  "--base", str(tiny.base), "-o", str(out), "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    got = _written(out, tiny.base)
    want = dict(_dora_refs(tiny, 0.7))
    for key, (w0, v, on_input) in tiny.ia3.items():
        w = w0.double()
        want[key] = 0.5 * w * (v.double()[None, :] if on_input else v.double()[:, None])
    for key, (w0, ud) in tiny.lora.items():
        want[key] = 1.0 * ud
    assert set(got.modules) == set(want)
    for key, ref in want.items():
        delta = got.modules[key].delta(torch.float64).reshape(ref.shape[0], -1)
        assert float((delta - ref.reshape(ref.shape[0], -1)).norm() / ref.norm()) < 1e-6, key
