"""ORM tables. The schema changes only through a new Alembic revision in ``migrations/versions`` (a test
checks that these classes and the migrated database agree on both SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Optional

from sqlalchemy import (JSON, BigInteger, Boolean, DateTime, Float, ForeignKey, Integer, MetaData, String,
                        Text, UniqueConstraint)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# explicit constraint names: Alembic needs them to alter constraints later, identically on every backend
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)  # stored naive, always UTC


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Blob(Base):
    """Content, by sha256. ``stored``: the bytes are in the blob store (else they live only in ``files``)."""

    __tablename__ = "blobs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    tensor_sha256: Mapped[Optional[str]] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    stored: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    files: Mapped[list["File"]] = relationship(back_populates="blob", cascade="all, delete-orphan",
                                               passive_deletes=True)


class File(Base):
    """A file registered where it lives (``--in-place``), with the stat seen when it was last hashed."""

    __tablename__ = "files"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    blob_id: Mapped[int] = mapped_column(ForeignKey("blobs.id", ondelete="CASCADE"), index=True)
    path: Mapped[str] = mapped_column(Text, unique=True)
    size: Mapped[Optional[int]] = mapped_column(BigInteger)        # revision 0002
    mtime_ns: Mapped[Optional[int]] = mapped_column(BigInteger)    # revision 0002
    checked_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    blob: Mapped[Blob] = relationship(back_populates="files")


class Adapter(Base):
    """One adapter: a unique name, one blob, and everything inspection found (user overrides kept apart)."""

    __tablename__ = "adapters"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    blob_id: Mapped[int] = mapped_column(ForeignKey("blobs.id", ondelete="RESTRICT"), unique=True)
    container: Mapped[str] = mapped_column(String(16))
    format: Mapped[str] = mapped_column(String(32), index=True)
    network: Mapped[str] = mapped_column(String(16))
    family: Mapped[str] = mapped_column(String(16), index=True)
    family_evidence: Mapped[str] = mapped_column(Text, default="")
    family_user: Mapped[Optional[str]] = mapped_column(String(16), index=True)  # revision 0002
    # a service's base-model label beside our family ("Pony", "Illustrious"), and who said it (revision 0005)
    label: Mapped[Optional[str]] = mapped_column(String(64), index=True)
    label_source: Mapped[Optional[str]] = mapped_column(String(64))
    # lora | embedding (textual inversion), and an embedding's vector count and widths (revision 0006)
    kind: Mapped[str] = mapped_column(String(16), default="lora", server_default="lora", index=True)
    vectors: Mapped[Optional[int]] = mapped_column(Integer)
    widths: Mapped[Optional[list[int]]] = mapped_column(JSON)
    # the weight the user prefers in `<lora:name:w>` and sidecars; set only by the user (revision 0007)
    preferred_weight: Mapped[Optional[float]] = mapped_column(Float)
    # the entry this one is a newer version of (`lora update`); no foreign key, see revision 0005
    previous_id: Mapped[Optional[int]] = mapped_column(Integer)
    components: Mapped[list[str]] = mapped_column(JSON, default=list)
    rank: Mapped[Optional[int]] = mapped_column(Integer, index=True)
    ranks: Mapped[list[int]] = mapped_column(JSON, default=list)
    alpha: Mapped[Optional[float]] = mapped_column(Float)
    dtype: Mapped[Optional[str]] = mapped_column(String(16))
    n_tensors: Mapped[int] = mapped_column(Integer, default=0)
    n_modules: Mapped[int] = mapped_column(Integer, default=0)
    tokens: Mapped[list[str]] = mapped_column(JSON, default=list)
    license: Mapped[Optional[str]] = mapped_column(Text)
    license_source: Mapped[Optional[str]] = mapped_column(Text)
    warnings: Mapped[list[str]] = mapped_column(JSON, default=list)
    added_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)

    blob: Mapped[Blob] = relationship()
    meta: Mapped[Optional["AdapterMetadata"]] = relationship(cascade="all, delete-orphan", passive_deletes=True)
    sources: Mapped[list["Source"]] = relationship(cascade="all, delete-orphan", passive_deletes=True)
    tags: Mapped[list["Tag"]] = relationship(cascade="all, delete-orphan", passive_deletes=True)
    trigger_words: Mapped[list["TriggerWord"]] = relationship(cascade="all, delete-orphan", passive_deletes=True)
    base_models: Mapped[list["BaseModelRef"]] = relationship(cascade="all, delete-orphan", passive_deletes=True)


class AdapterMetadata(Base):
    """The file's header metadata, kept out of ``adapters``: it can be tens of KB (ss_tag_frequency), and
    in its own table `lora list` never reads it."""

    __tablename__ = "adapter_metadata"
    adapter_id: Mapped[int] = mapped_column(ForeignKey("adapters.id", ondelete="CASCADE"), primary_key=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Source(Base):
    """Provenance: a local path, a URL, or a Hub repo + commit + file."""

    __tablename__ = "sources"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    adapter_id: Mapped[int] = mapped_column(ForeignKey("adapters.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    path: Mapped[Optional[str]] = mapped_column(Text)
    url: Mapped[Optional[str]] = mapped_column(Text)
    repo: Mapped[Optional[str]] = mapped_column(Text)
    revision: Mapped[Optional[str]] = mapped_column(String(64))
    filename: Mapped[Optional[str]] = mapped_column(Text)
    original_sha256: Mapped[Optional[str]] = mapped_column(String(64))
    # a pickle registered in place: its stat when it was last read (revision 0003)
    size: Mapped[Optional[int]] = mapped_column(BigInteger)
    mtime_ns: Mapped[Optional[int]] = mapped_column(BigInteger)
    etag: Mapped[Optional[str]] = mapped_column(Text)   # a URL's ETag when it was fetched (revision 0004)
    added_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Tag(Base):
    __tablename__ = "tags"
    __table_args__ = (UniqueConstraint("adapter_id", "tag", name="uq_tags_adapter_tag"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    adapter_id: Mapped[int] = mapped_column(ForeignKey("adapters.id", ondelete="CASCADE"), index=True)
    tag: Mapped[str] = mapped_column(String(64), index=True)
    source: Mapped[str] = mapped_column(String(64))   # user | card | metadata:<key> | ...


class TriggerWord(Base):
    __tablename__ = "trigger_words"
    __table_args__ = (UniqueConstraint("adapter_id", "word", "source", name="uq_trigger_words_adapter_word"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    adapter_id: Mapped[int] = mapped_column(ForeignKey("adapters.id", ondelete="CASCADE"), index=True)
    word: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(64))   # "user" rows win over detected ones
    position: Mapped[int] = mapped_column(Integer, default=0)


class BaseModelRef(Base):
    __tablename__ = "base_models"
    __table_args__ = (UniqueConstraint("adapter_id", "model_id", "source", name="uq_base_models_adapter_model"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    adapter_id: Mapped[int] = mapped_column(ForeignKey("adapters.id", ondelete="CASCADE"), index=True)
    model_id: Mapped[str] = mapped_column(String(256), index=True)
    source: Mapped[str] = mapped_column(String(64))   # "user" rows win over detected ones
    position: Mapped[int] = mapped_column(Integer, default=0)


class RemoteFacts(Base):
    """What a service (``civitai``) says about an entry: its ids and the rest of its answer (revision 0005)."""

    __tablename__ = "remote_facts"
    __table_args__ = (UniqueConstraint("adapter_id", "service", name="uq_remote_facts_adapter_service"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    adapter_id: Mapped[int] = mapped_column(ForeignKey("adapters.id", ondelete="CASCADE"), index=True)
    service: Mapped[str] = mapped_column(String(16))
    model_id: Mapped[Optional[str]] = mapped_column(String(64), index=True)
    version_id: Mapped[Optional[str]] = mapped_column(String(64))
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    fetched_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Preview(Base):
    """A preview image of an entry, stored by sha256 under ``<home>/previews`` (revision 0005)."""

    __tablename__ = "previews"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    adapter_id: Mapped[int] = mapped_column(ForeignKey("adapters.id", ondelete="CASCADE"), index=True)
    sha256: Mapped[str] = mapped_column(String(64))
    suffix: Mapped[str] = mapped_column(String(8))
    url: Mapped[Optional[str]] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(64))
    position: Mapped[int] = mapped_column(Integer, default=0)


class Lookup(Base):
    """A service's answer to one lookup key (``autov3:<hash>``...), kept for offline use; ``answer`` NULL
    is "not found" (revision 0005)."""

    __tablename__ = "lookups"
    __table_args__ = (UniqueConstraint("service", "key", name="uq_lookups_service_key"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    service: Mapped[str] = mapped_column(String(16))
    key: Mapped[str] = mapped_column(String(128))
    answer: Mapped[Optional[Any]] = mapped_column(JSON)
    fetched_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
