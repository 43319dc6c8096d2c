"""What the pages show, as plain dicts for the templates: one entry's facts with where each came from, the
text its copy buttons copy, its verdicts against the saved bases, its sources, previews and their recipes.

Values stay raw text here; the templates escape them (Jinja2 autoescape), so a card's ``<script>`` is shown
as text, never run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from lorahub_cli.errors import LoraError

PER_PAGE = 50
MAX_PER_PAGE = 500


def lora_tag(name: str, weight: float = 1.0) -> str:
    """The prompt tag A1111, Forge and ComfyUI's prompt-control nodes read: ``<lora:name:weight>``."""
    return f"<lora:{name}:{weight:g}>"


def weight(e: Any) -> float:
    """The weight the copy button writes: the user's preferred weight (`lora set --weight`), else 1."""
    preferred = getattr(e, "preferred_weight", None)
    return 1.0 if preferred is None else preferred


def facts(e: Any) -> list[dict[str, str]]:
    """(field, value, source) rows: each fact with where it came from ("set by you" for an override)."""

    def source(field: str, detected_from: Optional[str]) -> str:
        return "set by you" if field in e.overrides else (detected_from or "")

    rows = [
        ("family", e.family, source("family", e.family_evidence)),
        ("base-model label", getattr(e, "label", None) or "", getattr(e, "label_source", None) or ""),
        ("base model", e.base_model or "", source("base_model", e.base_model_source)),
        ("preferred weight", getattr(e, "preferred_weight", None), "set by you"),
        ("format", f"{e.format} ({e.network}, {e.container})", "the file's keys"),
        ("rank / alpha", f"{e.rank if e.rank is not None else '?'} / {e.alpha if e.alpha is not None else '-'}",
         "the file's shapes"),
        ("components", ", ".join(e.components), "the file's keys"),
        ("license", e.license or "", e.license_source or ""),
        ("size", f"{e.size} bytes", "the file"),
        ("sha256", e.sha256, "the file's bytes"),
        ("AutoV2", e.autov2.upper(), "sha256 (Civitai's short hash)"),
        ("added", e.added_at.isoformat(timespec="seconds") if e.added_at else "", "the library"),
    ]
    return [{"field": f, "value": str(v), "source": s} for f, v, s in rows if v not in ("", None)]


def triggers(e: Any) -> list[dict[str, str]]:
    if "trigger_words" in e.overrides:
        return [{"word": w, "source": "set by you"} for w in e.trigger_words]
    return [{"word": w, "source": s} for w, s in e.trigger_word_sources.items()]


def source_text(s: Any) -> str:
    """One provenance line (as `lora show` says it)."""
    from lorahub_cli.render.library import _source

    return _source(s)


def verdicts(entry: Any, home: Optional[Path], registry: Any) -> list[dict[str, str]]:
    """The `lora check` verdict of this entry against each saved base (`lora base add`); a base that cannot be
    judged here (its configs unreachable) says so instead of failing the page."""
    from lorahub_cli.bases import list_bases, resolve_base
    from lorahub_cli.compat.engine import check_many
    from lorahub_cli.compat.model import CheckFailure

    out = []
    for saved in list_bases(home=home):
        try:
            result = next(iter(check_many([entry.name], resolve_base(saved.name, home=home), registry=registry)))
        except LoraError as err:
            out.append({"base": saved.name, "verdict": "unknown", "detail": f"[{err.code}] {err.message}"})
            continue
        if isinstance(result, CheckFailure):
            out.append({"base": saved.name, "verdict": "unknown",
                        "detail": f"[{result.error.code}] {result.error.message}"})
        else:
            out.append({"base": saved.name, "verdict": result.verdict,
                        "detail": result.summary})
    return out


def preview_views(e: Any, home: Path) -> list[dict[str, Any]]:
    """Each preview with its URL on this server and, for a PNG, the recipe inside it (pretty JSON) and the
    command that makes it again."""
    out = []
    for p in getattr(e, "previews", None) or []:
        path = home / p["path"]
        recipe, parameters = None, None
        if p["path"].endswith(".png") and path.is_file():
            recipe, parameters = _recipe_text(path)
        out.append({"url": "/" + p["path"], "source": p.get("source") or "", "origin": p.get("url") or "",
                    "recipe": recipe, "parameters": parameters,
                    "rerun": f"lora generate --from {path}" if recipe else None})
    return out


def _recipe_text(path: Path) -> tuple[Optional[str], Optional[str]]:
    from lorahub_cli.pipeline.recipe import PARAMETERS_KEY, RECIPE_KEY, bounded_json, png_text

    try:
        text = png_text(path)
        raw = text.get(RECIPE_KEY)
        recipe = json.dumps(bounded_json(raw, "recipe"), indent=2, ensure_ascii=False) if raw else None
        return recipe, text.get(PARAMETERS_KEY)
    except LoraError:
        return None, None   # an unreadable image still shows; it just has no recipe to offer


def page_numbers(total: int, page: int, per_page: int) -> dict[str, int]:
    pages = max(1, -(-total // per_page))
    return {"page": min(page, pages), "pages": pages, "total": total, "per_page": per_page}
