"""Card facts for sources (the Hub's ``cardData``), read by the one card parser, ``lorahub_cli.inspect.card``.

This module only shapes that parser's result as a source's ``CardFacts`` and applies it to a report. A card can
be wrong (one says SDXL for an SD1 file): its claim is kept but flagged when the tensor shapes say otherwise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Optional

from lorahub_cli.inspect.card import MAX_TAGS, MAX_TRIGGER_WORDS, parse_front_matter, read_card  # noqa: F401
from lorahub_cli.previews import card_image_paths
from lorahub_cli.sources.model import CardFacts

if TYPE_CHECKING:
    from lorahub_cli.inspect.model import AdapterReport


def family_of_base_model(model_id: str) -> Optional[str]:
    """The family a base model id names (sd1, sd2, sdxl, sd3, flux), or None; inspection's name rules."""
    from lorahub_cli.inspect.facts import family_from_name

    return family_from_name(model_id)


def card_facts(card_data: Optional[Mapping[str, Any]], repo_id: str) -> Optional[CardFacts]:
    """Base model(s), trigger words, tags and license from cardData; None when there is no card."""
    if not card_data:
        return None
    source = f"card:README.md@{repo_id}"
    card = read_card(card_data)
    families = [f for f in (family_of_base_model(b) for b in card.base_models) if f]
    return CardFacts(
        source=source,
        base_model=card.base_models,
        base_model_family=families[0] if families else None,
        trigger_words=card.trigger_words,
        trigger_word_sources={w: source for w in card.trigger_words},
        tags=card.tags,
        license=card.license,
        images=card_image_paths(card_data),
    )


def flag_disagreement(card: Optional[CardFacts], report: "AdapterReport") -> Optional[str]:
    """A warning when the card's base model family differs from the one the tensors show (card is kept)."""
    if card is None or card.base_model_family is None:
        return None
    shapes_family = report.family
    if not shapes_family or shapes_family == "unknown" or (report.family_evidence or "").startswith("card"):
        return None
    if shapes_family == card.base_model_family:
        return None
    card.disagrees_with_shapes = True
    return (f"the model card says base_model {', '.join(card.base_model)} ({card.base_model_family}) but the "
            f"tensor shapes say {shapes_family}; the card's claim is kept and flagged")
