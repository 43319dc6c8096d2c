"""Adapter keys -> canonical layer names, through the key normalisation conversion uses.

`check` must name layers exactly as `convert` does, so that the two can never disagree about what applies:
this module only reshapes ``lorahub_cli.convert.keymap.map_layout``'s answer for coverage, in the file's
module order. The keymap reads the adapter against its own family's architecture (so kohya, SAI, BFL and
positional names resolve as the trainer meant them); coverage then looks the canonical names up in the
base actually asked about.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lorahub_cli.inspect.model import Layout, ModuleInfo


@dataclass(frozen=True)
class Mapped:
    module: ModuleInfo
    targets: tuple[str, ...]   # canonical "<component>.<path>"; several: a fused layer, stacked on the output axis


@dataclass(frozen=True)
class NotMapped:
    key: str
    component: str
    reason: str


@dataclass
class KeyMapping:
    mapped: list[Mapped] = field(default_factory=list)
    unmapped: list[NotMapped] = field(default_factory=list)


def map_modules(layout: Layout, family: str, *, base=None) -> KeyMapping:
    """Every module of ``layout`` named canonically as ``family``'s base names it (or as the layers of ``base``,
    a local diffusers folder, when given), or unmapped with a reason."""
    from lorahub_cli.convert.keymap import map_layout

    keymap = map_layout(layout, family, base=base)
    out = KeyMapping()
    for module in layout.modules:
        found = keymap.mapped.get(module.key)
        if found is not None:
            out.mapped.append(Mapped(module, tuple(found.targets)))
        else:
            reason = keymap.unmapped.get(module.key, "the key normalisation did not name this module")
            out.unmapped.append(NotMapped(module.key, module.component, reason))
    return out
