"""A merged adapter -> a verified safetensors file in the diffusers layout (through convert's writer).

The tensors and the ``lora_adapter_metadata`` LoraConfigs (per-module ranks and alphas as patterns) come from
``convert.write.diffusers_layout``; the file is written to a temp file, read back bit for bit and renamed into
place by ``convert.safe_write.write_verified``. Before the rename the file is also read back *as an adapter*
(same key normalisation as any input, ``convert.api.same_adapter``) and each module's factors and scale are
compared with the merged ones, so a file that another loader would read differently is never kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

from lorahub_cli.canonical import CanonicalAdapter

if TYPE_CHECKING:
    from lorahub_cli.bases import Base


def save_merged(adapter: CanonicalAdapter, dst: Path, *, title: str, force: bool = False,
                base: Optional["Base"] = None) -> list[str]:
    """Write ``adapter`` to ``dst``; returns warnings (e.g. embedded tokens a LoRA layout cannot hold).
    ``base``: the base of no known family whose own layers the adapter is named on (``merge --base``)."""
    from lorahub_cli.convert.api import same_adapter
    from lorahub_cli.convert.keymap import canonical_tables
    from lorahub_cli.convert.metadata import MODELSPEC_VERSION
    from lorahub_cli.convert.safe_write import write_verified
    from lorahub_cli.convert.write import diffusers_layout, tokens_left_out
    from lorahub_cli.merge.onto_base import UNKNOWN, read_on_own_tables
    from lorahub_cli.compat.on_base import base_tables

    on_base = base is not None and adapter.family == UNKNOWN
    tensors, entries = diffusers_layout(adapter, base_tables(base) if on_base else canonical_tables(adapter.family))
    metadata = {**adapter.metadata, **entries, "format": "pt",
                "modelspec.sai_model_spec": MODELSPEC_VERSION, "modelspec.title": title,
                "modelspec.implementation": "diffusers"}

    def check(tmp: Path, reloaded: dict) -> None:
        if on_base:   # no family architecture names these layers; the base's own tables do
            same_adapter(tmp, reloaded, adapter, what="the merged file",
                         read=lambda source: read_on_own_tables(source, base, "the merged file"))
        else:
            same_adapter(tmp, reloaded, adapter, what="the merged file", same_family=True)

    write_verified(Path(dst), tensors, metadata, force=force, check=check, data_hash=True)
    note = tokens_left_out(adapter)
    return [note] if note else []
