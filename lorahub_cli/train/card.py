"""The model card (README.md) beside the adapter: Hugging Face front matter (base_model, instance_prompt,
tags, license) as the diffusers scripts write it, plus the training parameters under ``lorahub``.

Written without huggingface_hub's card helpers: they make a network call for a repo-id-like string unless
offline, and refuse local folders (diffusers.md §3 "Gotchas")."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from lorahub_cli.train.config import TrainConfig
from lorahub_cli.train.weights import result_name

TAGS_FINETUNE = ["stable-diffusion", "stable-diffusion-diffusers", "text-to-image", "diffusers",
                 "diffusers-training", "lora"]
TAGS_DREAMBOOTH = ["text-to-image", "diffusers", "lora", "diffusers-training", "stable-diffusion",
                   "stable-diffusion-diffusers", "dreambooth"]
CARD_PARAMETERS = ("mode", "rank", "alpha", "targets", "train_text_encoder", "resolution", "center_crop",
                   "random_flip", "batch_size", "grad_accum", "lr", "lr_scheduler", "warmup", "max_steps",
                   "mixed_precision", "gradient_checkpointing", "seed", "prior_loss_weight", "snr_gamma")


def training_summary(config: TrainConfig, *, steps: int, world_size: int, final_loss: Optional[float],
                     samples: int, mixed_precision: str) -> dict[str, Any]:
    data = {k: getattr(config, k) for k in CARD_PARAMETERS}
    data["mixed_precision"] = mixed_precision
    if config.text_encoder_targets and config.train_text_encoder:
        data["text_encoder_targets"] = list(config.text_encoder_targets)
    data.update(steps=steps, world_size=world_size, effective_batch_size=config.batch_size * world_size
                * config.grad_accum, training_images=samples,
                final_loss=round(final_loss, 6) if final_loss is not None else None,
                prior_preservation=config.prior_preservation)
    return data


def render_card(config: TrainConfig, summary: dict[str, Any], validation: list[Path], root: Path) -> str:
    import yaml

    tags = list(TAGS_DREAMBOOTH if config.mode == "dreambooth" else TAGS_FINETUNE)
    tags += [t for t in config.tags if t not in tags]
    front: dict[str, Any] = {"base_model": config.base, "library_name": "diffusers", "license": config.license,
                             "inference": True}
    if config.mode == "dreambooth" and config.instance_prompt:
        front["instance_prompt"] = config.instance_prompt
    front["tags"] = tags
    # no `widget:` with the validation prompt: card readers take widget texts for trigger words
    front["lorahub"] = {"training": summary}
    yaml_text = yaml.safe_dump(front, sort_keys=False, allow_unicode=True, width=1000)
    what = ("DreamBooth LoRA" if config.mode == "dreambooth" else "LoRA fine-tune")
    lines = [f"---\n{yaml_text}---", "", f"# {config.name}", "",
             f"{what} of `{config.base}`, trained with `lora train`.", ""]
    if config.mode == "dreambooth" and config.instance_prompt:
        lines += [f"Trigger: `{config.instance_prompt}`.", ""]
    lines += ["## Use", "", "```python", "from diffusers import StableDiffusionPipeline", "",
              f'pipe = StableDiffusionPipeline.from_pretrained("{config.base}")',
              f'pipe.load_lora_weights("path/to/this/folder", weight_name="{result_name(config.name)}")',
              "```", "", "## Training parameters", "", "| parameter | value |", "|---|---|"]
    lines += [f"| {k} | {_cell(v)} |" for k, v in summary.items()]
    if validation:
        lines += ["", "## Validation images", ""]
        lines += [f"![{config.validation_prompt}]({p.relative_to(root).as_posix()})" for p in validation]
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    return str(value).replace("|", "\\|")


def write_card(root: Path, text: str) -> Path:
    from registry.publish import publish_file

    return publish_file(root / "README.md", text)
