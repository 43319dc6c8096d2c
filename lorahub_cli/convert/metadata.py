"""Header metadata of a converted file: the source's own entries, the target layout's, provenance, ModelSpec.

The source's ``__metadata__`` is kept as it was, except the entries that describe its old key layout and would
mislead a loader of the new one (a peft LoraConfig for keys that no longer exist, cloneofsimo's per-position
ranks); when a layout changes, those are dropped, and a replaced ``lora_adapter_metadata`` is kept under
``lorahub.source_lora_adapter_metadata``. ModelSpec keys (Stability-AI/ModelSpec 1.0.1) are only added where
the source has none.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

from lorahub_cli.convert.load import Source

MODELSPEC_VERSION = "1.0.1"
# modelspec.architecture of each family's LoRAs (formats.md §3.3; the aliases' bases)
ARCHITECTURES = {"sd1": "stable-diffusion-v1", "sd2": "stable-diffusion-v2-512", "sdxl": "stable-diffusion-xl-v1-base",
                 "sd3": "stable-diffusion-v3-medium", "flux": "flux-1-dev"}
SAI_IMPLEMENTATION = "https://github.com/Stability-AI/generative-models"
_POSITIONAL_META = re.compile(r"^(unet|text_encoder)(:\d+:rank)?$")


def output_metadata(source: Source, target: str, family: str, layout_entries: dict[str, str]) -> dict[str, str]:
    """Every header entry of the output file (all strings)."""
    original = dict(source.raw.metadata)
    out: dict[str, str] = {}
    relaid = target != "safetensors"
    for key, value in original.items():
        if relaid and _layout_bound(key, value, source):
            continue
        out[key] = value
    if relaid and "lora_adapter_metadata" in original:
        out["lorahub.source_lora_adapter_metadata"] = original["lora_adapter_metadata"]
    out.update(layout_entries)
    if not relaid and source.layout.format == "cloneofsimo":
        out.update({k: v for k, v in cloneofsimo_entries(source).items() if k not in out})
    out["format"] = "pt"
    out.update(_provenance(source, target, family))
    out.update({k: v for k, v in _modelspec(source, target, family).items() if k not in original})
    out.update({k: v for k, v in _ecosystem(source, family, out).items() if k not in out})
    return out


def _ecosystem(source: Source, family: str, out: dict[str, str]) -> dict[str, str]:
    """The kohya and ModelSpec keys the file still lacks (``export.conventions``): without
    ss_base_model_version an SDXL or SD2 output is filed as SD1 by A1111 and hidden under its checkpoints."""
    from lorahub_cli.export.conventions import ecosystem_metadata

    report = source.report
    v_prediction = source.raw.metadata.get("ss_v_parameterization", "").lower() == "true"
    return ecosystem_metadata(family, title=out.get("modelspec.title") or _title(source), network=report.network,
                              rank=report.rank, alpha=report.alpha, v_prediction=v_prediction,
                              implementation=out.get("modelspec.implementation", "diffusers"))


def cloneofsimo_entries(source: Source) -> dict[str, str]:
    """What lora_diffusion's parse_safeloras needs beside "unet:N:up": the target classes and each rank (a pickled
    list has neither)."""
    import json

    from lorahub_cli.archs.positional import TARGET_CLASSES

    out: dict[str, str] = {}
    for m in source.layout.modules:
        component = m.key.split(":", 1)[0]
        out.setdefault(component, json.dumps(list(TARGET_CLASSES.get(component, ()))))
        out[f"{m.key}:rank"] = str(m.rank)
    return out


def _layout_bound(key: str, value: str, source: Source) -> bool:
    if key == "lora_adapter_metadata":
        return True
    positional = source.layout.format == "cloneofsimo" and bool(_POSITIONAL_META.match(key))
    return positional or (value == "<embed>" and key in source.layout.tokens)


def _provenance(source: Source, target: str, family: str) -> dict[str, str]:
    report = source.report
    out = {"lorahub.source_sha256": source.sha256, "lorahub.source_name": source.file_name,
           "lorahub.source_format": report.format, "lorahub.source_container": report.container,
           "lorahub.converted_to": target, "lorahub.family": family}
    if report.base_model:
        out["lorahub.base_model"] = report.base_model
        out["lorahub.base_model_source"] = report.base_model_source or ""
    if source.companion is not None and source.companion_sha256:
        out["lorahub.companion_name"] = source.companion.name
        out["lorahub.companion_sha256"] = source.companion_sha256
    return out


def _modelspec(source: Source, target: str, family: str) -> dict[str, str]:
    meta = source.raw.metadata
    out = {"modelspec.sai_model_spec": MODELSPEC_VERSION,
           "modelspec.title": meta.get("ss_output_name") or _title(source)}
    architecture = _architecture(family, meta)
    if architecture:
        out["modelspec.architecture"] = f"{architecture}/lora"
        sai = target == "kohya" and family == "sdxl"
        out["modelspec.implementation"] = SAI_IMPLEMENTATION if sai else "diffusers"
    if source.report.trigger_words:
        out["modelspec.trigger_phrase"] = ", ".join(source.report.trigger_words)
    return out


def _architecture(family: str, meta: dict[str, str]) -> Optional[str]:
    if family == "sd2" and meta.get("ss_v_parameterization", "").lower() == "true":
        return "stable-diffusion-v2-768-v"
    return ARCHITECTURES.get(family)


def _title(source: Source) -> str:
    name = source.file_name
    for suffix in (".text_encoder.pt", ".safetensors", ".bin", ".pt", ".pth", ".ckpt"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem
