"""`lora pull` from Civitai against the local Civitai-compatible server: every accepted form, the file
choice, what is recorded with source civitai, the token's handling, and each fault of issue 16."""

from __future__ import annotations

import json

import pytest

from tests.civitai.conftest import lora_bytes
from tests.civitai.server import CFile, CModel, CVersion

TOKEN = "civitai-secret-token-0123456789"


def _pull(run_cli, *args):
    return run_cli("pull", *args, "--json")


@pytest.mark.parametrize("form", ["civitai:11@101", "urn:air:sdxl:lora:civitai:11@101",
                                  "{url}/models/11/pixel-art?modelVersionId=101", "{url}/api/download/models/101",
                                  "https://civitai.com/models/11?modelVersionId=101"])
def test_every_accepted_form_pulls_the_same_version(catalogue, run_cli, form, monkeypatch):
    result = _pull(run_cli, form.format(url=catalogue.url))
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert (out["status"], out["source"]["kind"], out["source"]["revision"]) == ("added", "civitai", "101")
    assert out["civitai"]["model_id"] == 11 and out["civitai"]["version_name"] == "v1.0"


def test_a_pull_records_what_civitai_knows(catalogue, run_cli, tmp_home):
    result = _pull(run_cli, "civitai:11@101")
    assert result.returncode == 0, result.stderr
    name = json.loads(result.stdout)["name"]
    show = json.loads(run_cli("show", name, "--json").stdout)
    assert (show["label"], show["label_source"]) == ("Pony", "api:civitai")
    assert show["trigger_word_sources"] == {"pxart": "api:civitai", "pixel style": "api:civitai"}
    assert show["license"].startswith("civitai (commercial use: Image, Rent")
    civ = show["civitai"]
    assert (civ["model_id"], civ["version_id"], civ["model_name"], civ["version_name"]) == (11, 101, "Pixel Art",
                                                                                          "v1.0")
    assert civ["description"] == "A test LoRA & friends.\nUse it well." and civ["nsfw_level"] == 1
    assert [s["kind"] for s in show["sources"]] == ["civitai"]
    # the preview went into the store by content and is recorded as the entry's preview
    (preview,) = show["previews"]
    assert (tmp_home / preview["path"]).read_bytes().startswith(b"\x89PNG")
    listed = json.loads(run_cli("list", "--json").stdout)
    assert [(e["name"], e["label"]) for e in listed] == [(name, "Pony")]


def test_without_a_version_the_newest_is_pulled_and_again_is_unchanged(catalogue, run_cli):
    first = json.loads(_pull(run_cli, "civitai:11").stdout)
    assert first["source"]["revision"] == "102" and first["status"] == "added"
    before = len(catalogue.requests)
    again = json.loads(_pull(run_cli, "civitai:11").stdout)
    assert again["status"] == "unchanged" and again["name"] == first["name"]
    assert not any(r["path"].startswith("/api/download") for r in catalogue.requests[before:])


def test_the_safetensors_file_is_preferred_and_file_picks_another(civitai, run_cli, tmp_path):
    import torch

    pickled = tmp_path / "p.pt"
    torch.save({"x": torch.zeros(1)}, pickled)
    files = [CFile(1, "style.pt", pickled.read_bytes(), primary=True, fmt="PickleTensor"),
             CFile(2, "style.safetensors", lora_bytes(tmp_path, 3), type="Model", primary=False),
             CFile(3, "data.zip", b"PK\x03\x04", type="Training Data", primary=False, fmt="Other")]
    civitai.add_model(CModel(5, "Style", versions=[CVersion(50, 5, "v1", files)]))
    result = _pull(run_cli, "civitai:5@50")
    out = json.loads(result.stdout)
    assert result.returncode == 0, result.stdout
    assert out["source"]["filename"] == "style.safetensors"
    missing = _pull(run_cli, "civitai:5@50", "--file", "nope.safetensors")
    assert missing.returncode == 1 and json.loads(missing.stdout)["error"]["code"] == "no-downloadable-file"


def test_the_token_is_sent_to_the_api_host_only_and_never_shown_or_stored(catalogue, run_cli, monkeypatch,
                                                                         tmp_home):
    catalogue.token = TOKEN
    catalogue.version(101).needs_token = True
    without = _pull(run_cli, "civitai:11@101")
    assert without.returncode == 3 and json.loads(without.stdout)["error"]["code"] == "gated"
    assert "CIVITAI_API_TOKEN" in json.loads(without.stdout)["error"]["hint"]
    monkeypatch.setenv("CIVITAI_API_TOKEN", "wrong")
    wrong = _pull(run_cli, "civitai:11@101")
    assert wrong.returncode == 3 and json.loads(wrong.stdout)["error"]["code"] == "gated"
    monkeypatch.setenv("CIVITAI_API_TOKEN", TOKEN)
    ok = _pull(run_cli, "civitai:11@101")
    assert ok.returncode == 0, ok.stderr
    downloads = [r for r in catalogue.requests if r["path"] == "/api/download/models/101"]
    assert downloads[-1]["authorization"] == f"Bearer {TOKEN}"
    storage = [r for r in catalogue.requests if r["server"] == "storage"]
    assert storage and all(r["authorization"] is None for r in storage)   # the redirect dropped it
    shown = run_cli("show", json.loads(ok.stdout)["name"], "--json")
    for text in (ok.stdout, ok.stderr, shown.stdout, without.stderr, wrong.stdout):
        assert TOKEN not in text
    for path in tmp_home.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


@pytest.mark.parametrize("fault, code, status", [
    ("early_access", "gated", 3), ("login_page", "login-page", 3), ("wrong_hash", "hash-mismatch", 1)])
def test_a_refused_download_leaves_no_entry(catalogue, run_cli, tmp_home, fault, code, status):
    setattr(catalogue.version(101), fault, True)
    result = _pull(run_cli, "civitai:11@101")
    assert result.returncode == status and json.loads(result.stdout)["error"]["code"] == code
    assert json.loads(run_cli("list", "--json").stdout) == []
    staged = tmp_home / "staging"
    assert not staged.exists() or not [p for p in staged.iterdir() if p.suffix == ".download"]


@pytest.mark.parametrize("ref, code, status", [
    ("civitai:abc", "bad-civitai-ref", 2), ("urn:air:sdxl:lora:huggingface:1@2", "bad-civitai-ref", 2),
    ("https://civitai.com/user/someone", "bad-civitai-ref", 2), ("civitai:12@121", "wrong-model-type", 1),
    ("urn:air:sdxl:checkpoint:civitai:12@121", "wrong-model-type", 1), ("civitai:99@999", "not-found", 1)])
def test_bad_references_have_their_codes(catalogue, run_cli, ref, code, status):
    result = _pull(run_cli, ref)
    assert result.returncode == status and json.loads(result.stdout)["error"]["code"] == code
    assert not any(r["path"].startswith("/api/download") for r in catalogue.requests)


def test_a_version_without_a_model_file_and_an_answer_that_is_not_json(catalogue, run_cli):
    catalogue.add_model(CModel(7, "Empty", versions=[CVersion(70, 7, "v1", [CFile(9, "d.zip", b"PK", type="Archive",
                                                                                fmt="Other")])]))
    empty = _pull(run_cli, "civitai:7@70")
    assert empty.returncode == 1 and json.loads(empty.stdout)["error"]["code"] == "no-downloadable-file"
    catalogue.not_json = True
    html = _pull(run_cli, "civitai:11@101")
    assert html.returncode == 3 and json.loads(html.stdout)["error"]["code"] == "bad-api-answer"


def test_429_is_waited_out_as_retry_after_says(catalogue, run_cli):
    catalogue.rate_limit = 2
    result = _pull(run_cli, "civitai:11@101")
    assert result.returncode == 0, result.stderr
    assert [r["path"] for r in catalogue.api_requests()][:3] == ["/api/v1/model-versions/101"] * 3


def test_a_cut_download_then_a_500_resumes_on_the_next_run(catalogue, run_cli, tmp_home):
    size = len(catalogue.version(101).files[0].data)
    catalogue.cut_after = size // 2
    first = _pull(run_cli, "civitai:11@101")
    assert first.returncode == 3 and json.loads(first.stdout)["error"]["code"] == "network"
    second = _pull(run_cli, "civitai:11@101")
    assert second.returncode == 0, second.stderr
    ranges = [r["range"] for r in catalogue.requests if r["server"] == "storage" and r["path"].startswith("/blobs")]
    assert ranges[-1] == f"bytes={size // 2}-"


def test_a_file_changed_under_the_same_version_is_a_new_entry_and_the_old_one_stays(catalogue, run_cli, tmp_path):
    first = json.loads(_pull(run_cli, "civitai:11@101").stdout)
    catalogue.replace_file(101, lora_bytes(tmp_path, 9))
    second = json.loads(_pull(run_cli, "civitai:11@101").stdout)
    assert second["status"] == "added" and second["name"] != first["name"]
    assert any("changed since" in w for w in second["warnings"])
    names = [e["name"] for e in json.loads(run_cli("list", "--json").stdout)]
    assert sorted(names) == sorted([first["name"], second["name"]])


def test_retry_after_is_the_wait_and_endless_429_is_rate_limited(catalogue):
    from lorahub_cli.errors import RateLimited
    from lorahub_cli.sources.civitai_api import CivitaiApi

    waits: list[float] = []
    api = CivitaiApi(endpoint=catalogue.url, sleep=waits.append)
    catalogue.rate_limit, catalogue.retry_after = 2, "7"
    assert api.version(101)["id"] == 101 and waits == [7.0, 7.0] and api.requests == 3
    catalogue.rate_limit = 100
    with pytest.raises(RateLimited) as refused:
        api.by_hashes(["ABCDEF123456"])
    assert refused.value.code == "rate-limited" and refused.value.exit_code == 3


def test_the_human_report_names_the_version_and_the_label(catalogue, run_cli):
    result = run_cli("pull", "civitai:11@101")
    assert result.returncode == 0, result.stderr
    assert "civitai:11@101 pixel_v1.safetensors" in result.stdout
    assert "Pixel Art / v1.0, base model label Pony" in result.stdout
    shown = run_cli("show", "pixel_v1").stdout
    assert "Pony (api:civitai)" in shown and "Pixel Art / v1.0" in shown and "civitai:11@101" in shown


def test_a_textual_inversion_is_pulled_as_an_embedding(civitai, run_cli, tmp_path):
    from tests.embeddings.files import a1111_safetensors

    data = a1111_safetensors(tmp_path / "easyneg.safetensors").read_bytes()
    civitai.add_model(CModel(40, "EasyNeg", type="TextualInversion", versions=[
        CVersion(400, 40, "v1", [CFile(4000, "easyneg.safetensors", data)], base_model="SD 1.5")]))
    result = _pull(run_cli, "urn:air:sd1:embedding:civitai:40@400")
    assert result.returncode == 0, result.stdout
    shown = json.loads(run_cli("show", json.loads(result.stdout)["name"], "--json").stdout)
    assert shown["kind"] == "embedding" and shown["label"] == "SD 1.5"


def test_a_pickle_from_civitai_is_stored_converted_and_a_second_pull_is_unchanged(civitai, run_cli, tmp_path):
    from tests.fixtures.adapters import write_adapter

    pickled = write_adapter(tmp_path / "old.pt", "sd1", "kohya", rank=4, seed=6).read_bytes()
    civitai.add_model(CModel(60, "Old", versions=[CVersion(600, 60, "v1", [
        CFile(6000, "old.pt", pickled, fmt="PickleTensor")])]))
    first = json.loads(_pull(run_cli, "civitai:60@600").stdout)
    assert first["status"] == "added"
    shown = json.loads(run_cli("show", first["name"], "--json").stdout)
    assert shown["sha256"] != first["source"]["expected_sha256"]          # the conversion is stored
    assert shown["sources"][0]["original_sha256"] == first["source"]["expected_sha256"]
    before = len(civitai.requests)
    again = json.loads(_pull(run_cli, "civitai:60@600").stdout)
    assert again["status"] == "unchanged" and again["name"] == first["name"]
    assert not any(r["path"].startswith("/api/download") for r in civitai.requests[before:])


def test_a_hostile_answer_is_not_followed_or_recorded_as_is():
    from lorahub_cli.sources.civitai import choose_file, civitai_facts
    from lorahub_cli.errors import NoDownloadableFile

    version = {"id": 1, "files": [{"name": "x.safetensors", "type": "Model", "primary": True,
                                   "downloadUrl": "file:///etc/passwd"}],
               "trainedWords": ["ok", "bad\x1b[2J", "x" * 500, 7], "baseModel": "Pony\u202e",
               "images": [{"url": "file:///etc/shadow"}, {"url": "https://image.example/a.png"}]}
    with pytest.raises(NoDownloadableFile):
        choose_file(version)
    facts = civitai_facts(version)
    assert facts.trigger_words == ["ok"] and facts.label is None
    assert [i["url"] for i in facts.images] == ["https://image.example/a.png"]


def test_a_token_in_a_pasted_url_is_never_shown(catalogue, run_cli):
    result = _pull(run_cli, f"https://civitai.com/user/someone?token={TOKEN}")
    assert result.returncode == 2 and json.loads(result.stdout)["error"]["code"] == "bad-civitai-ref"
    assert TOKEN not in result.stdout + result.stderr and "token=***" in result.stdout
    bad_id = _pull(run_cli, f"https://civitai.com/models/abc?token={TOKEN}")
    assert bad_id.returncode == 2 and TOKEN not in bad_id.stdout + bad_id.stderr
