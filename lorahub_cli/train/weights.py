"""LoRA layers on the models, and their file: add, save (diffusers layout, atomically), load back.

Files are written by ``StableDiffusionPipeline.save_lora_weights`` from the peft state dicts, so the keys are
``unet.<module>.lora_A/B.weight`` (and ``text_encoder.``) and the header carries ``lora_adapter_metadata``
(each component's LoraConfig: rank and alpha survive). Extra header entries (the training configuration)
are added by rewriting that file's header before it is renamed into place.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

WEIGHT_NAME = "pytorch_lora_weights.safetensors"   # what diffusers writes (checkpoints and validation keep it)


def result_name(name: str) -> str:
    """The finished adapter's file name: the run's name (UIs call a LoRA by its file name), made safe on every
    system by the export sanitiser."""
    from lorahub_cli.export.names import sanitize

    return f"{sanitize(name)}.safetensors"
ADAPTER = "default"


def add_lora(model: Any, *, rank: int, alpha: float, targets: list[str], dropout: float = 0.0) -> None:
    """Attach a trainable LoRA adapter (gaussian A, zero B: the scripts' init) to a UNet or text encoder."""
    from peft import LoraConfig

    config = LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights="gaussian", target_modules=list(targets),
                        lora_dropout=dropout)
    try:
        model.add_adapter(config)
    except ValueError as err:  # peft: none of the target modules exist in this model
        from lorahub_cli.errors import UsageError

        raise UsageError(f"cannot attach LoRA to {type(model).__name__}: {err}",
                         hint="Check --targets against the model's module names.") from err


def lora_state(model: Any) -> dict:
    """The adapter's tensors in fp32 on the CPU, keyed as peft names them (no component prefix)."""
    import torch
    from peft.utils import get_peft_model_state_dict

    return {k: v.detach().to("cpu", torch.float32).contiguous()
            for k, v in get_peft_model_state_dict(model, adapter_name=ADAPTER, save_embedding_layers=False).items()}


def adapter_metadata(model: Any) -> dict:
    return model.peft_config[ADAPTER].to_dict()


def save_adapter(directory: Path, unet: Any, text_encoder: Optional[Any] = None,
                 text_encoder_2: Optional[Any] = None, *,
                 extra_metadata: Optional[dict[str, str]] = None, file_name: str = WEIGHT_NAME) -> Path:
    """Write ``directory/<file_name>`` (default pytorch_lora_weights.safetensors) atomically
    (``registry.publish``); return its path. ``text_encoder_2``: SDXL's second encoder (train/sdxl.py)."""
    from diffusers import StableDiffusionPipeline

    from registry.publish import TempFile, temp_folder

    directory = Path(directory)
    final = directory / file_name
    with temp_folder(directory, name=WEIGHT_NAME) as tmp:   # diffusers names the file itself: a folder for it
        kwargs: dict[str, Any] = {"unet_lora_layers": lora_state(unet),
                                  "unet_lora_adapter_metadata": adapter_metadata(unet)}
        if text_encoder is not None:
            kwargs["text_encoder_lora_layers"] = lora_state(text_encoder)
            kwargs["text_encoder_lora_adapter_metadata"] = adapter_metadata(text_encoder)
        if _is_flux_transformer(unet):
            from lorahub_cli.train.flux import save_lora as save_flux

            save_flux(tmp, kwargs["unet_lora_layers"], kwargs["unet_lora_adapter_metadata"])
        elif text_encoder_2 is not None:
            from lorahub_cli.train.sdxl import save_lora

            layers = {"unet": kwargs["unet_lora_layers"], "text_encoder": kwargs["text_encoder_lora_layers"],
                      "text_encoder_2": lora_state(text_encoder_2)}
            meta = {"unet": kwargs["unet_lora_adapter_metadata"],
                    "text_encoder": kwargs["text_encoder_lora_adapter_metadata"],
                    "text_encoder_2": adapter_metadata(text_encoder_2)}
            save_lora(tmp, layers, meta)
        else:
            StableDiffusionPipeline.save_lora_weights(tmp, safe_serialization=True, **kwargs)
        written = Path(tmp) / WEIGHT_NAME
        if extra_metadata:
            _add_header_entries(written, extra_metadata)
        TempFile(written).publish(final)
    return final


def _add_header_entries(path: Path, entries: dict[str, str]) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as f:
        metadata = dict(f.metadata() or {})
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    metadata.update({k: v if isinstance(v, str) else json.dumps(v, sort_keys=True) for k, v in entries.items()})
    save_file(tensors, str(path), metadata=metadata)



def _is_flux_transformer(model: Any) -> bool:
    """Flux's transformer is trained where SD's UNet is; its file's keys say ``transformer.``."""
    return type(model).__name__ == "FluxTransformer2DModel"


def load_adapter_into(path: Path, unet: Any, text_encoder: Optional[Any] = None,
                      text_encoder_2: Optional[Any] = None) -> None:
    """Put the weights of a file written by ``save_adapter`` back into the models' adapters (exactly)."""
    from peft.utils import set_peft_model_state_dict
    from safetensors.torch import load_file

    from lorahub_cli.errors import CorruptHeader

    state = load_file(str(path))
    parts: dict[str, dict] = {"unet": {}, "text_encoder": {}, "text_encoder_2": {}}
    if _is_flux_transformer(unet):
        parts = {"transformer": {}, "text_encoder": {}, "text_encoder_2": {}}
    for key, value in state.items():
        prefix, _, rest = key.partition(".")
        if prefix not in parts:
            raise CorruptHeader(f"{path}: unexpected key {key!r} in a training checkpoint")
        parts[prefix][rest] = value
    targets = [(next(iter(parts)), unet), ("text_encoder", text_encoder), ("text_encoder_2", text_encoder_2)]
    for name, model in targets:
        if model is None:
            if parts[name]:
                raise CorruptHeader(f"{path} has {name} weights but this run does not train the {name}")
            continue
        result = set_peft_model_state_dict(model, parts[name], adapter_name=ADAPTER)
        unexpected = getattr(result, "unexpected_keys", None) or []
        if unexpected or not parts[name]:
            raise CorruptHeader(f"{path}: {name} weights do not match the run's adapter "
                                f"({len(unexpected)} unexpected keys, {len(parts[name])} given)")

