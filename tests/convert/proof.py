"""The proof that a converted file really loads, shared by the fixture and the real-corpus tests.

1. Convert the source --to diffusers.
2. Run the pipeline's own ``load_lora_weights`` on it (tests/convert/pipelines.py): every module of the source
   must now be an active peft LoRA layer whose lora_A / lora_B hold the source's down / up values and whose
   scaling is the source's alpha / rank (both read by tests/convert/reference.py, not by the converter).
3. Run the same loader on the unconverted source, in a fresh pipeline: it must either load nothing (the silent
   no-op, or an error) or, for the layouts diffusers still reads itself, the same layers applying the same
   updates, or (kohya files whose modules have different alphas) some of them with the wrong scale.
"""

from __future__ import annotations

from pathlib import Path

import torch

from lorahub_cli.convert import convert_file
from tests.convert.pipelines import ADAPTER, ORIGINAL, build_components, load_lora_weights
from tests.convert.reference import Deltas

NOOP, ERROR, SAME = "silent no-op", "error", "loads the same"
MISSCALED = "loads with other scales"   # diffusers' kohya reader drops per-module alphas it cannot name


def assert_loaded_as(layers: dict, want: Deltas) -> None:
    """Every module of ``want`` became an active adapter layer with these factors and this scale, and no other."""
    assert set(layers) == set(want), (sorted(set(want) - set(layers))[:3], sorted(set(layers) - set(want))[:3])
    for name, (down, up, scale) in want.items():
        got = layers[name]
        assert got.active, name
        # peft gives the adapter its base layer's dtype (float32 here); widening is exact
        assert torch.equal(got.A, down.to(got.A.dtype).reshape(got.A.shape)), name
        assert torch.equal(got.B, up.to(got.B.dtype).reshape(got.B.shape)), name
        assert got.scaling == scale, f"{name}: scaling {got.scaling}, want {scale}"


def prove_it_loads(src: Path, alias: str, want: Deltas, legacy: str, tmp_path: Path) -> Path:
    out = convert_file(src, tmp_path / "converted.diffusers.safetensors", to="diffusers").dst
    converted = load_lora_weights(alias, build_components(alias), out)
    assert_loaded_as(converted, want)
    try:   # a fresh pipeline: plain diffusers on the unconverted file
        original = load_lora_weights(alias, build_components(alias), src, adapter=ORIGINAL)
    except (ValueError, RuntimeError, KeyError) as err:   # what diffusers raises on layouts it cannot read
        assert legacy == ERROR, f"plain diffusers failed on the source: {err}"
        return out
    if legacy == NOOP:
        assert original == {}, f"plain diffusers loaded {len(original)} layers of the unconverted file"
        return out
    assert legacy in (SAME, MISSCALED), f"plain diffusers loaded the source; expected: {legacy}"
    assert set(original) == set(converted)
    wrong = sorted(n for n in converted if not same_update(original[n], converted[n]))
    assert (wrong == []) if legacy == SAME else bool(wrong), wrong[:3]
    return out


def same_update(a, b) -> bool:
    """Whether two loaded layers apply the same update, scaling * B @ A. diffusers' own kohya readers may bake
    the scale into the factors (Flux), so the factors can differ; the update is probed with random inputs in
    float64 (an exact product would cost seconds per layer), to float32 rounding of the baked factors."""
    probe = torch.randn(a.A.reshape(a.A.shape[0], -1).shape[1], 2, dtype=torch.float64,
                        generator=torch.Generator().manual_seed(0))

    def apply(layer) -> torch.Tensor:
        a2, b2 = layer.A.double().reshape(layer.A.shape[0], -1), layer.B.double().reshape(layer.B.shape[0], -1)
        return layer.scaling * (b2 @ (a2 @ probe))

    return torch.allclose(apply(a), apply(b), rtol=1e-6, atol=0.0)


__all__ = ["ADAPTER", "ERROR", "MISSCALED", "NOOP", "SAME", "assert_loaded_as", "prove_it_loads"]
