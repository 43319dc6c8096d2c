"""Real diffusers pipelines' LoRA loading, run on real architectures whose base weights are not there.

The U-Net (or DiT transformer) and CLIP text encoders are built from the packaged public configs on the meta device, then every base
parameter is replaced by a zero-stride tensor of the right shape and dtype (one element of memory: peft moves an
adapter to its base layer's device, so the base cannot stay on meta). The pipeline's own LoRA mixin
(StableDiffusionLoraLoaderMixin, StableDiffusionXLLoraLoaderMixin, SD3LoraLoaderMixin, FluxLoraLoaderMixin) then
runs ``load_lora_weights`` unchanged,
with ``low_cpu_mem_usage=True``: adapter weights come from the file, exactly as in a real pipeline.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from lorahub_cli.archs import base_components, component_class, config_dir

ADAPTER = "converted_check"   # distinctive: diffusers' missing-key filter is a substring test on the name
ORIGINAL = "original_check"
DIT_BASES = ("sd3", "flux")
MIXINS = {"sd15": "StableDiffusionLoraLoaderMixin", "sd21": "StableDiffusionLoraLoaderMixin",
          "sdxl": "StableDiffusionXLLoraLoaderMixin", "sd3": "SD3LoraLoaderMixin", "flux": "FluxLoraLoaderMixin"}


@dataclass
class Loaded:
    """One peft LoRA layer after loading: its factors and scaling, by canonical "<component>.<path>"."""

    A: torch.Tensor
    B: torch.Tensor
    scaling: float
    active: bool


def build_components(alias: str) -> dict[str, Optional[torch.nn.Module]]:
    """Every adaptable component of ``alias``; for the DiT bases (SD3, Flux) only the transformer is built (their
    T5 encoders are large even on meta) and the text encoders are None, so their files must adapt the transformer."""
    out: dict[str, Optional[torch.nn.Module]] = {}
    for component in base_components(alias):
        if alias in DIT_BASES and component != "transformer":
            out[component] = None
            continue
        library, class_name = component_class(alias, component)
        config = json.loads((config_dir(alias) / component / "config.json").read_text())
        with torch.device("meta"):
            if library == "diffusers":
                import diffusers

                model = getattr(diffusers, class_name).from_config(config)
            else:
                import transformers

                cls = getattr(transformers, class_name)
                model = cls(cls.config_class.from_dict(config))
        out[component] = _stub_weights(model)
    return out


def _stub_weights(model: torch.nn.Module) -> torch.nn.Module:
    for module in model.modules():
        for name, p in list(module._parameters.items()):
            if p is not None:
                module._parameters[name] = torch.nn.Parameter(torch.zeros((), dtype=p.dtype).expand(p.shape),
                                                              requires_grad=False)
        for name, b in list(module._buffers.items()):
            if b is not None:
                module._buffers[name] = torch.zeros((), dtype=b.dtype).expand(b.shape)
    return model


def pipeline_class(alias: str):
    from diffusers import loaders

    mixin = getattr(loaders, MIXINS[alias])

    class MetaPipeline(mixin):   # the pipeline's LoRA methods over meta-built components
        hf_device_map = None

        def __init__(self, components: dict[str, torch.nn.Module]):
            self.components = components
            for name, module in components.items():
                setattr(self, name, module)

    return MetaPipeline


def load_lora_weights(alias: str, components: dict[str, torch.nn.Module], path: Path,
                      adapter: str = ADAPTER) -> dict[str, Loaded]:
    """``pipe.load_lora_weights(path, adapter_name=adapter)`` on a meta pipeline of ``alias`` made of
    ``components``; every LoRA layer of that adapter it created, right after the load."""
    pipe = pipeline_class(alias)(components)
    pipe.load_lora_weights(str(path), adapter_name=adapter, low_cpu_mem_usage=True)
    return lora_layers(components, adapter)


def lora_layers(components: dict[str, torch.nn.Module], adapter: str = ADAPTER) -> dict[str, Loaded]:
    from peft.tuners.lora import LoraLayer

    out = {}
    for component, model in components.items():
        if model is None:
            continue
        for name, module in model.named_modules():
            if isinstance(module, LoraLayer) and adapter in module.lora_A:
                if component.startswith("text_encoder") and not name.startswith(("text_model.", "text_projection")):
                    name = f"text_model.{name}"   # transformers >= 5.6 flattened CLIPTextModel
                out[f"{component}.{name}"] = Loaded(A=module.lora_A[adapter].weight.detach(),
                                                    B=module.lora_B[adapter].weight.detach(),
                                                    scaling=float(module.scaling[adapter]),
                                                    active=adapter in module.active_adapters)
    return out
