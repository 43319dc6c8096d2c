"""The one model-card parser: a README's YAML front matter (the Hub's ``cardData``) -> base models, trigger
words, tags and license.

``inspect`` (a README beside a file), ``pull`` (the Hub's cardData) and ``ingest`` all read cards here, so one
README gives the same facts whichever way the adapter came in. Trigger words come from ``instance_prompt``
(diffusers' training scripts), ``trigger_words`` / ``trigger_word`` / ``activation_text`` (Civitai-style cards)
and ``widget`` prompts, in that order. Cards are untrusted text: every list is de-duplicated in linear time
and bounded, so a card with 100k widget prompts costs one pass and keeps a screenful.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional

TRIGGER_KEYS = ("instance_prompt", "trigger_words", "trigger_word", "activation_text")
MAX_TRIGGER_WORDS = 64    # a card listing more is listing prompts, not triggers: keep the first ones
MAX_TAGS = 256
MAX_WORD_CHARS = 1_000    # one trigger or tag longer than this is prose, not a word


@dataclass
class Card:
    """What a card's front matter says (values as written, stripped and without repeats)."""

    base_models: list[str] = field(default_factory=list)
    trigger_words: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    license: Optional[str] = None
    warnings: list[str] = field(default_factory=list)


def split_front_matter(text: str) -> tuple[Optional[str], str]:
    """(YAML front matter or None, the rest) of a Hugging Face model card."""
    stripped = text.lstrip("\ufeff")
    if not stripped.startswith("---"):
        return None, text
    m = re.match(r"^---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(\r?\n|$)", stripped, re.S)
    if not m:
        return None, text
    return m.group(1), stripped[m.end():]


def load_front_matter(front: str) -> tuple[Optional[dict], Optional[str]]:
    """(the front matter as a mapping or None, why it was not usable or None)."""
    import yaml  # only when a card is there: most files have none

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)   # the C parser where built: linear and fast
    try:
        loaded = yaml.load(front, Loader=loader)  # noqa: S506 - a SafeLoader: plain data only
    except (yaml.YAMLError, RecursionError) as err:  # RecursionError: nested deeper than the parser goes
        problem = getattr(err, "problem", None) or type(err).__name__
        return None, f"front matter is not valid YAML ({problem}); ignored"
    if loaded is None or isinstance(loaded, dict):
        return loaded, None
    return None, "front matter is not a mapping; ignored"


def parse_front_matter(text: str) -> Optional[dict]:
    """The YAML front matter of a README as a dict, as the Hub computes cardData (None when absent or broken)."""
    front, _body = split_front_matter(text)
    return None if front is None else load_front_matter(front)[0]


def read_card(meta: Optional[Mapping[str, Any]]) -> Card:
    """The facts of one card's front matter (cardData)."""
    card = Card()
    if not meta:
        return card
    card.base_models = unique(strings(meta.get("base_model")), limit=MAX_TAGS)
    words = [w for key in TRIGGER_KEYS for w in strings(meta.get(key))]
    card.trigger_words = unique(_chain(words, widget_texts(meta.get("widget"))), limit=MAX_TRIGGER_WORDS)
    if len(card.trigger_words) == MAX_TRIGGER_WORDS:
        card.warnings.append(f"the card lists more than {MAX_TRIGGER_WORDS} trigger words and prompts; "
                             f"the first {MAX_TRIGGER_WORDS} are kept")
    card.tags = unique(strings(meta.get("tags")), limit=MAX_TAGS)
    license_ = meta.get("license")
    if isinstance(license_, (str, int, float)) and not isinstance(license_, bool) and str(license_).strip():
        card.license = str(license_).strip()
    return card


def strings(value: Any) -> list[str]:
    """A string or a list of them (numbers accepted) as stripped non-empty strings, in order."""
    items = value if isinstance(value, (list, tuple)) else [value]
    out = []
    for item in items:
        if isinstance(item, (str, int, float)) and not isinstance(item, bool):
            text = str(item).strip()
            if text and len(text) <= MAX_WORD_CHARS:
                out.append(text)
    return out


def widget_texts(widget: Any) -> Iterable[str]:
    """Prompt texts of ``widget`` entries (mappings with "text", or bare strings), lazily."""
    items = widget if isinstance(widget, list) else [widget] if widget else []
    for item in items:
        text = item.get("text") if isinstance(item, Mapping) else item
        if isinstance(text, str):
            yield from strings(text)


def unique(items: Iterable[str], *, limit: Optional[int] = None) -> list[str]:
    """``items`` without repeats, first occurrence first, at most ``limit`` of them: one pass, set lookups."""
    seen: dict[str, None] = {}
    for item in items:
        if item not in seen:
            seen[item] = None
            if limit is not None and len(seen) >= limit:
                break
    return list(seen)


def _chain(*parts: Iterable[str]) -> Iterable[str]:
    for part in parts:
        yield from part
