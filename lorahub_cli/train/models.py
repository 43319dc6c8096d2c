"""The base model's parts for training: UNet, VAE, text encoder, tokenizer, and the DDPM noise schedule.

A base is a local diffusers folder (``save_pretrained`` layout) or a Hub id, read through the Hugging Face
cache (offline when HF_HUB_OFFLINE is set, and always for a local folder). The noise scheduler is the base's
scheduler config read as a ``DDPMScheduler``, as the diffusers training scripts do, so the prediction type
(epsilon or v_prediction) and beta schedule are the base's own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from lorahub_cli.errors import Incompatible, NotFound, Offline, UsageError

SUPPORTED_PIPELINES = ("StableDiffusionPipeline", "StableDiffusionXLPipeline", "FluxPipeline")


@dataclass
class Base:
    source: str                 # what the user named (folder or Hub id)
    pipeline_class: str         # from model_index.json
    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    noise_scheduler: Any
    scheduler: Any = None       # a single-file base's inference scheduler (a folder's is read from its configs)
    text_encoder_2: Any = None  # SDXL's second (projection) encoder, Flux's T5; and its tokenizer
    tokenizer_2: Any = None
    family: str = "sd"          # sd (1.x / 2.x) | sdxl | flux (``unet`` is then the Flux transformer)

    @property
    def text_encoders(self) -> list:
        """The encoders still loaded (Flux frees both once their embeddings are cached)."""
        return [e for e in (self.text_encoder, self.text_encoder_2) if e is not None]

    @property
    def prediction_type(self) -> str:
        return getattr(self.noise_scheduler.config, "prediction_type", None) or "flow"

    @property
    def latent_channels(self) -> int:
        return int(self.vae.config.latent_channels)

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)


def hub_offline() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub reads it (the one reading in ``sources.hf.HubSettings``)."""
    from lorahub_cli.sources.hf import HubSettings

    return HubSettings.current().offline


def _local_only(base: str) -> bool:
    return Path(base).expanduser().is_dir() or hub_offline()


def read_model_index(base: str) -> dict:
    """The base's model_index.json (which pipeline it is and its components)."""
    local = Path(base).expanduser()
    if local.is_file():
        raise UsageError(f"--base {base} is a single weights file; lora train needs a diffusers folder or Hub id",
                         hint="Convert it with diffusers' StableDiffusionPipeline.from_single_file(...)"
                              ".save_pretrained(DIR), then pass DIR.")
    if local.is_dir():
        index = local / "model_index.json"
        if not index.is_file():
            raise NotFound(f"--base {base} is a folder without model_index.json (not a diffusers pipeline folder)")
        import json

        return json.loads(index.read_text(encoding="utf-8"))
    if base.startswith((".", "/", "~")) or base.count("/") > 1:
        raise NotFound(f"--base: no such folder: {base}")
    from diffusers import DiffusionPipeline

    with _loading(base):
        return dict(DiffusionPipeline.load_config(base, local_files_only=hub_offline()))


class _loading:
    """Turns the loaders' OSError/ValueError into NotFound or Offline naming the base."""

    def __init__(self, base: str):
        self.base = base

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is None or not isinstance(exc, (OSError, ValueError)):
            return False
        if hub_offline() and not Path(self.base).expanduser().is_dir():
            raise Offline(f"base model {self.base} is not in the local Hugging Face cache and HF_HUB_OFFLINE is "
                          f"set ({exc})", hint="Download it once online, or pass a local diffusers folder.") from exc
        raise NotFound(f"cannot load base model {self.base}: {exc}") from exc


def load_base(base: str, *, text_encoder_2: Optional[str] = None, vae: Optional[str] = None,
              text_encoder: Optional[str] = None, borrow: Optional[str] = None) -> Base:
    """Load every part training needs, in float32 on the CPU (the loop moves and casts them).
    ``text_encoder_2``: a T5 encoder folder for a Flux base that lacks its own (for a single file, its second
    encoder). ``vae`` / ``text_encoder`` / ``borrow``: a single-file base's parts given apart."""
    single = _single_file_base(base)
    if single is not None:
        from lorahub_cli.bases import with_parts

        single = with_parts(single, borrow=Path(borrow) if borrow else None,
                            parts={"vae": vae, "text_encoder": text_encoder, "text_encoder_2": text_encoder_2})
        return _from_single_file(base, single)
    if vae or text_encoder or borrow:
        flags = " / ".join(f for f, v in (("--vae", vae), ("--text-encoder", text_encoder), ("--borrow", borrow)) if v)
        raise UsageError(f"{flags} is for a single-file checkpoint base; --base {base} has its own components")
    index = read_model_index(base)
    cls = index.get("_class_name", "?")
    if cls not in SUPPORTED_PIPELINES:
        raise Incompatible(f"--base {base} is a {cls}; lora train supports {', '.join(SUPPORTED_PIPELINES)} "
                           "bases (Stable Diffusion 1.x / 2.x and XL, Flux)")
    source = str(Path(base).expanduser()) if Path(base).expanduser().is_dir() else base
    if cls == "StableDiffusionXLPipeline":
        from lorahub_cli.train.sdxl import load_parts

        with _loading(base):
            parts = load_parts(source, _local_only(base))
        return Base(base, cls, family="sdxl", **parts)
    if cls == "FluxPipeline":
        from lorahub_cli.train.flux import load_parts as load_flux

        with _loading(base):
            parts = load_flux(source, _local_only(base), text_encoder_2=text_encoder_2, ref=base)
        return Base(base, cls, family="flux", **parts)
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    kw = {"local_files_only": _local_only(base)}
    with _loading(base):
        noise_scheduler = DDPMScheduler.from_pretrained(source, subfolder="scheduler", **kw)
        tokenizer = CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", **kw)
        text_encoder = CLIPTextModel.from_pretrained(source, subfolder="text_encoder", **kw)
        vae = AutoencoderKL.from_pretrained(source, subfolder="vae", **kw)
        unet = UNet2DConditionModel.from_pretrained(source, subfolder="unet", **kw)
    for module in (unet, vae, text_encoder):
        module.requires_grad_(False)
    return Base(base, cls, unet, vae, text_encoder, tokenizer, noise_scheduler)


def _single_file_base(base: str) -> Any:
    """The checkpoint ``base`` names (a file, or a base saved from one with `lora base add`), else None."""
    from lorahub_cli.bases import CHECKPOINT, list_bases, resolve_base

    if Path(base).expanduser().is_file() or any(b.name == base and b.kind == CHECKPOINT for b in list_bases()):
        return resolve_base(base)
    return None


def _from_single_file(ref: str, single: Any) -> Base:
    """A single-file SD 1.x / 2.x, SDXL or Flux checkpoint through ``checkpoints.load`` (from_single_file, local
    configs only; a file's missing parts from --vae / --text-encoder* / --borrow, given now or saved with it)."""
    import torch
    from diffusers import DDPMScheduler, FlowMatchEulerDiscreteScheduler

    from lorahub_cli.checkpoints.load import load_single_file

    if single.family not in ("sd1", "sd2", "unknown", "sdxl", "flux") or \
            set(single.variants) & {"inpainting", "refiner"}:
        raise Incompatible(f"--base {ref} is a {single.family} checkpoint; lora train supports Stable Diffusion "
                           "1.x / 2.x, SDXL and Flux checkpoints (SD3 bases: not yet)")
    pipe = load_single_file(single, torch.float32)
    family = {"sdxl": "sdxl", "flux": "flux"}.get(single.family, "sd")
    denoiser = pipe.transformer if family == "flux" else pipe.unet
    encoders = [pipe.text_encoder] + ([pipe.text_encoder_2] if family != "sd" else [])
    for module in (denoiser, pipe.vae, *encoders):
        module.requires_grad_(False)
    noise = (FlowMatchEulerDiscreteScheduler if family == "flux" else DDPMScheduler).from_config(pipe.scheduler.config)
    extra = {"text_encoder_2": pipe.text_encoder_2, "tokenizer_2": pipe.tokenizer_2} if family != "sd" else {}
    return Base(ref, type(pipe).__name__, denoiser, pipe.vae, pipe.text_encoder, pipe.tokenizer, noise,
                scheduler=pipe.scheduler, family=family, **extra)


def tokenize(tokenizer, captions: list[str]):
    """Token ids padded to the model's length (77 for CLIP), truncated beyond it, as the scripts do."""
    return tokenizer(captions, max_length=tokenizer.model_max_length, padding="max_length", truncation=True,
                     return_tensors="pt").input_ids


def encode_prompts(text_encoder, input_ids):
    """The UNet's cross-attention input: the text encoder's last hidden state."""
    return text_encoder(input_ids.to(text_encoder.device), return_dict=False)[0]
