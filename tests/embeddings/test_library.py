"""Embeddings as library entries (kind: embedding) through the CLI: add (a pickle stored as verified
safetensors), list --kind, show, rm, pull from the Hub; merge still needs a LoRA (textual-inversion)."""

from __future__ import annotations

import hashlib

from safetensors import safe_open

from tests.embeddings.files import a1111_pt, a1111_safetensors, diffusers_ti, sdxl_ti
from tests.registry.helpers import write_kohya_sd1


def test_add_list_show_rm(tmp_path, run_cli):
    files = [a1111_pt(tmp_path / "BadHands.pt"), a1111_safetensors(tmp_path / "EasyNeg.safetensors"),
             sdxl_ti(tmp_path / "xl_style.safetensors"), write_kohya_sd1(tmp_path / "pixel.safetensors", seed=1)]
    added = run_cli("add", *files, "--json")
    assert added.returncode == 0, added
    assert [r["status"] for r in added.json()] == ["added"] * 4

    assert [r["name"] for r in run_cli("list", "--kind", "embedding", "--json").json()] == [
        "BadHands", "EasyNeg", "xl_style"]
    assert [r["name"] for r in run_cli("list", "--kind", "lora", "--json").json()] == ["pixel"]
    bad_kind = run_cli("list", "--kind", "checkpoint", "--json")
    assert bad_kind.returncode == 2 and bad_kind.json()["error"]["code"] == "usage"

    shown = run_cli("show", "BadHands", "--json").json()
    assert (shown["kind"], shown["format"], shown["network"], shown["family"]) == ("embedding", "a1111",
                                                                                 "embedding", "sd1")
    assert (shown["tokens"], shown["vectors"], shown["widths"]) == (["BadHands"], 4, [768])
    # the pickle is stored as the safetensors embedding A1111 and ComfyUI load, its name and step kept
    assert shown["sources"][0]["original_sha256"] == hashlib.sha256(files[0].read_bytes()).hexdigest()
    with safe_open(shown["path"], "pt") as f:
        assert list(f.keys()) == ["emb_params"] and f.get_tensor("emb_params").shape == (4, 768)
        assert f.metadata()["name"] == "bad-hands" and f.metadata()["step"] == "3000"
    human = run_cli("show", "xl_style")
    assert "2 vector(s), width 768 + 1280" in human.stdout, human

    removed = run_cli("rm", "EasyNeg", "--json")
    assert removed.returncode == 0 and removed.json()[0]["blob_deleted"] is True
    assert [r["name"] for r in run_cli("list", "--kind", "embedding", "--json").json()] == ["BadHands", "xl_style"]


def test_a_bad_embedding_is_refused_and_nothing_is_recorded(tmp_path, run_cli):
    import torch
    from safetensors.torch import save_file

    save_file({"emb_params": torch.zeros(2, 700)}, str(tmp_path / "wide.safetensors"))
    out = run_cli("add", tmp_path / "wide.safetensors", "--json")
    assert out.returncode == 1 and "invalid-embedding" in out.stdout + out.stderr, out
    assert run_cli("list", "--json").json() == []


def test_merge_of_an_embedding_is_still_textual_inversion(tmp_path, run_cli):
    run_cli("add", a1111_safetensors(tmp_path / "EasyNeg.safetensors"),
            write_kohya_sd1(tmp_path / "pixel.safetensors", seed=1))
    out = run_cli("merge", "EasyNeg", "pixel", "-o", "merged", "--json")
    assert out.returncode == 1 and out.json()["error"]["code"] == "textual-inversion", out


def test_pull_of_a_concepts_library_repo(tmp_path, run_cli, hub, hf_env):
    weights = diffusers_ti(tmp_path / "learned_embeds.safetensors").read_bytes()
    hub.create_repo("sd-concepts-library/cat-toy", {"learned_embeds.safetensors": weights,
                                                   "token_identifier.txt": b"<cat-toy>"})
    out = run_cli("pull", "sd-concepts-library/cat-toy", "--json")
    assert out.returncode == 0, out
    shown = run_cli("show", out.json()["name"], "--json").json()
    assert (shown["kind"], shown["format"], shown["tokens"], shown["sha256"]) == (
        "embedding", "diffusers-ti", ["<cat-toy>"], hashlib.sha256(weights).hexdigest())


def test_doctor_rebuild_records_embeddings_again(tmp_path, tmp_home, run_cli):
    run_cli("add", a1111_safetensors(tmp_path / "EasyNeg.safetensors"))
    sha = run_cli("show", "EasyNeg", "--json").json()["sha256"]
    for path in tmp_home.glob("registry.db*"):
        path.unlink()
    rebuilt = run_cli("doctor", "--rebuild", "--json")
    assert rebuilt.returncode in (0, 1), rebuilt
    shown = run_cli("list", "--kind", "embedding", "--json").json()
    assert [r["sha256"] for r in shown] == [sha]
