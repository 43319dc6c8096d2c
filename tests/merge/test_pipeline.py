"""A merged file loaded into a real (tiny) SD pipeline does what stacking its inputs with set_adapters does.

Inputs are random low-rank pairs on the tiny pipeline's own layers (attention, a 3x3 resnet conv, a 1x1
proj_in conv, text-encoder attention), with different ranks and alphas and partly different layers. Each is
written in the diffusers layout with its alpha in lora_adapter_metadata, as diffusers itself saves them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lorahub_cli.canonical import CanonicalAdapter, LoraPair
from lorahub_cli.merge import merge
from tests.fixtures.adapter_formats import lora_config
from tests.fixtures.pipelines import make_tiny_sd_pipeline
from tests.merge.writer import write_merged

WEIGHTS = [0.7, -0.45, 1.3]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_tiny_sd_pipeline(tmp_path_factory.mktemp("tiny") / "sd", seed=0)


def _pipe(path: Path):
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.from_pretrained(path, safety_checker=None, requires_safety_checker=False)


def _layers(pipe) -> dict[str, tuple[int, ...]]:
    """Canonical key -> weight shape of the layers the inputs adapt."""
    out = {}
    for name, mod in pipe.unet.named_modules():
        if name.endswith(("attn1.to_q", "attn1.to_v", "attn2.to_k", "attn2.to_out.0")) or \
                name in ("down_blocks.0.resnets.0.conv1", "down_blocks.1.attentions.0.proj_in"):
            out[f"unet.{name}"] = tuple(mod.weight.shape)
    for name, mod in pipe.text_encoder.named_modules():
        if name.endswith(("self_attn.q_proj", "self_attn.out_proj")):
            out[f"text_encoder.{name}"] = tuple(mod.weight.shape)
    return out


def _random_adapter(layers: dict[str, tuple[int, ...]], keys: list[str], rank: int, alpha: float,
                    seed: int) -> CanonicalAdapter:
    gen = torch.Generator().manual_seed(seed)
    modules = {}
    for key in keys:
        out_f, in_f, *kernel = layers[key]
        down = torch.randn(rank, in_f, *kernel, generator=gen) * 0.3
        up = torch.randn(out_f, rank, *([1, 1] if kernel else []), generator=gen) * 0.3
        modules[key] = LoraPair(down=down, up=up, alpha=alpha)
    return CanonicalAdapter(family="sd1", modules=modules)


def _write_input(adapter: CanonicalAdapter, path: Path, rank: int, alpha: float) -> None:
    """diffusers layout, alpha in the header as diffusers' save_lora_weights writes it."""
    from safetensors.torch import save_file

    tensors, names = {}, {}
    for key, pair in adapter.modules.items():
        tensors[f"{key}.lora_A.weight"], tensors[f"{key}.lora_B.weight"] = pair.down, pair.up
        component, module = key.split(".", 1)
        names.setdefault(component, []).append(module)
    meta = {f"{c}.{k}": v for c, mods in names.items() for k, v in lora_config(rank, alpha, mods).items()}
    save_file(tensors, str(path), metadata={"format": "pt", "lora_adapter_metadata": json.dumps(meta)})


def _outputs(pipe) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(123)
    ids = torch.randint(3, 20, (2, 77), generator=gen)
    latents = torch.randn(2, 4, 16, 16, generator=gen)
    with torch.no_grad():
        text = pipe.text_encoder(ids)[0]
        noise = pipe.unet(latents, torch.tensor([10, 500]), encoder_hidden_states=text).sample
    return text, noise


@pytest.mark.filterwarnings("ignore:Already found a `peft_config`")
@pytest.mark.parametrize("method", ["stack", "svd"])
def test_merged_file_matches_set_adapters(tiny, tmp_path, method):
    pipe = _pipe(tiny)
    base_text, base_noise = _outputs(pipe)
    layers = _layers(pipe)
    names = {"unet": [n for n, _ in pipe.unet.named_modules() if n],          # before any LoRA is injected
             "text_encoder": [n for n, _ in pipe.text_encoder.named_modules() if n]}
    unet_attn = [k for k in layers if k.startswith("unet.") and ".attn" in k]
    te = [k for k in layers if k.startswith("text_encoder.")]
    specs = [  # (modules, rank, alpha): modules differ between inputs, so some are in only one or two
        (unet_attn + te, 4, 8.0),
        (unet_attn + ["unet.down_blocks.0.resnets.0.conv1"], 8, 4.0),
        ([k for k in unet_attn if "attn2" in k] + ["unet.down_blocks.1.attentions.0.proj_in", te[0]], 2, 2.0),
    ]
    inputs = []
    for i, (keys, rank, alpha) in enumerate(specs):
        adapter = _random_adapter(layers, keys, rank, alpha, seed=i)
        _write_input(adapter, tmp_path / f"in{i}.safetensors", rank, alpha)
        pipe.load_lora_weights(str(tmp_path / f"in{i}.safetensors"), adapter_name=f"in{i}")
        inputs.append(adapter)
    pipe.set_adapters([f"in{i}" for i in range(3)], adapter_weights=WEIGHTS)
    ref_text, ref_noise = _outputs(pipe)

    # svd at a rank that holds the whole stacked sum must be exact too
    merged = merge(inputs, WEIGHTS, method=method, rank=None if method == "stack" else 14)
    out = write_merged(merged, tmp_path / "merged.safetensors", names)
    fresh = _pipe(tiny)
    fresh.load_lora_weights(str(out), adapter_name="merged")
    got_text, got_noise = _outputs(fresh)

    assert (ref_noise - base_noise).abs().max() > 1e-2 and (ref_text - base_text).abs().max() > 1e-2
    torch.testing.assert_close(got_text, ref_text, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got_noise, ref_noise, rtol=1e-4, atol=1e-4)
