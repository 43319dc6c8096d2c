"""Plain data passed between the source stages (parse -> resolve -> download -> verify).

No huggingface_hub, torch or network here: these are what the registry and the CLI receive.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Optional
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from lorahub_cli.inspect.model import AdapterReport

# progress(bytes_done, bytes_total_or_None): the CLI draws the bar, the engine never prints
ProgressFn = Callable[[int, Optional[int]], None]

HUB, URL, PATH, CIVITAI = "hub", "url", "path", "civitai"


@dataclass(frozen=True)
class Source:
    """Where an adapter comes from, as the user named it (see ``parse_source``)."""

    kind: str                               # "hub" | "url" | "path" | "civitai"
    repo_id: Optional[str] = None           # hub
    revision: Optional[str] = None          # hub: branch, tag or commit sha as asked (None: main)
    path_in_repo: Optional[str] = None      # hub: the file, when named
    url: Optional[str] = None               # url
    local_path: Optional[Path] = None       # path
    civitai_model: Optional[int] = None     # civitai: the model id, when named
    civitai_version: Optional[int] = None   # civitai: the version id (None: the model's newest)

    def __str__(self) -> str:
        if self.kind == CIVITAI:
            if self.civitai_model is None:
                return f"civitai version {self.civitai_version}"
            version = f"@{self.civitai_version}" if self.civitai_version else ""
            return f"civitai:{self.civitai_model}{version}"
        if self.kind == HUB:
            rev = f"@{self.revision}" if self.revision else ""
            path = f"/{self.path_in_repo}" if self.path_in_repo else ""
            return f"hf://{self.repo_id}{rev}{path}"
        return self.url if self.kind == URL else str(self.local_path)


@dataclass
class Provenance:
    """Where the bytes came from, precisely enough to fetch them again."""

    kind: str                               # "hub" | "url" | "path"
    repo_id: Optional[str] = None
    revision: Optional[str] = None          # as asked ("main", a tag, a sha); None for URLs/paths
    commit: Optional[str] = None            # the resolved 40-hex commit
    path_in_repo: Optional[str] = None
    url: Optional[str] = None               # the URL the bytes were downloaded from
    etag: Optional[str] = None
    local_path: Optional[str] = None
    expected_sha256: Optional[str] = None   # the Hub's LFS sha256 the bytes were checked against
    filename: Optional[str] = None          # the file's own name (for naming the library entry)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class CardFacts:
    """What a model card says, each fact with the card it was read from."""

    source: str                                       # "card:README.md@owner/repo"
    base_model: list[str] = field(default_factory=list)
    base_model_family: Optional[str] = None           # the family the card's base_model implies, if known
    trigger_words: list[str] = field(default_factory=list)
    trigger_word_sources: dict[str, str] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    license: Optional[str] = None
    disagrees_with_shapes: bool = False               # the card's family differs from the tensors' (kept, flagged)
    images: list[str] = field(default_factory=list)   # repo files its widget shows as sample outputs (previews)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class HubPlan:
    """A Hub source resolved to one commit and one file, before any download."""

    repo_id: str
    revision: Optional[str]                 # as asked
    commit: str
    path_in_repo: str
    size: Optional[int]
    sha256: Optional[str]                   # LFS sha256 (None for a non-LFS file)
    blob_id: Optional[str]                  # git blob id (checked when there is no sha256)
    card: Optional[CardFacts]
    files: list[str]
    offline: bool = False                   # resolved from the local cache without asking the Hub

    def provenance(self) -> Provenance:
        return Provenance(kind=HUB, repo_id=self.repo_id, revision=self.revision, commit=self.commit,
                          path_in_repo=self.path_in_repo, expected_sha256=self.sha256,
                          filename=self.path_in_repo.rsplit("/", 1)[-1])


@dataclass
class FetchedFile:
    """Verified, inspected bytes ready for the registry; nothing has been recorded yet.

    ``owned``: the file is a staging copy the caller may move into the store (URL downloads); otherwise it
    belongs to someone else (the Hugging Face cache, the user's folder) and must be linked or copied.
    """

    path: Path
    sha256: str
    size: int
    container: str                          # "safetensors" | "pickle"
    provenance: Provenance
    report: "AdapterReport"
    card: Optional[CardFacts] = None
    owned: bool = False
    warnings: list[str] = field(default_factory=list)

    @property
    def needs_conversion(self) -> bool:
        return self.container != "safetensors"

    def to_dict(self) -> dict:
        return {"path": str(self.path), "sha256": self.sha256, "size": self.size, "container": self.container,
                "provenance": self.provenance.to_dict(), "card": self.card.to_dict() if self.card else None,
                "owned": self.owned, "warnings": list(self.warnings)}


def hosts_with_endpoint(defaults: Iterable[str], endpoint_env: str) -> set[str]:
    """A site's host names: its public ones plus the host of ``$endpoint_env`` (HF_ENDPOINT, CIVITAI_ENDPOINT),
    read per call so a test server or a mirror set after import counts too."""
    hosts = set(defaults)
    endpoint = os.environ.get(endpoint_env)
    if endpoint:
        hosts.add(urlsplit(endpoint).netloc.lower())
    return hosts
