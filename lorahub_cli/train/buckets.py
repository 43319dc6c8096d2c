"""Aspect-ratio buckets: kohya sd-scripts' bucket set (``--enable_bucket``), with three differences said here.

Instead of cropping every image to a square, a run trains at a set of resolutions of about
``resolution²`` pixels whose sides are multiples of ``step`` (64 by default, as kohya; a multiple of the VAE
factor, twice it for Flux) and lie between ``min_side`` and ``max_side``, which bounds the aspect ratio at
``max_side / min_side``. Each image goes to the bucket nearest its aspect ratio and is resized to cover it,
then center- or randomly cropped; a step's batch is drawn from one bucket (order.BucketSchedule).

Images that do not cover their bucket are, as ``--small-images`` says, enlarged (``upscale``), refused
(``refuse``), or put in the nearest-ratio bucket that fits inside them (``bucket``: kohya's
``--bucket_no_upscale``), or in one of their own size rounded down to ``step`` when none fits.

Where this differs from kohya: the nearest ratio is compared on a log scale (2:1 and 1:2 are equally far from
1:1; kohya compares plain ratios, and about 1 image in 100 lands one bucket over); the side limits scale with
the resolution (kohya's fixed 256/1024 equal them at 512 only); ``bucket`` picks a grid bucket inside the
image where kohya's ``--bucket_no_upscale`` floors the image's own size; and a bucket's last batch is filled
from its own start where kohya trains a short one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

Size = tuple[int, int]   # (width, height)


def default_sides(resolution: int, step: int) -> tuple[int, int]:
    """Half the resolution to twice it (kohya's fixed 256..1024 at 512)."""
    return max(step, resolution // 2 // step * step), max(step, resolution * 2 // step * step)


def resolutions(resolution: int, *, step: int, min_side: int, max_side: int) -> list[Size]:
    """The buckets: for every width from ``min_side`` to ``max_side`` by ``step``, the tallest height (a
    multiple of ``step``, within the sides) that keeps the area at most ``resolution²``, both ways round, and
    the square (kohya's ``make_bucket_resolutions``)."""
    area = resolution * resolution
    square = max(step, resolution // step * step)
    found = {(square, square)}
    for width in range(min_side, max_side + 1, step):
        height = min(max_side, area // width // step * step)
        if height >= min_side:
            found.add((width, height))
            found.add((height, width))
    return sorted(found)


def _ratio_error(size: Size, bucket: Size) -> float:
    """How far apart two aspect ratios are (log scale: 2:1 and 1:2 are as far from 1:1)."""
    return abs(math.log(size[0] / size[1]) - math.log(bucket[0] / bucket[1]))


def nearest(size: Size, buckets: Sequence[Size]) -> Size:
    """The bucket whose aspect ratio is nearest the image's (ties: the first in sorted order)."""
    return min(buckets, key=lambda b: (_ratio_error(size, b), b))


def covers(size: Size, bucket: Size) -> bool:
    return size[0] >= bucket[0] and size[1] >= bucket[1]


@dataclass(frozen=True)
class BucketPlan:
    """Which bucket each example trains in (``TrainData.examples`` order); plain data (picklable)."""

    sizes: tuple[Size, ...]          # the buckets in use, sorted
    of: tuple[int, ...]              # bucket number of each example
    enlarged: tuple[int, ...] = ()   # examples smaller than their bucket, enlarged (--small-images upscale)
    kept_small: tuple[int, ...] = ()   # examples put in a smaller bucket (--small-images bucket)

    def target(self, example: int) -> Size:
        return self.sizes[self.of[example]]

    def counts(self) -> dict[str, int]:
        """Images per bucket, "WIDTHxHEIGHT": count, in the buckets' order."""
        n = [0] * len(self.sizes)
        for b in self.of:
            n[b] += 1
        return {f"{w}x{h}": k for (w, h), k in zip(self.sizes, n)}


def assign(sizes: Sequence[Size], resolution: int, *, step: int, min_side: Optional[int] = None,
           max_side: Optional[int] = None, small_images: str = "upscale") -> tuple[BucketPlan, list[int]]:
    """Each image's bucket, and the images that do not cover their nearest bucket and cannot be given one
    under ``small_images`` (``refuse``: all of them; ``bucket``: those smaller than one ``step``), for the
    caller to refuse by name."""
    lo, hi = default_sides(resolution, step)
    grid = resolutions(resolution, step=step, min_side=min_side or lo, max_side=max_side or hi)
    chosen: list[Size] = []
    enlarged, kept_small, refused = [], [], []
    for i, size in enumerate(sizes):
        bucket = nearest(size, grid)
        if not covers(size, bucket):
            if small_images == "refuse":
                refused.append(i)
            elif small_images == "bucket":
                fits = [b for b in grid if covers(size, b)]
                bucket = nearest(size, fits) if fits else (size[0] // step * step, size[1] // step * step)
                if not min(bucket):
                    refused.append(i)
                kept_small.append(i)
            else:
                enlarged.append(i)
        chosen.append(bucket)
    used = sorted(set(chosen))
    number = {b: k for k, b in enumerate(used)}
    plan = BucketPlan(tuple(used), tuple(number[b] for b in chosen), tuple(enlarged), tuple(kept_small))
    return plan, refused
