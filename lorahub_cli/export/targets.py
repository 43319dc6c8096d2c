"""Sync targets, named once: `lora target add comfy ~/ComfyUI --kind comfyui`, then `lora sync comfy`.

A target is a UI's LoRA folder plus how to fill it (layout, link method, sidecars) and which entries go there
(a filter: family, tags, search text; none means the whole library). Targets live in
``$LORAHUB_HOME/sync-targets.json``, published whole like ``bases.json`` (a handful of small records the
registry's schema does not need to know); what each target holds is recorded in the manifest inside it.

A kind names where the UI keeps LoRAs under its own folder; given the UI's folder, that subfolder is used when
it exists (or its first part does: the UI is installed there), otherwise the folder given is taken to be the
LoRA folder itself:

    comfyui   models/loras        a1111, forge   models/Lora        swarmui   Models/Lora
    invokeai  (the folder given: point InvokeAI's "Scan Folder" at it, installing in place)
    plain     (the folder given)
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from lorahub_cli.errors import AlreadyExists, DamagedFile, UnknownTarget, UsageError
from lorahub_cli.export.link import check_method
from lorahub_cli.export.names import DEFAULT_LAYOUT, check_layout

TARGETS_FILE = "sync-targets.json"
KINDS = {"comfyui": "models/loras", "a1111": "models/Lora", "forge": "models/Lora", "swarmui": "Models/Lora",
         "invokeai": "", "plain": ""}
_NAME = re.compile(r"^[A-Za-z0-9][\w.-]{0,63}$")


@dataclass(frozen=True)
class Target:
    name: str
    kind: str
    root: str                      # the UI's folder as given
    folder: str                    # the LoRA folder files go into
    layout: str = DEFAULT_LAYOUT
    link: str = "auto"
    sidecars: bool = True
    family: Optional[str] = None
    tags: list[str] = field(default_factory=list)
    search: Optional[str] = None

    def to_dict(self) -> dict:
        return asdict(self)


def lora_folder(root: Path, kind: str) -> Path:
    """Where ``kind`` keeps LoRAs under ``root`` (see the module docstring)."""
    if kind not in KINDS:
        raise UsageError(f"unknown kind {kind!r}", hint=f"Use one of: {', '.join(KINDS)}.")
    sub = KINDS[kind]
    if sub and ((root / sub).is_dir() or (root / sub.split("/")[0]).is_dir()):
        return root / sub
    return root


def make_target(name: str, root: Path, *, kind: str, layout: str = DEFAULT_LAYOUT, link: str = "auto",
                sidecars: bool = True, family: Optional[str] = None, tags: Optional[list[str]] = None,
                search: Optional[str] = None) -> Target:
    if not _NAME.match(name):
        raise UsageError(f"invalid target name {name!r}", hint="Use letters, digits, '-', '_' or '.' (up to 64).")
    check_layout(layout)
    check_method(link)
    root = Path(root).expanduser().absolute()
    if not root.is_dir():   # a sync never makes a named target's folder (an unmounted drive stays unmounted)
        raise UsageError(f"{root} is not a folder", hint="Create it (or install the UI) first, then add the target.")
    return Target(name, kind, str(root), str(lora_folder(root, kind)), layout, link, sidecars, family,
                  list(tags or []), search)


def load(home: Path) -> dict[str, Target]:
    path = home / TARGETS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise DamagedFile(f"{path} is damaged ({exc})",
                          hint="Move it away (the targets are then forgotten; their folders keep their files) "
                               "and add them again.") from None
    out = {}
    for row in data.get("targets", []) if isinstance(data, dict) else []:
        try:
            target = Target(**row)
        except TypeError:
            continue   # a record from another version: skip it, keep the rest
        out[target.name] = target
    return out


def save(home: Path, targets: dict[str, Target]) -> None:
    from registry.publish import publish_file

    payload = {"schema": 1, "targets": [t.to_dict() for t in sorted(targets.values(), key=lambda t: t.name)]}
    publish_file(home / TARGETS_FILE, json.dumps(payload, indent=2))


def add(home: Path, target: Target, *, replace: bool = False) -> Target:
    targets = load(home)
    if target.name in targets and not replace:
        raise AlreadyExists(f"a target named {target.name!r} exists already",
                            hint=f"Remove it with `lora target rm {target.name}`, or pass --force.")
    targets[target.name] = target
    save(home, targets)
    return target


def remove(home: Path, name: str) -> Target:
    targets = load(home)
    if name not in targets:
        raise UnknownTarget(f"no sync target named {name!r}")
    gone = targets.pop(name)
    save(home, targets)
    return gone


def get(home: Path, name: str) -> Target:
    targets = load(home)
    if name not in targets:
        raise UnknownTarget(f"no sync target named {name!r}")
    return targets[name]
