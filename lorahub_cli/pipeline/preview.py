"""`lora preview` as a function: one preview image per adapter on one loaded base.

The bare base is loaded once; each adapter is merged in and undone exactly before the next (``Library``'s
``set_adapters``). Each image carries its recipe (``lora generate --from`` makes it again) and is stored by
content with its entry (``lorahub_cli.previews.save_preview``). Entries that already show a preview are
skipped unless ``force``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from lorahub_cli.errors import LoraError
from lorahub_cli.previews import save_preview

PREVIEW_SOURCE = "lora preview"
DEFAULT_PROMPT = "{triggers}, a detailed picture"
DEFAULT_SEED = 1234


def preview_prompt(template: str, trigger_words: Sequence[str], name: str) -> str:
    """The prompt of an adapter's preview: ``{triggers}`` becomes its trigger words (else its name)."""
    words = ", ".join(trigger_words) if trigger_words else name.replace("-", " ").replace("_", " ")
    return template.replace("{triggers}", words).replace("{name}", name)


@dataclass
class PreviewOutcome:
    """What became of one adapter: ``status`` made | skipped | failed."""

    name: str
    status: str
    path: Optional[str] = None                # the preview's file (made or already there)
    prompt: Optional[str] = None
    seconds: Optional[float] = None
    error: Optional[dict] = None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {k: v for k, v in vars(self).items() if v not in (None, [])} | {"name": self.name,
                                                                             "status": self.status}


def make_previews(lib: Any, names: Sequence[str], base: str, *, force: bool = False, prompt: str = DEFAULT_PROMPT,
                  seed: int = DEFAULT_SEED, steps: Optional[int] = None, size: Optional[int] = None,
                  weight: float = 1.0, device: str = "auto", dtype: str = "auto",
                  advance: Callable[..., None] = lambda n=1, description=None: None) -> list[PreviewOutcome]:
    """A preview for each adapter in ``names`` on ``base`` (loaded once; ``lib`` is a ``pipeline.Library``)."""
    import time

    from lorahub_cli.pipeline.api import make_recipe
    from lorahub_cli.pipeline.generate import GenerateSettings, generate_image
    from lorahub_cli.pipeline.recipe import png_info

    registry = lib.registry
    outcomes: list[PreviewOutcome] = []
    todo = []
    for name in names:
        entry = registry.get(name)
        if entry.previews and not force:
            outcomes.append(PreviewOutcome(entry.name, "skipped", path=str(Path(registry.home) / entry.previews[0]["path"])))
            advance(1, description=entry.name)
        else:
            todo.append(entry)
    # the bare base, loaded once; each adapter is merged in and undone exactly before the next
    pipe = lib.pipeline(base, {}, device=device, dtype=dtype) if todo else None
    for entry in todo:
        text = preview_prompt(prompt, entry.trigger_words, entry.name)
        t0 = time.perf_counter()
        try:
            lib.set_adapters(pipe, {entry.name: weight})
            settings = GenerateSettings(prompt=text, seed=seed, width=size, height=size)
            if steps is not None:
                settings.steps = steps
            settings = settings.resolved(pipe)
            image, _ = generate_image(pipe, settings)
            data = _png_bytes(image, png_info(make_recipe(pipe, settings)))
            saved = save_preview(registry, entry.name, data, source=PREVIEW_SOURCE)
            digest = hashlib.sha256(data).hexdigest()
            path = next(str(Path(registry.home) / p["path"]) for p in saved.previews if p["sha256"] == digest)
            outcomes.append(PreviewOutcome(entry.name, "made", path=path, prompt=text,
                                           seconds=round(time.perf_counter() - t0, 3),
                                           warnings=list(pipe.lorahub.warnings)))
        except LoraError as err:
            outcomes.append(PreviewOutcome(entry.name, "failed", prompt=text, error=err.to_dict()))
        advance(1, description=entry.name)
    return outcomes


def _png_bytes(image: Any, info: Any) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()
