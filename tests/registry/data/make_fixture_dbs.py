"""Make the committed fixture databases: one SQLite library per schema revision, as that revision wrote it.

    .venv/bin/python -m tests.registry.data.make_fixture_dbs

Each database is migrated to its revision only, then filled with SAMPLE_SQL[revision], SQL written against
that revision's tables (never against today's models, which move on). test_migrations opens each one with
the current code and checks that nothing was lost. When you add revision N, add SAMPLE_SQL[N] (and an
EXPECTED entry if N stores something new), run this script, and commit the new .db file.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
SHA_STORED = "a" * 64
SHA_IN_PLACE = "b" * 64

_COMMON = [
    f"INSERT INTO blobs (id, sha256, tensor_sha256, size, stored, created_at) VALUES "
    f"(1, '{SHA_STORED}', '{'c' * 64}', 35720, TRUE, '2025-01-02 03:04:05.000000')",
    f"INSERT INTO blobs (id, sha256, tensor_sha256, size, stored, created_at) VALUES "
    f"(2, '{SHA_IN_PLACE}', NULL, 4444192, FALSE, '2025-01-02 03:04:06.000000')",
    "INSERT INTO adapters (id, name, blob_id, container, format, network, family, family_evidence, components,"
    " rank, ranks, alpha, dtype, n_tensors, n_modules, tokens, license, license_source, warnings, added_at,"
    " updated_at) VALUES (1, 'pixel-art', 1, 'safetensors', 'kohya', 'lora', 'sd1',"
    " 'attn2.to_k in-features 768', '[\"unet\"]', 4, '[4]', 4.0, 'F32', 6, 2, '[]', 'openrail', 'card:README.md',"
    " '[]', '2025-01-02 03:04:05.000000', '2025-01-02 03:04:05.000000')",
    "INSERT INTO adapters (id, name, blob_id, container, format, network, family, family_evidence, components,"
    " rank, ranks, alpha, dtype, n_tensors, n_modules, tokens, license, license_source, warnings, added_at,"
    " updated_at) VALUES (2, 'ink-sketch', 2, 'safetensors', 'diffusers', 'lora', 'sdxl',"
    " 'to_k in-features 2048', '[\"unet\", \"text_encoder\"]', 16, '[8, 16]', NULL, 'F16', 528, 176, '[]',"
    " NULL, NULL, '[\"some warning\"]', '2025-01-02 03:04:06.000000', '2025-01-02 03:04:06.000000')",
    "INSERT INTO adapter_metadata (adapter_id, data) VALUES (1, '{\"ss_network_dim\": \"4\"}')",
    "INSERT INTO adapter_metadata (adapter_id, data) VALUES (2, '{}')",
    "INSERT INTO tags (id, adapter_id, tag, source) VALUES (1, 1, 'pixel', 'user')",
    "INSERT INTO tags (id, adapter_id, tag, source) VALUES (2, 1, 'retro', 'card')",
    "INSERT INTO trigger_words (id, adapter_id, word, source, position) VALUES"
    " (1, 1, 'pxart', 'metadata:ss_tag_frequency', 0)",
    "INSERT INTO trigger_words (id, adapter_id, word, source, position) VALUES (2, 2, 'inksketch', 'user', 0)",
    "INSERT INTO base_models (id, adapter_id, model_id, source, position) VALUES"
    " (1, 1, 'runwayml/stable-diffusion-v1-5', 'card:README.md', 0)",
    "INSERT INTO sources (id, adapter_id, kind, path, url, repo, revision, filename, original_sha256, added_at)"
    " VALUES (1, 1, 'hub', NULL, NULL, 'someone/pixel-art', '0123456789abcdef0123456789abcdef01234567',"
    " 'pixel.safetensors', NULL, '2025-01-02 03:04:05.000000')",
    "INSERT INTO sources (id, adapter_id, kind, path, url, repo, revision, filename, original_sha256, added_at)"
    " VALUES (2, 2, 'local', '/loras/ink.safetensors', NULL, NULL, NULL, NULL, NULL, '2025-01-02 03:04:06.000000')",
]

SAMPLE_SQL = {
    "0001_initial": _COMMON + [
        "INSERT INTO files (id, blob_id, path, checked_at) VALUES"
        " (1, 2, '/loras/ink.safetensors', '2025-01-02 03:04:06.000000')",
    ],
    "0002_in_place_stats": _COMMON + [
        "INSERT INTO files (id, blob_id, path, size, mtime_ns, checked_at) VALUES"
        " (1, 2, '/loras/ink.safetensors', 4444192, 1735787046000000000, '2025-01-02 03:04:06.000000')",
        "UPDATE adapters SET family_user = 'sdxl' WHERE id = 1",
    ],
    "0003_source_stats": _COMMON + [
        "INSERT INTO files (id, blob_id, path, size, mtime_ns, checked_at) VALUES"
        " (1, 2, '/loras/ink.safetensors', 4444192, 1735787046000000000, '2025-01-02 03:04:06.000000')",
        "UPDATE adapters SET family_user = 'sdxl' WHERE id = 1",
        # a pickle registered in place: its converted copy is pixel-art's stored blob
        "INSERT INTO sources (id, adapter_id, kind, path, url, repo, revision, filename, original_sha256, size,"
        f" mtime_ns, added_at) VALUES (3, 1, 'local', '/loras/pixel.pt', NULL, NULL, NULL, NULL, '{'e' * 64}',"
        " 36100, 1735787047000000000, '2025-01-02 03:04:07.000000')",
    ],
}
SAMPLE_SQL["0004_source_etag"] = SAMPLE_SQL["0003_source_stats"] + [
    # the same bytes pulled from a URL, with the ETag the server sent
    "INSERT INTO sources (id, adapter_id, kind, path, url, repo, revision, filename, original_sha256, size,"
    " mtime_ns, etag, added_at) VALUES (4, 1, 'url', NULL, 'https://example.com/pixel.safetensors', NULL, NULL,"
    " 'pixel.safetensors', NULL, NULL, NULL, '\"px-1\"', '2025-01-02 03:04:08.000000')",
]

SAMPLE_SQL["0005_civitai"] = SAMPLE_SQL["0004_source_etag"] + [
    # Civitai's base-model label, its answer about pixel-art, one preview and a cached "not found"
    "UPDATE adapters SET label = 'SD 1.5', label_source = 'api:civitai' WHERE id = 1",
    "INSERT INTO remote_facts (id, adapter_id, service, model_id, version_id, data, fetched_at) VALUES"
    " (1, 1, 'civitai', '11', '101', '{\"model_name\": \"Pixel Art\"}', '2025-01-02 03:04:09.000000')",
    f"INSERT INTO previews (id, adapter_id, sha256, suffix, url, source, position) VALUES"
    f" (1, 1, '{'d' * 64}', '.png', 'https://image.civitai.com/p.png', 'api:civitai', 0)",
    "INSERT INTO lookups (id, service, key, answer, fetched_at) VALUES"
    " (1, 'civitai', 'autov2:0123456789', NULL, '2025-01-02 03:04:09.000000')",
]

# every entry so far is a LoRA (kind defaults to "lora"); an embedding has its vectors and widths
SAMPLE_SQL["0006_embeddings"] = SAMPLE_SQL["0005_civitai"] + [
    "UPDATE adapters SET kind = 'lora', vectors = NULL, widths = NULL WHERE id = 2",
]

# the user's preferred weight for pixel-art (ink-sketch has none)
SAMPLE_SQL["0007_preferred_weight"] = SAMPLE_SQL["0006_embeddings"] + [
    "UPDATE adapters SET preferred_weight = 0.75 WHERE id = 1",
]


def fill(url: str, revision: str) -> None:
    """Create the schema at ``revision`` in the (empty) database at ``url`` and insert its sample rows."""
    from sqlalchemy import text

    from registry.db import make_engine, migrate

    engine = make_engine(url)
    try:
        migrate(engine, revision)
        with engine.begin() as conn:
            for statement in SAMPLE_SQL[revision]:
                conn.execute(text(statement))
    finally:
        engine.dispose()


def fixture_path(revision: str) -> Path:
    return HERE / f"registry-{revision}.db"


def main() -> None:
    from registry.schema import REVISIONS

    for revision in REVISIONS:
        path = fixture_path(revision)
        if path.exists():
            print(f"kept {path.name} (delete it to rebuild; a committed fixture should never change)")
            continue
        fill(f"sqlite:///{path}", revision)
        import sqlite3

        with sqlite3.connect(path) as conn:  # one self-contained file: fold the WAL back in
            conn.execute("PRAGMA journal_mode = DELETE")
        print(f"wrote {path.name}")


if __name__ == "__main__":
    main()
