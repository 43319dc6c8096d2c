"""Where adapters come from: Hub repositories, URLs and local paths, fetched to verified, inspected bytes.

Flow (each step callable from Python; the CLI is one client):
``parse_source`` -> ``resolve_hub`` (one API call, or the local cache offline) -> ``download_hub`` /
``fetch_url`` / ``fetch_path`` -> a ``FetchedFile`` (path, sha256, provenance, card facts, inspection report)
that the registry records. Nothing here writes to the library or prints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from lorahub_cli.errors import UsageError
from lorahub_cli.sources.card import card_facts, family_of_base_model
from lorahub_cli.sources.choose import choose_weight_file
from lorahub_cli.sources.hf import HubSettings, download_hub, remove_cached_file, resolve_hub
from lorahub_cli.sources.model import (HUB, PATH, URL, CardFacts, FetchedFile, HubPlan, ProgressFn, Provenance,
                                       Source)
from lorahub_cli.sources.parse import parse_source
from lorahub_cli.sources.url import fetch_url
from lorahub_cli.sources.verify import verify_and_inspect

__all__ = [
    "HUB", "PATH", "URL", "CardFacts", "FetchedFile", "HubPlan", "HubSettings", "ProgressFn", "Provenance",
    "Source", "card_facts", "choose_weight_file", "download_hub", "family_of_base_model", "fetch", "fetch_path",
    "fetch_url", "parse_source", "remove_cached_file", "resolve_hub", "verify_and_inspect",
]


def fetch_path(path: Path) -> FetchedFile:
    """Inspect a local adapter file in place (it stays the user's: ``owned`` is False)."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{path} is a folder; pull takes one file (use `lora add` for folders)")
    report, container = verify_and_inspect(path, what=str(path))
    provenance = Provenance(kind=PATH, local_path=str(path.absolute()), filename=path.name)
    return FetchedFile(path=path, sha256=report.sha256, size=path.stat().st_size, container=container,
                       provenance=provenance, report=report, owned=False, warnings=list(report.warnings))


def fetch(source: Source, *, staging_dir: Path, progress: Optional[ProgressFn] = None,
          settings: Optional[HubSettings] = None) -> FetchedFile:
    """Fetch any source to verified, inspected bytes (Hub: through the HF cache; URL: into ``staging_dir``)."""
    if source.kind == HUB:
        settings = settings or HubSettings.current()
        return download_hub(resolve_hub(source, settings), settings=settings, progress=progress)
    if source.kind == URL:
        return fetch_url(source.url or "", staging_dir, progress=progress)
    return fetch_path(source.local_path or Path())
