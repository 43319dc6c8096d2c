"""A fused pipeline on disk: ``save_pretrained`` (safetensors) into a temp folder beside the target, plus a
``lorahub_fuse.json`` naming the base and each adapter's sha256 and weight, then one rename: the folder is
either complete or absent. Plain ``DiffusionPipeline.from_pretrained`` loads it (no PEFT, no lorahub).

``lorahub_fuse.json`` is also the mark of a folder we wrote: ``--force`` replaces only a folder that carries
it, and never one that holds or lies inside an input, the base, the library or the Hugging Face cache
(``lorahub_cli.targets``); the old folder is deleted only once the new one is in place
(``registry.publish.publish_folder``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Optional

from lorahub_cli.targets import FUSED_MARKER, check_fused_output, refuse_unless_fused
from registry.publish import publish_folder, temp_folder

PROVENANCE_FILE = FUSED_MARKER


def save_fused(pipe: Any, output: Path, *, force: bool, provenance: dict[str, Any],
               inputs: Iterable[Path] = (), base: Optional[Path] = None) -> Path:
    """Write ``pipe`` as the folder ``output``; ``inputs`` and ``base`` (the folders and files it was made from)
    must neither hold nor lie inside it."""
    inputs = list(inputs)
    output = check_fused_output(output, force=force, inputs=inputs, base=base)
    with temp_folder(output.parent, name=output.name) as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
        (tmp / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        # checked again at the rename: the folder may have changed while the model was being saved
        return publish_folder(tmp, output, replace=force, replaceable=refuse_unless_fused)
