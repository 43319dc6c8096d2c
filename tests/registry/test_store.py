"""The content-addressed store: atomic writes, identical content once, nothing left when a write fails."""

from __future__ import annotations

import hashlib

import pytest

from lorahub_cli.errors import HashMismatch
from registry.store import BlobStore


def test_put_stores_by_sha256_once(tmp_path):
    store = BlobStore(tmp_path / "blobs")
    data = b"some adapter bytes" * 1000
    (tmp_path / "a").write_bytes(data)
    (tmp_path / "b").write_bytes(data)
    sha, size = store.put(tmp_path / "a")
    assert sha == hashlib.sha256(data).hexdigest() and size == len(data)
    assert store.put(tmp_path / "b") == (sha, size)
    assert [name for name, _ in store.iter_blobs()] == [sha]
    assert store.path_for(sha).read_bytes() == data
    assert store.temp_files() == []
    assert store.verify(sha) == (True, len(data))


def test_a_changed_file_is_refused_and_leaves_nothing(tmp_path):
    store = BlobStore(tmp_path / "blobs")
    (tmp_path / "a").write_bytes(b"new bytes")
    with pytest.raises(HashMismatch) as err:
        store.put(tmp_path / "a", expected_sha256="0" * 64)
    assert err.value.code == "hash-mismatch"
    assert list(store.iter_blobs()) == [] and store.temp_files() == []


def test_corruption_is_detected(tmp_path):
    store = BlobStore(tmp_path / "blobs")
    (tmp_path / "a").write_bytes(b"x" * 100)
    sha, _ = store.put(tmp_path / "a")
    store.path_for(sha).write_bytes(b"y" * 100)
    assert store.verify(sha) == (False, 100)


@pytest.mark.parametrize("bad", ["../../etc/passwd", "A" * 64, "a" * 63, "g" * 64])
def test_only_a_sha256_becomes_a_path(tmp_path, bad):
    with pytest.raises(ValueError):
        BlobStore(tmp_path).path_for(bad)


def test_linking_bytes_already_stored_from_the_same_file_leaves_no_temp_file(tmp_path):
    """A second link of the same cache file (a re-pull, or two pulls at once) renames a hard link onto itself,
    which POSIX makes a no-op: the temp name must not be left behind."""
    store = BlobStore(tmp_path / "blobs")
    cached = tmp_path / "hf-cache-blob"
    cached.write_bytes(b"adapter bytes")
    sha = hashlib.sha256(b"adapter bytes").hexdigest()
    assert store.put(cached, expected_sha256=sha, link=True) == (sha, 13)
    assert store.put(cached, expected_sha256=sha, link=True) == (sha, 13)
    assert store.path_for(sha).stat().st_ino == cached.stat().st_ino  # a link, not a copy
    assert store.temp_files() == []
