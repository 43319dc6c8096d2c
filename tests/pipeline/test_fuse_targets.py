"""`lora fuse --force` replaces only a folder an earlier fuse wrote (issue 13 D1): never the base, a folder that
holds it, the library home, or a folder of the user's. The refusals come before the model is loaded."""

from __future__ import annotations

import json
import shutil

import pytest


@pytest.fixture
def lora(lib_env, capsys):
    """Run `lora ARGS...` in this process: (exit status, parsed --json error or output, stderr)."""
    from lorahub_cli.__main__ import main

    def run(*args):
        code = main([str(a) for a in args] + ["--json"])
        out, err = capsys.readouterr()
        text = out.strip() or err.strip().splitlines()[-1]
        return code, json.loads(text), err

    return run


def _tree(folder) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_force_never_deletes_the_base_or_the_folder_that_holds_it(lora, lib_env, tmp_path):
    g2 = tmp_path / "g2"
    shutil.copytree(lib_env.base, g2 / "base")
    (g2 / "other.txt").write_text("the user's")
    before = _tree(g2)
    for out in (g2, g2 / "base"):
        code, body, err = lora("fuse", "--base", g2 / "base", "-a", "style", "-o", out, "--force")
        assert code == 2 and body["error"]["code"] == "unsafe-output", err
    assert _tree(g2) == before


def test_force_never_deletes_the_library_home(lora, lib_env):
    before = _tree(lib_env.home)
    code, body, err = lora("fuse", "--base", lib_env.base, "-a", "style", "-o", lib_env.home, "--force")
    assert code == 2 and body["error"]["code"] == "unsafe-output", err
    assert _tree(lib_env.home) == before


def test_force_replaces_an_earlier_fuse_but_not_a_folder_of_the_users(lora, lib_env, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    code, body, err = lora("fuse", "--base", lib_env.base, "-a", "style", "-o", mine, "--force")
    assert code == 2 and body["error"]["code"] == "unsafe-output", err
    assert _tree(mine) == {"notes.txt": b"keep"}

    out = tmp_path / "fused"
    code, body, err = lora("fuse", "--base", lib_env.base, "-a", "style", "-o", out)
    assert code == 0, err
    (out / "stale.txt").write_text("from before")
    code, body, err = lora("fuse", "--base", lib_env.base, "-a", "detail", "-o", out, "--force")
    assert code == 0, err
    assert not (out / "stale.txt").exists() and json.loads((out / "lorahub_fuse.json").read_text())["adapters"][0][
        "name"] == "detail"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fused", "mine"]   # the old folder is gone, nothing beside
