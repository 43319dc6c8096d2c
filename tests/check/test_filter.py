"""`compatible_filter`: the library's entries that fit a base, by check's rules, with a per-base verdict cache."""

from __future__ import annotations

from lorahub_cli.compat.engine import check
from lorahub_cli.compat.filter import compatibility, compatible_filter
from lorahub_cli.ingest import ingest
from registry.api import Registry

NAMES = ("sd15", "sd15-te", "sdxl", "sd21")


def _library(adapters):
    with Registry() as registry:
        for name in NAMES:
            ingest(adapters[name], registry, name=name)
        return registry.list()


def test_filter_agrees_with_check(home, adapters):
    entries = _library(adapters)
    for base in ("sd15", "sdxl"):
        rows = {r.entry.name: r for r in compatibility(entries, base)}
        for name in NAMES:
            expected = check(str(adapters[name]), base)   # no override: the file's verdict
            assert (rows[name].verdict, rows[name].matched, rows[name].total) == \
                (expected.verdict, expected.matched, expected.total)
    assert [e.name for e in compatible_filter(entries, "sd15")] == ["sd15", "sd15-te"]
    assert [e.name for e in compatible_filter(entries, "sdxl")] == ["sdxl"]
    assert [e.name for e in compatible_filter(entries, "sdxl", include_partial=True)] == ["sd15-te", "sdxl"]
    # a user's family override is part of the cache key: the verdict follows it
    with Registry() as registry:
        registry.set("sd15-te", family="sdxl")
        entries = registry.list()
    assert [e.name for e in compatible_filter(entries, "sdxl")] == ["sd15-te", "sdxl"]


def test_verdicts_are_cached_per_base_and_never_reread(home, adapters):
    entries = _library(adapters)
    first = compatibility(entries, "sd21")
    cache_files = list((home / "cache" / "compat").glob("*.json"))
    assert len(cache_files) == 1
    # the bytes are gone, yet the cached verdicts stand: nothing was read again
    with Registry() as registry:
        for entry in entries:
            registry.store.path_for(entry.sha256).unlink()
    assert compatibility(entries, "sd21") == first
    # another base has its own cache; without the bytes, each entry says why it has no verdict
    rows = compatibility(entries, "sd15")
    assert {r.verdict for r in rows} == {None} and {r.error for r in rows} == {"not-found"}
    assert len(list((home / "cache" / "compat").glob("*.json"))) == 1   # failures are not cached
