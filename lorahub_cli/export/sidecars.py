"""The small files the UIs keep beside a model: written for them, and read back when their folders are added.

Written: ``civitai_info`` (``<stem>.civitai.info``, where Civitai's answer is known) and (``a1111_json``) A1111/Forge's ``<stem>.json`` user metadata (``ui_edit_user_metadata.py``): "description",
"sd version" (SD1 | SD2 | SDXL | SD3 | Unknown), "activation text" (the trigger words, comma-separated; A1111
adds it to the prompt with the LoRA), "preferred weight" (`lora set --weight`; 0 = unset) and "notes". InvokeAI imports the same
file on install and SwarmUI reads it too. Values come from the library's effective facts, so what the user set
with `lora set` reaches the UIs here, never by editing the adapter file (that would change the sha256 and
AutoV2 every other tool links by).

Read (``read_sidecar_facts``), each value with its source ``sidecar:<file name>``, as plain (name, value,
source) triples that the caller hands to ingest as ``Fact``s (ingest ranks sidecars below the file's own
metadata and above cards and APIs; export never imports ingest, which sits above convert, which uses
``export.conventions``):
- ``<stem>.json`` (A1111/Forge): "activation text" -> trigger words;
- ``<stem>.civitai.info`` (Civitai Helper: a Civitai model-version answer): "trainedWords" -> trigger words;
- ``<stem>.cm-info.json`` (StabilityMatrix ``ConnectedModelInfo``): "TrainedWords", "Tags";
- ``<stem>.metadata.json`` (ComfyUI-Lora-Manager): "civitai.trainedWords", "tags".
A sidecar that is not valid JSON, not an object, larger than 1 MB or not a regular file is skipped with a
warning; it never stops an add.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Optional

from lorahub_cli.errors import LoraError
from lorahub_cli.inspect.regular import is_regular, open_regular

SD_VERSIONS = {"sd1": "SD1", "sd2": "SD2", "sdxl": "SDXL", "sd3": "SD3"}
SIDECAR_SUFFIXES = (".json", ".civitai.info", ".cm-info.json", ".metadata.json")
_MAX_BYTES = 1_000_000
_MAX_WORDS = 64


def a1111_json(*, name: str, sha256: str, family: str, trigger_words: Iterable[str],
               base_model: Optional[str] = None, preferred_weight: Optional[float] = None) -> bytes:
    """The ``<stem>.json`` A1111/Forge read for a LoRA (sorted keys, so the same facts give the same bytes)."""
    notes = f"lorahub: {name}, sha256 {sha256}" + (f", base {base_model}" if base_model else "")
    data = {"description": base_model or "", "sd version": SD_VERSIONS.get(family, "Unknown"),
            "activation text": ", ".join(trigger_words), "preferred weight": preferred_weight or 0,
            "notes": notes}
    # no indent: json's C encoder works only without it (5x faster over a 5,000-entry sync)
    return (json.dumps(data, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")


def civitai_info(civitai: dict, *, trigger_words: Iterable[str]) -> bytes:
    """``<stem>.civitai.info`` (Civitai Helper's file: a Civitai model-version answer) from what the library
    keeps of Civitai's answer; only fields Civitai gave are written, under Civitai's own names, and
    "trainedWords" are the entry's effective trigger words (a `lora set --trigger` reaches the UIs here)."""
    model = {k: civitai[src] for k, src in (("name", "model_name"), ("type", "type"), ("nsfw", "nsfw"),
                                            ("tags", "tags")) if civitai.get(src) not in (None, "", [])}
    version = {k: civitai[src] for k, src in (("id", "version_id"), ("modelId", "model_id"),
                                              ("name", "version_name"), ("baseModel", "base_model"),
                                              ("description", "version_description"), ("air", "air"),
                                              ("publishedAt", "published_at"))
               if civitai.get(src) not in (None, "", [])}
    data = {**version, "trainedWords": list(trigger_words), **({"model": model} if model else {})}
    return (json.dumps(data, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")


def sidecar_files(path: Path) -> list[Path]:
    """The UI sidecars that exist beside the adapter file ``path``."""
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    return [p for p in (path.parent / f"{stem}{s}" for s in SIDECAR_SUFFIXES) if is_regular(p)]


def read_sidecar_facts(path: Path) -> tuple[list[tuple[str, str, str]], list[str]]:
    """(facts as (name, value, source), warnings) from the UI sidecars beside ``path``."""
    facts: list[tuple[str, str, str]] = []
    warnings: list[str] = []
    for sidecar in sidecar_files(path):
        source = f"sidecar:{sidecar.name}"
        try:
            with open_regular(sidecar) as f:
                raw = f.read(_MAX_BYTES + 1)
            if len(raw) > _MAX_BYTES:
                raise ValueError("larger than 1 MB")
            data = json.loads(raw.decode("utf-8"))
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
        except (OSError, LoraError, ValueError, RecursionError) as exc:
            warnings.append(f"{source}: ignored ({getattr(exc, 'message', None) or exc})")
            continue
        words, tags = _read(sidecar.name, data)
        facts += [("trigger_word", w, source) for w in words[:_MAX_WORDS]]
        facts += [("tag", t, source) for t in tags[:_MAX_WORDS]]
    return facts, warnings


def _read(name: str, data: dict) -> tuple[list[str], list[str]]:
    """(trigger words, tags) from one sidecar, by its kind (told by its name's suffix)."""
    if name.endswith(".civitai.info"):
        return _strings(data.get("trainedWords")), []
    if name.endswith(".cm-info.json"):
        return _strings(data.get("TrainedWords")), _strings(data.get("Tags"))
    if name.endswith(".metadata.json"):
        civitai = data.get("civitai") if isinstance(data.get("civitai"), dict) else {}
        return _strings(civitai.get("trainedWords")), _strings(data.get("tags"))
    text = data.get("activation text")
    return (_strings(text.split(",")) if isinstance(text, str) else []), []


def _strings(values: Any) -> list[str]:
    """The non-empty strings of a list (each stripped, once, in order); anything else gives none."""
    if not isinstance(values, list):
        return []
    out = [v.strip() for v in values if isinstance(v, str) and v.strip() and len(v) <= 256]
    return list(dict.fromkeys(out))
