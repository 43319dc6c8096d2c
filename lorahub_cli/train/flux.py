"""Flux's conditioning and objective for LoRA training, as diffusers' ``train_dreambooth_lora_flux.py``:

- LoRA on the transformer only (the script's default layers: joint attention of both streams and both
  feed-forwards); the file is written by ``FluxPipeline.save_lora_weights`` (``transformer.`` keys), which
  diffusers, ComfyUI and Forge load.
- Conditioning: the T5 encoder's last hidden state (``encoder_hidden_states``, ``--t5-max-length`` tokens)
  and CLIP's pooled output (``pooled_projections``), computed once and cached, after which both encoders are
  freed; the latents are packed 2x2 into tokens with their positional ids.
- Flow matching: ``noisy = (1 - sigma) * x + sigma * noise``, target ``noise - x``, the timestep drawn by the
  script's ``--weighting_scheme`` (uniform, logit-normal, mode, cosmap or sigma_sqrt) with its loss weights.
- The guidance embedding: FLUX.1-dev is distilled with a guidance input (``--guidance``, 3.5 as the script);
  schnell has none, and gets none.

The draws use the run's seeded generator (not the global RNG the script's helper uses), so a resumed run
stays bit-identical.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

PIPELINE = "FluxPipeline"
WEIGHTING_SCHEMES = ("none", "sigma_sqrt", "logit_normal", "mode", "cosmap")
# train_dreambooth_lora_flux.py's layers when --lora_layers is not given
TARGETS = ["attn.to_k", "attn.to_q", "attn.to_v", "attn.to_out.0", "attn.add_k_proj", "attn.add_q_proj",
           "attn.add_v_proj", "attn.to_add_out", "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj",
           "ff_context.net.2"]


def load_parts(source: str, local_files_only: bool, *, text_encoder_2: Optional[str], ref: str) -> dict:
    """A Flux base's parts (float32, CPU, frozen), by the names ``models.Base`` gives them; the T5 encoder
    from ``text_encoder_2`` (a folder) when given, else from the base, which must then have it."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
    from transformers import CLIPTextModel, CLIPTokenizer, T5EncoderModel, T5TokenizerFast

    kw = {"local_files_only": local_files_only}
    t5_source, t5_sub = _t5_location(source, text_encoder_2, ref)
    tok_source, tok_sub = (source, "tokenizer_2") if _has(source, "tokenizer_2") else (t5_source, t5_sub)
    parts = {"noise_scheduler": FlowMatchEulerDiscreteScheduler.from_pretrained(source, subfolder="scheduler", **kw),
             "tokenizer": CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", **kw),
             "text_encoder": CLIPTextModel.from_pretrained(source, subfolder="text_encoder", **kw),
             "tokenizer_2": T5TokenizerFast.from_pretrained(tok_source, subfolder=tok_sub, **kw),
             "text_encoder_2": T5EncoderModel.from_pretrained(t5_source, subfolder=t5_sub, **kw),
             "vae": AutoencoderKL.from_pretrained(source, subfolder="vae", **kw),
             "unet": FluxTransformer2DModel.from_pretrained(source, subfolder="transformer", **kw)}
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        parts[name].requires_grad_(False)
    return parts


def _has(source: str, sub: str) -> bool:
    """Whether a local base folder has the component ``sub`` (a Hub id is trusted to)."""
    folder = Path(source)
    return not folder.is_dir() or (folder / sub).is_dir()


def _t5_location(source: str, text_encoder_2: Optional[str], ref: str) -> tuple[str, str]:
    from lorahub_cli.errors import MissingComponent, NotFound

    if text_encoder_2:
        folder = Path(text_encoder_2).expanduser()
        if not (folder / "config.json").is_file():
            raise NotFound(f"--text-encoder-2 {text_encoder_2}: not a T5 encoder folder (no config.json in it)")
        return str(folder), ""
    if not _has(source, "text_encoder_2"):
        raise MissingComponent(f"--base {ref} is a Flux base without its T5 text encoder (text_encoder_2)",
                               hint="Pass --text-encoder-2 FOLDER: a T5 encoder folder, e.g. the text_encoder_2 "
                                    "folder of black-forest-labs/FLUX.1-dev (with its tokenizer_2 beside it).")
    return source, "text_encoder_2"


# --- prompts ------------------------------------------------------------------------------------------
def encode(base: Any, captions: list[str], max_length: int) -> tuple[Any, Any]:
    """(T5 last hidden state, CLIP pooled output) of ``captions``, as the Flux pipeline encodes a prompt."""
    clip, t5 = base.text_encoder, base.text_encoder_2
    clip_ids = base.tokenizer(captions, max_length=base.tokenizer.model_max_length, padding="max_length",
                              truncation=True, return_tensors="pt").input_ids
    t5_ids = base.tokenizer_2(captions, max_length=max_length, padding="max_length", truncation=True,
                              return_tensors="pt").input_ids
    pooled = clip(clip_ids.to(clip.device), output_hidden_states=False).pooler_output
    hidden = t5(t5_ids.to(t5.device), output_hidden_states=False)[0]
    return hidden, pooled


def free_text_encoders(base: Any) -> None:
    """Drop both encoders once their embeddings are cached (the script's ``del text_encoder_one, ...``)."""
    import gc

    base.text_encoder = base.text_encoder_2 = None
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


# --- noise and timesteps ------------------------------------------------------------------------------
def draw_u(generator: Any, n: int, device: Any, *, scheme: str, logit_mean: float, logit_std: float,
           mode_scale: float) -> Any:
    """Where in [0, 1) each sample's timestep lies, by the weighting scheme (the script's
    ``compute_density_for_timestep_sampling``, drawn from ``generator``)."""
    import math

    import torch

    if scheme == "logit_normal":
        return torch.sigmoid(logit_mean + logit_std * torch.randn((n,), generator=generator, device=device))
    u = torch.rand((n,), generator=generator, device=device)
    if scheme == "mode":
        u = 1 - u - mode_scale * (torch.cos(math.pi * u / 2) ** 2 - 1 + u)
    return u


def timesteps_and_sigmas(scheduler: Any, u: Any) -> tuple[Any, Any]:
    """The scheduler's training timesteps and sigmas at ``u`` (indices ``u * num_train_timesteps``)."""
    indices = (u * scheduler.config.num_train_timesteps).long().cpu()
    return scheduler.timesteps[indices].to(u.device), scheduler.sigmas[indices].to(u.device)


def loss_weights(scheme: str, sigmas: Any) -> Any:
    """The script's ``compute_loss_weighting_for_sd3``."""
    import math

    import torch

    if scheme == "sigma_sqrt":
        return (sigmas ** -2.0).float()
    if scheme == "cosmap":
        return 2 / (math.pi * (1 - 2 * sigmas + 2 * sigmas ** 2))
    return torch.ones_like(sigmas)


# --- the forward pass -----------------------------------------------------------------------------------
def per_sample_loss(transformer: Any, config_of: Any, batch: Any, vae_scale_factor: int, train: Any) -> Any:
    """Flow-matching loss of each sample of ``batch`` (latents (B, C, h, w), its draws, cached T5/CLIP
    embeddings); ``config_of`` is the unwrapped transformer's config (DDP hides it)."""
    import torch
    from diffusers import FluxPipeline

    x, d = batch.latents, batch.draws
    b, c, h, w = x.shape
    sigmas = d.sigmas.view(-1, 1, 1, 1).to(x.dtype)
    noisy = (1.0 - sigmas) * x + sigmas * d.noise
    packed = FluxPipeline._pack_latents(noisy, b, c, h, w)
    img_ids = FluxPipeline._prepare_latent_image_ids(b, h // 2, w // 2, x.device, batch.encoder_hidden_states.dtype)
    txt_ids = torch.zeros(batch.encoder_hidden_states.shape[1], 3, device=x.device,
                          dtype=batch.encoder_hidden_states.dtype)
    guidance = None
    if config_of.guidance_embeds:   # dev: distilled guidance is an input; schnell has no such embedding
        guidance = torch.full((b,), float(train.guidance), device=x.device)
    pred = transformer(hidden_states=packed, timestep=d.timesteps / 1000, guidance=guidance,
                       pooled_projections=batch.pooled, encoder_hidden_states=batch.encoder_hidden_states,
                       txt_ids=txt_ids, img_ids=img_ids, return_dict=False)[0]
    pred = FluxPipeline._unpack_latents(pred, height=h * vae_scale_factor, width=w * vae_scale_factor,
                                        vae_scale_factor=vae_scale_factor)
    weights = loss_weights(train.weighting_scheme, d.sigmas).view(-1, 1, 1, 1)
    err = weights.float() * (pred.float() - (d.noise - x).float()) ** 2
    return err.reshape(b, -1).mean(dim=1)


# --- the adapter file ---------------------------------------------------------------------------------
def save_lora(folder: str, layers: dict, metadata: dict) -> None:
    from diffusers import FluxPipeline

    FluxPipeline.save_lora_weights(folder, transformer_lora_layers=layers, transformer_lora_adapter_metadata=metadata,
                                   safe_serialization=True)


def draw(generator: Any, shape: tuple[int, ...], scheduler: Any, device: Any, train: Any) -> Any:
    """A micro-step's draws in a fixed order: latent-sample noise, flow noise, timestep positions."""
    import torch

    from lorahub_cli.train.objective import Draws

    eps = torch.randn(shape, generator=generator, device=device)
    noise = torch.randn(shape, generator=generator, device=device)
    u = draw_u(generator, shape[0], device, scheme=train.weighting_scheme, logit_mean=train.logit_mean,
               logit_std=train.logit_std, mode_scale=train.mode_scale)
    timesteps, sigmas = timesteps_and_sigmas(scheduler, u)
    return Draws(eps, noise, timesteps, sigmas)
