"""A fused folder replaces an existing one (--force) all at once, or not at all."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lorahub_cli.errors import AlreadyExists
from lorahub_cli.pipeline.save import PROVENANCE_FILE, save_fused


class _Pipe:
    def save_pretrained(self, folder, safe_serialization: bool) -> None:
        (Path(folder) / "model_index.json").write_text("{}")


def test_force_replaces_the_folder_and_leaves_nothing_beside_it(tmp_path):
    out = tmp_path / "fused"
    out.mkdir()
    (out / "old.txt").write_text("old")
    (out / PROVENANCE_FILE).write_text("{}")   # an earlier fuse wrote it
    with pytest.raises(AlreadyExists):
        save_fused(_Pipe(), out, force=False, provenance={})
    save_fused(_Pipe(), out, force=True, provenance={"base": "x"})
    assert sorted(p.name for p in out.iterdir()) == sorted(["model_index.json", PROVENANCE_FILE])
    assert [p.name for p in tmp_path.iterdir()] == ["fused"]


def test_a_failed_replace_puts_the_old_folder_back(tmp_path, monkeypatch):
    out = tmp_path / "fused"
    out.mkdir()
    (out / "old.txt").write_text("old")
    (out / PROVENANCE_FILE).write_text("{}")
    real_replace = os.replace

    def failing_replace(src, dst):
        if Path(dst) == out and ".tmp-" in Path(src).name:   # the new folder's rename only
            raise OSError("disk trouble")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk trouble"):
        save_fused(_Pipe(), out, force=True, provenance={})
    assert (out / "old.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["fused"]
