"""An adapter's modules named on one base's own layer tables: the seam for bases whose family is unknown.

``convert.keymap.map_layout`` and ``compat`` read an adapter against its *family's* published architecture
(sd1, sdxl, ...), which is right for every real base. A custom or test-sized base (a folder whose configs match
no family) has layers of its own, and an adapter trained on it has an unknown family too; then nothing would
map. Here the same resolver the conversion uses (every layout's spelling: diffusers, peft, attn-procs, kohya,
...) looks names up in the base folder's tables instead, and the same alpha rules build the pairs.

Names go through convert's own ``map_layout(layout, family, base=folder)``; the pairs reuse convert's alpha
and shape helpers. `lora check`, `lora generate` (``pipeline.adapters``) and `lora merge --base`
(``merge.onto_base``, ``merge.save``) all name layers through here, so this sits below merge and pipeline and
neither of those imports the other.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from lorahub_cli.canonical import CanonicalAdapter

if TYPE_CHECKING:
    from lorahub_cli.archs import Layer
    from lorahub_cli.bases import Base
    from lorahub_cli.convert.keymap import KeyMap
    from lorahub_cli.convert.load import Source
    from lorahub_cli.inspect.model import Layout


def base_tables(base: "Base") -> dict[str, dict[str, "Layer"]]:
    """component -> module table of the base's own configs (cached as JSON by ``archs``)."""
    from lorahub_cli.archs import module_table

    return {c: module_table(base.folder, c) for c in base.components}


def map_onto_base(layout: "Layout", base: "Base") -> "KeyMap":
    """Every module of ``layout`` named as a layer of ``base``'s own tables, or unmapped with the reason."""
    from lorahub_cli.convert.keymap import map_layout

    return map_layout(layout, base.family, base=Path(base.folder))


def pairs_from_keymap(source: "Source", keymap: "KeyMap", tables: dict[str, dict[str, "Layer"]]) -> CanonicalAdapter:
    """The low-rank pairs of the mapped modules (unmapped ones are left out: the check reported them), shaped
    for the layers of ``tables``, with each layout's alpha rules (as ``convert.load.to_canonical``)."""
    from lorahub_cli.convert.load import _check_low_rank, low_rank_pairs

    _check_low_rank(source.layout, with_base=True)   # on a base: DoRA is applied against its weights
    return low_rank_pairs(source, keymap, tables)
