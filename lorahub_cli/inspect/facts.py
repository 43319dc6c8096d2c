"""What an adapter says about itself: header metadata and the sidecar files written beside it.

Sources, in order of trust: the safetensors ``__metadata__`` (kohya ``ss_*``, ``modelspec.*``, diffusers
``lora_adapter_metadata``, cloneofsimo token markers), then sidecars in the same folder: a model card
(``README.md`` or ``<stem>.README.md``, YAML front matter plus prose) and a PEFT ``adapter_config.json``
(or ``<stem>.adapter_config.json``). Every value keeps its source ("metadata:<key>", "card:<file>",
"adapter_config:<file>"). Hashes written in metadata are never used: they are recomputed from the bytes.
Nothing here fails on a bad sidecar; it becomes a warning.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional


from lorahub_cli.errors import LoraError
from lorahub_cli.inspect.card import (MAX_TAGS, MAX_TRIGGER_WORDS, load_front_matter, read_card,  # noqa: F401
                                      split_front_matter, strings, unique)
from lorahub_cli.inspect.model import Sourced
from lorahub_cli.inspect.regular import is_regular, open_regular

FAMILY_NAMES = {"sd1": "SD1.x", "sd2": "SD2.x", "sdxl": "SDXL", "sd3": "SD3", "flux": "Flux.1", "unknown": "unknown"}
_MAX_SIDECAR_BYTES = 1_000_000


@dataclass(frozen=True)
class FamilyClaim:
    """A base-family statement found in metadata or a sidecar (a hint: shapes are checked against it)."""

    family: str
    source: str        # "metadata:modelspec.architecture", "card:README.md", ...
    what: str          # the words that made the claim, e.g. "architecture 'flux-1-dev/lora'"

    def describe(self) -> str:
        return f"{self.source} ({self.what})"


@dataclass
class Facts:
    base_model: Optional[Sourced] = None
    trigger_words: list[Sourced] = field(default_factory=list)
    license: Optional[Sourced] = None
    tags: list[str] = field(default_factory=list)
    alpha: Optional[Sourced] = None
    rank: Optional[Sourced] = None
    family_claims: list[FamilyClaim] = field(default_factory=list)   # most trusted first
    tokens: list[str] = field(default_factory=list)                  # cloneofsimo "<s1>": "<embed>" markers
    warnings: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------------
# Base-model names -> family
# ---------------------------------------------------------------------------------------------------

KNOWN_BASES = {
    "runwayml/stable-diffusion-v1-5": "sd1",
    "stable-diffusion-v1-5/stable-diffusion-v1-5": "sd1",
    "sd-legacy/stable-diffusion-v1-5": "sd1",
    "compvis/stable-diffusion-v1-4": "sd1",
    "stabilityai/stable-diffusion-2-1": "sd2",
    "stabilityai/stable-diffusion-2-1-base": "sd2",
    "stabilityai/stable-diffusion-2": "sd2",
    "stabilityai/stable-diffusion-2-base": "sd2",
    "stabilityai/stable-diffusion-xl-base-1.0": "sdxl",
    "black-forest-labs/flux.1-dev": "flux",
    "black-forest-labs/flux.1-schnell": "flux",
    "stabilityai/stable-diffusion-3-medium": "sd3",
    "stabilityai/stable-diffusion-3-medium-diffusers": "sd3",
    "stabilityai/stable-diffusion-3.5-large": "sd3",
    "stabilityai/stable-diffusion-3.5-medium": "sd3",
    "stabilityai/stable-diffusion-3.5-large-turbo": "sd3",
}
# Substring rules for names we do not know by heart (checkpoint file names, local paths, fine-tunes);
# the order matters: "sd3.5" must not be read as SD1 "1.5", "flux" before anything else.
_NAME_RULES: tuple[tuple[str, re.Pattern], ...] = (
    ("flux", re.compile(r"flux(?![-_. ]?[2-9])", re.I)),
    ("sd3", re.compile(r"stable[-_ ]?diffusion[-_ ]?v?3|sd[-_ ]?3(?!\d)", re.I)),
    ("sdxl", re.compile(r"sdxl|stable[-_ ]?diffusion[-_ ]?xl|(?<![a-z])xl|xl(?![a-z])", re.I)),
    ("sd2", re.compile(r"stable[-_ ]?diffusion[-_ ]?v?2|sd[-_ ]?2(?!\d)|sd21|v2[-_.][01]", re.I)),
    ("sd1", re.compile(r"stable[-_ ]?diffusion[-_ ]?v?1|sd[-_ ]?v?1(?!\d)|sd1[45]|v1[-_.][45]", re.I)),
)


def family_from_name(name: str) -> Optional[str]:
    """Family of a base-model id, checkpoint file name or path (None when it names none we know)."""
    found = _name_match(name)
    return found[0] if found else None


def _name_match(name: str) -> Optional[tuple[str, str]]:
    """(family, the part of ``name`` that says so)."""
    if not name:
        return None
    known = KNOWN_BASES.get(name.strip().lower())
    if known:
        return known, name.strip()
    for family, rule in _NAME_RULES:
        if m := rule.search(name):
            return family, m.group(0)
    return None


def family_from_architecture(arch: str) -> Optional[str]:
    """modelspec.architecture ("stable-diffusion-xl-v1-base/lora", "flux-1-dev/lora", ...) -> family."""
    base = arch.split("/", 1)[0].strip().lower()
    if base.startswith("stable-diffusion-xl"):
        return "sdxl"
    if base.startswith(("stable-diffusion-3", "stable-diffusion-v3")):
        return "sd3"
    if base.startswith("stable-diffusion-v2"):
        return "sd2"
    if base.startswith("stable-diffusion-v1"):
        return "sd1"
    if base.startswith("flux-1"):
        return "flux"
    return None


_SS_VERSIONS = {"sd_v1": "sd1", "sd_v1_v": "sd1", "sd_v2": "sd2", "sd_v2_v": "sd2", "flux1": "flux",
                "medium": "sd3", "5-large": "sd3", "5-medium": "sd3"}


def family_from_ss_version(version: str) -> Optional[str]:
    """kohya ss_base_model_version -> family."""
    v = version.strip().lower()
    return "sdxl" if v.startswith("sdxl") else _SS_VERSIONS.get(v)


# Mentions of a base model in a card's prose (used only when its front matter names no base_model).
_PROSE_RULES: tuple[tuple[str, re.Pattern], ...] = (
    ("sdxl", re.compile(r"\bSD[- ]?XL\b|stable[- ]diffusion[- ]xl", re.I)),
    ("sd3", re.compile(r"\bSD ?3(\.5)?\b|stable[- ]diffusion[- ]v?3", re.I)),
    ("flux", re.compile(r"\bFLUX(\.1)?\b", re.I)),
    ("sd2", re.compile(r"\bSD ?v?2(\.[01])?\b|stable[- ]diffusion[- ]v?2", re.I)),
    ("sd1", re.compile(r"\bSD ?v?1\.[45]\b|\bsdv1\.[45]\b|stable[- ]diffusion[- ]v?1[.-][45]|\bsd15\b", re.I)),
)


def family_from_prose(text: str) -> Optional[tuple[str, str]]:
    """(family, first mention) when the text mentions one family more often than any other."""
    counts: Counter[str] = Counter()
    first: dict[str, str] = {}
    for family, rule in _PROSE_RULES:
        hits = rule.findall(text)
        if hits:
            counts[family] = len(hits)
            first[family] = rule.search(text).group(0)
    ranked = counts.most_common(2)
    if not ranked or (len(ranked) == 2 and ranked[0][1] == ranked[1][1]):
        return None
    return ranked[0][0], first[ranked[0][0]]


# ---------------------------------------------------------------------------------------------------
# Small value helpers
# ---------------------------------------------------------------------------------------------------

_HUB_ID_RE = re.compile(r"^[\w.-]+/[\w.-]+$")
_WEIGHT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")


def is_local_path(value: str) -> bool:
    """A base_model that points at someone's disk (drive letter, absolute/relative path, weights file)."""
    v = value.strip()
    return bool(re.match(r"^[A-Za-z]:[\\/]", v) or "\\" in v or v.startswith(("/", "./", "../", "~"))
                or v.lower().endswith(_WEIGHT_SUFFIXES))


def _as_float(value: Any) -> Optional[float]:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if f == f and f not in (float("inf"), float("-inf")) else None


def _most_common(values: list[float]) -> Optional[float]:
    return Counter(values).most_common(1)[0][0] if values else None


# ---------------------------------------------------------------------------------------------------
# Header metadata
# ---------------------------------------------------------------------------------------------------

def _peft_config_values(config: dict, key: str) -> list[float]:
    """Values of ``key`` in a LoraConfig dict, flat ("lora_alpha") or per component ("unet.lora_alpha")."""
    out = []
    for k, v in config.items():
        if k == key or k.endswith("." + key):
            f = _as_float(v)
            if f is not None:
                out.append(f)
        elif isinstance(v, dict):
            out.extend(_peft_config_values(v, key))
    return out


def metadata_facts(metadata: dict[str, str]) -> Facts:
    """Facts from a safetensors ``__metadata__`` (string -> string)."""
    facts = Facts()
    arch = metadata.get("modelspec.architecture")
    if arch and (fam := family_from_architecture(arch)):
        facts.family_claims.append(FamilyClaim(fam, "metadata:modelspec.architecture", f"'{arch}'"))
    version = metadata.get("ss_base_model_version")
    if version and (fam := family_from_ss_version(version)):
        facts.family_claims.append(FamilyClaim(fam, "metadata:ss_base_model_version", f"'{version}'"))
    if str(metadata.get("ss_v2", "")).strip() == "True":
        facts.family_claims.append(FamilyClaim("sd2", "metadata:ss_v2", "'True'"))

    peft_meta = metadata.get("lora_adapter_metadata")
    if peft_meta:
        try:
            config = json.loads(peft_meta)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
            facts.warnings.append("metadata lora_adapter_metadata is not valid JSON; ignored")
            config = None
        if isinstance(config, dict):
            alpha = _most_common(_peft_config_values(config, "lora_alpha"))
            rank = _most_common(_peft_config_values(config, "r"))
            if alpha is not None:
                facts.alpha = Sourced(alpha, "metadata:lora_adapter_metadata")
            if rank is not None:
                facts.rank = Sourced(int(rank), "metadata:lora_adapter_metadata")
            base = config.get("base_model_name_or_path")
            if isinstance(base, str) and base:
                _add_base_model(facts, base, "metadata:lora_adapter_metadata")

    if facts.alpha is None and (a := _as_float(metadata.get("ss_network_alpha"))) is not None:
        facts.alpha = Sourced(a, "metadata:ss_network_alpha")
    if facts.rank is None and (r := _as_float(metadata.get("ss_network_dim"))) is not None:
        facts.rank = Sourced(int(r), "metadata:ss_network_dim")
    if name := metadata.get("ss_sd_model_name"):
        _add_base_model(facts, name, "metadata:ss_sd_model_name")

    phrase = unique(strings(metadata.get("modelspec.trigger_phrase", "").split(",")), limit=MAX_TRIGGER_WORDS)
    facts.trigger_words = [Sourced(w, "metadata:modelspec.trigger_phrase") for w in phrase]
    for word in unique(_tags_in_every_caption(metadata), limit=MAX_TRIGGER_WORDS):
        if word not in phrase and len(facts.trigger_words) < MAX_TRIGGER_WORDS:
            facts.trigger_words.append(Sourced(word, "metadata:ss_tag_frequency"))
    if lic := metadata.get("modelspec.license"):
        facts.license = Sourced(lic.strip(), "metadata:modelspec.license")
    if tags := metadata.get("modelspec.tags"):
        facts.tags = unique(strings(tags.split(",")), limit=MAX_TAGS)
    facts.tokens = [k for k, v in metadata.items() if v == "<embed>"]
    return facts


_MAX_CAPTION_TRIGGERS = 3   # per dataset folder: more tags in every caption is a caption style, not a trigger


def _tags_in_every_caption(metadata: dict[str, str]) -> list[str]:
    """kohya's trigger words: the caption tags of a dataset folder that every one of its images carries
    (``ss_tag_frequency`` counts captions per tag, ``ss_dataset_dirs`` images per folder)."""
    try:
        frequency = json.loads(metadata.get("ss_tag_frequency") or "{}")
        folders = json.loads(metadata.get("ss_dataset_dirs") or "{}")
    except (ValueError, RecursionError):
        return []
    if not isinstance(frequency, dict) or not isinstance(folders, dict):
        return []
    words: dict[str, None] = {}   # a dict: one pass over thousands of folders, not a list searched per tag
    for folder, tags in frequency.items():
        images = (folders.get(folder) or {}).get("img_count") if isinstance(folders.get(folder), dict) else None
        if not isinstance(tags, dict) or not isinstance(images, int) or images < 2:
            continue
        every = [t.strip() for t, n in tags.items() if n == images and isinstance(t, str) and t.strip()]
        if 0 < len(every) <= _MAX_CAPTION_TRIGGERS:
            words.update(dict.fromkeys(every))
    return list(words)


def _add_base_model(facts: Facts, value: str, source: str) -> None:
    """Record a base-model candidate and the family it names; the first one seen is kept as base_model."""
    value = value.strip()
    if not value:
        return
    if facts.base_model is None:
        facts.base_model = Sourced(value, source)
    if found := _name_match(value):
        family, said = found
        shown = value if len(value) <= 60 else f"...{said}..."   # long local paths: just the telling part
        facts.family_claims.append(FamilyClaim(family, source, f"base model '{shown}'"))


# ---------------------------------------------------------------------------------------------------
# Sidecars
# ---------------------------------------------------------------------------------------------------

# the names diffusers and PEFT save an adapter under, and the layouts that take a LoraConfig
_CONFIG_OWNER_STEMS = {"adapter_model", "pytorch_lora_weights"}
_CONFIG_FORMATS = {"peft", "diffusers"}


def sidecar_paths(path: Path, fmt: Optional[str] = None) -> tuple[list[Path], list[Path]]:
    """(cards, adapter configs) beside ``path``: "<stem>.README.md" first, then the folder's "README.md".

    A folder's plain ``adapter_config.json`` is a PEFT LoraConfig: it describes a file of the names PEFT and
    diffusers save, or of a layout (``fmt``) that takes one; a kohya or legacy file that merely shares the
    folder (an A1111 ``models/Lora``) is not described by it. A card describes its whole repository."""
    folder, stem = path.parent, path.stem

    def existing(*names: str) -> list[Path]:   # is_regular: a name too long to exist is simply not there
        return [p for p in (folder / n for n in names) if is_regular(p)]

    configs = existing(f"{stem}.adapter_config.json")
    if stem in _CONFIG_OWNER_STEMS or fmt is None or fmt in _CONFIG_FORMATS:
        configs += existing("adapter_config.json")
    return existing(f"{stem}.README.md", "README.md"), configs


def _read_text(path: Path) -> str:
    with open_regular(path) as f:   # a FIFO named README.md must not block the inspection
        return f.read(_MAX_SIDECAR_BYTES).decode("utf-8", errors="replace")


def card_facts(text: str, name: str) -> Facts:
    """Facts from a model card (``inspect.card``, the one card parser) plus the family its prose mentions."""
    facts = Facts()
    source = f"card:{name}"
    front, body = split_front_matter(text)
    meta = None
    if front is not None:
        meta, problem = load_front_matter(front)
        if problem:
            facts.warnings.append(f"{source}: {problem}")
    card = read_card(meta)
    facts.warnings += [f"{source}: {w}" for w in card.warnings]

    bases = card.base_models
    for base in bases[:1]:
        _add_base_model(facts, base, source)
    if len(bases) > 1:
        facts.warnings.append(f"{source}: lists {len(bases)} base models; using the first, '{bases[0]}'")
    if not bases:
        found = family_from_prose(body)
        if found:
            facts.family_claims.append(FamilyClaim(found[0], source, f"text mentions '{found[1]}'"))
    facts.trigger_words = [Sourced(w, source) for w in card.trigger_words]
    if card.license is not None:
        facts.license = Sourced(card.license, source)
    facts.tags = list(card.tags)
    return facts


def adapter_config_facts(text: str, name: str) -> Facts:
    """Facts from a PEFT adapter_config.json: base_model_name_or_path, r, lora_alpha."""
    facts = Facts()
    source = f"adapter_config:{name}"
    try:
        config = json.loads(text)
    except (ValueError, RecursionError):
        facts.warnings.append(f"{source}: not valid JSON; ignored")
        return facts
    if not isinstance(config, dict):
        facts.warnings.append(f"{source}: not a JSON object; ignored")
        return facts
    base = config.get("base_model_name_or_path")
    if isinstance(base, str):
        _add_base_model(facts, base, source)
    if (alpha := _as_float(config.get("lora_alpha"))) is not None:
        facts.alpha = Sourced(alpha, source)
    rank = _as_float(config.get("r", config.get("lora_rank")))
    if rank is not None:
        facts.rank = Sourced(int(rank), source)
    return facts


# ---------------------------------------------------------------------------------------------------
# Putting it together
# ---------------------------------------------------------------------------------------------------

def _merge(into: Facts, other: Facts) -> None:
    """Add ``other`` (less trusted) to ``into``: first value wins, lists are joined without repeats."""
    candidates = [c for c in (into.base_model, other.base_model) if c is not None]
    # a Hub id beats a local path or checkpoint file name found earlier
    hub = [c for c in candidates if _HUB_ID_RE.match(str(c.value)) and not is_local_path(str(c.value))]
    into.base_model = (hub or candidates or [None])[0]
    known = {w.value for w in into.trigger_words}
    for word in other.trigger_words:
        if word.value not in known and len(known) < MAX_TRIGGER_WORDS:
            known.add(word.value)
            into.trigger_words.append(word)
    into.license = into.license or other.license
    into.tags = unique(into.tags + other.tags, limit=MAX_TAGS)
    into.alpha = into.alpha or other.alpha
    into.rank = into.rank or other.rank
    into.family_claims += other.family_claims
    into.tokens = unique(into.tokens + other.tokens)
    into.warnings += other.warnings


def _why(err: Exception) -> str:
    return getattr(err, "message", None) or getattr(err, "strerror", None) or str(err)


def gather_facts(metadata: dict[str, str], path: Path, fmt: Optional[str] = None) -> Facts:
    """Everything the file's metadata and its sidecars say, each value with its source (``fmt``: the file's
    layout, which decides whether a folder's adapter_config.json is about it)."""
    facts = metadata_facts(metadata)
    cards, configs = sidecar_paths(path, fmt)
    for card in cards:
        try:
            _merge(facts, card_facts(_read_text(card), card.name))
        except (OSError, LoraError) as err:
            facts.warnings.append(f"card:{card.name}: could not be read ({_why(err)})")
    for config in configs:
        try:
            _merge(facts, adapter_config_facts(_read_text(config), config.name))
        except (OSError, LoraError) as err:
            facts.warnings.append(f"adapter_config:{config.name}: could not be read ({_why(err)})")
    if facts.base_model is not None and is_local_path(str(facts.base_model.value)):
        facts.warnings.append(f"base_model '{facts.base_model.value}' ({facts.base_model.source}) is a local path "
                              f"or file name, not a Hub id")
    return facts
