"""The plain dataclasses the registry API returns (never live ORM rows). ``to_dict`` gives the JSON object;
its keys are API: add fields, never rename them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal, Optional, Sequence, get_args

# --- the registry's own vocabulary (stable: stored in the database and shown in JSON) ----------------------
FAMILIES = ("sd1", "sd2", "sdxl", "sd3", "flux", "unknown")
KINDS = ("lora", "embedding")   # an entry is a LoRA (LyCORIS included) or a textual-inversion embedding

# Where an entry's bytes came from; every kind in use, and the only ones ``Registry.add`` accepts:
#   local      a file the user named (`lora add`); ``path`` is it
#   url        a download (`lora pull URL`); ``url``, ``filename``, ``etag``
#   hub        a Hugging Face file (`lora pull owner/repo`); ``repo``, ``revision`` (commit), ``filename``
#   converted  `lora convert` of a library entry; ``path`` says which entry and target, ``original_sha256`` its bytes
#   merged     `lora merge ... -o NAME`; ``path`` is the recipe (weights, names, short hashes)
#   trained    `lora train`; ``path`` is the run folder
#   rebuilt    `lora doctor --rebuild` recorded stored bytes whose records were lost; ``path`` is the blob
#   civitai    a Civitai download (`lora pull civitai:M@V`); ``repo`` the model id, ``revision`` the version id,
#              ``url`` the download URL, ``filename`` the file's name on Civitai
SourceKind = Literal["local", "url", "hub", "converted", "merged", "trained", "rebuilt", "civitai"]
SOURCE_KINDS: tuple[str, ...] = get_args(SourceKind)


@dataclass
class SourceRecord:
    """Where a file came from; ``kind`` is one of ``SOURCE_KINDS`` (see ``SourceKind``)."""

    kind: SourceKind = "local"
    path: Optional[str] = None
    url: Optional[str] = None
    repo: Optional[str] = None
    revision: Optional[str] = None          # the commit the file was fetched at
    filename: Optional[str] = None          # the file inside the repo
    original_sha256: Optional[str] = None   # the fetched bytes' hash when they were converted before storing
    added_at: Optional[datetime] = None
    # a pickle registered in place (`add --in-place`): its stat when it was read, so a rescan can skip it
    size: Optional[int] = None
    mtime_ns: Optional[int] = None
    etag: Optional[str] = None              # a URL's ETag when it was fetched: a re-pull asks whether it changed

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class AdapterRecord:
    """What the library records about one file's bytes: plain values, built by the ingest layer
    (``lorahub_cli.ingest``) from its inspection report and its merged facts. The registry never sees the
    inspector's own objects.

    Detected facts carry their source ("metadata:<key>", "card:README.md", "training", ...): the user's own
    choices are not here (they are passed to ``Registry.add`` and stored as overrides, which win)."""

    sha256: Optional[str]                 # None: hashed by the registry while it stores the bytes
    size: int
    container: str                        # "safetensors" (a "pickle" is refused: the store holds safetensors)
    format: str
    network: str
    family: str                           # one of FAMILIES
    family_evidence: str = ""
    components: list[str] = field(default_factory=list)
    rank: Optional[int] = None
    ranks: list[int] = field(default_factory=list)
    alpha: Optional[float] = None
    dtype: Optional[str] = None
    n_tensors: int = 0
    n_modules: int = 0
    tokens: list[str] = field(default_factory=list)
    tensor_sha256: Optional[str] = None
    base_model: Optional[str] = None
    base_model_source: Optional[str] = None
    trigger_words: list[str] = field(default_factory=list)
    trigger_word_sources: dict[str, str] = field(default_factory=dict)
    license: Optional[str] = None
    license_source: Optional[str] = None
    tags: list[str] = field(default_factory=list)            # detected (a card's): stored with source "card"
    metadata: dict[str, str] = field(default_factory=dict)   # the file's header metadata
    warnings: list[str] = field(default_factory=list)
    label: Optional[str] = None           # a service's base-model label ("Pony"), beside the family
    label_source: Optional[str] = None
    # what services say beside the facts: {"civitai": {"model_id", "version_id", "data"}}
    remote: dict[str, dict] = field(default_factory=dict)
    previews: list["PreviewRecord"] = field(default_factory=list)
    previous: Optional[str] = None        # the name of the entry this one is a newer version of
    kind: str = "lora"                    # one of KINDS
    vectors: Optional[int] = None         # embedding: how many token vectors
    widths: list[int] = field(default_factory=list)   # embedding: their widths (768, 1024, 768+1280)


@dataclass
class PreviewRecord:
    """A preview image already written to the previews folder (``preview_relpath``), by content."""

    sha256: str
    suffix: str                           # ".png", ".jpeg", ".webp", ".mp4"
    url: Optional[str] = None
    source: str = "user"

    def relpath(self) -> str:
        return preview_relpath(self.sha256, self.suffix)


def preview_relpath(sha256: str, suffix: str) -> str:
    """Where a preview lives under the library's home (content-addressed: shared by entries, never rewritten)."""
    return f"previews/{sha256[:2]}/{sha256}{suffix}"


@dataclass
class FileLocation:
    """A file registered in place (``lora add --in-place``), with the stat seen when it was last hashed."""

    path: str
    size: Optional[int]
    mtime_ns: Optional[int]

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class KnownFile(FileLocation):
    """An in-place file as remembered: its stat, and the adapter its bytes belong to."""

    sha256: Optional[str] = None
    name: Optional[str] = None


@dataclass
class AdapterSummary:
    """One row of ``lora list``. Values are the effective ones: a user override wins over detection."""

    name: str
    sha256: str
    size: int
    format: str
    network: str
    family: str
    rank: Optional[int]
    alpha: Optional[float]
    dtype: Optional[str]
    base_model: Optional[str]
    tags: list[str]
    trigger_words: list[str]
    added_at: datetime
    in_place: bool
    label: Optional[str] = None           # Civitai's base-model label, beside the family (revision 0005)
    kind: str = "lora"                    # lora | embedding (revision 0006)
    preferred_weight: Optional[float] = None   # the user's weight for `<lora:name:w>` (revision 0007)

    @property
    def autov2(self) -> str:
        """Civitai's AutoV2 hash: the first 10 hex digits of the sha256."""
        return self.sha256[:10]

    def to_dict(self) -> dict:
        # shallow on purpose: `lora list --json` converts thousands of these, and asdict deep-copies
        out = {name: getattr(self, name) for name in _SUMMARY_KEYS}
        out["added_at"] = self.added_at.isoformat() if self.added_at else None
        return out


def _json_keys(cls: type) -> tuple[str, ...]:
    """A record's fields in order, with "autov2" right after "sha256" (where people look for hashes)."""
    return tuple(k for name in cls.__dataclass_fields__ for k in ((name, "autov2") if name == "sha256" else (name,)))


_SUMMARY_KEYS = _json_keys(AdapterSummary)


@dataclass
class AdapterEntry(AdapterSummary):
    """Everything known about one adapter (``lora show``)."""

    tensor_sha256: Optional[str] = None
    container: str = "safetensors"
    family_evidence: str = ""
    components: list[str] = field(default_factory=list)
    ranks: list[int] = field(default_factory=list)
    n_tensors: int = 0
    n_modules: int = 0
    tokens: list[str] = field(default_factory=list)
    base_model_source: Optional[str] = None
    base_models: list[dict] = field(default_factory=list)       # [{"id", "source"}], effective first
    trigger_word_sources: dict[str, str] = field(default_factory=dict)
    tag_sources: dict[str, str] = field(default_factory=dict)
    license: Optional[str] = None
    license_source: Optional[str] = None
    metadata: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    updated_at: Optional[datetime] = None
    path: Optional[str] = None        # where the bytes are read from: the blob, or the first in-place file
    files: list[FileLocation] = field(default_factory=list)
    sources: list[SourceRecord] = field(default_factory=list)
    overrides: dict[str, Any] = field(default_factory=dict)     # what the user set (wins in display)
    detected: dict[str, Any] = field(default_factory=dict)      # what inspection found for overridden fields
    label_source: Optional[str] = None
    civitai: Optional[dict] = None        # what Civitai said: model_id, version_id, names, nsfw, description...
    previews: list[dict] = field(default_factory=list)          # [{"path", "sha256", "url", "source"}]
    previous_version: Optional[str] = None                     # the entry this one is a newer version of
    vectors: Optional[int] = None                              # embedding: how many token vectors
    widths: list[int] = field(default_factory=list)            # embedding: their widths

    def to_dict(self) -> dict:
        out = asdict(self)
        return {k: self.autov2 if k == "autov2" else out[k] for k in _ENTRY_KEYS}


_ENTRY_KEYS = _json_keys(AdapterEntry)


@dataclass
class AddItem:
    """One file of a batch for ``Registry.add_many``: ``Registry.add``'s arguments (never in place)."""

    path: str
    record: "AdapterRecord"
    name: Optional[str] = None
    tags: Sequence[str] = ()
    trigger_words: Sequence[str] = ()
    source: Optional["SourceRecord"] = None
    link: bool = False
    with_entry: bool = True
    name_hint: Optional[str] = None


@dataclass
class AddResult:
    """What became of one file. ``status``: added | duplicate | unchanged | updated.
    ``hashed`` is False when an unchanged in-place file was skipped without being read. ``restored``
    (JSON key present only when true): the library's stored copy was missing or damaged and was rewritten
    from this file."""

    status: str
    path: str
    name: Optional[str]
    sha256: Optional[str]
    entry: Optional[AdapterEntry] = None
    hashed: bool = True
    duplicate_of: Optional[str] = None
    restored: bool = False        # a duplicate whose missing or damaged stored copy was rewritten from it
    warnings: list[str] = field(default_factory=list)   # what inspection (and conversion) said of the file

    def to_dict(self) -> dict:
        out = {"path": self.path, "status": self.status, "name": self.name, "sha256": self.sha256,
               "hashed": self.hashed, "warnings": list(self.warnings)}
        if self.duplicate_of:
            out["duplicate_of"] = self.duplicate_of
        if self.restored:
            out["restored"] = True
        return out


@dataclass
class Removed:
    name: str
    sha256: str
    blob_deleted: bool            # the stored bytes went too (nothing else referred to them)
    in_place_paths: list[str]     # registered files left untouched on disk

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Finding:
    """One problem ``doctor`` found, and what ``--fix`` did about it."""

    problem: str                  # missing-blob | hash-mismatch | missing-file | changed-file | orphan-blob |
                                  # stale-temp | orphan-record | no-file | partial-download |
                                  # quarantined (--empty-quarantine deleted it)
    detail: str
    name: Optional[str] = None
    sha256: Optional[str] = None
    path: Optional[str] = None
    fixed: bool = False
    action: Optional[str] = None  # what --fix did, or why it left it

    def to_dict(self) -> dict:
        return asdict(self)
