"""One base's layers under their canonical names, built once per process from the cached module tables.

``archs.module_table`` keeps each component's table as JSON keyed by its config's hash, so a warm call reads
a few hundred kilobytes and never imports torch. Here the tables are merged into one dict keyed
"<component>.<module path>" (the canonical naming), memoised per base folder, so checking 1,000 adapters
against one base looks each layer up in the same dict.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lorahub_cli.archs import Layer
from lorahub_cli.bases import Base

_MEMO: dict[tuple[Path, tuple[str, ...]], "BaseIndex"] = {}


@dataclass(frozen=True)
class BaseIndex:
    base: Base
    layers: dict[str, Layer]      # canonical name -> layer

    @property
    def components(self) -> tuple[str, ...]:
        return self.base.components


def base_index(base: Base) -> BaseIndex:
    """The canonical layer lookup of ``base`` (built on the first call, then shared)."""
    key = (base.folder, base.components)
    found = _MEMO.get(key)
    if found is not None:
        return found if found.base == base else BaseIndex(base, found.layers)
    from lorahub_cli.archs import module_table

    layers: dict[str, Layer] = {}
    for component in base.components:
        for name, layer in module_table(base.folder, component).items():
            layers[f"{component}.{name}"] = layer
    index = BaseIndex(base, layers)
    _MEMO[key] = index
    return index
