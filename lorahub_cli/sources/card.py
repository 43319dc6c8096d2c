"""Facts from a model card's YAML front matter (the Hub's ``cardData``), each kept with its source.

diffusers' training scripts write ``base_model`` (a string or a list), ``instance_prompt`` (the trigger word),
``widget`` prompts, ``tags`` and ``license``. A card can be wrong (one says SDXL for an SD1 file): its claim is
kept but flagged when the tensor shapes say otherwise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Optional

from lorahub_cli.sources.model import CardFacts

if TYPE_CHECKING:
    from lorahub_cli.inspect.model import AdapterReport


def family_of_base_model(model_id: str) -> Optional[str]:
    """The family a base model id names (sd1, sd2, sdxl, sd3, flux), or None; inspection's name rules."""
    from lorahub_cli.inspect.facts import family_from_name

    return family_from_name(model_id)


def parse_front_matter(text: str) -> Optional[dict]:
    """The YAML front matter of a README as a dict, as the Hub computes cardData (None when absent or broken)."""
    import yaml

    from lorahub_cli.inspect.facts import split_front_matter

    front, _body = split_front_matter(text)
    if front is None:
        return None
    try:
        data = yaml.safe_load(front)
    except yaml.YAMLError:
        return None
    return data if isinstance(data, dict) else None


def card_facts(card_data: Optional[Mapping[str, Any]], repo_id: str) -> Optional[CardFacts]:
    """Base model(s), trigger words, tags and license from cardData; None when there is no card."""
    if not card_data:
        return None
    source = f"card:README.md@{repo_id}"
    base = _strings(card_data.get("base_model"))
    triggers: list[str] = []
    for word in _strings(card_data.get("instance_prompt")) + _widget_texts(card_data.get("widget")):
        if word not in triggers:
            triggers.append(word)
    license_ = card_data.get("license")
    families = [f for f in (family_of_base_model(b) for b in base) if f]
    return CardFacts(
        source=source,
        base_model=base,
        base_model_family=families[0] if families else None,
        trigger_words=triggers,
        trigger_word_sources={w: source for w in triggers},
        tags=_strings(card_data.get("tags")),
        license=str(license_).strip() if isinstance(license_, (str, int, float)) and str(license_).strip() else None,
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


def apply_card(report: "AdapterReport", card: Optional[CardFacts]) -> None:
    """Fill the report's card-derived fields the file itself did not provide (the file's own facts win)."""
    if card is None:
        return
    if card.base_model and not report.base_model:
        report.base_model = card.base_model[0]
        report.base_model_source = card.source
    for word in card.trigger_words:
        if word not in report.trigger_words:
            report.trigger_words.append(word)
            report.trigger_word_sources[word] = card.source
    if card.license and not report.license:
        report.license = card.license
        report.license_source = card.source
    for tag in card.tags:
        if tag not in report.tags:
            report.tags.append(tag)


def _strings(value: Any) -> list[str]:
    items = value if isinstance(value, (list, tuple)) else [value]
    out = []
    for item in items:
        if isinstance(item, str) and item.strip() and item.strip() not in out:
            out.append(item.strip())
    return out


def _widget_texts(widget: Any) -> list[str]:
    """Prompt texts of ``widget`` entries (dicts with "text", or bare strings)."""
    items = widget if isinstance(widget, list) else [widget] if widget else []
    texts = []
    for item in items:
        text = item.get("text") if isinstance(item, Mapping) else item
        texts += _strings(text)
    return texts
