"""An adapter's modules named on one base's own layer tables: the seam for bases whose family is unknown.

``convert.keymap.map_layout`` and ``compat`` read an adapter against its *family's* published architecture
(sd1, sdxl, ...), which is right for every real base. A custom or test-sized base (a folder whose configs match
no family) has layers of its own, and an adapter trained on it has an unknown family too; then nothing would
map. Here the same resolver the conversion uses (every layout's spelling: diffusers, peft, attn-procs, kohya,
...) looks names up in the base folder's tables instead, and the same alpha rules build the pairs.

The functions live in ``convert.on_base`` (convert's own mapping and pair reading, which `convert --base`
uses too, and convert may not import compat); this module is where `lora check`, `lora generate`
(``pipeline.adapters``) and `lora merge --base` (``merge.onto_base``, ``merge.save``) take them from, so it sits
below merge and pipeline and neither of those imports the other.
"""

from __future__ import annotations

from lorahub_cli.convert.on_base import base_tables, map_onto_base, pairs_from_keymap

__all__ = ["base_tables", "map_onto_base", "pairs_from_keymap"]
