"""Inputs named on a chosen base (`lora merge --base BASE`): the way to merge adapters of a custom model.

Without a base, an input's layers are named through its *family's* published architecture (sd1, sdxl, ...).
An adapter made for a custom or test-sized model has no such family (or only a wrong guess from its key
names), so nothing would map. Given the base it was made for, every input is read as `lora generate` reads
it on that base (``compat.on_base``): a base of a known family lends its family to inputs of none; a base of
no known family names every input on its own layer tables. The merged file is then written and read back
on the same tables. DoRA and (IA)^3 inputs, whose update depends on the base weight, need the base: each such
layer becomes the exact pair of its full update against the base's weight, which the merge scales by the input's weight
(``lycoris.against_base``), so the merge computes what `lora generate` applies with those weights.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from lorahub_cli.canonical import CanonicalAdapter
from lorahub_cli.errors import UnmappedModules

if TYPE_CHECKING:
    from lorahub_cli.bases import Base
    from lorahub_cli.convert.load import Source

UNKNOWN = "unknown"
BASE_HINT = ("If these adapters were made for a custom base model, pass --base BASE (its diffusers folder, a saved "
             "base or a Hub id) so their layers are named on that base's own layers.")


def read_onto_base(source: "Source", base: Optional["Base"], label: str) -> CanonicalAdapter:
    """``source`` as canonical pairs: on ``base`` when one is given, else through its own family. A DoRA / (IA)^3
    layer becomes the pair of its full update against the base (linear in the weight the merge scales it by)."""
    from lorahub_cli.convert.keymap import map_layout
    from lorahub_cli.convert.load import to_canonical

    family = source.report.family or UNKNOWN
    if base is None:
        if source.layout.network in ("dora", "ia3"):   # said first: a family alone would still not be enough
            from lorahub_cli.convert.load import _check_low_rank

            _check_low_rank(source.layout)
        if family == UNKNOWN:
            raise UnmappedModules(f"{label} is an adapter of unknown base family, so its layers cannot be named "
                                  "without the base it was made for", hint=BASE_HINT)
        return _with_hint(lambda: to_canonical(source)[0])
    if source.layout.network in ("dora", "ia3"):   # against the base's own weights
        from lorahub_cli.convert.on_base import read_on_base
        from lorahub_cli.lycoris.against_base import bake

        return bake(read_on_base(source, base)[0], base)
    if base.family != UNKNOWN:   # the base's family for an input of none; a known family stays (mixes refused)
        return to_canonical(source, map_layout(source.layout, family if family != UNKNOWN else base.family))[0]
    return read_on_own_tables(source, base, label)


def read_on_own_tables(source: "Source", base: "Base", label: str) -> CanonicalAdapter:
    from lorahub_cli.compat.on_base import base_tables, map_onto_base, pairs_from_keymap

    keymap = map_onto_base(source.layout, base)
    if keymap.unmapped:   # a merge keeps every module or none: a silently dropped layer would change the result
        stem, reason = next(iter(keymap.unmapped.items()))
        raise UnmappedModules(f"{label}: {len(keymap.unmapped)} of {len(source.layout.modules)} modules have no "
                              f"layer in base {base.id}, e.g. {stem!r}: {reason}",
                              hint=f"See `lora check {label} --base {base.ref}`.")
    adapter = pairs_from_keymap(source, keymap, base_tables(base))
    adapter.family = UNKNOWN
    adapter.tokens = {t: source.tensors[t] for t in source.layout.tokens if t in source.tensors}
    return adapter


def _with_hint(read):
    """Re-raise a failed mapping with the --base hint: a custom model's adapter often carries a wrong guess."""
    try:
        return read()
    except UnmappedModules as err:
        raise UnmappedModules(err.message, hint=f"{err.hint} {BASE_HINT}".strip()) from None
