"""Schema migrations: the code's idea of the schema matches the migrations, and a database written by any
older revision opens with today's code without losing anything (a committed fixture DB per revision)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lorahub_cli.errors import DatabaseError
from registry.schema import HEAD, REVISIONS
from tests.registry.data.make_fixture_dbs import SHA_IN_PLACE, SHA_STORED, fill, fixture_path

MIGRATIONS = Path(__file__).resolve().parents[2] / "registry" / "migrations"


def test_head_constant_matches_the_migration_scripts():
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    scripts = ScriptDirectory.from_config(cfg)
    assert scripts.get_heads() == [HEAD]
    assert tuple(reversed([s.revision for s in scripts.walk_revisions()])) == REVISIONS


def test_models_match_the_migrated_database(registry):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from registry.models import Base

    with registry.db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []


@pytest.mark.parametrize("revision", REVISIONS)
def test_a_database_from_an_older_revision_migrates_without_loss(revision, backend, db_url, tmp_home):
    from registry.api import Registry

    if backend == "sqlite":
        committed = fixture_path(revision)
        assert committed.is_file(), "run: python -m tests.registry.data.make_fixture_dbs"
        tmp_home.mkdir(parents=True)
        shutil.copy(committed, tmp_home / "registry.db")
    else:
        fill(db_url, revision)
    with Registry(db_url, home=tmp_home) as reg:
        assert [(s.name, s.sha256) for s in reg.list()] == [("ink-sketch", SHA_IN_PLACE), ("pixel-art", SHA_STORED)]
        pixel = reg.get("pixel-art")
        assert (pixel.format, pixel.rank, pixel.alpha, pixel.size, pixel.tensor_sha256) == ("kohya", 4, 4.0, 35720,
                                                                                          "c" * 64)
        assert pixel.tag_sources == {"pixel": "user", "retro": "card"}
        assert pixel.trigger_word_sources == {"pxart": "metadata:ss_tag_frequency"}
        assert pixel.base_models == [{"id": "runwayml/stable-diffusion-v1-5", "source": "card:README.md"}]
        assert pixel.metadata == {"ss_network_dim": "4"} and pixel.license == "openrail"
        assert [(s.kind, s.repo, s.filename) for s in pixel.sources][0] == ("hub", "someone/pixel-art",
                                                                            "pixel.safetensors")
        assert pixel.added_at.isoformat() == "2025-01-02T03:04:05+00:00"
        ink = reg.get("ink-sketch")
        assert ink.in_place and ink.path == "/loras/ink.safetensors" and ink.ranks == [8, 16]
        assert ink.trigger_words == ["inksketch"] and ink.overrides == {"trigger_words": ["inksketch"]}
        assert ink.warnings == ["some warning"]
        if revision == "0001_initial":
            # no stat was remembered before 0002: the next in-place scan hashes the file once
            assert ink.files[0].size is None and reg.unchanged("/loras/ink.safetensors", _Stat(4444192, 1),
                                                               reg.known_files()) is None
            assert pixel.family == "sd1" and pixel.overrides == {}
        else:
            assert ink.files[0].size == 4444192
            assert pixel.family == "sdxl" and pixel.detected == {"family": "sd1"}
        if REVISIONS.index(revision) >= REVISIONS.index("0003_source_stats"):
            # a pickle registered in place: a rescan with the same stat skips it
            pickle = next(s for s in pixel.sources if s.path == "/loras/pixel.pt")
            assert (pickle.size, pickle.mtime_ns) == (36100, 1735787047000000000)
            assert reg.unchanged("/loras/pixel.pt", _Stat(36100, 1735787047000000000),
                                 reg.known_files(converted=True)).name == "pixel-art"
        else:
            assert len(pixel.sources) == 1
        if REVISIONS.index(revision) >= REVISIONS.index("0004_source_etag"):
            url = pixel.sources[-1]
            assert (url.kind, url.url, url.etag) == ("url", "https://example.com/pixel.safetensors", '"px-1"')
        else:
            assert all(s.etag is None for s in pixel.sources)
        if REVISIONS.index(revision) >= REVISIONS.index("0005_civitai"):
            assert (pixel.label, pixel.label_source) == ("SD 1.5", "api:civitai")
            assert (pixel.civitai["model_id"], pixel.civitai["model_name"]) == (11, "Pixel Art")
            assert [p["url"] for p in pixel.previews] == ["https://image.civitai.com/p.png"]
            assert [s.name for s in reg.list(label="sd 1.5")] == ["pixel-art"]
        else:
            assert pixel.label is None and pixel.civitai is None and pixel.previews == []
        # entries made before revision 0006 are LoRAs
        assert [s.kind for s in reg.list()] == ["lora", "lora"] and reg.list(kind="embedding") == []
        assert pixel.vectors is None and pixel.widths == []
        # no entry had a preferred weight before revision 0007; one set since survives
        if REVISIONS.index(revision) >= REVISIONS.index("0007_preferred_weight"):
            assert pixel.preferred_weight == 0.75 and pixel.overrides["preferred_weight"] == 0.75
        else:
            assert pixel.preferred_weight is None and "preferred_weight" not in pixel.overrides
        assert ink.preferred_weight is None and [s.preferred_weight for s in reg.list()] == [None, pixel.preferred_weight]
        with reg.db.engine.connect() as conn:
            from sqlalchemy import text

            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == HEAD


class _Stat:
    def __init__(self, size: int, mtime_ns: int):
        self.st_size, self.st_mtime_ns = size, mtime_ns


def test_a_database_from_a_newer_lora_is_refused(registry, src):
    from sqlalchemy import text

    with registry.db.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999_future'"))
    registry.close()
    with pytest.raises(DatabaseError) as err:
        registry.list()
    assert "newer" in err.value.message and err.value.exit_code == 3
