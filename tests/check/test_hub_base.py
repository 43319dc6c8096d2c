"""A Hub id as the base, through the real huggingface_hub client and the local Hub-compatible server.

Only configs travel: model_index.json and each adaptable component's config.json, into the user's HF cache.
"""

from __future__ import annotations

import pytest

from lorahub_cli.archs import config_dir
from lorahub_cli.bases import HUB, resolve_base
from lorahub_cli.errors import NotFound, Offline

REPO = "acme/sdxl-finetune"


def _config_repo(hub, repo_id: str, alias: str, extra: dict | None = None):
    """A model repo holding the real configs of ``alias`` (and a weights file that must never be fetched)."""
    folder = config_dir(alias)
    files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*.json")}
    files["unet/diffusion_pytorch_model.safetensors"] = b"\0" * 4096
    return hub.create_repo(repo_id, {**files, **(extra or {})})


def test_check_against_a_hub_id(home, hub, hf_env, hf_cache, run_cli, adapters):
    repo = _config_repo(hub, REPO, "sdxl")
    result = run_cli("check", adapters["sdxl"], adapters["sd15"], "--base", REPO, "--json")
    assert result.returncode == 1, result            # the SD1 adapter is incompatible
    sdxl, sd15 = result.json()
    assert sdxl["base"] == REPO and sdxl["verdict"] == "compatible" and sdxl["family"]["base"] == "sdxl"
    assert sdxl["coverage"]["matched"] == sdxl["coverage"]["total"] > 0
    assert sd15["verdict"] == "incompatible"
    fetched = {r.path.split("/resolve/", 1)[1] for r in hub.requests_to("/resolve/")}
    assert fetched and all(p.endswith(".json") for p in fetched)            # configs only, never weights
    assert {p.split("/", 1)[1] for p in fetched} == {"model_index.json", "unet/config.json",
                                                     "text_encoder/config.json", "text_encoder_2/config.json"}
    assert (hf_cache / "models--acme--sdxl-finetune" / "snapshots" / repo.refs["main"]).is_dir()

    # cached: the next check asks the Hub nothing, also offline
    before = len(hub.requests)
    again = run_cli("check", adapters["sdxl"], "--base", REPO, "--json", env={"HF_HUB_OFFLINE": "1"})
    assert again.returncode == 0 and again.json()[0]["verdict"] == "compatible"
    assert len(hub.requests) == before


def test_offline_with_nothing_cached_cannot_decide(home, hub, hf_env, offline, run_cli, adapters):
    _config_repo(hub, REPO, "sdxl")
    offline()
    result = run_cli("check", adapters["sdxl"], "--base", REPO, "--json")
    assert result.returncode == 3, result
    assert result.json()["error"]["code"] == "offline"
    assert hub.requests_to("/resolve/") == []


def test_hub_base_in_python_and_refresh(home, hub, hf_env):
    repo = _config_repo(hub, "acme/sd15-copy", "sd15")
    base = resolve_base("acme/sd15-copy")
    assert (base.kind, base.family, base.id, base.revision) == (HUB, "sd1", "acme/sd15-copy", repo.refs["main"])
    assert set(base.components) == {"unet", "text_encoder"}
    # a new commit is seen only when asked to refresh (lora base add does); checks use the cached configs
    new = repo.commit({"README.md": "changed"})
    assert resolve_base("acme/sd15-copy").revision == base.revision
    assert resolve_base("acme/sd15-copy", refresh=True).revision == new


def test_missing_repo_and_offline_errors_are_ours(home, hub, hf_env, monkeypatch):
    with pytest.raises(NotFound, match="acme/missing"):
        resolve_base("acme/missing")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(Offline):
        resolve_base("acme/missing")


def test_a_mistyped_local_folder_is_not_found_as_a_folder(home, hub, hf_env, tmp_path, monkeypatch):
    """'models/my-bas' with models/ here: the Hub is asked (it could be a repo), then the folder is blamed."""
    (tmp_path / "models" / "my-base").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(NotFound, match="the folder models exists here, but holds no 'my-bas'"):
        resolve_base("models/my-bas")
    with pytest.raises(NotFound, match="acme/missing") as plain:   # no such local folder: the Hub's answer
        resolve_base("acme/missing")
    assert "exists here" not in plain.value.message
