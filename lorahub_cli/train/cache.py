"""Latents and prompt embeddings computed once, when the VAE and the text encoder are frozen.

The VAE encoder costs more than the UNet forward (perf.md: 1.12 vs 0.80 TFLOP per 512 px image), and a LoRA
run sees each image many times, so encoding every step is mostly waste. What is cached is exact, not an
approximation:

- latents: the VAE's latent *distribution* (mean and log-variance), and a fresh sample is drawn from it every
  step, as the scripts' ``latent_dist.sample()`` does. With --random-flip both orientations are cached, and
  the flip of each (epoch, sample) is chosen by the same seeded function as the uncached path. Random crops
  (no --center-crop, non-square images) change the pixels every epoch, so they are not cached. With
  aspect-ratio buckets there is one table per bucket (latent size).
- prompt embeddings: one per distinct caption; not when the text encoder is trained.

Several processes split the encoding and share the results.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

from lorahub_cli.errors import UsageError

ENCODE_PIXELS = 8 * 256 * 256     # images per VAE call: 8 at 256 px, 2 at 512, 1 at 1024 (bounded memory)
DEVICE_CACHE_LIMIT = 2 * 1024**3   # bytes; larger caches stay in (pinned) host memory


@dataclass
class CachePlan:
    latents: bool
    embeddings: bool
    reason: str          # a line for people: what is cached and why (not)


def plan_cache(config, data, family: str = "sd") -> CachePlan:
    """What a resolved config can cache for these examples (``config.cache``: auto, on or off). Flux always
    caches its prompt embeddings: its text encoders (T5 above all) are freed for training."""
    from lorahub_cli.train.data import crop_is_fixed

    if config.cache == "off" and family == "flux":
        return CachePlan(False, True, "latents encoded every step (--cache off); prompt embeddings cached and "
                                      "the text encoders freed (Flux)")
    if config.cache == "off":
        return CachePlan(False, False, "caching off (--cache off)")
    examples = data.examples
    fixed = all(e.size is not None and crop_is_fixed(e.size, t, config.center_crop)
                for e, t in zip(examples, data.targets(config.resolution)))
    latents = fixed
    embeddings = not config.train_text_encoder
    if config.cache == "on" and not latents:
        raise UsageError("--cache on: random crops of non-square images change the pixels every epoch, so their "
                         "latents cannot be cached", hint="Add --center-crop, or use --cache auto.")
    if latents:
        said = "latents cached" + (" (both flips)" if config.random_flip else "")
    else:
        said = "latents encoded every step (random crops of non-square images; --center-crop caches them)"
    if embeddings:
        said += "; prompt embeddings cached" + (" (text encoders freed)" if family == "flux" else "")
    else:
        said += "; prompts encoded every step (text encoder trained)"
    return CachePlan(latents, embeddings, said)


# --- latents ------------------------------------------------------------------------------------------
def encode_latent_params(vae: Any, pixels: Any) -> Any:
    """The latent distribution's parameters (mean and log-variance stacked on the channel axis)."""
    return vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist.parameters


def sample_latents(params: Any, eps: Any, vae_config: Any) -> Any:
    """``latent_dist.sample()`` with the given standard-normal draw, scaled as the UNet expects (fp32)."""
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    dist = DiagonalGaussianDistribution(params.float())
    latents = dist.mean + dist.std * eps
    shift = getattr(vae_config, "shift_factor", None) or 0.0
    return (latents - shift) * vae_config.scaling_factor


@dataclass
class LatentCache:
    params: list[Any]              # per latent size (bucket): (n_b, flips, 2C, h, w) distribution parameters
    where: list[tuple[int, int]]   # example -> (table, row)
    flips: int

    def lookup(self, indices: Sequence[int], flipped: Sequence[bool], device: Any) -> Any:
        """The parameters of a batch's examples, which share one latent size (one bucket)."""
        import torch

        table = self.params[self.where[indices[0]][0]]
        idx = torch.as_tensor([self.where[i][1] for i in indices])
        flip = torch.as_tensor([int(f) for f in flipped]) if self.flips == 2 else torch.zeros_like(idx)
        return table[idx.to(table.device), flip.to(table.device)].to(device, non_blocking=True)


def build_latent_cache(examples, *, targets: Sequence[Any], center_crop: bool, both_flips: bool, vae: Any,
                       accelerator: Any) -> LatentCache:
    """Encode every example once at its target (square side or bucket; each process a share, then shared
    with all), into one table per target size."""
    import torch
    from accelerate.utils import gather_object

    from lorahub_cli.train.data import pixels, target_wh

    rank, world = accelerator.process_index, accelerator.num_processes
    sizes = sorted({target_wh(t) for t in targets})
    table_of = [sizes.index(target_wh(t)) for t in targets]
    mine = sorted(range(rank, len(examples), world), key=lambda i: (table_of[i], i))
    flips = [False, True] if both_flips else [False]
    done: list[tuple[int, Any]] = []
    with torch.no_grad():
        for table, (w, h) in enumerate(sizes):
            same = [i for i in mine if table_of[i] == table]
            per_call = max(1, ENCODE_PIXELS // (w * h * len(flips)))
            for start in range(0, len(same), per_call):
                chunk = same[start:start + per_call]
                batch = [pixels(examples[i], targets[i], center_crop=center_crop, flip=f) for i in chunk for f in flips]
                params = encode_latent_params(vae, torch.stack(batch)).cpu()
                params = params.view(len(chunk), len(flips), *params.shape[1:])
                done.extend((i, params[j]) for j, i in enumerate(chunk))
    if world > 1:
        done = gather_object(done)
    done.sort(key=lambda item: item[0])
    rows: list[list[Any]] = [[] for _ in sizes]
    where = []
    for i, p in done:
        where.append((table_of[i], len(rows[table_of[i]])))
        rows[table_of[i]].append(p)
    tables = [torch.stack(r) for r in rows]
    total = sum(t.numel() * t.element_size() for t in tables)
    tables = [_place(t, accelerator.device, total) for t in tables]
    return LatentCache(tables, where, len(flips))


# --- prompt embeddings -----------------------------------------------------------------------------------
@dataclass
class EmbeddingCache:
    embeds: Any          # (distinct captions, tokens, width)
    index: list[int]     # caption number of each example
    pooled: Any = None   # (distinct captions, width): SDXL's pooled embeddings (train/sdxl.py)

    def lookup(self, indices: Sequence[int], device: Any) -> Any:
        return self._rows(self.embeds, indices, device)

    def lookup_pooled(self, indices: Sequence[int], device: Any) -> Any:
        return self._rows(self.pooled, indices, device)

    def _rows(self, table: Any, indices: Sequence[int], device: Any) -> Any:
        import torch

        rows = torch.as_tensor([self.index[i] for i in indices], device=table.device)
        return table[rows].to(device, non_blocking=True)


def build_embedding_cache(captions: list[str], *, tokenizer: Any, text_encoder: Any, accelerator: Any,
                          dtype: Optional[Any] = None) -> EmbeddingCache:
    import torch

    from lorahub_cli.train.models import encode_prompts, tokenize

    distinct = list(dict.fromkeys(captions))
    number = {c: i for i, c in enumerate(distinct)}
    out = []
    with torch.no_grad():
        for start in range(0, len(distinct), 64):
            ids = tokenize(tokenizer, distinct[start:start + 64])
            out.append(encode_prompts(text_encoder, ids))
    embeds = torch.cat(out)
    if dtype is not None:
        embeds = embeds.to(dtype)
    return EmbeddingCache(_place(embeds, accelerator.device), [number[c] for c in captions])


def build_sdxl_embedding_cache(captions: list[str], base: Any, accelerator: Any,
                               dtype: Optional[Any] = None) -> EmbeddingCache:
    """SDXL: one (prompt, pooled) pair per distinct caption, from both text encoders (train/sdxl.py)."""
    from lorahub_cli.train.sdxl import encode, tokenize

    return _pooled_cache(captions, lambda batch: encode(base.text_encoders, tokenize(base, batch)), 64,
                         accelerator, dtype)


def build_flux_embedding_cache(captions: list[str], base: Any, accelerator: Any, max_length: int,
                               dtype: Optional[Any] = None) -> EmbeddingCache:
    """Flux: one (T5 hidden state, CLIP pooled) pair per distinct caption (train/flux.py)."""
    from lorahub_cli.train.flux import encode

    return _pooled_cache(captions, lambda batch: encode(base, batch, max_length), 16, accelerator, dtype)


def _pooled_cache(captions: list[str], encode: Any, batch_size: int, accelerator: Any,
                  dtype: Optional[Any]) -> EmbeddingCache:
    """Encode each distinct caption once, ``batch_size`` at a time; ``encode(batch)`` gives (hidden, pooled)."""
    import torch

    distinct = list(dict.fromkeys(captions))
    number = {c: i for i, c in enumerate(distinct)}
    hidden, pooled = [], []
    with torch.no_grad():
        for start in range(0, len(distinct), batch_size):
            h, p = encode(distinct[start:start + batch_size])
            hidden.append(h)
            pooled.append(p)
    embeds, pools = torch.cat(hidden), torch.cat(pooled)
    if dtype is not None:
        embeds, pools = embeds.to(dtype), pools.to(dtype)
    return EmbeddingCache(_place(embeds, accelerator.device), [number[c] for c in captions],
                          pooled=_place(pools, accelerator.device))


def _place(tensor: Any, device: Any, nbytes: Optional[int] = None) -> Any:
    """On the accelerator when small enough (``nbytes``: of all the tables it is one of), else in pinned host
    memory (copied per batch)."""
    nbytes = tensor.numel() * tensor.element_size() if nbytes is None else nbytes
    if nbytes <= DEVICE_CACHE_LIMIT or str(device) == "cpu":
        return tensor.to(device)
    return tensor.pin_memory() if str(device).startswith("cuda") else tensor
