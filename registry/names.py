"""Adapter names: what is valid, and how a default name is made from a file name.

Names are labels in the database only; they never become file paths (blobs live by sha256), but they are
printed, so anything that could break a terminal or look like a path is refused.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path

from registry.errors import InvalidName

MAX_NAME = 128
MAX_TAG = 64
# file stems that say nothing about the adapter: use the folder name instead
GENERIC_STEMS = {"pytorch_lora_weights", "adapter_model", "lora", "model", "diffusion_pytorch_model",
                 "pytorch_model", "weights", "lora_weights"}


# Cc: control characters (ESC, CR, ...); Cf: invisible format characters (bidi overrides, ZWJ)
_INVISIBLE = ("Cc", "Cf", "Cs", "Co", "Cn")


def _control_char(text: str) -> str | None:
    """The first character that could break a terminal or hide text, or None."""
    for ch in text:
        if unicodedata.category(ch) in _INVISIBLE:
            return ch
    return None


def _bad_char(text: str) -> str | None:
    for ch in text:
        if ch in "/\\" or unicodedata.category(ch) in _INVISIBLE:
            return ch
    return None


def validate_name(name: str) -> str:
    """Return ``name`` if it is a valid adapter name, else raise InvalidName saying why."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidName("an adapter name cannot be empty")
    if name != name.strip():
        raise InvalidName(f"an adapter name cannot start or end with spaces: {name!r}")
    if len(name) > MAX_NAME:
        raise InvalidName(f"an adapter name is at most {MAX_NAME} characters (this one has {len(name)})")
    if name in (".", ".."):
        raise InvalidName(f"{name!r} is not a usable name")
    bad = _bad_char(name)
    if bad is not None:
        raise InvalidName(f"an adapter name cannot contain {bad!r} (path separators and control or "
                          f"invisible characters are refused): {name!r}",
                          hint="Use letters, digits, spaces, '-', '_' or '.'.")
    return name


def validate_tag(tag: str) -> str:
    tag = tag.strip() if isinstance(tag, str) else tag
    if not isinstance(tag, str) or not tag:
        raise InvalidName("a tag cannot be empty", code="invalid-tag")
    if len(tag) > MAX_TAG:
        raise InvalidName(f"a tag is at most {MAX_TAG} characters: {tag[:20]!r}...", code="invalid-tag")
    bad = _bad_char(tag)
    if bad is not None or "," in tag:
        raise InvalidName(f"a tag cannot contain {bad or ','!r}: {tag!r}", code="invalid-tag")
    return tag


def validate_label(text: str, what: str, code: str) -> str:
    """Return ``text`` if it can be printed safely (a trigger word, a base model id: slashes are fine),
    else raise InvalidName with ``code``. Control and invisible characters are refused, as in names."""
    bad = _control_char(text)
    if bad is not None:
        raise InvalidName(f"a {what} cannot contain {bad!r} (control or invisible characters are refused): "
                          f"{text!r}", code=code)
    return text


def default_name(path: Path) -> str:
    """A valid name from a file name: the stem, or the folder's name for generic stems; unsafe chars -> '_'."""
    stem = path.stem
    if stem.lower() in GENERIC_STEMS and path.parent.name:
        stem = path.parent.name
    return name_from(stem)


def name_from(text: str) -> str:
    """A valid name from any text (a repo's name, a file's stem): unsafe chars -> '_', "adapter" if nothing
    is left; short enough for a "-N" suffix when the name is taken."""
    text = "".join("_" if (ch in "/\\" or unicodedata.category(ch)[0] == "C") else ch for ch in text)
    text = text.strip().strip(".") or "adapter"
    return text[: MAX_NAME - 8]


def numbered(base: str, n: int) -> str:
    return base if n <= 1 else f"{base}-{n}"
