"""Micro-steps to tensors: which examples (order.py), their latents (cached or encoded now), their prompt
conditioning (cached embeddings or token ids for a trained text encoder), and the step's noise draws.

DreamBooth with prior preservation pairs sample i with instance i mod n_instances and class i mod n_classes,
and stacks the class half after the instance half (as the script), so the loss can weigh the two.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Optional

from lorahub_cli.train import order
from lorahub_cli.train.objective import Draws, draw


@dataclass
class Batch:
    latents: Any                    # sampled and scaled, fp32
    draws: Draws
    encoder_hidden_states: Optional[Any] = None
    input_ids: Optional[Any] = None  # when the text encoder is trained: encode inside the forward
    prior_half: bool = False
    pooled: Optional[Any] = None     # SDXL: the pooled prompt embeddings (cached) ...
    time_ids: Optional[Any] = None   # ... and the size/crop conditioning of each sample


@dataclass(frozen=True)
class Planner:
    """Which examples (instances first, then classes) and augmentations a micro-step of one process uses.
    Plain data, so DataLoader workers can have it."""

    schedule: "order.Schedule | order.BucketSchedule"
    n_instances: int
    n_classes: int
    rank: int
    random_flip: bool

    def example_ids(self, indices: list[int]) -> list[int]:
        ids = [i % self.n_instances for i in indices]
        if self.n_classes:
            ids += [self.n_instances + i % self.n_classes for i in indices]
        return ids

    def plan(self, micro_step: int) -> tuple[list[int], list[order.Augment]]:
        epoch, indices = self.schedule.batch(micro_step, self.rank)
        ids = self.example_ids(indices)
        return ids, [order.augment(self.schedule.seed, epoch, i, random_flip=self.random_flip) for i in ids]


class BatchMaker:
    def __init__(self, config, base, data, schedule: order.Schedule, accelerator, *, latent_cache=None,
                 embedding_cache=None, workers: int = 0):
        self.config, self.base, self.data = config, base, data
        self.accelerator = accelerator
        self.latent_cache, self.embedding_cache = latent_cache, embedding_cache
        self.examples = data.examples
        self.captions = [e.caption for e in self.examples]
        self.planner = Planner(schedule, len(data.instances), len(data.classes or ()), accelerator.process_index,
                               config.random_flip)
        # DataLoader workers need picklable examples (files, not Hub dataset items)
        self.workers = workers if all(not callable(e.image) for e in self.examples) else 0
        self.sdxl = getattr(base, "family", "sd") == "sdxl"
        self.flux = getattr(base, "family", "sd") == "flux"
        self.targets = data.targets(config.resolution)   # each example's crop: square side or bucket (w, h)

    def batches(self, start: int, end: int) -> Iterator[Batch]:
        """Batches of micro-steps ``start`` .. ``end - 1`` for this process."""
        pixel_iter = iter(self._pixel_loader(start, end)) if self.latent_cache is None else None
        for micro in range(start, end):
            ids, augments = self.planner.plan(micro)
            if self.latent_cache is not None:
                params = self.latent_cache.lookup(ids, [a.flip for a in augments], self.accelerator.device)
            else:
                import torch

                with torch.no_grad():
                    from lorahub_cli.train.cache import encode_latent_params

                    params = encode_latent_params(self.base.vae, next(pixel_iter).to(self.accelerator.device))
            batch = self._finish(micro, ids, params)
            if self.sdxl:
                batch.time_ids = self._time_ids(ids, augments)
            yield batch

    def _time_ids(self, ids: list[int], augments: list) -> Any:
        import torch

        from lorahub_cli.train.sdxl import time_ids

        c = self.config
        rows = [time_ids(self.examples[i].size, self.targets[i], center_crop=c.center_crop, crop_u=a.crop_u,
                         crop_v=a.crop_v, flip=a.flip) for i, a in zip(ids, augments)]
        return torch.tensor(rows, dtype=torch.float32, device=self.accelerator.device)

    def _finish(self, micro: int, ids: list[int], params: Any) -> Batch:
        device = self.accelerator.device
        generator = order.step_generator(self.config.seed, micro, self.accelerator.process_index, device)
        from lorahub_cli.train.data import target_wh

        w, h = target_wh(self.targets[ids[0]])   # a batch is one bucket (or all one square)
        f = self.base.vae_scale_factor
        shape = (len(ids), self.base.latent_channels, h // f, w // f)
        if self.flux:
            from lorahub_cli.train.flux import draw as flow_draw

            d = flow_draw(generator, shape, self.base.noise_scheduler, device, self.config)
        else:
            d = draw(generator, shape, self.base.noise_scheduler.config.num_train_timesteps, device,
                     self.config.noise_offset)
        from lorahub_cli.train.cache import sample_latents

        latents = sample_latents(params, d.latent_eps, self.base.vae.config)
        batch = Batch(latents, d, prior_half=bool(self.data.classes))
        if self.embedding_cache is not None:
            batch.encoder_hidden_states = self.embedding_cache.lookup(ids, device)
            if self.embedding_cache.pooled is not None:   # SDXL, Flux
                batch.pooled = self.embedding_cache.lookup_pooled(ids, device)
        elif self.sdxl:
            from lorahub_cli.train.sdxl import tokenize as tokenize_pair

            batch.input_ids = tokenize_pair(self.base, [self.captions[i] for i in ids]).to(device)
        else:
            from lorahub_cli.train.models import tokenize

            batch.input_ids = tokenize(self.base.tokenizer, [self.captions[i] for i in ids]).to(device)
        return batch

    def _pixel_loader(self, start: int, end: int):
        """Decoded, augmented pixels of each micro-step, prefetched by DataLoader workers."""
        import torch

        dataset = _MicroStepPixels(self.planner, self.examples, self.targets, self.config.center_crop)
        return torch.utils.data.DataLoader(dataset, batch_size=None, sampler=range(start, end),
                                           num_workers=self.workers,
                                           pin_memory=self.accelerator.device.type == "cuda")


class _MicroStepPixels:
    """Map-style dataset: micro-step -> (B, 3, H, W) pixels of this process's share (one bucket)."""

    def __init__(self, planner: Planner, examples: list, targets: list, center_crop: bool):
        self.planner, self.examples = planner, examples
        self.targets, self.center_crop = targets, center_crop

    def __getitem__(self, micro: int):
        import torch

        from lorahub_cli.train.data import pixels

        ids, augments = self.planner.plan(micro)
        return torch.stack([pixels(self.examples[i], self.targets[i], center_crop=self.center_crop,
                                   crop_u=a.crop_u, crop_v=a.crop_v, flip=a.flip)
                            for i, a in zip(ids, augments)])
