"""The denoising objective of the diffusers scripts: noise the latents at a random DDPM timestep and regress
the UNet's prediction on the noise (epsilon) or the velocity (v_prediction), optionally Min-SNR weighted.

The random draws come from a generator the caller seeds (see order.py); the order of draws is fixed:
latent-sample noise, diffusion noise (+ offset noise), timesteps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional


@dataclass
class Draws:
    latent_eps: Any     # for sampling the VAE's latent distribution
    noise: Any
    timesteps: Any
    sigmas: Any = None  # flow matching (Flux): each sample's noise level (train/flux.py)


def draw(generator: Any, shape: tuple[int, ...], num_train_timesteps: int, device: Any,
         noise_offset: float = 0.0) -> Draws:
    import torch

    eps = torch.randn(shape, generator=generator, device=device)
    noise = torch.randn(shape, generator=generator, device=device)
    if noise_offset:
        noise = noise + noise_offset * torch.randn((shape[0], shape[1], 1, 1), generator=generator, device=device)
    timesteps = torch.randint(0, num_train_timesteps, (shape[0],), generator=generator, device=device)
    return Draws(eps, noise, timesteps.long())


def target(noise_scheduler: Any, latents: Any, noise: Any, timesteps: Any) -> Any:
    kind = noise_scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return noise_scheduler.get_velocity(latents, noise, timesteps)
    from lorahub_cli.errors import Incompatible

    raise Incompatible(f"the base's scheduler predicts {kind!r}; lora train handles epsilon and v_prediction")


def per_sample_loss(model_pred: Any, tgt: Any, timesteps: Any, noise_scheduler: Any,
                    snr_gamma: Optional[float] = None) -> Any:
    """Mean squared error of each sample (fp32), Min-SNR weighted when ``snr_gamma`` is set."""
    import torch
    import torch.nn.functional as F

    loss = F.mse_loss(model_pred.float(), tgt.float(), reduction="none")
    loss = loss.mean(dim=list(range(1, loss.ndim)))
    if snr_gamma is not None:
        from diffusers.training_utils import compute_snr

        snr = compute_snr(noise_scheduler, timesteps)
        weights = torch.minimum(snr, torch.full_like(snr, snr_gamma))
        weights = weights / (snr + 1) if noise_scheduler.config.prediction_type == "v_prediction" else weights / snr
        loss = loss * weights
    return loss


def combine(losses: Any, *, prior_half: bool, prior_loss_weight: float) -> Any:
    """The batch loss; with prior preservation the second half of the batch is the class images."""
    if not prior_half:
        return losses.mean()
    instance, prior = losses.chunk(2)
    return instance.mean() + prior_loss_weight * prior.mean()


def denoising_loss(unet: Any, latents: Any, encoder_hidden_states: Any, noise_scheduler: Any, *,
                   generator: Any, draws: int = 1) -> float:
    """Mean loss of ``unet`` on clean ``latents`` over ``draws`` seeded noise/timestep draws (no gradients).
    The same generator state gives the same draws, so two models can be compared on identical noise."""
    import torch

    total = 0.0
    with torch.no_grad():
        for _ in range(draws):
            d = draw(generator, tuple(latents.shape), noise_scheduler.config.num_train_timesteps, latents.device)
            noisy = noise_scheduler.add_noise(latents, d.noise, d.timesteps)
            pred = unet(noisy, d.timesteps, encoder_hidden_states, return_dict=False)[0]
            total += per_sample_loss(pred, target(noise_scheduler, latents, d.noise, d.timesteps),
                                     d.timesteps, noise_scheduler).mean().item()
    return total / draws
