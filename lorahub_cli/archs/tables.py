"""Module tables: the name and shape of every Linear / Conv2d layer of a base model's component.

A table is built once from the component's public config on torch's meta device (no weights, no
network) and cached as JSON, keyed by the sha256 of the config and the library versions that name the
layers. A warm call reads that JSON and never imports torch. The cache lives in $LORAHUB_CACHE_DIR/modules
when that is set, else $LORAHUB_HOME/cache/modules, else the user cache dir.

``base`` is an alias (sd15, sd21, sdxl, sd3, flux, or a family / repo id that resolves to one) or a
local diffusers folder holding model_index.json and <component>/config.json.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from lorahub_cli.archs.aliases import REPOS, config_dir, resolve_alias
from lorahub_cli.errors import NotFound

BaseRef = Union[str, Path]

LAYERS_FILE = "layers.json"  # <component>/layers.json: a table given as is (a checkpoint header's), no config
SCHEMA = 1  # bump when the table layout or naming rules change: old cache files are then ignored
NAMING_LIBRARIES = ("torch", "diffusers", "transformers")
# model_index.json entries that adapters never target: processors, schedulers, checkers, and the VAE
# (no LoRA format names it; its config is not shipped with the aliases)
_NON_MODEL_SUFFIXES = ("Tokenizer", "TokenizerFast", "Scheduler", "FeatureExtractor", "ImageProcessor")
_NON_MODEL_COMPONENTS = ("safety_checker", "feature_extractor", "image_encoder", "vae")


@dataclass(frozen=True)
class Layer:
    """One adaptable layer: a Linear (kernel None) or a Conv2d (kernel (kh, kw))."""

    kind: str                              # "linear" | "conv"
    in_features: int                       # in_channels for a conv
    out_features: int                      # out_channels for a conv
    kernel: tuple[int, int] | None = None


_MEMO: dict[Path, dict[str, Layer]] = {}


def base_dir(base: BaseRef) -> Path:
    """The diffusers-layout folder of ``base`` (packaged configs for an alias)."""
    if isinstance(base, str):
        alias = resolve_alias(base)
        if alias:
            return config_dir(alias)
    path = Path(base).expanduser()
    if (path / "model_index.json").is_file():
        return path
    raise NotFound(f"unknown base {str(base)!r}: not an alias and not a folder with model_index.json",
                   hint=f"Use one of {', '.join(REPOS)} or a local diffusers model folder.")


def model_index(base: BaseRef) -> dict[str, Any]:
    return json.loads((base_dir(base) / "model_index.json").read_text(encoding="utf-8"))


def base_components(base: BaseRef) -> list[str]:
    """The adaptable components (denoiser, text encoders) named in model_index.json, in file order."""
    out = []
    for name, value in model_index(base).items():
        if name.startswith("_") or name in _NON_MODEL_COMPONENTS:
            continue
        if isinstance(value, list) and len(value) == 2 and value[1] and not value[1].endswith(_NON_MODEL_SUFFIXES):
            out.append(name)
    return out


def component_class(base: BaseRef, component: str) -> tuple[str, str]:
    """(library, class name) of a component, as model_index.json declares it."""
    entry = model_index(base).get(component)
    if component not in base_components(base) or not isinstance(entry, list):
        raise NotFound(f"{component!r} is not a model component of {base}",
                       hint=f"Components: {', '.join(base_components(base))}.")
    return entry[0], entry[1]


def module_table(base: BaseRef, component: str, *, cache_dir: Path | None = None) -> dict[str, Layer]:
    """Every Linear / Conv2d of ``component``, named as the installed diffusers / transformers name it.

    CLIP text encoders are always named with the ``text_model.`` level (see build.py for why).
    """
    library, class_name = component_class(base, component)
    stored = base_dir(base) / component / LAYERS_FILE
    if stored.is_file():   # a table read from a single-file checkpoint's header (inspect.checkpoint), not a config
        return _read_cache(stored) or {}
    config_path = base_dir(base) / component / "config.json"
    if not config_path.is_file():
        raise NotFound(f"no config for {component!r} at {config_path}")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    cache_file = _cache_root(cache_dir) / f"{component}-{_cache_key(library, class_name, config)}.json"
    if cache_file in _MEMO:
        return dict(_MEMO[cache_file])
    table = _read_cache(cache_file)
    if table is None:
        from lorahub_cli.archs.build import build_layers

        raw = build_layers(library, class_name, config)
        _write_cache(cache_file, {"schema": SCHEMA, "class": class_name, "layers": raw})
        table = {name: _layer(row) for name, row in raw.items()}
    _MEMO[cache_file] = table
    return dict(table)


def _layer(row: Any) -> Layer:
    kind, fan_in, fan_out, kernel = row
    return Layer(kind, int(fan_in), int(fan_out), tuple(kernel) if kernel else None)


def cache_root(cache_dir: Path | None = None) -> Path:
    """Where derived tables live (see the module docstring): ``cache_dir`` when given."""
    return _cache_root(cache_dir)


def table_payload(table: dict[str, Layer]) -> dict[str, Any]:
    """The JSON a table is cached as (``LAYERS_FILE`` uses it too)."""
    return {"schema": SCHEMA, "layers": {n: [l.kind, l.in_features, l.out_features, list(l.kernel) if l.kernel
                                                else None] for n, l in table.items()}}


def _cache_root(cache_dir: Path | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    shared = os.environ.get("LORAHUB_CACHE_DIR")   # derived data only, so several homes may share it (tests, CI)
    if shared:
        return Path(shared).expanduser() / "modules"
    home = os.environ.get("LORAHUB_HOME")
    if home:
        return Path(home).expanduser() / "cache" / "modules"
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("lorahub")) / "modules"


def _cache_key(library: str, class_name: str, config: dict[str, Any]) -> str:
    """sha256 of what decides the layer names: schema, class, config, and the naming libraries' versions."""
    blob = json.dumps({"schema": SCHEMA, "library": library, "class": class_name, "config": config,
                       "versions": _library_versions()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


@functools.lru_cache(maxsize=1)
def _library_versions() -> dict[str, str | None]:
    """Installed versions, from the *.dist-info folder names on sys.path (importlib.metadata as fallback).

    Scanning the folders costs a millisecond; importing importlib.metadata alone costs tens of them.
    """
    found: dict[str, str | None] = {}
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in names:
            dist, _, rest = name.partition("-")
            if dist in NAMING_LIBRARIES and dist not in found and rest.endswith(".dist-info"):
                found[dist] = rest[: -len(".dist-info")]
    missing = [d for d in NAMING_LIBRARIES if d not in found]
    if missing:
        from importlib.metadata import PackageNotFoundError, version

        for dist in missing:
            try:
                found[dist] = version(dist)
            except PackageNotFoundError:
                found[dist] = None
    return {d: found[d] for d in NAMING_LIBRARIES}


def _read_cache(path: Path) -> dict[str, Layer] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("schema") != SCHEMA:
            return None
        return {name: _layer(row) for name, row in data["layers"].items()}
    except (OSError, ValueError, KeyError, TypeError):
        return None  # missing or damaged: rebuild


def _write_cache(path: Path, data: dict[str, Any]) -> None:
    """Atomic write; a cache that cannot be written only costs the next call a rebuild."""
    from registry.errors import LoraError
    from registry.publish import publish_file

    try:
        publish_file(path, json.dumps(data, separators=(",", ":")))
    except (OSError, LoraError):   # no room, read-only home: the cache is only skipped
        pass
