"""A single-file base loaded as a diffusers pipeline through ``from_single_file``, with local configs only.

The configs, tokenizers and scheduler come from the base's borrowed diffusers folder (``lora base add FILE
--borrow FOLDER``), else from the family's public repo in the Hugging Face cache; ``local_files_only`` is always
set, so nothing ever reaches the network (HF_HUB_OFFLINE=1 or not). What the file lacks (a transformer-only Flux
or SD3 file, a checkpoint without its VAE) is taken from the borrowed folder; with none, ``missing-component``
names what is missing and how to supply it, before any weights are read.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorahub_cli.archs.aliases import REPOS
from lorahub_cli.errors import LoraError, MissingComponent, NotFound

if TYPE_CHECKING:
    import torch

    from lorahub_cli.bases import Base

_FAMILY_ALIAS = {"sd1": "sd15", "sd2": "sd21", "sdxl": "sdxl", "sd3": "sd3", "flux": "flux"}
# components a pipeline of each family needs from somewhere (the file, or the borrowed folder)
NEEDED = {"sd1": ("unet", "text_encoder", "vae"), "sd2": ("unet", "text_encoder", "vae"),
          "unknown": ("unet", "text_encoder", "vae"), "sdxl": ("unet", "text_encoder", "text_encoder_2", "vae"),
          "sd3": ("transformer", "text_encoder", "text_encoder_2", "text_encoder_3", "vae"),
          "flux": ("transformer", "text_encoder", "text_encoder_2", "vae")}


def pipeline_class(family: str, variants: tuple[str, ...]) -> Any:
    import diffusers

    if family == "sdxl":
        return diffusers.StableDiffusionXLImg2ImgPipeline if "refiner" in variants else \
            diffusers.StableDiffusionXLPipeline
    if family == "flux":
        return diffusers.FluxPipeline
    if family == "sd3":
        return diffusers.StableDiffusion3Pipeline
    if "inpainting" in variants:
        return diffusers.StableDiffusionInpaintPipeline
    return diffusers.StableDiffusionPipeline


def missing_components(base: "Base", present: tuple[str, ...]) -> list[str]:
    """What a pipeline of ``base``'s family needs that the file does not hold (none when a folder is borrowed)."""
    if base.borrow:
        return []
    return [c for c in NEEDED.get(base.family, NEEDED["unknown"]) if c not in present]


def load_single_file(base: "Base", torch_dtype: "torch.dtype") -> Any:
    """The diffusers pipeline of a checkpoint base, offline; raises MissingComponent / NotFound on what lacks."""
    path = Path(base.checkpoint or base.id)   # identified from its header when the base was resolved
    missing = missing_components(base, base.holds)
    if missing:
        raise MissingComponent(f"{path.name} holds no {', '.join(missing)} (it has {', '.join(base.holds)})",
                               hint=f"Save it with a diffusers folder to take them from: `lora base add {path} "
                                    f"--name NAME --borrow FOLDER`, then use --base NAME.")
    config = str(base.borrow) if base.borrow else REPOS.get(_FAMILY_ALIAS.get(base.family, ""), None)
    if config is None:
        raise MissingComponent(f"{path.name} is a {base.family} model with no published configs to read it with",
                               hint=f"Borrow the configs of its diffusers twin: `lora base add {path} --name NAME "
                                    "--borrow FOLDER`.")
    if not base.borrow:
        _require_cached(config, path)
    cls = pipeline_class(base.family, base.variants)
    try:
        lent = _borrowed(Path(base.borrow), base.family, list(base.holds), torch_dtype) if base.borrow else {}
        return cls.from_single_file(str(path), config=config, local_files_only=True, torch_dtype=torch_dtype,
                                    **lent)
    except LoraError:
        raise
    except Exception as exc:   # nothing cached for the repo id, a config that does not fit the file, ...
        if base.borrow:
            raise NotFound(f"could not load {path.name} with the configs of {base.borrow}: {exc}",
                           hint="Borrow from the diffusers folder of the same architecture.") from exc
        raise _not_cached(config, path) from exc


def _borrowed(folder: Path, family: str, present: list[str], torch_dtype: "torch.dtype") -> dict[str, Any]:
    """The components the file lacks, loaded from the borrowed diffusers folder (its own weights)."""
    import json

    import diffusers
    import transformers

    index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    out = {}
    for component in NEEDED.get(family, NEEDED["unknown"]):
        if component in present:
            continue
        library, class_name = index.get(component, [None, None])
        module = {"diffusers": diffusers, "transformers": transformers}.get(library)
        model_cls = getattr(module, class_name or "", None) if module else None
        if model_cls is None:
            raise MissingComponent(f"the file holds no {component}, and {folder} has none to lend")
        out[component] = model_cls.from_pretrained(folder, subfolder=component, local_files_only=True,
                                                   torch_dtype=torch_dtype)
    return out


def _require_cached(repo: str, path: Path) -> None:
    """The repo's model_index.json in the HF cache, checked before the file's weights are read (GBs)."""
    from huggingface_hub import hf_hub_download

    try:
        hf_hub_download(repo, "model_index.json", local_files_only=True)
    except Exception as exc:   # LocalEntryNotFoundError and kin: nothing cached
        raise _not_cached(repo, path) from exc


def _not_cached(repo: str, path: Path) -> MissingComponent:
    return MissingComponent(f"the configs and tokenizers of {repo} (to read {path.name} with) are not in the "
                            "Hugging Face cache, and lora never downloads them for a single file",
                            hint=f"Borrow them from a diffusers folder: `lora base add {path} --name NAME "
                                 f"--borrow FOLDER`, or fetch them once: `hf download {repo} --include "
                                 "'*.json' '*.txt'`.")
