"""The only files the web page serves: preview images under ``<home>/previews``, by content address.

A request names ``<2 hex>/<64 hex><suffix>``; anything else (``..``, absolute paths, encoded slashes, other
folders, other suffixes) is refused before the file system is touched, and the resolved path must still lie
inside the previews folder (a symlink planted there cannot lead out of it).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

# the suffixes a preview may have, and the content type each is served with
CONTENT_TYPES = {".png": "image/png", ".jpeg": "image/jpeg", ".jpg": "image/jpeg", ".webp": "image/webp",
                 ".gif": "image/gif", ".mp4": "video/mp4"}
_PREVIEW = re.compile(r"([0-9a-f]{2})/([0-9a-f]{64})(\.[a-z0-9]{2,5})")


def preview_file(previews_dir: Path, relpath: str) -> Optional[tuple[Path, str]]:
    """(the file, its content type) for a preview's path below the previews folder, or None."""
    m = _PREVIEW.fullmatch(relpath)
    if m is None or m.group(1) != m.group(2)[:2] or m.group(3) not in CONTENT_TYPES:
        return None
    root = previews_dir.resolve()
    path = (root / relpath).resolve()
    if root not in path.parents or not path.is_file():
        return None
    return path, CONTENT_TYPES[m.group(3)]
