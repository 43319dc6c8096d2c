"""The Python API (`registry.api.Registry`) on SQLite and PostgreSQL, with real files and real inspection."""

from __future__ import annotations

import os
import shutil

import pytest

from lorahub_cli.errors import AlreadyExists, AmbiguousRef, InvalidName, NeedsConversion, NotFound, UsageError
from lorahub_cli.inspect import inspect_file
from registry.records import AdapterEntry, AdapterSummary, SourceRecord
from tests.registry.helpers import write_kohya_sd1


def add(reg, path, **kw):
    """Into the library the one way there is (``ingest``: stage, merge facts, record)."""
    from lorahub_cli.ingest import ingest

    return ingest(path, reg, **kw)


def test_add_stores_the_bytes_and_everything_inspection_knows(registry, src, tmp_home):
    path = write_kohya_sd1(src / "pixel_art.safetensors", seed=1, metadata={"ss_base_model_version": "sd_v1"})
    result = add(registry, path, tags=["retro"], trigger_words=["pxart"])
    assert result.status == "added" and result.name == "pixel_art"
    e = registry.get("pixel_art")
    assert isinstance(e, AdapterEntry)
    report = inspect_file(path)
    assert (e.sha256, e.tensor_sha256, e.size) == (report.sha256, report.tensor_sha256, path.stat().st_size)
    assert (e.format, e.network, e.family, e.rank, e.alpha, e.dtype) == ("kohya", "lora", "sd1", 4, 4.0, "F32")
    assert e.components == ["unet"] and e.n_tensors == 6 and e.n_modules == 2
    assert e.metadata["ss_base_model_version"] == "sd_v1"
    assert e.tags == ["retro"] and e.trigger_words == ["pxart"] and e.overrides == {"trigger_words": ["pxart"]}
    assert not e.in_place and e.path.startswith(str(tmp_home / "blobs"))
    assert open(e.path, "rb").read() == path.read_bytes()
    assert e.sources[0].kind == "local" and e.sources[0].path == str(path.resolve())


def test_same_bytes_are_a_duplicate_not_a_second_copy(registry, src, tmp_home):
    a = write_kohya_sd1(src / "a.safetensors", seed=1)
    b = src / "copy-of-a.safetensors"
    shutil.copy(a, b)
    assert add(registry, a).status == "added"
    dup = add(registry, b, tags=["later"])
    assert dup.status == "duplicate" and dup.duplicate_of == "a"
    assert [s.name for s in registry.list()] == ["a"]
    assert len(list(registry.store.iter_blobs())) == 1
    e = registry.get("a")
    assert {s.path for s in e.sources} == {str(a.resolve()), str(b.resolve())}  # both provenances kept
    assert e.tags == ["later"]  # tags given with a duplicate go onto the adapter it duplicates


def test_default_names_are_made_unique(registry, src):
    for i, folder in enumerate(["x", "y", "z"]):
        add(registry, write_kohya_sd1(src / folder / "style.safetensors", seed=i))
    assert [s.name for s in registry.list()] == ["style", "style-2", "style-3"]


def test_an_explicit_name_that_exists_is_refused_and_stores_nothing(registry, src):
    add(registry, write_kohya_sd1(src / "a.safetensors", seed=1), name="mine")
    with pytest.raises(AlreadyExists):
        add(registry, write_kohya_sd1(src / "b.safetensors", seed=2), name="mine")
    assert len(list(registry.store.iter_blobs())) == 1 and registry.store.temp_files() == []


@pytest.mark.parametrize("bad", ["../x", "a\x1bb", "n" * 500, ""])
def test_bad_names_are_refused_before_anything_is_written(registry, src, bad):
    with pytest.raises(InvalidName):
        add(registry, write_kohya_sd1(src / "a.safetensors"), name=bad)
    assert registry.list() == [] and not registry.store.objects.exists()


def test_pickles_are_refused_until_conversion_exists(registry, src):
    path = write_kohya_sd1(src / "a.safetensors")
    from lorahub_cli.ingest import build_record, report_facts

    report = inspect_file(path)
    record = build_record(report, report_facts(report))
    record.container = "pickle"
    with pytest.raises(NeedsConversion) as err:
        registry.add(path, record)
    assert err.value.code == "needs-conversion" and err.value.exit_code == 1
    assert registry.list() == []


def test_list_filters_sort_and_search(registry, src):
    add(registry, write_kohya_sd1(src / "b-anime.safetensors", seed=1, rank=8), tags=["anime", "style"])
    add(registry, write_kohya_sd1(src / "a-photo.safetensors", seed=2, rank=16), tags=["photo"])
    add(registry, write_kohya_sd1(src / "c-ink.safetensors", seed=3, rank=4, modules=4), tags=["Style"])
    registry.set("c-ink", base_model="Org/Ink-Base", family="sdxl")
    names = lambda **kw: [s.name for s in registry.list(**kw)]  # noqa: E731
    assert all(isinstance(s, AdapterSummary) for s in registry.list())
    assert names() == ["a-photo", "b-anime", "c-ink"]
    assert names(sort="rank") == ["c-ink", "b-anime", "a-photo"]
    assert names(sort="size", reverse=True)[0] == "a-photo"  # rank 16
    assert names(sort="added") == ["b-anime", "a-photo", "c-ink"]
    assert names(tags=["style"]) == ["b-anime", "c-ink"]  # tags match case-insensitively
    assert names(tags=["style", "anime"]) == ["b-anime"]
    assert names(family="sdxl") == ["c-ink"] and names(family="sd1") == ["a-photo", "b-anime"]
    assert names(base="org/ink-base") == ["c-ink"]
    assert names(format="kohya") == ["a-photo", "b-anime", "c-ink"] and names(format="peft") == []
    assert names(search="PHO") == ["a-photo"] and names(search="ink-b") == ["c-ink"]
    assert names(search="100%_") == []  # LIKE wildcards are literal
    sha = registry.get("b-anime").sha256
    assert names(search=sha[:10]) == ["b-anime"]
    with pytest.raises(UsageError):
        registry.list(sort="colour")


def _record_only(reg, name, sha256):
    """An adapter row with a chosen sha256 (to make prefixes collide), written through the ORM."""
    from registry.models import Adapter, Blob

    with reg.db.write() as s:
        blob = Blob(sha256=sha256, size=1, stored=False)
        s.add(blob)
        s.flush()
        s.add(Adapter(name=name, blob_id=blob.id, container="safetensors", format="kohya", network="lora",
                      family="sd1"))


def test_addressing_by_name_or_sha_prefix(registry, src):
    add(registry, write_kohya_sd1(src / "real.safetensors"))
    sha = registry.get("real").sha256
    assert registry.get(sha[:8]).name == "real"
    assert registry.get(sha.upper()[:12]).name == "real"
    _record_only(registry, "first", "abcd0000a" + "0" * 55)
    _record_only(registry, "second", "abcd0000b" + "0" * 55)
    _record_only(registry, "abcd0000", "f" * 64)  # a name wins over a prefix
    assert registry.get("abcd0000a").name == "first"
    assert registry.get("abcd0000").name == "abcd0000"
    with pytest.raises(AmbiguousRef) as err:
        registry.get("ABCD0000")  # not the name "abcd0000" (names are exact), so the start of two hashes
    assert err.value.code == "ambiguous-ref" and "first" in err.value.message and "second" in err.value.message
    with pytest.raises(NotFound, match="at least 8 hex"):
        registry.get(sha[:7])  # too short to be a prefix (8 hex digits at least), and not a name
    assert registry.get(str(src / "real.safetensors")).name == "real"  # a file: found by its bytes
    with pytest.raises(NotFound):
        registry.get(str(write_kohya_sd1(src / "other.safetensors", seed=5)))
    with pytest.raises(NotFound) as err:
        registry.get("reel")
    assert "real" in err.value.hint


def test_remove_deletes_unshared_blobs_and_never_in_place_files(registry, src):
    stored = write_kohya_sd1(src / "stored.safetensors", seed=1)
    placed = write_kohya_sd1(src / "placed.safetensors", seed=2)
    add(registry, stored)
    add(registry, placed, in_place=True)
    blob = registry.get("stored").path
    removed = registry.remove(["stored", "placed"])
    assert [(r.name, r.blob_deleted) for r in removed] == [("stored", True), ("placed", False)]
    assert removed[1].in_place_paths == [str(placed.resolve())]
    assert not os.path.exists(blob) and placed.exists() and stored.exists()
    assert registry.list() == [] and registry.known_files() == {}


def test_remove_is_all_or_nothing(registry, src):
    add(registry, write_kohya_sd1(src / "keep.safetensors"))
    with pytest.raises(NotFound):
        registry.remove(["keep", "no-such"])
    assert [s.name for s in registry.list()] == ["keep"]


def test_tag_rename_and_overrides(registry, src):
    add(registry, write_kohya_sd1(src / "a.safetensors", metadata={"ss_base_model_version": "sd_v1"}))
    assert registry.tag("a", add=["One", "two"], remove=[]).tags == ["One", "two"]
    assert registry.tag("a", add=["one"], remove=["TWO", "absent"]).tags == ["One"]
    with pytest.raises(InvalidName):
        registry.tag("a", add=["bad\x1b"])
    assert registry.rename("a", "b").name == "b"
    add(registry, write_kohya_sd1(src / "c.safetensors", seed=3))
    with pytest.raises(AlreadyExists):
        registry.rename("b", "c")
    with pytest.raises(InvalidName):
        registry.rename("b", "../escape")
    e = registry.set("b", base_model="my/base", family="sd2", trigger_words=["tw1", "tw2"])
    assert (e.base_model, e.base_model_source, e.family, e.trigger_words) == ("my/base", "user", "sd2", ["tw1", "tw2"])
    assert e.overrides == {"family": "sd2", "base_model": "my/base", "trigger_words": ["tw1", "tw2"]}
    assert e.detected["family"] == "sd1"
    e = registry.set("b", reset=["all"])
    assert e.overrides == {} and e.family == "sd1" and e.base_model is None
    with pytest.raises(UsageError):
        registry.set("b", family="sd9")


def test_in_place_rescans_skip_unchanged_files_and_follow_changed_ones(registry, src):
    path = write_kohya_sd1(src / "live.safetensors", seed=1)
    assert add(registry, path, in_place=True).status == "added"
    registry.tag("live", add=["mine"])
    known = registry.known_files()
    assert registry.unchanged(path, os.stat(path), known).status == "unchanged"
    write_kohya_sd1(path, seed=99)  # the user retrained it in place
    os.utime(path, ns=(1, 1))
    assert registry.unchanged(path, os.stat(path), registry.known_files()) is None
    result = add(registry, path, in_place=True, stat=os.stat(path))
    assert result.status == "updated" and result.name == "live"
    e = registry.get("live")
    assert e.sha256 == inspect_file(path).sha256 and e.tags == ["mine"] and e.in_place
    assert e.files[0].mtime_ns == 1
    assert registry.unchanged(path, os.stat(path), registry.known_files()) is not None


def test_hub_provenance_is_kept(registry, src):
    path = write_kohya_sd1(src / "pulled.safetensors")
    source = SourceRecord(kind="hub", repo="someone/pixel", revision="0123456789abcdef" * 2 + "01234567",
                          filename="pixel.safetensors")
    add(registry, path, source=source, name="pixel")
    (s,) = registry.get("pixel").sources
    assert (s.kind, s.repo, s.revision, s.filename, s.path) == ("hub", "someone/pixel", source.revision,
                                                                "pixel.safetensors", None)


def test_reading_an_absent_library_creates_nothing(tmp_home):
    from registry.api import Registry

    reg = Registry(home=tmp_home)
    assert reg.list() == [] and reg.known_files() == {}
    with pytest.raises(NotFound):
        reg.get("anything")
    assert not tmp_home.exists()


def test_opening_and_closing_a_library_a_thousand_times_leaks_no_files_or_threads(tmp_home, src):
    """Every connection a Registry opens is closed with it (issue 14.3): 1,000 open / read / close cycles in
    one process, every 20th also a write through SQLAlchemy (a new engine each time), leave the open file
    descriptors and the threads as they were. (A write in every cycle proves no more and costs a minute: each
    builds an engine with an empty statement cache and fsyncs a commit. SQLite only, for the same reason.)"""
    db_url = None
    import threading

    from registry.api import Registry

    with Registry(db_url, home=tmp_home) as reg:
        add(reg, write_kohya_sd1(src / "a.safetensors"))

    def cycle(i: int) -> None:
        with Registry(db_url, home=tmp_home) as reg:
            assert [s.name for s in reg.list()] == ["a"]            # a read
            if i % 20 == 0:
                reg.tag("a", add=[f"t{i % 3}"], remove=[f"t{(i + 1) % 3}"])   # a write

    for i in range(5):   # warm up: lazy imports and module-level caches are not leaks
        cycle(i)
    fds, threads = len(os.listdir("/proc/self/fd")), threading.active_count()
    for i in range(1000):
        cycle(i)
    assert len(os.listdir("/proc/self/fd")) <= fds and threading.active_count() <= threads
