"""`lora add --in-place` of a UI folder imports the sidecars the UIs left there, as facts with their source."""

from __future__ import annotations

import json

from tests.registry.helpers import write_kohya_sd1


def test_ui_sidecars_become_facts_with_their_source(tmp_path, run_cli):
    ui = tmp_path / "models" / "Lora"
    for i, stem in enumerate(("a1111", "helper", "matrix", "manager")):
        write_kohya_sd1(ui / f"{stem}.safetensors", seed=i + 1)
    (ui / "a1111.json").write_text(json.dumps({"activation text": "inkstyle, bold lines", "sd version": "SD1"}))
    (ui / "helper.civitai.info").write_text(json.dumps({"trainedWords": ["helperword"], "baseModel": "SD 1.5"}))
    (ui / "matrix.cm-info.json").write_text(json.dumps({"TrainedWords": ["matrixword"], "Tags": ["anime"]}))
    (ui / "manager.metadata.json").write_text(json.dumps({"civitai": {"trainedWords": ["lmword"]},
                                                          "tags": ["portrait"]}))
    r = run_cli("add", ui, "--in-place", "--json")
    assert r.returncode == 0, r
    a = run_cli("show", "a1111", "--json").json()
    assert a["trigger_words"] == ["inkstyle", "bold lines"]
    assert a["trigger_word_sources"] == {"inkstyle": "sidecar:a1111.json", "bold lines": "sidecar:a1111.json"}
    assert run_cli("show", "helper", "--json").json()["trigger_word_sources"] == {
        "helperword": "sidecar:helper.civitai.info"}
    matrix = run_cli("show", "matrix", "--json").json()
    assert matrix["trigger_words"] == ["matrixword"] and matrix["tags"] == ["anime"]
    manager = run_cli("show", "manager", "--json").json()
    assert manager["trigger_words"] == ["lmword"] and manager["tags"] == ["portrait"]


def test_the_files_own_metadata_outranks_a_sidecar_and_bad_sidecars_are_warnings(tmp_path, run_cli):
    ui = tmp_path / "Lora"
    write_kohya_sd1(ui / "x.safetensors", seed=1, metadata={"modelspec.trigger_phrase": "fromfile"})
    (ui / "x.json").write_text(json.dumps({"activation text": "fromsidecar"}))
    write_kohya_sd1(ui / "y.safetensors", seed=2)
    (ui / "y.cm-info.json").write_text("{not json")
    r = run_cli("add", ui, "--in-place", "--json")
    assert r.returncode == 0, r
    x = run_cli("show", "x", "--json").json()
    assert x["trigger_words"][0] == "fromfile" and x["trigger_word_sources"]["fromsidecar"] == "sidecar:x.json"
    (y,) = [row for row in r.json() if row["name"] == "y"]
    assert any("sidecar:y.cm-info.json: ignored" in w for w in y["warnings"])


def test_export_then_add_in_place_round_trips_the_trigger_words(tmp_path, run_cli):
    write_kohya_sd1(tmp_path / "in" / "s.safetensors", seed=3)
    assert run_cli("add", tmp_path / "in" / "s.safetensors").returncode == 0
    assert run_cli("set", "s", "--trigger", "roundtrip").returncode == 0
    out = tmp_path / "ui"
    assert run_cli("export", "s", "--to", out, "--layout", "{name}").returncode == 0
    other = {"LORAHUB_HOME": str(tmp_path / "second-home")}
    assert run_cli("add", out, "--in-place", env=other).returncode == 0
    entry = run_cli("show", "s", "--json", env=other).json()
    assert entry["trigger_word_sources"] == {"roundtrip": "sidecar:s.json"}
