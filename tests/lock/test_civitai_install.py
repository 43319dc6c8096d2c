"""A lock names a Civitai version; `lora install` fetches it from the Civitai server with Civitai's facts."""

from __future__ import annotations

import tomllib

from tests.civitai.conftest import catalogue, civitai  # noqa: F401


def test_a_civitai_entry_locks_by_version_and_installs_with_its_trained_words(catalogue, run_cli, tmp_path):
    first = {"LORAHUB_HOME": str(tmp_path / "first")}
    assert run_cli("pull", "civitai:11@101", env=first).returncode == 0
    lock = tmp_path / "lora.lock"
    assert run_cli("lock", "pixel_v1", "-o", lock, env=first).returncode == 0, run_cli("list", env=first).stdout
    (entry,) = tomllib.loads(lock.read_text())["adapters"]
    assert entry["sources"][0] == {"kind": "civitai", "model": 11, "version": 101}
    second = {"LORAHUB_HOME": str(tmp_path / "second")}
    got = run_cli("install", lock, "--json", env=second)
    assert got.returncode == 0, got
    assert [(o["status"], o["name"]) for o in got.json()] == [("fetched", "pixel_v1")]
    shown = run_cli("show", "pixel_v1", "--json", env=second).json()
    assert set(shown["trigger_words"]) >= {"pxart", "pixel style"}


def test_a_civitai_hash_that_differs_from_the_lock_downloads_nothing(catalogue, run_cli, tmp_path):
    lock = tmp_path / "bad.lock"
    lock.write_text('version = 1\n[[adapters]]\nname = "pixel"\nsha256 = "' + "e" * 64 + '"\n'
                    '[[adapters.sources]]\nkind = "civitai"\nmodel = 11\nversion = 101\n')
    got = run_cli("install", lock, "--json")
    assert got.json()[0]["error"]["code"] == "hash-mismatch"
    assert not [r for r in catalogue.requests if "/download" in r["path"]]   # refused from the API's answer
    assert run_cli("list", "--json").json() == []
