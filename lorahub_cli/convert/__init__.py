"""Conversion: pickles to safetensors, and any LoRA key layout to one that today's tools load.

- keymap.py: names only (no tensors, no torch): each module of a file -> "<component>.<module path>" of the real
  architecture, or the reason it maps nowhere (also for ``lora check`` / ``lora merge``)
- pickle.py: a weights-only pickle read once, with a cloneofsimo text-encoder companion merged in
- load.py: file -> CanonicalAdapter, with each layout's alpha semantics
- write.py: CanonicalAdapter -> diffusers (lora_A/lora_B + lora_adapter_metadata) or kohya state dicts
- metadata.py: provenance and ModelSpec header entries
- safe_write.py: temp file, fsync, bit-for-bit read-back, atomic rename
- api.py: convert_file / to_safetensors_for_store, the functions commands and the library call

Importing this package imports neither torch nor diffusers.
"""

from lorahub_cli.convert.api import TARGETS, ConversionResult, convert_file, default_output, to_safetensors_for_store
from lorahub_cli.convert.keymap import KeyMap, MappedModule, map_layout

__all__ = ["TARGETS", "ConversionResult", "KeyMap", "MappedModule", "convert_file", "default_output", "map_layout",
           "to_safetensors_for_store"]
