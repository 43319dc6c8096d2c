"""Adapters on a real (tiny) diffusers pipeline through the Python API: deterministic generation, the fp32
merge against diffusers' own set_adapters stacking, exact undo, bf16 rounding, legacy files, the base check."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lorahub_cli.errors import Incompatible
from lorahub_cli.pipeline import Library
from lorahub_cli.pipeline.schedulers import set_scheduler
from tests.pipeline.helpers import PROMPT, STEPS, load_plain, random_adapter, render, write_diffusers

THREE = {"style": 0.8, "subject": -0.6, "detail": 1.2}


@pytest.fixture(scope="module")
def lib(world):
    with Library(home=world.home) as library:
        yield library


def _weights(pipe) -> dict[str, torch.Tensor]:
    return {f"{c}.{k}": v.detach().clone() for c in ("unet", "text_encoder")
            for k, v in getattr(pipe, c).state_dict().items()}


def _reference_stack(world, weights: dict[str, float], dtype=torch.float32):
    """diffusers' own way: load_lora_weights per adapter file, set_adapters with the weights."""
    pipe = load_plain(world.base, dtype)
    for name in weights:
        pipe.load_lora_weights(str(world.files[name]), adapter_name=f"ref_{name}")
    pipe.set_adapters([f"ref_{n}" for n in weights], adapter_weights=list(weights.values()))
    return pipe


def test_generation_is_deterministic_with_0_1_and_3_adapters(lib, world):
    pipe = lib.pipeline(str(world.base), device="cpu")
    images = []
    for chosen in ({}, {"style": 0.8}, THREE):
        lib.set_adapters(pipe, chosen)
        first = lib.generate(PROMPT, pipe=pipe, steps=STEPS, seed=11)[0]
        again = lib.generate(PROMPT, pipe=pipe, steps=STEPS, seed=11)[0]
        assert np.array_equal(np.asarray(first.image), np.asarray(again.image))
        assert [a["name"] for a in first.recipe.adapters] == list(chosen)
        images.append(np.asarray(first.image))
    for i in range(3):
        for j in range(i + 1, 3):
            assert not np.array_equal(images[i], images[j]), (i, j)
    # no adapters is the plain diffusers pipeline, pixel for pixel (same scheduler, seed and settings)
    plain = load_plain(world.base)
    set_scheduler(plain, "dpm")
    with torch.inference_mode():
        ref = plain(prompt=PROMPT, num_inference_steps=STEPS, guidance_scale=7.5, width=32, height=32,
                    generator=torch.Generator().manual_seed(11)).images[0]
    assert np.array_equal(np.asarray(ref), images[0])


def test_merged_and_peft_stacks_match_diffusers_set_adapters(lib, world):
    reference = render(_reference_stack(world, THREE))
    base = render(load_plain(world.base))
    assert np.abs(reference - base).max() > 1e-2          # the adapters do change the picture
    merged = lib.pipeline(world.base, THREE, device="cpu")
    peft = lib.pipeline(world.base, THREE, stack="peft", device="cpu")
    assert merged.lorahub.report.layers > 0 and not merged.lorahub.report.skipped
    np.testing.assert_allclose(render(merged), reference, atol=1e-4, rtol=0)
    np.testing.assert_allclose(render(peft), reference, atol=1e-4, rtol=0)


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_switching_adapter_sets_restores_the_base_bit_for_bit(lib, world, dtype):
    pipe = lib.pipeline(world.base, device="cpu", dtype=dtype)
    before = _weights(pipe)
    lib.set_adapters(pipe, THREE)
    changed = [k for k, v in _weights(pipe).items() if not torch.equal(v, before[k])]
    assert changed and pipe.lorahub.report.kept_bytes > 0
    lib.set_adapters(pipe, {"style": 0.3})
    lib.set_adapters(pipe, ["detail:-1"])
    lib.set_adapters(pipe, {})
    after = _weights(pipe)
    assert all(torch.equal(after[k], before[k]) for k in before)


def test_bf16_merge_rounds_once_where_peft_fuse_rounds_per_adapter(lib, world):
    """Ours: round(W + sum of updates) in fp32; PEFT's fuse_lora adds each update in bf16 in turn."""
    ours = lib.pipeline(world.base, THREE, device="cpu", dtype="bf16")
    peft = _reference_stack(world, THREE, torch.bfloat16)
    peft.fuse_lora(adapter_names=[f"ref_{n}" for n in THREE])
    peft.unload_lora_weights()
    total_ours = total_peft = 0.0
    for key in world.adapters["style"].pairs:          # attention + text encoder: touched by several adapters
        component, name = key.split(".", 1)
        w0 = load_weight(world, component, name)
        truth = w0.to(torch.bfloat16).float()
        for adapter, weight in ((world.adapters[n], w) for n, w in THREE.items()):
            if key in adapter.pairs:
                down, up = adapter.pairs[key]
                truth = truth + weight * adapter.scale * (up.reshape(up.shape[0], -1) @ down.reshape(down.shape[0], -1)).reshape(truth.shape)
        e_ours = (getattr(ours, component).get_submodule(name).weight.float() - truth).abs()
        e_peft = (getattr(peft, component).get_submodule(name).weight.float() - truth).abs()
        assert bool((e_ours <= e_peft + 1e-6).all()), key   # a single rounding is never worse, anywhere
        total_ours += float(e_ours.sum())
        total_peft += float(e_peft.sum())
    assert total_ours < 0.9 * total_peft


_FP32_BASE: dict = {}


def load_weight(world, component: str, name: str) -> torch.Tensor:
    if "pipe" not in _FP32_BASE:
        _FP32_BASE["pipe"] = load_plain(world.base)
    return getattr(_FP32_BASE["pipe"], component).get_submodule(name).weight.detach()


def test_legacy_attn_procs_file_changes_the_output(lib, world):
    base = render(load_plain(world.base))
    plain = load_plain(world.base)
    plain.load_lora_weights(str(world.files["legacy-procs"]), adapter_name="legacy")   # silently loads nothing
    assert np.array_equal(render(plain), base)
    ours = lib.pipeline(world.base, {"legacy-procs": 1.0}, device="cpu")
    twin = load_plain(world.base)
    twin.load_lora_weights(str(world.files["legacy"]), adapter_name="twin")   # the same numbers, diffusers layout
    got = render(ours)
    assert np.abs(got - base).max() > 1e-2
    np.testing.assert_allclose(got, render(twin), atol=1e-4, rtol=0)


def test_incompatible_adapter_stops_before_loading_and_partial_warns(lib, world, tmp_path):
    shapes = {k: (o, 7) for k, (o, *_rest) in
              {k: v for k, v in _shapes(world).items() if ".attn" in k}.items()}
    bad = write_diffusers(random_adapter(shapes, list(shapes), rank=2, alpha=None, seed=9), tmp_path / "bad.safetensors")
    with pytest.raises(Incompatible) as err:
        lib.pipeline(world.base, {str(bad): 1.0}, device="cpu")
    assert "does not fit" in err.value.message and err.value.exit_code == 1

    real = _shapes(world)
    good = [k for k in real if ".attn1." in k]
    mixed = {**{k: real[k] for k in good}, **{k: (v[0], 5) for k, v in real.items() if k.startswith("text_encoder.")}}
    part = write_diffusers(random_adapter(mixed, list(mixed), rank=2, alpha=None, seed=10), tmp_path / "part.safetensors")
    pipe = lib.pipeline(world.base, [f"{part}:1.0"], device="cpu")
    assert any("only in part" in w for w in pipe.lorahub.warnings)
    assert pipe.lorahub.report.layers == len(good)
    assert pipe.lorahub.adapters[0].check.verdict == "partial"


def _shapes(world) -> dict[str, tuple[int, ...]]:
    from tests.pipeline.helpers import layer_shapes

    return layer_shapes(load_plain(world.base))


def test_generate_reuses_its_pipeline_and_switches_exactly(lib, world):
    first = lib.generate(PROMPT, base=str(world.base), adapters={"style": 0.8}, steps=STEPS, seed=3, device="cpu")[0]
    pipe = lib._last
    other = lib.generate(PROMPT, base=str(world.base), adapters={"subject": 1.0}, steps=STEPS, seed=3, device="cpu")[0]
    back = lib.generate(PROMPT, base=str(world.base), adapters={"style": 0.8}, steps=STEPS, seed=3, device="cpu")[0]
    assert lib._last is pipe
    assert not np.array_equal(np.asarray(first.image), np.asarray(other.image))
    assert np.array_equal(np.asarray(first.image), np.asarray(back.image))
    assert first.recipe.adapters[0]["sha256"] == back.recipe.adapters[0]["sha256"]
