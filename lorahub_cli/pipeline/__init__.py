"""Base pipeline + adapters: stack with weights, fuse, generate (the engine behind `lora generate / fuse /
recipe` and the documented Python API, docs/python-api.md).

- api.py: ``Library`` - pipeline(), set_adapters(), generate(), rerun(), fuse()
- build.py: device / dtype choice and the diffusers pipeline of a base (alias, saved name, folder, Hub id)
- adapters.py: references -> files (library or path), the `lora check` verdict, the low-rank pairs
- stack.py: the fp32 merge into live weights with an exact undo (the fast default)
- peft_stack.py: the diffusers / PEFT way (load_lora_weights + set_adapters)
- generate.py: settings, one image, numbered PNG files written atomically
- recipe.py: the recipe embedded in each PNG (JSON + A1111 "parameters")
- save.py: a fused pipeline saved as a plain diffusers folder
- schedulers.py: --scheduler names -> diffusers classes and A1111 sampler names

Importing this package imports neither torch nor diffusers.
"""

from __future__ import annotations

from typing import Any

__all__ = ["FuseResult", "GenerateSettings", "Generated", "Library", "PipelineState", "Recipe", "read_recipe"]


def __getattr__(name: str) -> Any:
    if name in ("Library", "Generated", "FuseResult", "PipelineState"):
        from lorahub_cli.pipeline import api

        return getattr(api, name)
    if name == "GenerateSettings":
        from lorahub_cli.pipeline.generate import GenerateSettings

        return GenerateSettings
    if name in ("Recipe", "read_recipe"):
        from lorahub_cli.pipeline import recipe

        return getattr(recipe, name)
    raise AttributeError(name)
