"""A single-file base loaded as a diffusers pipeline through ``from_single_file``, with local configs only.

The configs, tokenizers and scheduler come from the base's borrowed diffusers folder (``lora base add FILE
--borrow FOLDER``), else from the family's public repo in the Hugging Face cache; ``local_files_only`` is always
set, so nothing ever reaches the network (HF_HUB_OFFLINE=1 or not). What the file lacks (a transformer-only Flux
or SD3 file, a checkpoint without its VAE) comes from a part supplied apart (``--vae``, ``--text-encoder``,
``--text-encoder-2``, ``--text-encoder-3``: a weights file or a diffusers folder each), else from the borrowed
folder's weights; with neither, ``missing-component`` names what is missing and the flags that supply it, before
any weights are read.

A Flux transformer is converted from BFL's layout here (``checkpoints.dit``, any width) and handed to
``from_single_file`` already in diffusers' names: diffusers' own converter assumes the published 3072 width.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorahub_cli.archs.aliases import REPOS
from lorahub_cli.bases import PART_FLAGS, needed_components
from lorahub_cli.errors import Incompatible, LoraError, MissingComponent, NotFound

if TYPE_CHECKING:
    import torch

    from lorahub_cli.bases import Base

_FAMILY_ALIAS = {"sd1": "sd15", "sd2": "sd21", "sdxl": "sdxl", "sd3": "sd3", "flux": "flux"}
_WEIGHTS = ("*.safetensors", "*.bin")
# where a CLIP text encoder's keys go so that diffusers' reader takes them (the SD1 / SD3 single-file roots)
_CLIP_ROOTS = {("sd3", "text_encoder"): "text_encoders.clip_l.transformer.",
               ("sd3", "text_encoder_2"): "text_encoders.clip_g.transformer.",
               ("sdxl", "text_encoder_2"): "text_encoders.clip_g.transformer."}
_CLIP_DEFAULT_ROOT = "cond_stage_model.transformer."
_T5_ROOT = "text_encoders.t5xxl.transformer."
_ORIGINAL_ROOTS = ("cond_stage_model.", "conditioner.", "text_encoders.")


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
    """What a pipeline of ``base``'s family needs that neither the file, a part supplied apart, nor the borrowed
    folder's weights hold (a borrowed folder of configs alone lends no weights)."""
    have = set(present) | {c for c, _ in base.parts}
    if base.borrow:
        have |= {c for c in _needed(base) if _has_weights(Path(base.borrow) / c)}
    return [c for c in _needed(base) if c not in have]


def _needed(base: "Base") -> tuple[str, ...]:
    return needed_components(base.family, base.variants)


def _has_weights(folder: Path) -> bool:
    return folder.is_dir() and any(next(folder.glob(p), None) is not None for p in _WEIGHTS)


def missing_error(path: Path, base: "Base", missing: list[str]) -> MissingComponent:
    flags = [f"{PART_FLAGS[c]} FILE_OR_FOLDER" for c in missing if c in PART_FLAGS]
    hint = (f"Supply {'it' if len(flags) == 1 else 'them'} with {', '.join(flags)} (on `lora base add`, "
            f"`lora generate`, `lora fuse`), or borrow a diffusers folder that has "
            f"{'it' if len(missing) == 1 else 'them'}: `lora base add {path} --name NAME --borrow FOLDER`.")
    return MissingComponent(f"{path.name} holds no {', '.join(missing)} (it has {', '.join(base.holds)})"
                            + (f"; {base.borrow} lends no weights for it" if base.borrow else ""), hint=hint)


def load_single_file(base: "Base", torch_dtype: "torch.dtype") -> Any:
    """The diffusers pipeline of a checkpoint base, offline; raises MissingComponent / NotFound on what lacks."""
    path = Path(base.checkpoint or base.id)   # identified from its header when the base was resolved
    missing = missing_components(base, base.holds)
    if missing:
        raise missing_error(path, base, missing)
    config = config_folder(base, path)
    cls = pipeline_class(base.family, base.variants)
    try:
        # eval(): diffusers' T5 reader returns the model in training mode (dropout on at inference)
        lent = {c: load_part(c, Path(p), config, base.family, torch_dtype).eval() for c, p in base.parts}
        lent.update(_borrowed(base, config, lent, torch_dtype))
        if base.family == "flux" and "transformer" in base.holds:
            lent["transformer"] = _flux_transformer(path, config, torch_dtype)
        return cls.from_single_file(str(path), config=str(config), local_files_only=True, torch_dtype=torch_dtype,
                                    **lent)
    except LoraError:
        raise
    except Exception as exc:   # a config that does not fit the file, a cached snapshot without a tokenizer, ...
        raise NotFound(f"could not load {path.name} with the configs in {config}: {exc}",
                       hint="Borrow the configs of a diffusers folder of the same architecture (--borrow FOLDER)."
                       ) from exc


def config_folder(base: "Base", path: Path) -> Path:
    """The local diffusers folder whose configs, tokenizers and scheduler read the file: the borrowed folder, else
    the family's repo snapshot in the HF cache (checked before any weights are read: they can be GBs)."""
    if base.borrow:
        return Path(base.borrow)
    repo = REPOS.get(_FAMILY_ALIAS.get(base.family, ""), None)
    if repo is None:
        raise MissingComponent(f"{path.name} is a {base.family} model with no published configs to read it with",
                               hint=f"Borrow the configs of its diffusers twin: `lora base add {path} --name NAME "
                                    "--borrow FOLDER`.")
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo, "model_index.json", local_files_only=True)).parent
    except Exception as exc:   # LocalEntryNotFoundError and kin: nothing cached
        raise _not_cached(repo, path) from exc


def _component_class(config: Path, component: str) -> Any:
    import diffusers
    import transformers

    index = json.loads((config / "model_index.json").read_text(encoding="utf-8"))
    library, class_name = (index.get(component) or [None, None])[:2]
    module = {"diffusers": diffusers, "transformers": transformers}.get(library)
    found = getattr(module, class_name or "", None) if module else None
    if found is None:
        raise MissingComponent(f"{config} names no class for {component} (model_index.json)")
    return found


def _borrowed(base: "Base", config: Path, lent: dict, torch_dtype: "torch.dtype") -> dict[str, Any]:
    """The components neither the file nor a part holds, loaded from the borrowed folder (its own weights)."""
    out = {}
    for component in _needed(base):
        if component in base.holds or component in lent:
            continue
        out[component] = _component_class(config, component).from_pretrained(
            config, subfolder=component, local_files_only=True, torch_dtype=torch_dtype)
    return out


def load_part(component: str, path: Path, config: Path, family: str, torch_dtype: "torch.dtype") -> Any:
    """One component supplied apart: a diffusers folder (a pipeline's, or the component's own), or a weights file
    in diffusers', transformers' or the original layout, read with ``config``'s config for that component."""
    model_cls = _component_class(config, component)
    flag = PART_FLAGS.get(component, component)
    try:
        if path.is_dir():
            if (path / "model_index.json").is_file():
                return model_cls.from_pretrained(path, subfolder=component, local_files_only=True,
                                                 torch_dtype=torch_dtype)
            if (path / "config.json").is_file():
                return model_cls.from_pretrained(path, local_files_only=True, torch_dtype=torch_dtype)
            raise NotFound(f"{flag} {path}: a folder without config.json or model_index.json")
        state = _read_weights(path)
        if hasattr(model_cls, "from_single_file"):   # a diffusers model (the VAE): its own single-file reader
            return model_cls.from_single_file(state, config=str(config), subfolder=component, local_files_only=True,
                                              torch_dtype=torch_dtype)
        from diffusers.loaders import single_file_utils as sfu

        if "T5" in model_cls.__name__:
            state = state if any(k.startswith(_T5_ROOT) for k in state) else {_T5_ROOT + k: v for k, v in
                                                                               state.items()}
            # T5's token embedding is tied (shared == encoder.embed_tokens): files keep one name, the model needs both
            for have, need in (("shared.weight", "encoder.embed_tokens.weight"),
                               ("encoder.embed_tokens.weight", "shared.weight")):
                if _T5_ROOT + have in state and _T5_ROOT + need not in state:
                    state[_T5_ROOT + need] = state[_T5_ROOT + have]
            return sfu.create_diffusers_t5_model_from_checkpoint(model_cls, state, subfolder=component,
                                                                 config=str(config), torch_dtype=torch_dtype,
                                                                 local_files_only=True)
        if not any(k.startswith(_ORIGINAL_ROOTS) for k in state):   # transformers' layout (ComfyUI's clip_l, ...)
            from lorahub_cli.checkpoints.original import nested

            root = _CLIP_ROOTS.get((family, component), _CLIP_DEFAULT_ROOT)
            if root == _CLIP_ROOTS[("sd3", "text_encoder")] and "text_projection.weight" in state:
                root = _CLIP_DEFAULT_ROOT   # SD3's CLIP-L root means an identity projection; keep the file's own
            state = {root + nested(k): v for k, v in state.items() if not k.endswith("position_ids")}
        return sfu.create_diffusers_clip_model_from_ldm(model_cls, state, subfolder=component, config=str(config),
                                                        torch_dtype=torch_dtype, local_files_only=True)
    except LoraError:
        raise
    except Exception as exc:   # shapes that do not fit the config, keys of another model, ...
        raise Incompatible(f"{flag} {path}: not a {component} that fits this base ({type(exc).__name__}: {exc})",
                           hint=f"Give the {component} of the same architecture (a file or a diffusers folder)."
                           ) from exc


def _read_weights(path: Path) -> dict[str, "torch.Tensor"]:
    """A weights file's tensors: safetensors directly, a pickle only through the weights-only reader."""
    from lorahub_cli.inspect.containers import read_container

    raw = read_container(path)   # refuses damaged files and unsafe pickles with their own codes
    if raw.container == "safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    from lorahub_cli.inspect.pickle_reader import load_pickle_tensors

    return dict(load_pickle_tensors(path))


def _flux_transformer(path: Path, config: Path, torch_dtype: "torch.dtype") -> Any:
    """The file's Flux transformer in diffusers' names (``checkpoints.dit``), through from_single_file."""
    import diffusers

    from lorahub_cli.archs import ldm
    from lorahub_cli.checkpoints.dit import flux_from_original

    state = _read_weights(path)
    found = ldm.architecture_of(state)
    root = found[1] if found else ""
    state = flux_from_original({k: v for k, v in state.items() if k.startswith(root)}, root)
    return diffusers.FluxTransformer2DModel.from_single_file(state, config=str(config), subfolder="transformer",
                                                             local_files_only=True, torch_dtype=torch_dtype)


def _not_cached(repo: str, path: Path) -> MissingComponent:
    return MissingComponent(f"the configs and tokenizers of {repo} (to read {path.name} with) are not in the "
                            "Hugging Face cache, and lora never downloads them for a single file",
                            hint=f"Borrow them from a diffusers folder: `lora base add {path} --name NAME "
                                 f"--borrow FOLDER`, or fetch them once: `hf download {repo} --include "
                                 "'*.json' '*.txt'`.")
