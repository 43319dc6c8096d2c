"""The merged file for the tiny-pipeline test, laid out by the same code `lora merge` uses.

``save_merged`` also reads its output back against the family's real module tables, which the tiny pipeline's
small layers do not match; so the test calls the layout step (``convert.write.diffusers_layout``: lora_A /
lora_B keys plus the per-component LoraConfig with rank and alpha patterns) with the tiny model's own layer
names, and writes it as ``save_merged`` does.
"""

from __future__ import annotations

from pathlib import Path

from lorahub_cli.canonical import CanonicalAdapter


def write_merged(adapter: CanonicalAdapter, path: Path, layer_names: dict[str, list[str]]) -> Path:
    """``layer_names``: component -> every layer name of that model (peft target matching needs them)."""
    from safetensors.torch import save_file

    from lorahub_cli.convert.write import diffusers_layout

    tables = {component: dict.fromkeys(names) for component, names in layer_names.items()}
    tensors, entries = diffusers_layout(adapter, tables)
    save_file(tensors, str(path), metadata={**adapter.metadata, **entries, "format": "pt"})
    return path
