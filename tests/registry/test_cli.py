"""The library commands as users and scripts meet them: output, JSON contracts, exit codes (in-process;
test_reliability runs the real entry point in subprocesses)."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

from tests.registry.helpers import write_kohya_sd1

LIST_KEYS = {"name", "sha256", "autov2", "size", "format", "network", "family", "rank", "alpha", "dtype", "base_model",
             "tags", "trigger_words", "added_at", "in_place", "label", "kind", "preferred_weight"}
SHOW_KEYS = LIST_KEYS | {"tensor_sha256", "container", "family_evidence", "components", "ranks", "n_tensors",
                         "n_modules", "tokens", "base_model_source", "base_models", "trigger_word_sources",
                         "tag_sources", "license", "license_source", "metadata", "warnings", "updated_at", "path",
                         "files", "sources", "overrides", "detected", "label_source", "civitai", "previews",
                         "previous_version", "vectors", "widths"}


def test_add_list_show_rm(cli, db_url, src, tmp_home):
    write_kohya_sd1(src / "pixel.safetensors", seed=1)
    write_kohya_sd1(src / "deeper" / "ink.safetensors", seed=2)
    shutil.copy(src / "pixel.safetensors", src / "deeper" / "pixel-copy.safetensors")
    (src / "broken.safetensors").write_bytes(b"\x09\x00\x00\x00\x00\x00\x00\x00{not json")
    (src / "old.bin").write_bytes(pickle.dumps({"lora_down": [1, 2]}, protocol=2))

    code, out, err = cli("add", src, "--tag", "mine", "--json")
    assert code == 1  # some files failed; the good ones still went in
    by_path = {r["path"].rsplit("/", 1)[-1]: r for r in json.loads(out)}
    assert by_path["pixel.safetensors"]["status"] == "added"
    assert by_path["ink.safetensors"]["status"] == "added"
    assert by_path["pixel-copy.safetensors"] == {**by_path["pixel-copy.safetensors"], "status": "duplicate",
                                                 "duplicate_of": "pixel"}
    assert by_path["broken.safetensors"]["error"]["code"] == "corrupt-header"
    assert by_path["old.bin"]["error"]["code"] == "not-an-adapter-file"  # a plain pickle, not a torch checkpoint

    code, out, _ = cli("list", "--json")
    rows = json.loads(out)
    assert code == 0 and [r["name"] for r in rows] == ["ink", "pixel"]
    assert set(rows[0]) == LIST_KEYS and rows[0]["tags"] == ["mine"] and rows[0]["family"] == "sd1"

    code, out, _ = cli("list")
    assert code == 0 and out.splitlines()[0].split() == ["NAME", "FAMILY", "FORMAT", "RANK", "SIZE", "BASE",
                                                          "MODEL", "TAGS", "ADDED"]
    assert out.splitlines()[1].split()[:4] == ["ink", "sd1", "kohya", "4"]

    sha = rows[1]["sha256"]
    code, out, _ = cli("show", sha[:10], "--json")
    shown = json.loads(out)
    assert code == 0 and set(shown) == SHOW_KEYS and shown["name"] == "pixel" and shown["sha256"] == sha
    assert shown["autov2"] == rows[1]["autov2"] == sha[:10]  # Civitai's AutoV2
    assert len(shown["sources"]) == 2 and shown["path"].startswith(str(tmp_home))
    code, out, _ = cli("show", "pixel")
    assert code == 0 and sha in out and "pixel-copy.safetensors" in out and sha[:10].upper() in out

    code, out, _ = cli("rm", "pixel", "ink", "--json")
    assert code == 0 and {r["name"] for r in json.loads(out)} == {"pixel", "ink"}
    code, out, _ = cli("list", "--json")
    assert json.loads(out) == [] and not any((tmp_home / "blobs" / "sha256").rglob("*.*"))


def test_errors_are_one_json_object_with_a_code(cli, db_url, src):
    write_kohya_sd1(src / "pixel.safetensors")
    assert cli("add", src / "pixel.safetensors")[0] == 0
    code, out, _ = cli("show", "pixle", "--json")
    assert code == 1 and json.loads(out)["error"]["code"] == "not-found"
    assert "pixel" in json.loads(out)["error"]["hint"]
    code, out, err = cli("rename", "pixel", "../escape")
    assert code == 1 and "invalid-name" in err and out == ""
    code, out, _ = cli("list", "--sort", "colour", "--json")
    assert code == 2 and json.loads(out)["error"]["code"] == "usage"
    code, out, _ = cli("add", src / "pixel.safetensors", src / "pixel.safetensors", "--name", "x", "--json")
    assert code == 2 and json.loads(out)["error"]["code"] == "usage"
    code, out, _ = cli("add", src / "nope.safetensors", "--json")
    assert code == 1 and json.loads(out)[0]["error"]["code"] == "not-found"


def test_names_that_could_break_a_terminal_or_escape(cli, db_url, src):
    evil = src / "evil\x1b[2J\x07.safetensors"
    write_kohya_sd1(evil, seed=3)
    for bad in ("../../etc/x", "a\x1b[31mred", "x" * 300):
        code, _, err = cli("add", evil, "--name", bad)
        assert code == 1 and "invalid-name" in err and "\x1b[31m" not in err
    code, out, err = cli("add", evil)
    assert code == 0 and "\x1b" not in out and "\x07" not in out
    code, out, _ = cli("list")
    assert "evil_[2J_" in out and "\x1b" not in out


def test_tag_rename_set(cli, db_url, src):
    write_kohya_sd1(src / "a.safetensors")
    cli("add", src / "a.safetensors", "--tag", "wip")
    code, out, _ = cli("tag", "a", "+anime", "-wip", "style")
    assert code == 0 and "anime, style" in out
    code, out, _ = cli("rename", "a", "b", "--json")
    assert code == 0 and json.loads(out)["name"] == "b"
    code, out, _ = cli("set", "b", "--base", "org/model", "--trigger", "tw", "--family", "sdxl", "--json")
    e = json.loads(out)
    assert code == 0 and (e["family"], e["base_model"], e["base_model_source"], e["trigger_words"]) == (
        "sdxl", "org/model", "user", ["tw"])
    assert e["overrides"] == {"family": "sdxl", "base_model": "org/model", "trigger_words": ["tw"]}
    code, out, _ = cli("show", "b")
    assert "set by you" in out
    code, out, _ = cli("list", "--family", "sdxl", "--base", "org/model", "--tag", "ANIME", "--json")
    assert [r["name"] for r in json.loads(out)] == ["b"]
    code, out, _ = cli("set", "b", "--reset", "all", "--json")
    assert json.loads(out)["overrides"] == {} and json.loads(out)["family"] == "sd1"
    assert cli("set", "b")[0] == 2  # nothing to set


def test_in_place_second_run_hashes_nothing(cli, db_url, src, tmp_home):
    for i in range(5):
        write_kohya_sd1(src / "models" / "Lora" / f"l{i}.safetensors", seed=i)
    code, out, _ = cli("add", src / "models", "--in-place", "--json")
    assert code == 0 and [r["status"] for r in json.loads(out)] == ["added"] * 5
    code, out, _ = cli("add", src / "models", "--in-place", "--json")
    results = json.loads(out)
    assert [(r["status"], r["hashed"]) for r in results] == [("unchanged", False)] * 5
    assert [r["name"] for r in results] == [f"l{i}" for i in range(5)]
    assert not (tmp_home / "blobs" / "sha256").exists()  # in place: nothing copied
    code, out, _ = cli("list", "--json")
    assert all(r["in_place"] for r in json.loads(out))


def test_doctor_cli_reports_and_fixes(cli, db_url, src, tmp_home):
    write_kohya_sd1(src / "a.safetensors")
    cli("add", src / "a.safetensors")
    code, out, _ = cli("doctor", "--json")
    assert code == 0 and json.loads(out) == []
    orphan = tmp_home / "blobs" / "sha256" / "ee" / ("e" * 64)
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"left behind")
    code, out, err = cli("doctor")
    assert code == 1 and "orphan-blob" in out and "--fix" in err
    code, out, _ = cli("doctor", "--fix", "--json")
    (finding,) = json.loads(out)
    assert code == 0 and finding["problem"] == "orphan-blob" and finding["fixed"] and not orphan.exists()


def test_tag_removal_works_for_tags_starting_with_h(cli, db_url, src):
    write_kohya_sd1(src / "a.safetensors")
    cli("add", src / "a.safetensors", "--tag", "hot", "--tag", "hd")
    code, out, _ = cli("tag", "a", "-hot", "--json")  # once read as -h -o -t: help, exit 0
    assert code == 0 and json.loads(out)["tags"] == ["hd"]
    code, out, _ = cli("tag", "a", "-hd")
    assert code == 0 and "tags (none)" in out
    code, out, _ = cli("tag", "--help")
    assert code == 0 and "--help" in out and "-TAG" in out


def test_set_refuses_control_characters_in_trigger_words_and_base_ids(cli, db_url, src):
    write_kohya_sd1(src / "a.safetensors")
    cli("add", src / "a.safetensors")
    code, out, _ = cli("set", "a", "--trigger", "x\x1b[31m", "--json")
    assert code == 1 and json.loads(out)["error"]["code"] == "invalid-trigger-word"
    code, out, err = cli("set", "a", "--base", "org/m\x07")
    assert code == 1 and "invalid-base-model" in err and "\x07" not in err
    code, out, _ = cli("show", "a", "--json")
    assert json.loads(out)["overrides"] == {}  # nothing half-set
    code, out, _ = cli("set", "a", "--base", "org/model", "--trigger", "a b", "--json")
    assert code == 0 and json.loads(out)["overrides"] == {"base_model": "org/model", "trigger_words": ["a b"]}



def test_set_weight_is_stored_shown_listed_and_reset(cli, db_url, src):
    write_kohya_sd1(src / "a.safetensors")
    cli("add", src / "a.safetensors")
    code, out, _ = cli("set", "a", "--weight", "0.8", "--json")
    assert code == 0 and json.loads(out)["preferred_weight"] == 0.8
    assert json.loads(out)["overrides"] == {"preferred_weight": 0.8}
    code, out, _ = cli("list", "--json")
    assert [r["preferred_weight"] for r in json.loads(out)] == [0.8]
    for bad in ("nan", "inf", "10.5", "-11"):
        code, out, _ = cli("set", "a", "--weight", bad, "--json")
        assert code == 2 and json.loads(out)["error"]["code"] == "invalid-weight", bad
    code, out, _ = cli("show", "a", "--json")
    assert json.loads(out)["preferred_weight"] == 0.8  # a refused value changes nothing
    code, out, _ = cli("set", "a", "--reset", "weight", "--json")
    assert code == 0 and json.loads(out)["preferred_weight"] is None and json.loads(out)["overrides"] == {}

def test_list_refuses_an_unknown_family_as_set_does(cli, db_url, src):
    write_kohya_sd1(src / "a.safetensors")
    cli("add", src / "a.safetensors")
    code, out, _ = cli("list", "--family", "bogus", "--json")
    assert code == 2 and json.loads(out)["error"]["code"] == "usage" and "sdxl" in json.loads(out)["error"]["message"]
    code, out, _ = cli("list", "--family", "SD1", "--json")
    assert code == 0 and [r["name"] for r in json.loads(out)] == ["a"]


def test_a_too_short_sha_prefix_is_explained(cli, db_url, src):
    write_kohya_sd1(src / "a.safetensors")
    code, out, _ = cli("add", src / "a.safetensors", "--json")
    sha = json.loads(out)[0]["sha256"]
    code, out, _ = cli("show", sha[:7], "--json")
    error = json.loads(out)["error"]
    assert code == 1 and error["code"] == "not-found" and "at least 8 hex characters" in error["message"]
    code, out, _ = cli("show", "zz", "--json")
    assert "nor a sha256 starting with it" in json.loads(out)["error"]["message"]
    assert cli("show", sha[:8])[0] == 0


def test_a_malformed_database_url_is_a_database_error(cli, tmp_home, monkeypatch):
    for url in ("bogus://", "not a url", "postgresql+nodriver://h/db"):
        monkeypatch.setenv("LORAHUB_DATABASE_URL", url)
        code, out, _ = cli("list", "--json")
        error = json.loads(out)["error"]
        assert code == 3 and error["code"] == "database" and "LORAHUB_DATABASE_URL" in error["hint"], url


def test_in_place_pickles_are_not_rehashed_when_unchanged(cli, db_url, src, tmp_home):
    from tests.fixtures.adapters import write_adapter

    folder = src / "models"
    write_adapter(folder / "old.pt", "sd15", "cloneofsimo-pt")
    write_kohya_sd1(folder / "new.safetensors")
    code, out, _ = cli("add", folder, "--in-place", "--json")
    assert code == 0 and sorted(r["status"] for r in json.loads(out)) == ["added", "added"]
    code, out, _ = cli("add", folder, "--in-place", "--json")
    assert code == 0 and [(r["status"], r["hashed"]) for r in json.loads(out)] == [("unchanged", False)] * 2
    code, out, _ = cli("show", "old", "--json")
    entry = json.loads(out)
    assert not entry["in_place"] and entry["files"] == []  # the converted copy is stored, the pickle is a source
    os.utime(folder / "old.pt", ns=(5, 5))  # a changed stat: read (and converted) again
    code, out, _ = cli("add", folder, "--in-place", "--json")
    by_name = {r["name"]: (r["status"], r["hashed"]) for r in json.loads(out)}
    assert by_name == {"old": ("duplicate", True), "new": ("unchanged", False)}
    code, out, _ = cli("add", folder, "--in-place", "--json")
    assert [(r["status"], r["hashed"]) for r in json.loads(out)] == [("unchanged", False)] * 2


def test_re_adding_a_file_restores_its_missing_or_damaged_stored_copy(cli, db_url, src):
    original = write_kohya_sd1(src / "a.safetensors")
    cli("add", original, "--tag", "keep")
    cli("set", "a", "--base", "org/model")
    code, out, _ = cli("show", "a", "--json")
    blob = Path(json.loads(out)["path"])
    damage = [lambda: blob.unlink(),                                   # missing-blob
              lambda: blob.write_bytes(original.read_bytes()[:-10]),   # wrong size
              lambda: _flip_bytes(blob)]                               # bit rot, same size
    for harm in damage:
        harm()
        assert cli("doctor")[0] == 1
        code, out, _ = cli("add", original, "--json")
        (result,) = json.loads(out)
        assert code == 0 and result["status"] == "duplicate" and result["restored"] is True
        assert blob.read_bytes() == original.read_bytes()
        code, out, _ = cli("doctor", "--json")
        assert code == 0 and json.loads(out) == []
    code, out, _ = cli("add", original, "--json")
    assert "restored" not in json.loads(out)[0]  # an intact copy is left alone
    code, out, _ = cli("show", "a", "--json")
    entry = json.loads(out)
    assert entry["tags"] == ["keep"] and entry["overrides"] == {"base_model": "org/model"}
    code, out, _ = cli("add", original)
    assert "restored" not in out
    blob.unlink()
    code, out, _ = cli("add", original)
    assert code == 0 and "restored from this file" in out


def _flip_bytes(path):
    with open(path, "r+b") as fh:
        fh.seek(200)
        fh.write(b"\xff\xff\xff\xff")


def test_add_reports_what_inspection_warns_about(cli, db_url, src):
    """An untrained adapter (every up weight zero) goes in, but the user is told it changes nothing."""
    from safetensors.numpy import load_file, save_file

    path = write_kohya_sd1(src / "untrained.safetensors", seed=1)
    tensors = {k: (v * 0 if ".lora_up." in k else v) for k, v in load_file(str(path)).items()}
    save_file(tensors, str(path), metadata={"ss_network_dim": "4"})
    write_kohya_sd1(src / "trained.safetensors", seed=2)
    code, out, _ = cli("add", src / "untrained.safetensors", src / "trained.safetensors", "--json")
    assert code == 0
    warned = {Path(r["path"]).name: r["warnings"] for r in json.loads(out)}
    assert any("untrained" in w for w in warned["untrained.safetensors"]), warned
    assert not any("untrained" in w for w in warned["trained.safetensors"])
    code, _, err = cli("add", src / "untrained.safetensors")   # a duplicate now: still warned, in the table
    assert code == 0 and "untrained" in err + _
