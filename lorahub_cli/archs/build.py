"""Build one component on torch's meta device and list its Linear / Conv2d layers (imports torch).

Only called on a cache miss (see tables.py). Meta tensors have shapes but no storage, so even the 12B
Flux transformer builds in well under a second and allocates nothing.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Iterator

from lorahub_cli.errors import NotFound

# transformers >= 5.6 dropped the "text_model." level of CLIPTextModel; CLIPTextModelWithProjection
# and transformers 4.x keep it. Adapter files in the wild (kohya lora_te_text_model_..., PEFT
# base_model.model.text_model...) were written against the nested names, so tables always use them.
CLIP_TEXT_CLASSES = ("CLIPTextModel", "CLIPTextModelWithProjection")
CLIP_TOP_LEVEL = ("text_projection",)  # sits beside text_model, never inside it

# layer tuple: (kind, in_features, out_features, kernel or None)
LayerTuple = tuple[str, int, int, "tuple[int, int] | None"]


def build_layers(library: str, class_name: str, config: dict[str, Any]) -> dict[str, LayerTuple]:
    """Every nn.Linear / nn.Conv2d of ``class_name`` built from ``config``, by module name."""
    import torch

    model = _instantiate(library, class_name, config, torch)
    layers: dict[str, LayerTuple] = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            layers[name] = ("linear", module.in_features, module.out_features, None)
        elif isinstance(module, torch.nn.Conv2d):
            kernel = tuple(int(k) for k in module.kernel_size)
            layers[name] = ("conv", module.in_channels, module.out_channels, kernel)  # type: ignore[assignment]
    if class_name in CLIP_TEXT_CLASSES and not hasattr(model, "text_model"):
        layers = {_nest_clip(name): layer for name, layer in layers.items()}
    return layers


def _nest_clip(name: str) -> str:
    return name if name in CLIP_TOP_LEVEL or name.startswith("text_model.") else f"text_model.{name}"


def _instantiate(library: str, class_name: str, config: dict[str, Any], torch: Any) -> Any:
    with _quiet(), torch.device("meta"):
        if library == "diffusers":
            import diffusers

            cls = getattr(diffusers, class_name, None)
            if cls is None:
                raise NotFound(f"diffusers {_version('diffusers')} has no model class {class_name!r}")
            return cls.from_config(config)
        if library == "transformers":
            import transformers

            cls = getattr(transformers, class_name, None)
            if cls is None:
                raise NotFound(f"transformers {_version('transformers')} has no model class {class_name!r}")
            return cls(cls.config_class.from_dict(config))
    raise NotFound(f"no module table for a {library!r} component ({class_name})")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Config chatter (deprecated keys, unused attributes) is not the user's business here."""
    names = ("diffusers", "transformers")
    saved = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.ERROR)
    try:
        yield
    finally:
        for n, level in saved.items():
            logging.getLogger(n).setLevel(level)


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)
