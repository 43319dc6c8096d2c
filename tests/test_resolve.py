"""One precedence for naming an adapter (``lorahub_cli.resolve``), the same in every command and the API:
an exact library name, then a unique sha256 prefix of at least 8 hex digits, then an existing path.

Each case runs through the resolver of every place that names an adapter -- show, rm (the registry API),
check, merge, generate, convert, the pipeline's Python API and ``resolve`` itself -- on a real SQLite library
with real safetensors files."""

from __future__ import annotations

from pathlib import Path

import pytest

from lorahub_cli.errors import AmbiguousRef, NotFound, UsageError
from lorahub_cli.ingest import ingest
from tests.registry.helpers import write_kohya_sd1


def _show(reg, ref):
    return reg.get(ref).name


def _rm(reg, ref):
    return reg.remove([ref])[0].name


def _check(reg, ref):
    from lorahub_cli.compat.engine import find_adapter

    found = find_adapter(ref, registry=reg)
    return found.label if found.family is not None else f"file:{found.path.name}"


def _merge(reg, ref):
    from lorahub_cli.merge.job import _Library, resolve_input

    item = resolve_input(ref, 1.0, _Library(reg))
    return item.name if item.in_library else f"file:{item.path.name}"


def _generate(reg, ref):
    from lorahub_cli.pipeline.adapters import AdapterSpec, resolve

    item = resolve(AdapterSpec(ref), reg)
    return item.name if item.in_library else f"file:{item.path.name}"


def _convert(reg, ref):
    from lorahub_cli.commands.convert import resolve_source

    path, entry = resolve_source(ref, home=reg.home)
    return entry.name if entry is not None else f"file:{path.name}"


def _api(reg, ref):
    from lorahub_cli.pipeline.api import Library

    (item,) = Library(registry=reg)._resolve([ref])
    return item.name if item.in_library else f"file:{item.path.name}"


def _resolve(reg, ref):
    from lorahub_cli.resolve import resolve

    handle = resolve(ref, reg)
    return handle.name if handle.in_library else f"file:{handle.path.name}"


NAMERS = {"show": _show, "rm": _rm, "check": _check, "merge": _merge, "generate": _generate,
          "convert": _convert, "api": _api, "resolve": _resolve}
ALL = pytest.mark.parametrize("via", list(NAMERS))


@pytest.fixture
def reg(tmp_home):
    from registry.api import Registry

    with Registry(home=tmp_home) as registry:
        yield registry


@pytest.fixture
def lib(reg, tmp_path, monkeypatch):
    """A library with "style" (a real stored adapter), and a working folder as the current directory."""
    src = tmp_path / "src"
    ingest(write_kohya_sd1(src / "style.safetensors", seed=1), reg, name="style")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return reg


def _record_only(reg, name: str, sha256: str) -> None:
    """An adapter row with a chosen sha256 (to make prefixes collide), written through the ORM."""
    from registry.models import Adapter, Blob

    with reg.db.write() as s:
        blob = Blob(sha256=sha256, size=1, stored=False)
        s.add(blob)
        s.flush()
        s.add(Adapter(name=name, blob_id=blob.id, container="safetensors", format="kohya", network="lora",
                      family="sd1"))


@ALL
def test_a_prefix_shared_by_two_entries_is_ambiguous_everywhere(lib, via):
    _record_only(lib, "first", "cafe0000a" + "0" * 55)
    _record_only(lib, "second", "cafe0000b" + "0" * 55)
    with pytest.raises(AmbiguousRef) as err:
        NAMERS[via](lib, "cafe0000")
    assert err.value.code == "ambiguous-ref" and err.value.exit_code == 1
    assert "first" in err.value.message and "second" in err.value.message   # the candidates are listed
    assert {s.name for s in lib.list()} == {"style", "first", "second"}       # rm removed nothing


@ALL
def test_an_8_digit_prefix_names_the_entry_everywhere(lib, via):
    sha = lib.get("style").sha256
    assert NAMERS[via](lib, sha[:8].upper()) == "style"


@ALL
def test_a_7_digit_prefix_is_not_a_prefix(lib, via):
    sha = lib.get("style").sha256
    with pytest.raises(NotFound):
        NAMERS[via](lib, sha[:7])


@ALL
def test_a_file_in_the_current_folder_does_not_shadow_the_entry_of_that_name(lib, via):
    write_kohya_sd1(Path("style"), seed=2)   # other bytes, named like the entry
    assert NAMERS[via](lib, "style") == "style"


@ALL
def test_a_folder_in_the_current_folder_does_not_shadow_the_entry_of_that_name(lib, via):
    # issue 13 M6: `generate -a style` with a folder "style" here said "style is a folder"
    Path("style").mkdir()
    assert NAMERS[via](lib, "style") == "style"


@pytest.mark.parametrize("via", [v for v in NAMERS if v not in ("show", "rm")])
def test_a_path_names_the_file_when_no_entry_has_that_name(lib, via):
    write_kohya_sd1(Path("other.safetensors"), seed=3)
    assert NAMERS[via](lib, "other.safetensors") == "file:other.safetensors"


@pytest.mark.parametrize("via", [v for v in NAMERS if v not in ("show", "rm")])
def test_a_folder_that_names_no_entry_is_a_usage_error(lib, via):
    Path("loras").mkdir()
    with pytest.raises(UsageError, match="is a folder"):
        NAMERS[via](lib, "loras")


@pytest.mark.parametrize("via", [v for v in NAMERS if v not in ("show", "rm")])
def test_a_name_that_names_nothing_says_so_with_near_names(lib, via):
    with pytest.raises(NotFound) as err:
        NAMERS[via](lib, "stlye")
    assert "neither a file nor an adapter" in err.value.message and "style" in (err.value.hint or "")
