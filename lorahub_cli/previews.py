"""Preview images of library entries: stored by content under ``<home>/previews`` and listed with the entry.

``save_preview`` is the one way an image becomes a preview (a `lora preview` render, a card's sample image);
Civitai's images are stored the same way by ``sources.civitai_pull``. Rendering previews on a base is
``pipeline.preview``. This module imports neither the pipeline nor the sources (both use it).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Optional, Sequence

MAX_PREVIEW_BYTES = 32 << 20
SUFFIXES = {b"\x89PNG\r\n\x1a\n": ".png", b"\xff\xd8\xff": ".jpeg", b"GIF8": ".gif"}


def image_suffix(data: bytes) -> Optional[str]:
    """The suffix of an image from its first bytes (PNG, JPEG, GIF, WebP), or None for anything else."""
    for magic, suffix in SUFFIXES.items():
        if data.startswith(magic):
            return suffix
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    return None


def save_preview(registry: Any, name: str, data: bytes, *, source: str, url: Optional[str] = None) -> Any:
    """Store ``data`` (an image) by its sha256 and show it with the entry ``name``; the entry afterwards."""
    from lorahub_cli.errors import UnreadableImage
    from registry.publish import publish_file
    from registry.records import PreviewRecord, preview_relpath

    suffix = image_suffix(data)
    if suffix is None or len(data) > MAX_PREVIEW_BYTES:
        raise UnreadableImage(f"a preview of {name} must be a PNG, JPEG, GIF or WebP image of at most "
                              f"{MAX_PREVIEW_BYTES >> 20} MiB")
    digest = hashlib.sha256(data).hexdigest()
    target = Path(registry.home) / preview_relpath(digest, suffix)
    if not target.is_file():   # content-addressed: the same bytes are the same file
        target.parent.mkdir(parents=True, exist_ok=True)
        publish_file(target, data)
    return registry.add_previews(name, [PreviewRecord(sha256=digest, suffix=suffix, url=url, source=source)])


MAX_CARD_IMAGES = 8
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif")


def card_image_paths(card_data: Any, files: Sequence[str] = ()) -> list[str]:
    """The repo files a model card's widget shows as sample outputs (``widget: [{output: {url: ...}}]``, the
    Hub's LoRA card convention), in order: relative image paths only (no URL, no absolute path, no ".."), and
    when ``files`` (the repo's file list) is given, only those it holds. At most MAX_CARD_IMAGES."""
    widget = card_data.get("widget") if isinstance(card_data, dict) else None
    out: list[str] = []
    for item in widget if isinstance(widget, list) else []:
        output = item.get("output") if isinstance(item, dict) else None
        url = output.get("url") if isinstance(output, dict) else None
        if not isinstance(url, str):
            continue
        path = url.strip()
        path = path[2:] if path.startswith("./") else path
        parts = path.split("/")
        if (not path or "://" in path or path.startswith("/") or "\\" in path or ".." in parts
                or not path.lower().endswith(_IMAGE_SUFFIXES) or (files and path not in files) or path in out):
            continue
        out.append(path)
    return out[:MAX_CARD_IMAGES]
