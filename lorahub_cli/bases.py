"""Base models: what `--base` names, where its configs are, which family it is, and `lora base` memory.

A base is resolved to a diffusers-layout folder holding ``model_index.json`` and ``<component>/config.json``
(never weights), which is all ``lorahub_cli.archs`` needs to build its module tables:

- an alias (sd15, sd21, sdxl, sd3, flux), a family name (sd1, ...) or one of the public repo ids the aliases
  were copied from (runwayml/stable-diffusion-v1-5, stabilityai/stable-diffusion-xl-base-1.0, ...): the
  packaged configs, no network;
- a name saved with ``lora base add --name``: what it was saved as;
- a local folder with model_index.json (a diffusers model, or a snapshot folder of the HF cache);
- a single-file checkpoint (.safetensors / .ckpt in the A1111 / ComfyUI layout): identified and tabled from its
  header alone (``inspect.checkpoint``, ``archs.single_file``), its tables kept as a folder in the cache;
- a Hub id ``owner/name[@revision]``: model_index.json and the components' config.json through
  ``hf_hub_download`` into the user's Hugging Face cache. A cached copy is used without asking the Hub
  (configs of a published base do not change under one revision in practice); ``refresh=True`` (what
  ``lora base add`` does) asks the Hub. HF_HUB_OFFLINE is honoured: nothing cached -> ``Offline`` (exit 3).

Saved bases live in ``$LORAHUB_HOME/bases.json`` (written atomically), not in the registry database: they
are a handful of small records that the registry's schema does not know.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from lorahub_cli.errors import DamagedFile, LoraError, NotFound, UsageError

ALIAS, FOLDER, HUB, CHECKPOINT = "alias", "folder", "hub", "checkpoint"
BASES_FILE = "bases.json"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")
_NAME = re.compile(r"^[A-Za-z0-9][\w.-]{0,63}$")
# model_index.json pipeline class -> family (SD1 and SD2 share a class: told apart by the U-Net below)
_PIPELINE_FAMILIES = (("StableDiffusionXL", "sdxl"), ("StableDiffusion3", "sd3"), ("Flux", "flux"))
_CONTEXT_FAMILIES = {768: "sd1", 1024: "sd2", 2048: "sdxl"}
_TRANSFORMER_FAMILIES = {"SD3Transformer2DModel": "sd3", "FluxTransformer2DModel": "flux"}
# a checkpoint's components that can be supplied apart (a file or folder each), and the flag that supplies each
PART_FLAGS = {"vae": "--vae", "text_encoder": "--text-encoder", "text_encoder_2": "--text-encoder-2",
              "text_encoder_3": "--text-encoder-3"}
# the components a pipeline of each family needs from somewhere (the file, a --vae / --text-encoder* part, or
# the borrowed folder)
NEEDED = {"sd1": ("unet", "text_encoder", "vae"), "sd2": ("unet", "text_encoder", "vae"),
          "unknown": ("unet", "text_encoder", "vae"), "sdxl": ("unet", "text_encoder", "text_encoder_2", "vae"),
          "sd3": ("transformer", "text_encoder", "text_encoder_2", "text_encoder_3", "vae"),
          "flux": ("transformer", "text_encoder", "text_encoder_2", "vae")}


def needed_components(family: str, variants: tuple[str, ...] = ()) -> tuple[str, ...]:
    """What a pipeline of ``family`` needs; SDXL's refiner runs OpenCLIP-bigG alone (no text_encoder)."""
    needed = NEEDED.get(family, NEEDED["unknown"])
    return tuple(c for c in needed if c != "text_encoder") if "refiner" in variants else needed


@dataclass(frozen=True)
class Base:
    """A resolved base model: its configs' folder and what they say."""

    ref: str                      # what the user gave
    id: str                       # Hub repo id (alias: the repo its configs came from) or the folder's path
    kind: str                     # alias | folder | hub
    family: str                   # sd1 | sd2 | sdxl | sd3 | flux | unknown
    folder: Path                  # diffusers layout: model_index.json + <component>/config.json
    components: tuple[str, ...]   # adaptable components (denoiser, text encoders)
    revision: Optional[str] = None  # Hub: the commit the configs were read at
    checkpoint: Optional[str] = None  # a single-file checkpoint's path (folder then holds its header's tables)
    variants: tuple[str, ...] = ()    # checkpoint: inpainting, refiner, v-prediction, fp8, ...
    borrow: Optional[str] = None      # checkpoint: a diffusers folder lending configs and missing components
    holds: tuple[str, ...] = ()       # checkpoint: the components the file holds (unet/transformer, text encoders, vae)
    parts: tuple[tuple[str, str], ...] = ()   # checkpoint: (component, file or folder) supplied apart (--vae, ...)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["folder"] = str(self.folder)
        out["components"] = list(self.components)
        out["variants"] = list(self.variants)
        out["holds"] = list(self.holds)
        out["parts"] = dict(self.parts)
        return out


# --- resolution -------------------------------------------------------------------------------------
def resolve_base(ref: str, *, refresh: bool = False, settings: Any = None, home: Optional[Path] = None) -> Base:
    """The base that ``ref`` names (see the module docstring for the forms and their order); saved names are
    looked up in ``home``'s bases.json (default: the library home)."""
    from lorahub_cli.archs import REPOS, config_dir, family_of, resolve_alias

    text = str(ref).strip()
    if not text:
        raise UsageError("no base given", hint=f"Give an alias ({', '.join(REPOS)}), a folder or a Hub id.")
    alias = resolve_alias(text)
    if alias:
        folder = config_dir(alias)
        return Base(text, REPOS[alias], ALIAS, family_of(alias), folder, _components(folder))
    saved = _saved(text, home)
    if saved is not None:
        return _from_saved(text, saved, refresh=refresh, settings=settings)
    path = Path(text).expanduser()
    if path.is_file():
        return from_checkpoint(path, ref=text)
    if path.exists():
        return from_folder(path, ref=text)
    if _HUB_ID.match(text):
        repo_id, _, revision = text.partition("@")
        try:
            return from_hub(repo_id, revision or None, ref=text, refresh=refresh, settings=settings)
        except LoraError as err:
            if path.parent.is_dir() and path.parent != Path("."):   # e.g. "models/my-bas" with models/ here
                raise NotFound(f"no base {text!r}: no such folder (the folder {path.parent} exists here, but "
                               f"holds no {path.name!r}), and as a Hub id: {err.message}",
                               hint="Check the folder's name (`ls " + str(path.parent) + "`).") from None
            raise
    raise NotFound(f"unknown base {text!r}: not an alias, a saved base, a folder or a Hub id",
                   hint=f"Use one of {', '.join(REPOS)}, a diffusers model folder, or owner/name from the Hub.")


def from_folder(path: Path, *, ref: Optional[str] = None) -> Base:
    path = Path(path).expanduser().resolve()
    if not (path / "model_index.json").is_file():
        raise NotFound(f"{path} has no model_index.json: not a diffusers model folder",
                       hint="Point --base at the folder that holds model_index.json (and unet/, text_encoder/, ...).")
    return Base(ref or str(path), str(path), FOLDER, family_of_configs(path), path, _components(path))


def from_checkpoint(path: Path, *, ref: Optional[str] = None, borrow: Optional[str] = None,
                    parts: Optional[dict[str, str]] = None) -> Base:
    """A single-file checkpoint (A1111 / ComfyUI layout): identified and tabled from its header alone."""
    from lorahub_cli.archs.single_file import table_folder
    from lorahub_cli.inspect.checkpoint import identify
    from lorahub_cli.inspect.containers import read_container

    path = Path(path).expanduser().resolve()
    raw = read_container(path)
    report = identify(raw)
    folder, components = table_folder({k: s.shape for k, s in raw.tensors.items()}, report.family, report.variants)
    return Base(ref or str(path), str(path), CHECKPOINT, report.family, folder, components,
                checkpoint=str(path), variants=tuple(report.variants), borrow=borrow,
                holds=tuple(report.components), parts=tuple(sorted((parts or {}).items())))


def from_hub(repo_id: str, revision: Optional[str] = None, *, ref: Optional[str] = None, refresh: bool = False,
             settings: Any = None) -> Base:
    """A Hub base from its configs in the HF cache, downloading the missing ones (never any weights)."""
    from lorahub_cli.hubclient import HubSettings

    settings = settings or HubSettings.current()
    index = _fetch_config(repo_id, "model_index.json", revision, settings, refresh)
    folder = index.parent
    components = _components(folder)
    for component in components:
        _fetch_config(repo_id, f"{component}/config.json", revision, settings, refresh)
    return Base(ref or repo_id, repo_id, HUB, family_of_configs(folder), folder, components,
                revision=_commit_of(folder))


def _fetch_config(repo_id: str, filename: str, revision: Optional[str], settings: Any, refresh: bool) -> Path:
    from huggingface_hub import hf_hub_download

    from lorahub_cli.hubclient import hub_error

    kwargs = dict(revision=revision, cache_dir=settings.cache_dir, endpoint=settings.endpoint)
    if not refresh or settings.offline:
        try:  # the cached copy: no request at all
            return Path(hf_hub_download(repo_id, filename, local_files_only=True, **kwargs))
        except Exception as exc:
            if settings.offline:
                err = hub_error(exc, repo_id=repo_id, revision=revision, path=filename,
                                endpoint=settings.endpoint, offline=True)
                raise (err or exc) from exc
    try:
        return Path(hf_hub_download(repo_id, filename, **kwargs))
    except Exception as exc:
        err = hub_error(exc, repo_id=repo_id, revision=revision, path=filename, endpoint=settings.endpoint,
                        offline=settings.offline)
        raise (err or exc) from exc


def _commit_of(folder: Path) -> Optional[str]:
    parts = folder.parts
    return parts[-1] if len(parts) > 1 and parts[-2] == "snapshots" else None


def _components(folder: Path) -> tuple[str, ...]:
    from lorahub_cli.archs import base_components

    try:
        return tuple(base_components(folder))
    except ValueError as exc:  # a damaged model_index.json
        raise NotFound(f"{folder / 'model_index.json'} is not valid JSON: {exc}") from None


def family_of_configs(folder: Path) -> str:
    """The family a diffusers folder's configs describe: pipeline class, then what the denoiser reads."""
    index = _read_json(folder / "model_index.json")
    pipeline = str(index.get("_class_name", ""))
    for prefix, family in _PIPELINE_FAMILIES:
        if pipeline.startswith(prefix):
            return family
    unet = _read_json(folder / "unet" / "config.json")
    context = unet.get("cross_attention_dim")
    if isinstance(context, int) and context in _CONTEXT_FAMILIES:
        return _CONTEXT_FAMILIES[context]
    transformer = _read_json(folder / "transformer" / "config.json")
    return _TRANSFORMER_FAMILIES.get(str(transformer.get("_class_name", "")), "unknown")


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def table_hash(base: Base) -> str:
    """A short sha256 over the base's module tables (names and shapes): equal hashes, equal architectures."""
    from lorahub_cli.archs import module_table

    digest = hashlib.sha256()
    for component in base.components:
        digest.update(f"[{component}]".encode())
        for name, layer in sorted(module_table(base.folder, component).items()):
            digest.update(f"{name}:{layer.kind}:{layer.in_features}:{layer.out_features}:{layer.kernel}\n".encode())
    return digest.hexdigest()[:16]


# --- saved bases (`lora base add / list / rm`) ---------------------------------------------------------
@dataclass
class SavedBase:
    name: str
    id: str
    kind: str
    family: str
    table_hash: str
    components: list[str] = field(default_factory=list)
    revision: Optional[str] = None
    added_at: str = ""
    variants: list[str] = field(default_factory=list)   # a checkpoint's (inpainting, refiner, fp8, ...)
    borrow: Optional[str] = None                        # a checkpoint's diffusers folder to take configs from
    parts: dict[str, str] = field(default_factory=dict)  # a checkpoint's components supplied apart (--vae, ...)

    def to_dict(self) -> dict:
        return asdict(self)


def bases_file(home: Optional[Path] = None) -> Path:
    from registry.home import home_dir

    return (Path(home) if home is not None else home_dir()) / BASES_FILE


def list_bases(*, home: Optional[Path] = None) -> list[SavedBase]:
    return sorted(_load(home).values(), key=lambda b: b.name.lower())


def add_base(ref: str, *, name: Optional[str] = None, settings: Any = None,
             home: Optional[Path] = None, borrow: Optional[Path] = None,
             parts: Optional[dict[str, Any]] = None) -> SavedBase:
    """Resolve ``ref`` (fetching a Hub base's configs anew), hash its module tables and remember it.
    ``borrow`` / ``parts``: a checkpoint's configs folder and its components supplied apart (``with_parts``).

    Saving under an existing name replaces that record (re-adding refreshes it).
    """
    base = resolve_base(ref, refresh=True, settings=settings, home=home)
    base = with_parts(base, borrow=borrow, parts=parts)
    name = name or _default_name(base)
    if not _NAME.match(name):
        raise UsageError(f"invalid base name {name!r}: 1-64 letters, digits, '.', '_' or '-', starting with a "
                         "letter or digit", code="invalid-name")
    from lorahub_cli.archs import resolve_alias

    if resolve_alias(name) and resolve_alias(name) != resolve_alias(base.id):
        raise UsageError(f"{name!r} is already an alias for another base; choose another --name")
    record = SavedBase(name=name, id=base.id, kind=base.kind, family=base.family, table_hash=table_hash(base),
                       components=list(base.components), revision=base.revision,
                       added_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                       variants=list(base.variants), borrow=base.borrow, parts=dict(base.parts))
    saved = _load(home)
    saved[name] = record
    _store(saved, home)
    return record


def with_parts(base: Base, *, borrow: Optional[Path] = None, parts: Optional[dict[str, Any]] = None) -> Base:
    """A checkpoint base with a diffusers folder to take its configs, tokenizers and missing components from
    (``borrow``) and components supplied apart (``parts``: vae / text_encoder / text_encoder_2 / text_encoder_3 ->
    a weights file or a diffusers folder). A part replaces what the file or the borrowed folder holds (a better
    VAE beside a checkpoint is common). Nothing is read here but the paths' existence."""
    given = {c: p for c, p in (parts or {}).items() if p is not None}
    if borrow is None and not given:
        return base
    flags = " / ".join([*(["--borrow"] if borrow is not None else []), *(PART_FLAGS.get(c, c) for c in given)])
    if base.kind != CHECKPOINT:
        raise UsageError(f"{flags} is for a single-file checkpoint base (a folder or Hub base has its own "
                         "configs and components)")
    folder = base.borrow
    if borrow is not None:
        found = Path(borrow).expanduser().resolve()
        if not (found / "model_index.json").is_file():
            raise NotFound(f"{found} has no model_index.json: --borrow takes a diffusers folder")
        folder = str(found)
    lent = dict(base.parts)
    needed = needed_components(base.family, base.variants)
    for component, path in given.items():
        flag = PART_FLAGS.get(component)
        if flag is None or component not in needed:
            raise UsageError(f"{flag or component}: a {base.family} checkpoint has no {component} "
                             f"(it takes {', '.join(PART_FLAGS[c] for c in needed if c in PART_FLAGS)})")
        found = Path(path).expanduser().resolve()
        if not found.exists():
            raise NotFound(f"{flag} {path}: no such file or folder")
        lent[component] = str(found)
    return replace(base, borrow=folder, parts=tuple(sorted(lent.items())))


def remove_base(name: str, *, home: Optional[Path] = None) -> SavedBase:
    saved = _load(home)
    if name not in saved:
        raise NotFound(f"no saved base named {name!r}", hint="See `lora base list`.")
    record = saved.pop(name)
    _store(saved, home)
    return record


def _default_name(base: Base) -> str:
    if base.kind == FOLDER:
        stem = Path(base.id).name
    elif base.kind == CHECKPOINT:
        stem = Path(base.id).stem
    else:
        stem = base.id.split("/")[-1]
    return re.sub(r"[^\w.-]", "-", stem).lstrip(".-_")[:64] or "base"


def _saved(ref: str, home: Optional[Path] = None) -> Optional[SavedBase]:
    if not _NAME.match(ref):
        return None
    return _load(home).get(ref)


def _from_saved(ref: str, saved: SavedBase, *, refresh: bool, settings: Any) -> Base:
    if saved.kind == HUB:
        base = from_hub(saved.id, saved.revision, ref=ref, refresh=refresh, settings=settings)
    elif saved.kind == FOLDER:
        base = from_folder(Path(saved.id), ref=ref)
    elif saved.kind == CHECKPOINT:
        return from_checkpoint(Path(saved.id), ref=ref, borrow=saved.borrow, parts=saved.parts)
    else:
        base = resolve_base(saved.id)
    return Base(ref, base.id, base.kind, base.family, base.folder, base.components, base.revision)


def _load(home: Optional[Path] = None) -> dict[str, SavedBase]:
    path = bases_file(home)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise DamagedFile(f"{path} is damaged ({exc})",
                          hint="Move it away (saved bases are then forgotten) and add them again.") from None
    out = {}
    for row in data.get("bases", []) if isinstance(data, dict) else []:
        try:
            record = SavedBase(**row)
        except TypeError:
            continue  # a record from a newer/older version with other fields: skip it, keep the rest
        out[record.name] = record
    return out


def _store(saved: dict[str, SavedBase], home: Optional[Path] = None) -> None:
    """Published whole (``registry.publish``): readers see the old or the new list."""
    from registry.publish import publish_file

    payload = {"schema": 1, "bases": [b.to_dict() for b in sorted(saved.values(), key=lambda b: b.name)]}
    publish_file(bases_file(home), json.dumps(payload, indent=2))
