"""The recipe inside each PNG: everything needed to make the image again, and A1111's "parameters" text.

Two text chunks are written:
* ``lorahub``: JSON (``Recipe.to_dict``; keys are API) - prompt, negative prompt, seed, steps, guidance,
  scheduler, size, the base (as given and its id) and each adapter's name, sha256, weight and sources (where
  to fetch it again, as a lockfile lists them; older recipes have none and still read), plus how they were
  applied (merge / peft, fused), device, dtype and versions;
* ``parameters``: the text A1111 writes, so A1111, ComfyUI, Civitai and image viewers show the settings:
  ``prompt <lora:name:0.8>\\nNegative prompt: ...\\nSteps: 25, Sampler: DPM++ 2M, CFG scale: 7.5, Seed: 1,
  Size: 512x512, Model: <base>, Lora hashes: "name: <AutoV3>", Version: lorahub-cli <v>``: the prompt ends
  in A1111's ``<lora:NAME:W>`` tags and ``Lora hashes`` holds the short *tensor* hash (AutoV3) A1111 and
  Civitai match LoRAs by, NAME being the file name `lora export` gives the entry (``export.conventions``).
  The JSON recipe keeps the prompt without tags (a re-run applies the adapters itself).

``read_recipe`` gives the lorahub recipe back; ``read_parameters`` parses the A1111 text of any image. Images
are untrusted: their text comes through ``pngtext`` (bounded, no pixels decoded), the JSON's depth is bounded,
and every field is checked as its command-line option is (``Recipe.checked``); anything else is ``BadRecipe``.
"""

from __future__ import annotations

import json
import re
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

from lorahub_cli.errors import BadRecipe, NoRecipe, UsageError

RECIPE_KEY = "lorahub"
PARAMETERS_KEY = "parameters"
RECIPE_VERSION = 1
MAX_JSON_DEPTH = 16       # a recipe is 3 levels deep; 100k nested brackets would exhaust the parser's stack
MAX_ADAPTERS = 64
# a string (escapes and all) or one bracket: brackets inside strings are matched as part of the string
_BRACKETS = re.compile(r'"(?:\\.|[^\\"])*"?|[\[\]{}]')
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
    embeddings: list[dict[str, Any]] = field(default_factory=list)   # {"name", "sha256", "token"[, "path"]}

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
        if not isinstance(adapters, list) or not all(isinstance(a, dict) and {"name", "sha256", "weight"} <= set(a)
                                                     for a in adapters):
            raise NoRecipe("the lorahub recipe's adapters need a name, sha256 and weight each")
        return cls(**known).checked()

    def checked(self) -> "Recipe":
        """This recipe with every field checked exactly as the command line checks its option (the same
        functions, ``lorahub_cli.values``); a value the command line would refuse is ``BadRecipe``."""
        from lorahub_cli.pipeline.build import DTYPES
        from lorahub_cli.pipeline.schedulers import scheduler_spec
        from lorahub_cli.values import (check_guidance, check_seed, check_side, check_steps, check_text,
                                        finite_weight)

        with _field("prompt"):
            check_text(self.prompt, "prompt")
        with _field("negative_prompt"):
            check_text(self.negative_prompt, "negative_prompt")
        with _field("seed"):
            self.seed = check_seed(self.seed, "seed")
        with _field("steps"):
            self.steps = check_steps(self.steps, "steps")
        with _field("guidance"):
            self.guidance = check_guidance(self.guidance, "guidance")
        with _field("scheduler"):
            scheduler_spec(check_text(self.scheduler, "scheduler"))
        with _field("width"):
            self.width = check_side(self.width, "width")
        with _field("height"):
            self.height = check_side(self.height, "height")
        for name in ("base", "base_id", "device"):
            with _field(name):
                if not check_text(getattr(self, name), name).strip():
                    raise UsageError(f"{name} is empty")
        _one_of("stack", self.stack, ("merge", "peft"))
        _one_of("dtype", self.dtype, tuple(DTYPES))
        if not isinstance(self.fused, bool):
            raise BadRecipe(f"the recipe's fused must be true or false (got {self.fused!r})")
        if not isinstance(self.versions, dict) or not all(isinstance(v, str) for v in self.versions.values()):
            raise BadRecipe("the recipe's versions must map names to version text")
        if not isinstance(self.adapters, list) or len(self.adapters) > MAX_ADAPTERS:
            raise BadRecipe(f"the recipe's adapters must be a list of at most {MAX_ADAPTERS}")
        for i, adapter in enumerate(self.adapters):
            with _field(f"adapters[{i}]"):
                name = check_text(adapter.get("name"), "name")
                sha = check_text(adapter.get("sha256"), "sha256")
                if not _SHA256.fullmatch(sha):
                    raise UsageError(f"sha256 must be 64 lowercase hex digits (got {sha[:80]!r})")
                adapter["weight"] = finite_weight(name, adapter.get("weight"))
                if adapter.get("path") is not None:
                    check_text(adapter["path"], "path")
                _check_sources(adapter.get("sources"))   # absent in recipes written before they were recorded
                tensor = adapter.get("tensor_sha256")   # absent in recipes written before it was recorded
                if tensor is not None and not (isinstance(tensor, str) and _SHA256.fullmatch(tensor)):
                    raise UsageError(f"tensor_sha256 must be 64 lowercase hex digits (got {str(tensor)[:80]!r})")
        if not isinstance(self.embeddings, list) or len(self.embeddings) > MAX_ADAPTERS:
            raise BadRecipe(f"the recipe's embeddings must be a list of at most {MAX_ADAPTERS}")
        for i, emb in enumerate(self.embeddings):
            with _field(f"embeddings[{i}]"):
                if not isinstance(emb, dict):
                    raise UsageError("an embedding is an object with name, sha256 and token")
                check_text(emb.get("name"), "name")
                if not check_text(emb.get("token"), "token").strip():
                    raise UsageError("token is empty")
                sha = check_text(emb.get("sha256"), "sha256")
                if not _SHA256.fullmatch(sha):
                    raise UsageError(f"sha256 must be 64 lowercase hex digits (got {sha[:80]!r})")
                if emb.get("path") is not None:
                    check_text(emb["path"], "path")
        return self

    def a1111_parameters(self) -> str:
        from lorahub_cli.pipeline.schedulers import SCHEDULERS

        sampler = SCHEDULERS[self.scheduler].a1111 if self.scheduler in SCHEDULERS else self.scheduler
        pairs = [("Steps", self.steps), ("Sampler", sampler), ("CFG scale", _number(self.guidance)),
                 ("Seed", self.seed), ("Size", f"{self.width}x{self.height}"), ("Model", self.base_id)]
        from lorahub_cli.export.conventions import lora_hashes, lora_tags

        if hashes := lora_hashes(self.adapters):
            pairs.append(("Lora hashes", hashes))
        if self.embeddings:   # A1111's own key: each embedding's token and the short hash of its file
            pairs.append(("TI hashes", ", ".join(f"{e['token']}: {e['sha256'][:12]}" for e in self.embeddings)))
        if self.versions.get("lorahub-cli"):
            pairs.append(("Version", f"lorahub-cli {self.versions['lorahub-cli']}"))
        tags = lora_tags(self.adapters)
        lines = [f"{self.prompt} {tags}" if tags and self.prompt else (tags or self.prompt)]
        if self.negative_prompt:
            lines.append(f"Negative prompt: {self.negative_prompt}")
        lines.append(", ".join(f"{k}: {_quote(v)}" for k, v in pairs))
        return "\n".join(lines)


def _number(value: float) -> Any:
    return int(value) if float(value).is_integer() else float(value)


def _quote(value: Any) -> str:
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if any(c in text for c in ',:"\n') else text


_SHA256 = re.compile(r"[0-9a-f]{64}")


@contextmanager
def _field(name: str) -> Iterator[None]:
    """A check of a recipe field: the option's ``UsageError`` becomes ``BadRecipe`` (the file is at fault)."""
    try:
        yield
    except UsageError as err:
        raise BadRecipe(f"the recipe's {name} is refused: {err.message}") from None


_SOURCE_KINDS = ("hub", "civitai", "url", "path")
_SOURCE_KEYS = {"kind", "repo", "file", "commit", "model", "version", "url", "etag", "path", "sha256"}


def _check_sources(sources: Any) -> None:
    """An adapter's ``sources`` (where to fetch it again, in a lockfile's shape): plain, bounded values here;
    ``lorahub_cli.lock`` checks each kind's fields when it builds a lock from them (`--install`)."""
    from lorahub_cli.values import check_text

    if sources is None:
        return
    if not isinstance(sources, list) or len(sources) > 16:
        raise UsageError("sources must be a list of at most 16 objects")
    for item in sources:
        if not isinstance(item, dict) or item.get("kind") not in _SOURCE_KINDS or not set(item) <= _SOURCE_KEYS:
            raise UsageError(f"a source is an object with a kind ({', '.join(_SOURCE_KINDS)}) and known fields")
        for key, value in item.items():
            if key in ("model", "version"):
                if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                    raise UsageError(f"a source's {key} must be a positive whole number")
            elif len(check_text(value, key)) > 4096:
                raise UsageError(f"a source's {key} is longer than 4096 characters")
        if item["kind"] == "url" and not str(item.get("url", "")).startswith(("https://", "http://")):
            raise UsageError("a url source must be http(s)")


def _one_of(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise BadRecipe(f"the recipe's {name} must be one of {', '.join(allowed)} (got {value!r})"[:300])


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
    """The text chunks of a PNG (empty for one without any), read with size, inflation and pixel bounds and
    without decoding the image (``pngtext``); not a PNG -> NoRecipe, damaged or a bomb -> BadRecipe."""
    from lorahub_cli.pipeline.pngtext import read_text_chunks

    return read_text_chunks(path)


def read_recipe(path: Path) -> Recipe:
    """The lorahub recipe embedded in ``path``."""
    return recipe_from_text(png_text(path), path)


def recipe_from_text(text: dict[str, str], path: Path) -> Recipe:
    """The lorahub recipe among an image's text chunks (``png_text``); ``path`` only names the image."""
    raw = text.get(RECIPE_KEY)
    if raw is None:
        what = "only A1111 'parameters'" if PARAMETERS_KEY in text else "no generation settings"
        raise NoRecipe(f"{path} carries {what}, not a lorahub recipe")
    return Recipe.from_dict(bounded_json(raw, f"the lorahub recipe in {path}"))


def bounded_json(text: str, what: str) -> Any:
    """``json.loads`` after a linear scan that refuses nesting deeper than MAX_JSON_DEPTH (the text itself is
    already bounded by the PNG reader): 100k levels would otherwise end in a RecursionError."""
    depth = 0
    for m in _BRACKETS.finditer(text):
        token = m[0]
        if token in ("[", "{"):
            depth += 1
            if depth > MAX_JSON_DEPTH:
                raise BadRecipe(f"{what} nests deeper than {MAX_JSON_DEPTH} levels")
        elif token in ("]", "}"):
            depth -= 1
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise BadRecipe(f"{what} is not valid JSON: {str(exc)[:200]}") from None


def read_parameters(path: Path) -> Optional[dict[str, Any]]:
    """A1111's ``parameters`` text of ``path`` parsed (prompt, negative_prompt, and each "Key: value"), or None."""
    text = png_text(path).get(PARAMETERS_KEY)
    return parse_parameters(text) if text is not None else None


def parse_parameters(text: str) -> dict[str, Any]:
    lines = text.strip("\n").split("\n")
    settings: dict[str, str] = {}
    if lines and _PARAM.match(lines[-1]) and lines[-1].lstrip().startswith("Steps:"):
        for key, value in _PARAM.findall(lines.pop()):
            settings[key.strip()] = _unquote(key.strip(), value) if value.startswith('"') else value.strip()
    prompt, negative, in_negative = [], [], False
    for line in lines:
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:"):].strip()
        (negative if in_negative else prompt).append(line)
    parsed = {"prompt": "\n".join(prompt), "negative_prompt": "\n".join(negative), "settings": settings}
    from lorahub_cli.export.conventions import parse_lora_tags

    loras = parse_lora_tags(parsed["prompt"], settings.get("Lora hashes"))
    if loras:   # the <lora:NAME:W> tags (A1111's and ours), each with its short hash where listed
        parsed["loras"] = loras
    return parsed


def _unquote(key: str, value: str) -> Any:
    """A JSON-quoted A1111 value ("a, b"); a quote that is not valid JSON ("abc\\x") is a bad recipe."""
    try:
        return json.loads(value)
    except ValueError:
        raise BadRecipe(f"the A1111 parameters' value of {key[:80]!r} is not valid quoted text: "
                        f"{value[:80]!r}") from None
