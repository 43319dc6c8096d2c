"""`lora identify`, `lora outdated`, `lora update` and `lora list --base-label` against the local server."""

from __future__ import annotations

import json

from tests.civitai.conftest import lora_bytes
from tests.civitai.server import CFile, CModel, CVersion, autov3


def _json(result):
    return json.loads(result.stdout)


def _add(run_cli, path, name):
    result = run_cli("add", str(path), "--name", name, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    return name


def test_autov3_is_a1111s_addnet_hash_and_survives_a_header_edit(catalogue, run_cli, tmp_path):
    # the same tensors with other header metadata: another sha256 (and AutoV2), the same AutoV3
    edited = tmp_path / "edited.safetensors"
    edited.write_bytes(lora_bytes(tmp_path, 1, metadata={"ss_output_name": "renamed by a UI"}))
    served = catalogue.version(101).files[0].data
    assert edited.read_bytes() != served
    _add(run_cli, edited, "mine")
    show = _json(run_cli("show", "mine", "--json"))
    assert show["tensor_sha256"] == autov3(edited.read_bytes()) == autov3(served)
    result = run_cli("identify", "mine", "--json")
    assert result.returncode == 0, result.stdout
    (found,) = _json(result)
    assert (found["status"], found["matched_by"], found["version_id"], found["label"]) == ("identified", "autov3",
                                                                                         101, "Pony")
    show = _json(run_cli("show", "mine", "--json"))
    assert show["label"] == "Pony" and show["civitai"]["model_name"] == "Pixel Art"
    assert show["trigger_word_sources"]["pxart"] == "api:civitai" and len(show["previews"]) == 1


def test_autov2_then_the_original_pickles_sha256(civitai, run_cli, tmp_path):
    import torch

    plain = tmp_path / "plain.safetensors"
    plain.write_bytes(lora_bytes(tmp_path, 4))
    pickled = tmp_path / "old.pt"
    from tests.fixtures.adapters import write_adapter

    write_adapter(pickled, "sd1", "kohya", rank=4, seed=5)
    civitai.add_model(CModel(20, "Plain", versions=[CVersion(200, 20, "v1", [
        CFile(2000, "plain.safetensors", plain.read_bytes(), has_autov3=False)], base_model="Illustrious")]))
    civitai.add_model(CModel(21, "Pickled", versions=[CVersion(210, 21, "v1", [
        CFile(2100, "old.pt", pickled.read_bytes(), fmt="PickleTensor")], base_model="SD 1.5")]))
    _add(run_cli, plain, "plain")
    _add(run_cli, pickled, "pickled")
    result = run_cli("identify", "plain", "pickled", "--json", "--no-previews")
    by = {r["name"]: (r["matched_by"], r["label"]) for r in _json(result)}
    assert by == {"plain": ("autov2", "Illustrious"), "pickled": ("original", "SD 1.5")}
    assert torch  # the pickle was written by torch.save and stored as its safetensors conversion


def test_a_library_is_identified_in_batches_and_then_from_the_cache(catalogue, run_cli, tmp_path):
    for seed, name in ((1, "one"), (2, "two"), (7, "stranger")):
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(lora_bytes(tmp_path, seed))
        _add(run_cli, path, name)
    first = run_cli("identify", "--all", "--json", "--no-previews")
    status = {r["name"]: r["status"] for r in _json(first)}
    assert status == {"one": "identified", "two": "identified", "stranger": "not-found"}
    posts = [r for r in catalogue.api_requests() if r["method"] == "POST"]
    assert len(catalogue.api_requests()) == len(posts) == 2   # AutoV3 for all, then AutoV2 for the stranger
    before = len(catalogue.requests)
    again = run_cli("identify", "--all", "--json", "--no-previews")
    assert {r["name"]: (r["status"], r["cached"]) for r in _json(again)} == {
        "one": ("identified", True), "two": ("identified", True), "stranger": ("not-found", False)}
    assert len(catalogue.requests) == before    # "not found" is cached too: nothing was asked
    refreshed = run_cli("identify", "one", "--refresh", "--json", "--no-previews")
    assert _json(refreshed)[0]["cached"] is False and len(catalogue.requests) == before + 1


def test_offline_asks_nothing_and_a_429_is_waited_out(catalogue, run_cli, tmp_path):
    path = tmp_path / "one.safetensors"
    path.write_bytes(lora_bytes(tmp_path, 1))
    _add(run_cli, path, "one")
    offline = run_cli("identify", "one", "--offline", "--json")
    assert offline.returncode == 1 and _json(offline)[0]["status"] == "unknown" and catalogue.requests == []
    catalogue.rate_limit = 1
    online = run_cli("identify", "one", "--json", "--no-previews")
    assert online.returncode == 0 and _json(online)[0]["status"] == "identified"
    assert [r["method"] for r in catalogue.api_requests()] == ["POST", "POST"]


def test_identify_never_replaces_what_the_user_set(catalogue, run_cli, tmp_path):
    path = tmp_path / "one.safetensors"
    path.write_bytes(lora_bytes(tmp_path, 1))
    _add(run_cli, path, "one")
    assert run_cli("set", "one", "--trigger", "my word", "--base", "my/base").returncode == 0
    assert run_cli("identify", "one", "--no-previews").returncode == 0
    show = _json(run_cli("show", "one", "--json"))
    assert show["trigger_words"] == ["my word"] and show["base_model"] == "my/base"
    assert show["overrides"]["trigger_words"] == ["my word"]
    assert "pxart" in show["detected"]["trigger_words"]     # Civitai's are kept, beneath the user's


def test_list_filters_by_base_label(catalogue, run_cli):
    catalogue.add_model(CModel(30, "Other", versions=[CVersion(300, 30, "v1", [
        CFile(3000, "other.safetensors", lora_bytes_cached(catalogue))], base_model="Illustrious")]))
    assert run_cli("pull", "civitai:11@101").returncode == 0
    assert run_cli("pull", "civitai:30@300").returncode == 0
    pony = _json(run_cli("list", "--base-label", "pony", "--json"))
    assert [(e["name"], e["label"]) for e in pony] == [("pixel_v1", "Pony")]
    human = run_cli("list", "--base-label", "Illustrious")
    assert "sdxl (Illustrious)" in human.stdout and "pixel_v1" not in human.stdout


def lora_bytes_cached(catalogue) -> bytes:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        return lora_bytes(Path(d), 42)


def test_outdated_and_update_link_the_new_entry_and_keep_the_old(catalogue, run_cli):
    old = _json(run_cli("pull", "civitai:11@101", "--json"))["name"]
    assert run_cli("tag", old, "--add", "favourite").returncode == 0
    listed = run_cli("outdated", "--json")
    assert listed.returncode == 1
    assert [(o["name"], o["current"], o["newest"], o["newest_name"]) for o in _json(listed)] == [
        (old, "101", "102", "v2.0")]
    updated = run_cli("update", old, "--move-tags", "--json")
    assert updated.returncode == 0, updated.stdout
    new = _json(updated)
    assert new["status"] == "added" and new["previous_version"] == old
    shown_new = _json(run_cli("show", new["name"], "--json"))
    shown_old = _json(run_cli("show", old, "--json"))
    assert shown_new["previous_version"] == old and shown_new["civitai"]["version_id"] == 102
    assert shown_new["tag_sources"] == {"favourite": "user"} and shown_old["tag_sources"] == {}
    assert run_cli("outdated", "--json").returncode == 0 and _json(run_cli("outdated", "--json")) == []
    again = _json(run_cli("update", old, "--json"))
    assert again["status"] == "unchanged"


def test_cached_answers_live_as_long_as_their_ttl(catalogue, tmp_path):
    from datetime import datetime, timedelta, timezone

    from lorahub_cli.ingest import ingest
    from lorahub_cli.sources.civitai_api import CivitaiApi
    from lorahub_cli.sources.civitai_identify import FOUND_TTL, NOT_FOUND_TTL, identify
    from registry.api import Registry

    known, stranger = tmp_path / "known.safetensors", tmp_path / "stranger.safetensors"
    known.write_bytes(lora_bytes(tmp_path, 1))
    stranger.write_bytes(lora_bytes(tmp_path, 8))
    with Registry() as reg:
        ingest(known, reg, name="known")
        ingest(stranger, reg, name="stranger")

        def run(at):
            api = CivitaiApi(endpoint=catalogue.url)
            entries = [reg.get("known"), reg.get("stranger")]
            return [r.status for r in identify(reg, entries, api=api, previews=False, now=at)], api.requests

        now = datetime.now(timezone.utc)
        assert run(now) == (["identified", "not-found"], 2)
        assert run(now + NOT_FOUND_TTL / 2) == (["identified", "not-found"], 0)
        # "not found" expires first: only the stranger is asked again (its AutoV3, then its AutoV2)
        assert run(now + NOT_FOUND_TTL + timedelta(minutes=1)) == (["identified", "not-found"], 2)
        later = now + FOUND_TTL + timedelta(minutes=1)
        # the found answer expired too: one batch of both AutoV3 hashes, then the stranger's AutoV2
        assert run(later) == (["identified", "not-found"], 2)
        assert [r["method"] for r in catalogue.api_requests()[-2:]] == ["POST", "POST"]


def test_a_label_the_user_set_survives_identify_and_reset_gives_civitais_back(catalogue, run_cli, tmp_path):
    path = tmp_path / "one.safetensors"
    path.write_bytes(lora_bytes(tmp_path, 1))
    _add(run_cli, path, "one")
    assert run_cli("set", "one", "--label", "Illustrious").returncode == 0
    assert run_cli("identify", "one", "--no-previews").returncode == 0
    show = _json(run_cli("show", "one", "--json"))
    assert (show["label"], show["label_source"]) == ("Illustrious", "user")
    assert show["overrides"]["label"] == "Illustrious" and show["detected"]["label"] == "Pony"
    assert [e["name"] for e in _json(run_cli("list", "--base-label", "illustrious", "--json"))] == ["one"]
    assert run_cli("set", "one", "--reset", "label").returncode == 0
    show = _json(run_cli("show", "one", "--json"))
    assert (show["label"], show["label_source"]) == ("Pony", "api:civitai") and "label" not in show["overrides"]
    bad = run_cli("set", "one", "--label", "x" * 65, "--json")
    assert bad.returncode == 1 and _json(bad)["error"]["code"] == "invalid-label"


def test_removing_an_entry_removes_what_civitai_said_about_it(catalogue, run_cli, tmp_home):
    import sqlite3

    name = _json(run_cli("pull", "civitai:11@101", "--json"))["name"]
    assert run_cli("rm", name).returncode == 0
    with sqlite3.connect(tmp_home / "registry.db") as conn:
        counts = [conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("remote_facts", "previews")]
    assert counts == [0, 0]
    assert run_cli("pull", "civitai:11@101", "--json").returncode == 0   # and it can come back


def test_details_fetch_each_model_once_for_its_permissions_and_description(catalogue, run_cli, tmp_path):
    for seed, name in ((1, "one"), (2, "two")):          # two versions of the same model
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(lora_bytes(tmp_path, seed))
        _add(run_cli, path, name)
    result = run_cli("identify", "--all", "--details", "--no-previews", "--json")
    assert result.returncode == 0, result.stdout
    gets = [r["path"] for r in catalogue.api_requests() if r["method"] == "GET"]
    assert gets == ["/api/v1/models/11"]
    show = _json(run_cli("show", "one", "--json"))
    assert show["license"].startswith("civitai (commercial use: Image, Rent") and show["license_source"] == "api:civitai"
    assert show["civitai"]["description"] == "A test LoRA & friends.\nUse it well."
    before = len(catalogue.requests)
    assert run_cli("identify", "--all", "--details", "--no-previews").returncode == 0
    assert len(catalogue.requests) == before                 # the model is cached with the lookups
