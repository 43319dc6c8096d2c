"""The recipe inside each PNG: everything needed to make the image again, and A1111's "parameters" text.

Two text chunks are written:
* ``lorahub``: JSON (``Recipe.to_dict``; keys are API) - prompt, negative prompt, seed, steps, guidance,
  scheduler, size, the base (as given and its id) and each adapter's name, sha256 and weight, plus how they
  were applied (merge / peft, fused), device, dtype and versions;
* ``parameters``: the text A1111 writes, so A1111, ComfyUI, Civitai and image viewers show the settings:
  ``prompt\\nNegative prompt: ...\\nSteps: 25, Sampler: DPM++ 2M, CFG scale: 7.5, Seed: 1, Size: 512x512,
  Model: <base>, Lora hashes: "name: <sha256[:12]>", Version: lorahub-cli <v>``.

``read_recipe`` gives the lorahub recipe back; ``read_parameters`` parses the A1111 text of any image.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from lorahub_cli.errors import NoRecipe, NotFound

RECIPE_KEY = "lorahub"
PARAMETERS_KEY = "parameters"
RECIPE_VERSION = 1
# A1111's own pattern for "Key: value" pairs (values with , or : are JSON-quoted)
_PARAM = re.compile(r'\s*([\w ][\w \-/]*):\s*("(?:\\.|[^\\"])*"|[^,]*)(?:,|$)')


@dataclass
class Recipe:
    prompt: str
    seed: int
    steps: int
    guidance: float
    scheduler: str
    width: int
    height: int
    base: str                                   # as given: alias, saved name, folder or Hub id
    base_id: str                                # the Hub repo id, or the folder's absolute path
    adapters: list[dict[str, Any]] = field(default_factory=list)   # {"name", "sha256", "weight"[, "path"]}
    negative_prompt: str = ""
    stack: str = "merge"                        # merge (our fp32 merge) | peft (set_adapters layers)
    fused: bool = False
    device: str = "cpu"
    dtype: str = "fp32"
    versions: dict[str, str] = field(default_factory=dict)
    version: int = RECIPE_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> "Recipe":
        if not isinstance(data, dict):
            raise NoRecipe("the lorahub recipe is not a JSON object")
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        missing = [k for k in ("prompt", "seed", "steps", "guidance", "scheduler", "width", "height", "base",
                               "base_id") if k not in known]
        if missing:
            raise NoRecipe(f"the lorahub recipe lacks {', '.join(missing)}")
        version = known.get("version", 1)
        if type(version) is not int:
            raise NoRecipe(f"the lorahub recipe's version is not a number: {version!r}")
        if version > RECIPE_VERSION:
            raise NoRecipe(f"recipe version {version} is newer than this lorahub-cli reads "
                           f"({RECIPE_VERSION})", hint="Upgrade lorahub-cli.")
        adapters = known.get("adapters") or []
        if not all(isinstance(a, dict) and {"name", "sha256", "weight"} <= set(a) for a in adapters):
            raise NoRecipe("the lorahub recipe's adapters need a name, sha256 and weight each")
        return cls(**known)

    def a1111_parameters(self) -> str:
        from lorahub_cli.pipeline.schedulers import SCHEDULERS

        sampler = SCHEDULERS[self.scheduler].a1111 if self.scheduler in SCHEDULERS else self.scheduler
        pairs = [("Steps", self.steps), ("Sampler", sampler), ("CFG scale", _number(self.guidance)),
                 ("Seed", self.seed), ("Size", f"{self.width}x{self.height}"), ("Model", self.base_id)]
        if self.adapters:
            hashes = ", ".join(f"{a['name']}: {a['sha256'][:12]}" for a in self.adapters)
            pairs.append(("Lora hashes", hashes))
            pairs.append(("Lora weights", ", ".join(f"{a['name']}: {_number(a['weight'])}" for a in self.adapters)))
        if self.versions.get("lorahub-cli"):
            pairs.append(("Version", f"lorahub-cli {self.versions['lorahub-cli']}"))
        lines = [self.prompt]
        if self.negative_prompt:
            lines.append(f"Negative prompt: {self.negative_prompt}")
        lines.append(", ".join(f"{k}: {_quote(v)}" for k, v in pairs))
        return "\n".join(lines)


def _number(value: float) -> Any:
    return int(value) if float(value).is_integer() else float(value)


def _quote(value: Any) -> str:
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if any(c in text for c in ',:"\n') else text


# --- PNG chunks ---------------------------------------------------------------------------------------
def png_info(recipe: Recipe, extra: Optional[dict[str, Any]] = None) -> Any:
    """Pillow PngInfo with the JSON recipe (iTXt, UTF-8) and A1111's ``parameters`` (tEXt, or iTXt if needed).
    ``extra`` keys ride along in the JSON (e.g. a validation image's training step); readers ignore them."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    data = {**(extra or {}), **recipe.to_dict()}
    info.add_itxt(RECIPE_KEY, json.dumps(data, ensure_ascii=False, sort_keys=True))
    info.add_text(PARAMETERS_KEY, recipe.a1111_parameters())
    return info


def png_text(path: Path) -> dict[str, str]:
    """The text chunks of an image (empty for an image without any); unreadable files -> NotFound / NoRecipe."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise NotFound(f"no such image: {path}")
    try:
        with Image.open(path) as image:
            image.load()
            text = dict(getattr(image, "text", {}) or {})
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise NoRecipe(f"{path} is not an image Pillow can read: {exc}", hint=None) from None
    return {k: str(v) for k, v in text.items()}


def read_recipe(path: Path) -> Recipe:
    """The lorahub recipe embedded in ``path``."""
    return recipe_from_text(png_text(path), path)


def recipe_from_text(text: dict[str, str], path: Path) -> Recipe:
    """The lorahub recipe among an image's text chunks (``png_text``); ``path`` only names the image."""
    raw = text.get(RECIPE_KEY)
    if raw is None:
        what = "only A1111 'parameters'" if PARAMETERS_KEY in text else "no generation settings"
        raise NoRecipe(f"{path} carries {what}, not a lorahub recipe")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise NoRecipe(f"the lorahub recipe in {path} is not JSON: {exc}") from None
    return Recipe.from_dict(data)


def read_parameters(path: Path) -> Optional[dict[str, Any]]:
    """A1111's ``parameters`` text of ``path`` parsed (prompt, negative_prompt, and each "Key: value"), or None."""
    text = png_text(path).get(PARAMETERS_KEY)
    return parse_parameters(text) if text is not None else None


def parse_parameters(text: str) -> dict[str, Any]:
    lines = text.strip("\n").split("\n")
    settings: dict[str, str] = {}
    if lines and _PARAM.match(lines[-1]) and lines[-1].lstrip().startswith("Steps:"):
        for key, value in _PARAM.findall(lines.pop()):
            settings[key.strip()] = json.loads(value) if value.startswith('"') else value.strip()
    prompt, negative, in_negative = [], [], False
    for line in lines:
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:"):].strip()
        (negative if in_negative else prompt).append(line)
    return {"prompt": "\n".join(prompt), "negative_prompt": "\n".join(negative), "settings": settings}
