"""A small real library (numpy-written kohya files added through `lora add`) for the export and sync tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.registry.helpers import write_kohya_sd1


@pytest.fixture
def library(tmp_path, run_cli):
    """Three entries: style (tag anime, trigger 'mystyle'), ink, old. Returns the add folder."""
    src = tmp_path / "in"
    for seed, name in enumerate(("style", "ink", "old"), start=1):
        write_kohya_sd1(src / f"{name}.safetensors", seed=seed)
    assert run_cli("add", src, "--json").returncode == 0
    assert run_cli("tag", "style", "+anime").returncode == 0
    assert run_cli("set", "style", "--trigger", "mystyle").returncode == 0
    return src


def tree(root: Path) -> dict[str, int]:
    """Every file under ``root`` (relative path -> inode), the lock and manifest left out."""
    return {p.relative_to(root).as_posix(): p.lstat().st_ino for p in sorted(root.rglob("*"))
            if not p.is_dir() and not p.name.startswith(".lorahub-sync")}
