"""Every random choice of a run, as a pure function of (seed, position).

The adapters' initial weights, data order, crops, flips, latent samples, noise and timesteps are drawn from
generators seeded by the run's seed and the epoch / micro-step / process they belong to, never from a global
RNG stream. So a run resumed from a checkpoint at step N draws exactly what the uninterrupted run drew after
step N, cached and uncached paths see the same augmentations, and nothing depends on how many batches a data
loader prefetched.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

_MASK = (1 << 63) - 1


def mix(*parts: int) -> int:
    """A 63-bit seed from several integers (splitmix64 steps; stable across Python versions and runs)."""
    x = 0x9E3779B97F4A7C15
    for p in parts:
        x = (x ^ (int(p) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        x = (x ^ (x >> 31)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 29
    return x & _MASK


# domains keep the streams apart
_ORDER, _AUGMENT, _STEP, INIT_STREAM = 1, 2, 3, 4


@lru_cache(maxsize=4)
def epoch_permutation(seed: int, epoch: int, n: int) -> tuple[int, ...]:
    import torch

    g = torch.Generator().manual_seed(mix(seed, _ORDER, epoch))
    return tuple(torch.randperm(n, generator=g).tolist())


@dataclass(frozen=True)
class Augment:
    flip: bool
    crop_u: float
    crop_v: float


def augment(seed: int, epoch: int, index: int, *, random_flip: bool) -> Augment:
    """The flip and random-crop position of sample ``index`` in ``epoch``."""
    import numpy as np

    rng = np.random.default_rng(mix(seed, _AUGMENT, epoch, index))
    flip, u, v = rng.random(3)
    return Augment(flip=bool(random_flip and flip < 0.5), crop_u=float(u), crop_v=float(v))


def step_generator(seed: int, micro_step: int, rank: int, device) -> "object":
    """The generator for one micro-step's latent samples, noise and timesteps on one process."""
    import torch

    return torch.Generator(device=device).manual_seed(mix(seed, _STEP, micro_step, rank))


@dataclass(frozen=True)
class Schedule:
    """How micro-steps map onto the data: every micro-step takes ``batch_size * world`` samples from the
    epoch's permutation (wrapping around at the end of an epoch, so every batch is full on every process,
    like DistributedSampler's padding), and process ``rank`` takes its contiguous share."""

    n: int
    batch_size: int
    world: int
    seed: int

    @property
    def micro_steps_per_epoch(self) -> int:
        per = self.batch_size * self.world
        return max(1, -(-self.n // per))

    def batch(self, micro_step: int, rank: int) -> tuple[int, list[int]]:
        """(epoch, sample indices) of ``micro_step`` for process ``rank``."""
        epoch, k = divmod(micro_step, self.micro_steps_per_epoch)
        perm = epoch_permutation(self.seed, epoch, self.n)
        per = self.batch_size * self.world
        start = k * per + rank * self.batch_size
        return epoch, [perm[(start + j) % self.n] for j in range(self.batch_size)]


@lru_cache(maxsize=4)
def bucket_epoch(seed: int, epoch: int, of: tuple[int, ...], per: int) -> tuple[tuple[int, ...], ...]:
    """The epoch's batches with aspect-ratio buckets: each bucket's samples in the epoch's permuted order, cut
    into batches of ``per`` (a bucket's last batch wraps around to its start, so every batch is full and holds
    one bucket), then the batches themselves shuffled."""
    import torch

    g = torch.Generator().manual_seed(mix(seed, _ORDER, epoch))
    groups: dict[int, list[int]] = {}
    for i in torch.randperm(len(of), generator=g).tolist():
        groups.setdefault(of[i], []).append(i)
    batches = []
    for bucket in sorted(groups):
        members = groups[bucket]
        for start in range(0, len(members), per):
            batches.append(tuple(members[(start + j) % len(members)] for j in range(per)))
    return tuple(batches[k] for k in torch.randperm(len(batches), generator=g).tolist())


@dataclass(frozen=True)
class BucketSchedule:
    """Schedule's interface over aspect-ratio buckets: ``of[i]`` is sample i's bucket, and every micro-step
    takes ``batch_size * world`` samples of one bucket (bucket_epoch), process ``rank`` its contiguous share."""

    of: tuple[int, ...]
    batch_size: int
    world: int
    seed: int

    @property
    def n(self) -> int:
        return len(self.of)

    @property
    def micro_steps_per_epoch(self) -> int:
        per = self.batch_size * self.world
        sizes: dict[int, int] = {}
        for b in self.of:
            sizes[b] = sizes.get(b, 0) + 1
        return sum(-(-k // per) for k in sizes.values())

    def batch(self, micro_step: int, rank: int) -> tuple[int, list[int]]:
        epoch, k = divmod(micro_step, self.micro_steps_per_epoch)
        batch = bucket_epoch(self.seed, epoch, self.of, self.batch_size * self.world)[k]
        return epoch, list(batch[rank * self.batch_size:(rank + 1) * self.batch_size])
