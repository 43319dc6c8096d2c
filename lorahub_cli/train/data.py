"""Training images and their captions, and the pixel transform the diffusers scripts apply.

Folders follow the Hugging Face imagefolder convention: images anywhere below the folder, captions in a
``metadata.jsonl`` (or ``metadata.csv``) whose ``file_name`` column is relative to the metadata file's own
folder; or, without metadata, a ``.txt`` file with the same stem beside each image. DreamBooth folders need
no captions: every instance image gets the instance prompt. A Hub dataset id goes through the optional
``datasets`` package. Problems are found up front, before any model is loaded: an empty folder, a file that
is not a readable image, an image without a caption.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Union

from lorahub_cli.errors import (EmptyDataset, MissingCaption, MissingDependency, NotFound, UnreadableImage,
                                UsageError)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
METADATA_FILES = ("metadata.jsonl", "metadata.csv")
_SHOWN = 5  # how many offending files an error names


@dataclass
class Example:
    """One training image: a file, or (Hub datasets) a function that returns a PIL image."""

    image: Union[Path, Callable[[], Any]]
    caption: str
    size: Optional[tuple[int, int]] = None   # (width, height) as stored, when known without decoding
    caption_from: str = ""                    # metadata | txt | prompt | dataset (what captioned it)

    @property
    def label(self) -> str:
        return str(self.image) if isinstance(self.image, Path) else "<dataset item>"


@dataclass
class TrainData:
    instances: list[Example]
    classes: Optional[list[Example]] = None   # DreamBooth prior preservation
    buckets: Any = None                       # a buckets.BucketPlan when aspect-ratio buckets are on

    def targets(self, resolution: int) -> list[Any]:
        """What each example is cropped to: its bucket's (width, height), or the square side."""
        if self.buckets is None:
            return [resolution] * len(self.examples)
        return [self.buckets.target(i) for i in range(len(self.examples))]

    def __len__(self) -> int:
        """Samples per epoch: DreamBooth pairs instance i with class i (each list cycled), as the script."""
        return max(len(self.instances), len(self.classes or ()))

    @property
    def examples(self) -> list[Example]:
        """Every image once: the instances, then the class images (the caches' order)."""
        return self.instances + (self.classes or [])

    def caption_counts(self) -> dict[str, int]:
        """How many training images each caption source captioned (a mixed set says so)."""
        counts: dict[str, int] = {}
        for e in self.instances:
            counts[e.caption_from] = counts.get(e.caption_from, 0) + 1
        return counts

    def small_images(self, resolution: int) -> list[Example]:
        """Images whose shorter side is below ``resolution`` (they are enlarged to train)."""
        return [e for e in self.examples if e.size is not None and min(e.size) < resolution]


_CAPTION_SOURCES = {"metadata": "metadata.jsonl/.csv", "txt": ".txt files", "prompt": "the instance prompt",
                    "dataset": "the dataset's caption column"}


def describe_captions(counts: dict[str, int]) -> str:
    """"3 captioned by metadata.jsonl/.csv, 2 by .txt files, 1 by the instance prompt"."""
    parts = [f"{n} by {_CAPTION_SOURCES.get(k, k)}" for k, n in counts.items() if n]
    return ("captioned " + ", ".join(parts)) if parts else "no captions"


def check_sizes(data: TrainData, resolution: int, policy: str) -> Optional[str]:
    """``--small-images``: ``refuse`` raises ImageTooSmall naming them; otherwise a note of how many are
    enlarged (or, with buckets, kept in smaller buckets), or None. With buckets "small" means smaller than the
    image's nearest bucket (buckets.assign has already refused what it must)."""
    from lorahub_cli.errors import ImageTooSmall

    if data.buckets is not None:
        plan = data.buckets
        if plan.kept_small:
            return (f"{len(plan.kept_small)} of {len(data.examples)} images are smaller than their nearest bucket "
                    "and train in smaller buckets, not enlarged (--small-images bucket)")
        if plan.enlarged:
            return (f"{len(plan.enlarged)} of {len(data.examples)} images are smaller than their bucket and are "
                    "enlarged to train (--small-images bucket keeps them at their size)")
        return None
    small = data.small_images(resolution)
    if not small:
        return None
    if policy == "refuse":
        raise ImageTooSmall(f"{len(small)} of {len(data.examples)} images are smaller than --resolution "
                            f"{resolution}: {_name_sizes(small)}")
    return (f"{len(small)} of {len(data.examples)} images are smaller than {resolution} px and are enlarged to "
            "train (--small-images refuse refuses them, --small-images bucket trains them at their size)")


def _name_sizes(examples: list[Example]) -> str:
    shown = ", ".join(f"{e.label} ({e.size[0]}x{e.size[1]})" for e in examples[:_SHOWN])
    return shown + (f" and {len(examples) - _SHOWN} more" if len(examples) > _SHOWN else "")


def assign_buckets(data: TrainData, config) -> None:
    """Put every example in its aspect-ratio bucket (train/buckets.py); ImageTooSmall names the images that
    ``--small-images`` says cannot train (refuse: smaller than their bucket; bucket: smaller than a step)."""
    from lorahub_cli.errors import ImageTooSmall
    from lorahub_cli.train.buckets import assign

    for e in data.examples:
        if e.size is None:              # a Hub dataset item: its size needs a decode
            e.size = open_rgb(e).size
    plan, refused = assign([e.size for e in data.examples], config.resolution, step=config.bucket_step,
                           min_side=config.bucket_min_side, max_side=config.bucket_max_side,
                           small_images=config.small_images)
    if refused:
        bad = [data.examples[i] for i in refused]
        why = (f"smaller than one bucket step ({config.bucket_step} px)" if config.small_images == "bucket"
               else "smaller than their aspect-ratio bucket")
        hint = ("Remove or replace them, or lower --bucket-step." if config.small_images == "bucket"
                else ImageTooSmall.default_hint)
        raise ImageTooSmall(f"{len(bad)} of {len(data.examples)} images are {why}: {_name_sizes(bad)}", hint=hint)
    data.buckets = plan


# --- loading the sets ---------------------------------------------------------------------------------
def load_train_data(config) -> TrainData:
    """The instance (and class) examples a resolved ``TrainConfig`` asks for, in their aspect-ratio buckets
    when ``--buckets``; images smaller than the resolution refused when ``--small-images refuse`` says so."""
    prompt = (config.instance_prompt or "").strip() or None
    if config.mode == "dreambooth":
        instances = [Example(e.image, prompt, e.size, "prompt") for e in _images_of(config.data, "--data")]
    else:
        instances = load_captioned(config.data, caption_column=config.caption_column, fallback=prompt)
    classes = None
    if config.class_data is not None:
        class_prompt = (config.class_prompt or "").strip() or None
        classes = load_captioned(config.class_data, caption_column=config.caption_column, fallback=class_prompt,
                                 what="--class-data")
    data = TrainData(instances, classes)
    if getattr(config, "buckets", False):
        assign_buckets(data, config)
    check_sizes(data, config.resolution, getattr(config, "small_images", "upscale"))
    return data


def load_captioned(source: str, *, caption_column: str = "text", fallback: Optional[str] = None,
                   what: str = "--data") -> list[Example]:
    """Captioned examples from a folder (metadata or .txt captions; ``fallback`` for the rest) or a Hub dataset."""
    path = Path(source).expanduser()
    if not path.exists() and _looks_like_repo_id(source):
        _refuse_mistyped_folder(path, what)
        return load_hub_dataset(source, caption_column=caption_column, fallback=fallback)
    images = _images_of(source, what)
    captions = read_captions(path, caption_column)
    missing: list[Path] = []
    out = []
    counts = {"metadata": 0, "txt": 0, "prompt": 0}
    for ex in images:
        assert isinstance(ex.image, Path)
        caption, source = captions.get(ex.image.resolve()), "metadata"
        if caption is None:
            caption, source = _read_txt_caption(ex.image), "txt"
        if caption is None:
            caption, source = fallback, "prompt"
        if caption is None:
            missing.append(ex.image)
            continue
        counts[source] += 1
        out.append(Example(ex.image, caption, ex.size, source))
    if missing:
        shown = ", ".join(str(p.relative_to(path)) for p in missing[:_SHOWN])
        more = f" and {len(missing) - _SHOWN} more" if len(missing) > _SHOWN else ""
        have = f" (the others: {describe_captions(counts)})" if out else ""
        raise MissingCaption(f"{len(missing)} of {len(images)} images in {path} have no caption{have}: "
                             f"{shown}{more}",
                             hint=MissingCaption.default_hint + " Or pass --instance-prompt to caption them all "
                                  "with one prompt.")
    return out


def _images_of(source: str, what: str) -> list[Example]:
    folder = Path(source).expanduser()
    if not folder.exists():
        raise NotFound(f"{what}: no such folder: {folder}")
    if not folder.is_dir():
        raise UsageError(f"{what} must be a folder of images, not a file: {folder}")
    files = find_images(folder)
    if not files:
        raise EmptyDataset(f"no images in {folder} (looked for {', '.join(IMAGE_SUFFIXES)} in it and below)")
    return [Example(p, "", check_image(p)) for p in files]


def find_images(folder: Path) -> list[Path]:
    """Image files below ``folder``, in a stable order (hidden folders skipped)."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.lower().endswith(IMAGE_SUFFIXES) and not name.startswith("."):
                found.append(Path(root) / name)
    return found


def check_image(path: Path) -> tuple[int, int]:
    """The image's (width, height) from its header; UnreadableImage when it is not an image PIL can read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            size = img.size
            img.verify()  # walks the file's structure without decoding the pixels
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise UnreadableImage(f"{path} is not a readable image ({type(err).__name__}: {err})",
                              hint="Remove or replace the file; lora trains only on images it can decode.")
    return size


# --- captions -----------------------------------------------------------------------------------------
def read_captions(folder: Path, caption_column: str = "text") -> dict[Path, str]:
    """Captions from every metadata.jsonl / metadata.csv below ``folder``, by resolved image path."""
    out: dict[Path, str] = {}
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in METADATA_FILES:
            if name in files:
                meta = Path(root) / name
                for file_name, caption in _metadata_rows(meta, caption_column):
                    image = (meta.parent / file_name).resolve()
                    if not image.is_file():
                        raise NotFound(f"{meta} names {file_name!r}, which is not there")
                    out[image] = caption
    return out


def _metadata_rows(meta: Path, caption_column: str) -> list[tuple[str, str]]:
    rows: list[dict] = []
    try:
        if meta.suffix == ".jsonl":
            with open(meta, encoding="utf-8") as f:
                for n, line in enumerate(f, 1):
                    if line.strip():
                        try:
                            rows.append(json.loads(line))
                        except ValueError as err:
                            raise UsageError(f"{meta} line {n} is not JSON ({err})")
        else:
            with open(meta, encoding="utf-8", newline="") as f:
                rows = list(csv.DictReader(f))
    except OSError as err:
        raise UsageError(f"cannot read {meta}: {err.strerror or err}")
    out = []
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict) or "file_name" not in row:
            raise UsageError(f"{meta} row {n} has no file_name column (imagefolder convention)")
        caption = row.get(caption_column)
        if not isinstance(caption, str) or not caption.strip():
            raise MissingCaption(f"{meta} row {n} ({row['file_name']}) has no {caption_column!r} caption",
                                 hint="Fill in the caption, or name the caption column with --caption-column.")
        out.append((str(row["file_name"]), caption.strip()))
    return out


def _read_txt_caption(image: Path) -> Optional[str]:
    txt = image.with_suffix(".txt")
    if not txt.is_file():
        return None
    text = txt.read_text(encoding="utf-8", errors="replace").strip()
    return text or None


# --- Hub datasets (optional extra) ------------------------------------------------------------------------
def _looks_like_repo_id(text: str) -> bool:
    parts = text.split("/")
    return len(parts) == 2 and all(parts) and not text.startswith((".", "~")) and "\\" not in text


def _refuse_mistyped_folder(path: Path, what: str) -> None:
    """An "owner/name" that is no folder here is a Hub dataset id only when it can be one: a mistyped local
    path ("data/nope" beside a data/ folder) or a machine without `datasets` gets "no such folder", not a
    request to install a package it does not need."""
    import importlib.util

    if path.parent.is_dir():
        raise NotFound(f"{what}: no such folder: {path} (the folder {path.parent} exists, but holds no "
                       f"{path.name!r})", hint="Check the spelling of the path.")
    if importlib.util.find_spec("datasets") is None:
        raise NotFound(f"{what}: no such folder: {path}",
                       hint="Give a folder of images; to train from a Hub dataset of that id instead, install the "
                            "`datasets` package (pip install datasets).")


def load_hub_dataset(repo_id: str, *, caption_column: str = "text", image_column: str = "image",
                     fallback: Optional[str] = None) -> list[Example]:
    """Examples from a Hub dataset's train split, through the optional ``datasets`` package."""
    try:
        import datasets
    except ImportError:
        raise MissingDependency(f"{repo_id!r} is not a folder here; training from a Hub dataset needs the "
                                "`datasets` package", hint="pip install datasets  (or pass a local image folder)")
    ds = datasets.load_dataset(repo_id, split="train")
    if image_column not in ds.column_names:
        raise UsageError(f"dataset {repo_id} has no {image_column!r} column (columns: {', '.join(ds.column_names)})")
    texts = ds[caption_column] if caption_column in ds.column_names else [None] * len(ds)
    out = []
    for i, text in enumerate(texts):
        caption = text.strip() if isinstance(text, str) and text.strip() else fallback
        if caption is None:
            raise MissingCaption(f"dataset {repo_id} item {i} has no {caption_column!r} caption")
        out.append(Example(lambda i=i: ds[i][image_column], caption,
                           caption_from="dataset" if caption is not fallback else "prompt"))
    if not out:
        raise EmptyDataset(f"dataset {repo_id} has no training items")
    return out


# --- pixels -------------------------------------------------------------------------------------------
def open_rgb(example: Example):
    """The example's image, upright (EXIF orientation applied) and RGB."""
    from PIL import Image, ImageOps

    try:
        if isinstance(example.image, Path):
            with Image.open(example.image) as img:
                img = ImageOps.exif_transpose(img)
                return img.convert("RGB")
        return example.image().convert("RGB")
    except (OSError, ValueError, SyntaxError) as err:
        raise UnreadableImage(f"{example.label} could not be decoded ({type(err).__name__}: {err})")


Target = Union[int, tuple[int, int]]   # a square side, or a bucket's (width, height)


def target_wh(target: Target) -> tuple[int, int]:
    return (target, target) if isinstance(target, int) else (int(target[0]), int(target[1]))


def resized_size(size: tuple[int, int], target: Target) -> tuple[int, int]:
    """(width, height) after scaling the image to cover ``target`` (a square: the shorter side to it, with
    torchvision Resize(int)'s rounding; a bucket: the side that binds to it, the other truncated)."""
    w, h = size
    tw, th = target_wh(target)
    if w * th <= h * tw:          # relatively taller than the target: the width binds
        return tw, max(th, int(tw * h / w))
    return max(tw, int(th * w / h)), th


def crop_is_fixed(size: tuple[int, int], target: Target, center_crop: bool) -> bool:
    """Whether every epoch crops this image the same way (center crop, or nothing to crop)."""
    return center_crop or resized_size(size, target) == target_wh(target)


def crop_origin(resized: tuple[int, int], target: Target, *, center_crop: bool, crop_u: float = 0.5,
                crop_v: float = 0.5) -> tuple[int, int]:
    """(top, left) of the training crop in the resized (width, height) image (SDXL conditions on it)."""
    w, h = resized
    tw, th = target_wh(target)
    if center_crop:
        return int(round((h - th) / 2.0)), int(round((w - tw) / 2.0))
    return int(crop_v * (h - th + 1)), int(crop_u * (w - tw + 1))


def pixels(example: Example, target: Target, *, center_crop: bool, crop_u: float = 0.5, crop_v: float = 0.5,
           flip: bool = False):
    """The training crop as a float tensor (3, H, W) in [-1, 1]: resized (Lanczos) to cover ``target`` (a
    square side or a bucket's (width, height)), center or random crop (``crop_u``/``crop_v`` in [0, 1) pick
    the offset), optional horizontal flip."""
    import numpy as np
    import torch
    from PIL import Image

    img = open_rgb(example)
    tw, th = target_wh(target)
    w, h = resized_size(img.size, target)
    if (w, h) != img.size:
        img = img.resize((w, h), Image.Resampling.LANCZOS)
    top, left = crop_origin((w, h), target, center_crop=center_crop, crop_u=crop_u, crop_v=crop_v)
    arr = np.asarray(img, dtype=np.uint8)[top:top + th, left:left + tw]
    if flip:
        arr = arr[:, ::-1]
    t = torch.tensor(np.ascontiguousarray(arr)).permute(2, 0, 1).float()  # a copy: PIL's buffer is read-only
    return t / 127.5 - 1.0
