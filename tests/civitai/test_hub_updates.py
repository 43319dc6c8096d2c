"""`lora outdated` / `lora update` for an entry pulled from the Hub: a new commit with other bytes of the
same file is "outdated"; update makes a new entry linked to the old one (against the local Hub server)."""

from __future__ import annotations

import json
import os

import pytest

from tests.civitai.conftest import lora_bytes
from tests.hubserver import HubServer

_CLEARED = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HTTP_PROXY",
            "HTTPS_PROXY", "http_proxy", "https_proxy")


@pytest.fixture
def hub(tmp_path, monkeypatch):
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
    with HubServer() as server:
        for name in _CLEARED:
            monkeypatch.delenv(name, raising=False)
        for key, value in {**server.env(), "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_OFFLINE": "0",
                           "NO_PROXY": "127.0.0.1,localhost"}.items():
            monkeypatch.setenv(key, value)
        yield server.hub


def test_a_new_hub_commit_is_outdated_and_update_keeps_the_old_entry(hub, run_cli, tmp_path):
    repo = hub.create_repo("someone/style", {"style.safetensors": lora_bytes(tmp_path, 1)})
    pulled = run_cli("pull", "someone/style", "--json")
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    old = json.loads(pulled.stdout)["name"]
    assert run_cli("set", old, "--trigger", "mine").returncode == 0
    assert run_cli("outdated", "--json").returncode == 0        # nothing newer yet
    repo.commit({"README.md": "# new card, same weights\n"})
    assert json.loads(run_cli("outdated", "--json").stdout) == []   # a commit that left the file alone
    repo.commit({"style.safetensors": lora_bytes(tmp_path, 2)})
    listed = run_cli("outdated", "--json")
    assert listed.returncode == 1
    (item,) = json.loads(listed.stdout)
    assert (item["name"], item["source"], item["ref"]) == (old, "hub", "hf://someone/style/style.safetensors")
    updated = run_cli("update", old, "--move-overrides", "--json")
    assert updated.returncode == 0, updated.stdout
    new = json.loads(updated.stdout)
    assert new["status"] == "added" and new["previous_version"] == old
    shown_new = json.loads(run_cli("show", new["name"], "--json").stdout)
    shown_old = json.loads(run_cli("show", old, "--json").stdout)
    assert shown_new["previous_version"] == old and shown_new["trigger_words"] == ["mine"]
    assert shown_old["overrides"] == {}                          # moved, as asked; the entry itself stays
    assert json.loads(run_cli("outdated", "--json").stdout) == []


def test_an_entry_from_nowhere_cannot_be_updated(run_cli, tmp_path):
    path = tmp_path / "local.safetensors"
    path.write_bytes(lora_bytes(tmp_path, 3))
    assert run_cli("add", str(path), "--name", "local").returncode == 0
    result = run_cli("update", "local", "--json")
    assert result.returncode == 1 and json.loads(result.stdout)["error"]["code"] == "not-found"
    assert "lora identify local" in json.loads(result.stdout)["error"]["hint"]
