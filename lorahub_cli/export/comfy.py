"""ComfyUI's ``extra_model_paths.yaml``: one stanza that makes ComfyUI read an exported tree in place.

ComfyUI reads every top-level key of that file as a set of folders: ``base_path`` joined with each model
kind's folder (``loras: ...``, and ``embeddings: ...`` where a sync placed embeddings). lora writes its
stanza between two marker comments and replaces only what lies between them, so the user's own stanzas and
comments stay byte for byte. The new file is published only when it parses, holds the stanza as meant, and
every other stanza parses exactly as before; a file that does not parse today is left alone (``damaged-file``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from lorahub_cli.errors import DamagedFile, NotAFile
from lorahub_cli.inspect.regular import is_regular

CONFIG = "extra_model_paths.yaml"
_MAX_BYTES = 1_000_000


def _markers(key: str) -> tuple[str, str]:
    return (f"# >>> {key} (written by `lora sync`; lines up to the end marker are replaced)",
            f"# <<< {key}")


def stanza(key: str, folder: Path, embeddings: Optional[Path] = None) -> str:
    begin, end = _markers(key)
    folder = Path(folder)
    # JSON strings are YAML double-quoted scalars: any path (spaces, colons, '#') stays one value
    extra = f"    embeddings: {json.dumps(_under(embeddings, folder.parent))}\n" if embeddings is not None else ""
    return (f"{begin}\n{key}:\n    base_path: {json.dumps(str(folder.parent))}\n"
            f"    loras: {json.dumps(folder.name)}\n{extra}{end}\n")


def _under(path: Path, base: Path) -> str:
    """``path`` as ComfyUI joins it to ``base_path``: relative when it lies under it, else absolute."""
    try:
        return Path(path).relative_to(base).as_posix()
    except ValueError:
        return str(path)


def write_stanza(comfy_root: Path, folder: Path, *, key: str = "lorahub", dry_run: bool = False,
                 embeddings: Optional[Path] = None) -> Path:
    """Write or update the stanza ``key`` in ``comfy_root/extra_model_paths.yaml`` so that ComfyUI lists the
    LoRAs in ``folder`` (and the embeddings in ``embeddings``, when a sync placed some); returns the file's
    path."""
    import yaml

    from registry.publish import publish_file

    path = Path(comfy_root).expanduser() / CONFIG
    old = ""
    if path.exists() or path.is_symlink():
        if not is_regular(path):
            raise NotAFile(f"{path} is not a regular file; it is left alone")
        old = path.read_bytes()[:_MAX_BYTES + 1].decode("utf-8", errors="replace")
        if len(old) > _MAX_BYTES:
            raise DamagedFile(f"{path} is larger than 1 MB; it is left alone")
    before = _parse(yaml, old, path)
    begin, end = _markers(key)
    block = stanza(key, folder, embeddings)
    start = old.find(begin + "\n")
    if start >= 0 and (stop := old.find(end + "\n", start)) >= 0:
        new = old[:start] + block + old[stop + len(end) + 1:]
    else:
        if key in before:
            raise DamagedFile(f"{path} has a stanza {key!r} that lora did not write; it is left alone",
                              hint="Rename that stanza, or pass another target name.")
        new = old + ("" if not old or old.endswith("\n") else "\n") + ("\n" if old else "") + block
    after = _parse(yaml, new, path)
    mine = after.get(key) or {}
    meant = (str(Path(folder).parent), Path(folder).name,
             _under(embeddings, Path(folder).parent) if embeddings is not None else None)
    if (mine.get("base_path"), mine.get("loras"), mine.get("embeddings")) != meant or \
            {k: v for k, v in after.items() if k != key} != {k: v for k, v in before.items() if k != key}:
        raise DamagedFile(f"updating {path} would change more than lora's stanza; it is left alone")  # pragma: no cover
    if not dry_run and new != old:
        publish_file(path, new)
    return path


def _parse(yaml, text: str, path: Path) -> dict:
    try:
        data = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        raise DamagedFile(f"{path} is not valid YAML ({str(exc).splitlines()[0]}); it is left alone") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise DamagedFile(f"{path} is not a mapping of stanzas; it is left alone")
    return data
