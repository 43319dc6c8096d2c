"""File names for the UIs: the layout template and the sanitiser that keeps every name valid on Windows, macOS
and Linux.

A layout is a template such as ``"{family}/{name}"``: ``/`` makes folders, and each field is filled with the
entry's value made safe as ONE path component (a value can never add a folder, climb with ``..`` or be
absolute). Fields: ``name``, ``family``, ``label`` (Civitai's base-model label, else the family's display
name), ``tag`` (the first tag, else "untagged"), ``format``, ``network``, ``sha8`` (the sha256's first 8 hex).

The sanitiser, for each component:
- characters Windows refuses (``<>:"/\\|?*``), control and invisible characters become ``_``;
- Unicode is NFC (macOS stores NFD: a name must not change when it comes back);
- leading dots (hidden files, ``..``) become ``_``; trailing dots and spaces are dropped (Windows drops them);
- Windows' reserved device names (CON, PRN, AUX, NUL, COM1-9, LPT1-9, with any extension) get a ``_``;
- at most ``MAX_STEM_BYTES`` UTF-8 bytes, so that the longest sidecar name still fits 255 bytes; a shortened
  name ends in ``~<sha8>`` so two long names that share their start stay distinct.
"""

from __future__ import annotations

import re
import string
import unicodedata
from typing import Mapping

from lorahub_cli.errors import BadLayout

FIELDS = ("name", "family", "label", "tag", "format", "network", "sha8")
DEFAULT_LAYOUT = "{family}/{name}"
ADAPTER_SUFFIX = ".safetensors"
# the longest name we put beside an adapter's stem: "<stem>.civitai.info" (13 bytes of suffix)
LONGEST_SUFFIX = ".civitai.info"
MAX_COMPONENT_BYTES = 255                     # ext4, XFS, btrfs, APFS, NTFS (in UTF-16 units, more than enough)
MAX_STEM_BYTES = MAX_COMPONENT_BYTES - len(LONGEST_SUFFIX)
FAMILY_LABELS = {"sd1": "SD 1.5", "sd2": "SD 2.1", "sdxl": "SDXL 1.0", "sd3": "SD 3", "flux": "Flux.1",
                 "unknown": "Other"}

_WINDOWS_BAD = re.compile(r'[<>:"/\\|?*]')
# a name that is already safe everywhere (the common case): plain ASCII, no leading dot, no trailing dot or space
_PLAIN = re.compile(r"[A-Za-z0-9_\-+=,;@#$%&'()\[\]{}!~][A-Za-z0-9_\-+=,;@#$%&'()\[\]{}!~. ]{0,199}(?<![. ])")
_RESERVED = re.compile(r"^(con|prn|aux|nul|com[0-9¹²³]|lpt[0-9¹²³])(\..*)?$", re.I)


def sanitize(text: str, *, limit: int = MAX_STEM_BYTES, tail: str = "") -> str:
    """``text`` as one path component valid on Windows, macOS and Linux (see the module docstring).
    ``tail`` (e.g. the sha8) ends a name that had to be shortened."""
    if _PLAIN.fullmatch(text) and not _RESERVED.match(text):
        return text
    text = unicodedata.normalize("NFC", str(text))
    text = "".join("_" if unicodedata.category(ch)[0] == "C" else ch for ch in text)
    text = _WINDOWS_BAD.sub("_", text).strip(" ")
    text = re.sub(r"^\.+", lambda m: "_" * len(m.group(0)), text)
    text = text.rstrip(". ")
    if not text:
        text = "_"
    if _RESERVED.match(text):
        text = "_" + text
    if len(text.encode("utf-8")) > limit:
        keep = limit - len(tail.encode("utf-8")) - (1 if tail else 0)
        text = _cut_bytes(text, keep).rstrip(". ") + (f"~{tail}" if tail else "")
    return text


def _cut_bytes(text: str, limit: int) -> str:
    """The longest start of ``text`` within ``limit`` UTF-8 bytes, never splitting a character."""
    return text.encode("utf-8")[:max(limit, 1)].decode("utf-8", errors="ignore") or "_"


def check_layout(layout: str) -> list[list[tuple[str, str | None]]]:
    """The layout parsed into components, each a list of (literal, field or None); raises ``BadLayout`` for an
    unknown field, an attribute, index, conversion or format spec (``{name.__class__}``, ``{name!r}``), an
    absolute path, or a ``..`` component."""
    if not layout or not layout.strip():
        raise BadLayout("the layout is empty", hint=f'Use fields {", ".join(FIELDS)}, e.g. --layout "{DEFAULT_LAYOUT}".')
    if layout.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", layout):
        raise BadLayout(f"the layout {layout!r} is absolute; it is a path inside the target folder")
    parts = []
    for component in layout.replace("\\", "/").split("/"):
        if component in ("", ".", ".."):
            raise BadLayout(f"the layout {layout!r} has an empty, '.' or '..' folder",
                            hint=f'Give folders made of fields and text, e.g. "{DEFAULT_LAYOUT}".')
        try:
            parsed = list(string.Formatter().parse(component))
        except ValueError as exc:
            raise BadLayout(f"the layout {layout!r} does not parse ({exc})") from None
        pieces = []
        for literal, field, spec, conversion in parsed:
            if field is not None and (field not in FIELDS or spec or conversion):
                raise BadLayout(f"unknown layout field {{{field}}}" if field not in FIELDS
                                else f"layout field {{{field}}} takes no format or conversion",
                                hint=f"Fields: {', '.join('{' + f + '}' for f in FIELDS)}.")
            pieces.append((literal, field))
        parts.append(pieces)
    if not any(field == "name" for literal, field in parts[-1]) and not any(
            field == "sha8" for literal, field in parts[-1]):
        raise BadLayout(f"the layout {layout!r} does not name the file by {{name}} (or {{sha8}})",
                        hint="End it with {name}, so every adapter gets its own file.")
    return parts


def render_layout(parts: list[list[tuple[str, str | None]]], values: Mapping[str, str]) -> tuple[str, ...]:
    """The relative path (folders, then the file's stem) for one entry's ``values``."""
    out = []
    for i, pieces in enumerate(parts):
        last = i == len(parts) - 1
        # fields are made safe one by one first (a value's "/" or ".." stays inside its component)
        text = "".join(literal + (sanitize(values.get(field) or "_", limit=MAX_STEM_BYTES) if field else "")
                       for literal, field in pieces)
        out.append(sanitize(text, tail=values.get("sha8", "") if last else ""))
    return tuple(out)


def layout_values(*, name: str, sha256: str, family: str, format: str, network: str,
                  tags: list[str], label: str | None = None) -> dict[str, str]:
    """The fields of one entry."""
    return {"name": name, "family": family or "unknown", "label": label or FAMILY_LABELS.get(family, "Other"),
            "tag": tags[0] if tags else "untagged", "format": format or "unknown", "network": network or "lora",
            "sha8": sha256[:8]}
