"""An adapter file's pairs named on a chosen base's layers, as `lora generate` names them there, for
`convert --base` and `merge --base`.

A base of a known family names layers through that family's architecture (an adapter of no family takes the
base's); a base of no known family through its own configs' tables. DoRA and (IA)^3 layers keep their vectors
here: ``lycoris.against_base`` then makes them plain pairs against the base's weights. Built from convert's
own mapping and pair reading (what ``compat.on_base`` wraps for check and generate), so that convert does not
import compat.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorahub_cli.canonical import CanonicalAdapter
from lorahub_cli.errors import Incompatible, UnmappedModules

if TYPE_CHECKING:
    from lorahub_cli.bases import Base
    from lorahub_cli.convert.keymap import KeyMap
    from lorahub_cli.convert.load import Source
    from lorahub_cli.inspect.model import Layout

UNKNOWN = "unknown"


def base_tables(base: "Base") -> dict[str, dict[str, Any]]:
    """component -> module table of the base's own configs (cached as JSON by ``archs``)."""
    from lorahub_cli.archs import module_table

    return {c: module_table(base.folder, c) for c in base.components}


def map_onto_base(layout: "Layout", base: "Base") -> "KeyMap":
    """Every module of ``layout`` named as a layer of ``base``'s own tables, or unmapped with the reason."""
    from lorahub_cli.convert.keymap import map_layout

    return map_layout(layout, base.family, base=Path(base.folder))


def pairs_from_keymap(source: "Source", keymap: "KeyMap", tables: dict[str, dict[str, Any]]) -> CanonicalAdapter:
    """The low-rank pairs of the mapped modules (unmapped ones are left out: the check reported them), shaped
    for the layers of ``tables``, with each layout's alpha rules; DoRA / (IA)^3 allowed (a base is at hand:
    they are applied against its weights)."""
    from lorahub_cli.convert.load import _check_low_rank, low_rank_pairs

    _check_low_rank(source.layout, with_base=True)
    return low_rank_pairs(source, keymap, tables)


def read_on_base(source: "Source", base: "Base") -> tuple[CanonicalAdapter, dict[str, dict[str, Any]]]:
    """``source``'s pairs named on ``base`` (DoRA and (IA)^3 layers still carrying their vectors), and the
    module tables they are named on: the family's, or the base's own for a base of no known family."""
    from lorahub_cli.convert.keymap import canonical_tables, map_layout

    family = source.report.family or UNKNOWN
    if base.family == UNKNOWN:
        tables, keymap = base_tables(base), map_onto_base(source.layout, base)
    else:
        if family not in (UNKNOWN, base.family):
            raise Incompatible(f"{source.file_name} is a {family} adapter and the base is {base.family}",
                               hint="Give the base the adapter was trained on.")
        tables, keymap = canonical_tables(base.family), map_layout(source.layout, base.family)
    if keymap.unmapped:
        stem, reason = next(iter(keymap.unmapped.items()))
        raise UnmappedModules(f"{len(keymap.unmapped)} of {len(source.layout.modules)} modules have no layer in "
                              f"base {base.id}, e.g. {stem!r}: {reason}",
                              hint=f"See `lora check {source.file_name} --base {base.ref}`.")
    adapter = pairs_from_keymap(source, keymap, tables)
    adapter.family = base.family
    adapter.tokens = {t: source.tensors[t] for t in source.layout.tokens if t in source.tensors}
    return adapter, tables
