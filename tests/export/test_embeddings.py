"""Embeddings go to the UI's embeddings folder, never its LoRA folder: ComfyUI models/embeddings, A1111/Forge
<webui>/embeddings, SwarmUI Models/Embeddings, InvokeAI's scanned folder's embeddings/; with the A1111 sidecar;
under their own manifest (sync removes only what it placed there); a plain folder needs --embeddings-to."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lorahub_cli.export.embeddings import embeddings_folder
from tests.embeddings.files import a1111_safetensors
from tests.export.conftest import tree


@pytest.fixture
def with_embedding(library, tmp_path, run_cli):
    """The export library plus one SD1 embedding "neg" (A1111 safetensors)."""
    assert run_cli("add", a1111_safetensors(tmp_path / "neg.safetensors", n=2)).returncode == 0
    return Path(run_cli("show", "neg", "--json").json()["path"])


@pytest.mark.parametrize("loras, embeddings", [
    ("ComfyUI/models/loras", "ComfyUI/models/embeddings"),
    ("webui/models/Lora", "webui/embeddings"),
    ("SwarmUI/Models/Lora", "SwarmUI/Models/Embeddings"),
])
def test_export_puts_embeddings_in_the_uis_embeddings_folder(with_embedding, tmp_path, run_cli, loras,
                                                              embeddings):
    r = run_cli("export", "--to", tmp_path / loras, "--json")
    assert r.returncode == 0, r
    assert set(tree(tmp_path / embeddings)) == {"sd1/neg.safetensors", "sd1/neg.json"}
    assert (tmp_path / embeddings / "sd1/neg.safetensors").stat().st_ino == with_embedding.stat().st_ino
    assert not any("neg" in p for p in tree(tmp_path / loras))   # the LoRA folder holds only LoRAs
    assert len(tree(tmp_path / loras)) == 6
    sidecar = json.loads((tmp_path / embeddings / "sd1/neg.json").read_text())
    assert sidecar["sd version"] == "SD1" and with_embedding.name in sidecar["notes"]
    assert sorted(r.json()["embeddings"]["added"]) == ["sd1/neg.json", "sd1/neg.safetensors"]


def test_a_named_embedding_to_a_plain_folder_needs_embeddings_to(with_embedding, tmp_path, run_cli):
    out = tmp_path / "plain"
    r = run_cli("export", "neg", "style", "--to", out, "--json")
    assert r.returncode == 2 and r.json()["error"]["code"] == "usage", r
    assert "--embeddings-to" in r.json()["error"]["hint"]
    assert not out.exists()   # refused before anything was written
    r = run_cli("export", "neg", "style", "--to", out, "--embeddings-to", tmp_path / "emb", "--json")
    assert r.returncode == 0, r
    assert set(tree(out)) == {"sd1/style.safetensors", "sd1/style.json"}
    assert set(tree(tmp_path / "emb")) == {"sd1/neg.safetensors", "sd1/neg.json"}


def test_sync_to_a_plain_folder_reports_embeddings_it_could_not_place(with_embedding, tmp_path, run_cli):
    r = run_cli("sync", "--to", tmp_path / "plain", "--json")
    assert r.returncode == 0, r
    assert [s["name"] for s in r.json()[0]["skipped"]] == ["neg"] and r.json()[0]["embeddings"] is None
    assert not any("neg" in p for p in tree(tmp_path / "plain"))
    human = run_cli("sync", "--to", tmp_path / "plain")
    assert "embedding neg not placed" in human.stderr


def test_named_target_sync_keeps_the_embeddings_folder_in_step(with_embedding, tmp_path, run_cli):
    ui = tmp_path / "ComfyUI"
    (ui / "models" / "loras").mkdir(parents=True)
    (ui / "models" / "embeddings").mkdir()
    theirs = ui / "models" / "embeddings" / "EasyNegative.safetensors"
    theirs.write_bytes(b"the user's own embedding")
    assert run_cli("target", "add", "comfy", ui, "--kind", "comfyui").returncode == 0
    r = run_cli("sync", "comfy", "--json")
    assert r.returncode == 0, r
    folder = ui / "models" / "embeddings"
    assert {"sd1/neg.safetensors", "sd1/neg.json"} <= set(tree(folder))
    again = run_cli("sync", "comfy", "--json")   # in step: nothing written
    assert again.json()[0]["embeddings"]["unchanged"] == 2 and not again.json()[0]["embeddings"]["added"]
    assert run_cli("rm", "neg").returncode == 0
    gone = run_cli("sync", "comfy", "--json")
    assert gone.returncode == 0, gone
    assert sorted(gone.json()[0]["embeddings"]["removed"]) == ["sd1/neg.json", "sd1/neg.safetensors"]
    assert set(tree(folder)) == {"EasyNegative.safetensors"}   # only what lora placed was removed
    assert theirs.read_bytes() == b"the user's own embedding"


def test_embeddings_folder_by_kind_and_by_path(tmp_path):
    assert embeddings_folder(tmp_path / "C" / "models" / "loras") == tmp_path / "C" / "models" / "embeddings"
    assert embeddings_folder(tmp_path / "w" / "models" / "Lora") == tmp_path / "w" / "embeddings"
    assert embeddings_folder(tmp_path / "s" / "Models" / "Lora") == tmp_path / "s" / "Models" / "Embeddings"
    # a case-blind disk: the kind decides between A1111's models/Lora and SwarmUI's Models/Lora
    assert embeddings_folder(tmp_path / "s" / "models" / "lora", "swarmui") == tmp_path / "s" / "Models" / "Embeddings"
    assert embeddings_folder(tmp_path / "w" / "Models" / "Lora", "forge") == tmp_path / "w" / "embeddings"
    assert embeddings_folder(tmp_path / "scan", "invokeai") == tmp_path / "scan" / "embeddings"
    assert embeddings_folder(tmp_path / "plain") is None
    assert embeddings_folder(tmp_path / "plain", "comfyui") is None   # the UI was not found there


def test_comfyui_stanza_names_the_synced_embeddings_folder(with_embedding, tmp_path, run_cli):
    import os

    import yaml

    comfy = tmp_path / "ComfyUI"
    comfy.mkdir()
    tree_dir, emb_dir = tmp_path / "tree" / "loras", tmp_path / "tree" / "embeddings"
    for _ in range(2):   # a second run keeps one stanza
        r = run_cli("sync", "--to", tree_dir, "--embeddings-to", emb_dir, "--comfyui-config", comfy)
        assert r.returncode == 0, r
    text = (comfy / "extra_model_paths.yaml").read_text()
    assert text.count("lorahub:") == 1
    stanza = yaml.safe_load(text)["lorahub"]
    assert os.path.join(stanza["base_path"], stanza["loras"]) == str(tree_dir)
    assert os.path.join(stanza["base_path"], stanza["embeddings"]) == str(emb_dir)
    assert (emb_dir / "sd1" / "neg.safetensors").is_file()
