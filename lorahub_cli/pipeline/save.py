"""A fused pipeline on disk: ``save_pretrained`` (safetensors) into a temp folder beside the target, plus a
``lorahub_fuse.json`` naming the base and each adapter's sha256 and weight, then one rename: the folder is
either complete or absent. Plain ``DiffusionPipeline.from_pretrained`` loads it (no PEFT, no lorahub)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from lorahub_cli.convert.safe_write import shareable_mode
from lorahub_cli.errors import AlreadyExists

PROVENANCE_FILE = "lorahub_fuse.json"


def save_fused(pipe: Any, output: Path, *, force: bool, provenance: dict[str, Any]) -> Path:
    output = Path(output).expanduser().resolve()
    if output.exists() and not force:
        raise AlreadyExists(f"{output} exists already", hint="Pass --force to replace it, or choose another -o.")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.tmp-", dir=output.parent))
    try:
        os.chmod(tmp, shareable_mode(0o777))   # the folder keeps this mode when it is renamed into place
        pipe.save_pretrained(tmp, safe_serialization=True)
        (tmp / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        old = None
        if output.exists():   # --force: move the old one aside first, so a failure never leaves neither
            old = Path(tempfile.mkdtemp(prefix=f".{output.name}.old-", dir=output.parent))
            os.replace(output, old / "previous")
        try:
            os.replace(tmp, output)
        except BaseException:
            if old is not None:
                os.replace(old / "previous", output)
            raise
        finally:
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return output
