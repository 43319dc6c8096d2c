"""`lora export`, `lora sync` and `lora target`: files under human names, idempotence, the manifest, collisions."""

from __future__ import annotations

import json
import os
from pathlib import Path

from lorahub_cli.export.manifest import MANIFEST
from tests.export.conftest import tree


def _blob(tmp_home: Path, name: str, run_cli) -> Path:
    return Path(run_cli("show", name, "--json").json()["path"])


def test_export_places_hard_links_and_sidecars(library, tmp_path, tmp_home, run_cli):
    out = tmp_path / "ui"
    r = run_cli("export", "style", "ink", "--to", out, "--json")
    assert r.returncode == 0, r
    assert sorted(r.json()["added"]) == ["sd1/ink.json", "sd1/ink.safetensors", "sd1/style.json",
                                         "sd1/style.safetensors"]
    assert r.json()["methods"] == {"hardlink": 2, "write": 2}
    assert (out / "sd1/style.safetensors").stat().st_ino == _blob(tmp_home, "style", run_cli).stat().st_ino
    sidecar = json.loads((out / "sd1/style.json").read_text())
    assert sidecar["activation text"] == "mystyle" and sidecar["sd version"] == "SD1"
    assert not [p for p in out.rglob(".*.tmp")]


def test_layout_fields(library, tmp_path, run_cli):
    out = tmp_path / "ui"
    r = run_cli("export", "style", "--to", out, "--layout", "{tag}/{label}/{name}-{sha8}", "--no-sidecars")
    assert r.returncode == 0, r
    (placed,) = tree(out)
    assert placed.startswith("anime/SD 1.5/style-") and placed.endswith(".safetensors")


def test_sync_is_idempotent_and_writes_nothing_when_in_step(library, tmp_path, run_cli):
    out = tmp_path / "ui"
    assert run_cli("sync", "--to", out).returncode == 0
    before = tree(out)
    stamp = (out / MANIFEST).stat().st_mtime_ns
    r = run_cli("sync", "--to", out, "--json")
    assert r.returncode == 0
    assert r.json()[0]["unchanged"] == 6 and not r.json()[0]["added"]
    assert tree(out) == before and (out / MANIFEST).stat().st_mtime_ns == stamp


def test_dry_run_changes_nothing(library, tmp_path, run_cli):
    out = tmp_path / "ui"
    r = run_cli("sync", "--to", out, "--dry-run", "--json")
    assert r.returncode == 0 and len(r.json()[0]["added"]) == 6
    assert not out.exists()


def test_sync_removes_only_its_own_files(library, tmp_path, run_cli):
    out = tmp_path / "ui"
    (out / "sd1").mkdir(parents=True)
    mine = out / "sd1" / "mine.safetensors"
    mine.write_bytes(b"the user's own file")
    assert run_cli("sync", "--to", out).returncode == 0
    assert run_cli("rm", "old").returncode == 0
    (out / "sd1/ink.json").write_text('{"notes": "edited in A1111"}')   # lora's sidecar, changed by the user
    assert run_cli("rm", "ink").returncode == 0
    r = run_cli("sync", "--to", out, "--json")
    assert r.returncode == 0, r
    report = r.json()[0]
    assert sorted(report["removed"]) == ["sd1/ink.safetensors", "sd1/old.json", "sd1/old.safetensors"]
    assert report["released"] == ["sd1/ink.json"]
    assert mine.read_bytes() == b"the user's own file"
    assert json.loads((out / "sd1/ink.json").read_text()) == {"notes": "edited in A1111"}
    # and an empty sync later still leaves them
    assert run_cli("sync", "--to", out, "--search", "no-such-entry").returncode == 0
    assert mine.exists() and (out / "sd1/ink.json").exists() and not (out / "sd1/style.safetensors").exists()


def test_a_file_named_like_ours_is_a_collision(library, tmp_path, run_cli):
    out = tmp_path / "ui"
    (out / "sd1").mkdir(parents=True)
    theirs = out / "sd1" / "style.safetensors"
    theirs.write_bytes(b"not ours")
    r = run_cli("sync", "--to", out, "--json")
    assert r.returncode == 1
    report = r.json()[0]
    assert [c["path"] for c in report["collisions"]] == ["sd1/style.safetensors"]
    assert "sd1/style.json" not in report["added"]          # its sidecar waits with it
    assert theirs.read_bytes() == b"not ours"
    assert (out / "sd1/ink.safetensors").exists()           # the rest went on
    r = run_cli("sync", "--to", out)
    assert r.returncode == 1 and "collision: sd1/style.safetensors" in r.stderr


def test_facts_set_later_reach_the_sidecar_not_the_file(library, tmp_path, tmp_home, run_cli):
    out = tmp_path / "ui"
    assert run_cli("sync", "--to", out).returncode == 0
    adapter = (out / "sd1/style.safetensors").read_bytes()
    assert run_cli("set", "style", "--trigger", "newword").returncode == 0
    r = run_cli("sync", "--to", out, "--json")
    assert r.json()[0]["updated"] == ["sd1/style.json"]
    assert json.loads((out / "sd1/style.json").read_text())["activation text"] == "newword"
    assert (out / "sd1/style.safetensors").read_bytes() == adapter
    assert json.loads((out / "sd1/style.json").read_text())["preferred weight"] == 0  # unset
    assert run_cli("set", "style", "--weight", "0.7").returncode == 0
    assert run_cli("sync", "--to", out, "--json").json()[0]["updated"] == ["sd1/style.json"]
    assert json.loads((out / "sd1/style.json").read_text())["preferred weight"] == 0.7


def test_names_that_differ_only_in_case_get_the_sha(tmp_path, run_cli):
    from tests.registry.helpers import write_kohya_sd1

    for seed, name in ((1, "Style"), (2, "style")):
        write_kohya_sd1(tmp_path / "in" / f"{seed}.safetensors", seed=seed)
        assert run_cli("add", tmp_path / "in" / f"{seed}.safetensors", "--name", name).returncode == 0
    out = tmp_path / "ui"
    assert run_cli("export", "--to", out, "--no-sidecars").returncode == 0
    names = sorted(tree(out))
    assert names[0] == "sd1/Style.safetensors" and names[1].startswith("sd1/style-")


def test_unsafe_names_stay_inside_the_target(tmp_path, run_cli):
    from tests.registry.helpers import write_kohya_sd1

    write_kohya_sd1(tmp_path / "in" / "a.safetensors", seed=1)
    # a name may be dots and ':' (never '/' or '..'); a layout literal may not climb
    assert run_cli("add", tmp_path / "in" / "a.safetensors", "--name", "...:CON").returncode == 0
    out = tmp_path / "ui"
    r = run_cli("export", "...:CON", "--to", out, "--layout", "{name}", "--json")
    assert r.returncode == 0, r
    assert r.json()["added"] == ["____CON.safetensors", "____CON.json"]
    r = run_cli("export", "...:CON", "--to", out, "--layout", "../{name}")
    assert r.returncode == 2 and "bad-layout" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "lorahub-home", "ui"]


def test_a_symlinked_folder_leading_out_is_refused(library, tmp_path, run_cli):
    out, elsewhere = tmp_path / "ui", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "sd1").symlink_to(elsewhere)
    r = run_cli("export", "style", "--to", out, "--json")
    assert r.returncode == 1
    assert {e["code"] for e in r.json()["errors"]} == {"unsafe-path"}
    assert list(elsewhere.iterdir()) == []


def test_symlink_loops(library, tmp_path, run_cli):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    r = run_cli("sync", "--to", loop / "x")
    assert r.returncode != 0 and "target-not-writable" in r.stderr
    out = tmp_path / "ui"
    (out / "sd1").mkdir(parents=True)
    (out / "sd1" / "style.safetensors").symlink_to(out / "sd1" / "style.safetensors")   # a loop in the way
    r = run_cli("sync", "--to", out, "--json")
    assert r.returncode == 1
    assert [c["path"] for c in r.json()[0]["collisions"]] == ["sd1/style.safetensors"]
    assert os.readlink(out / "sd1" / "style.safetensors") == str(out / "sd1" / "style.safetensors")


def test_a_path_longer_than_the_filesystem_allows(library, tmp_path, run_cli):
    out = tmp_path / "ui"
    deep = "/".join(["d" * 240] * 20) + "/{name}"            # ~4,800 bytes: past PATH_MAX
    r = run_cli("export", "style", "--to", out, "--layout", deep, "--json")
    assert r.returncode == 1
    assert {e["code"] for e in r.json()["errors"]} == {"name-too-long"}
    r = run_cli("export", "style", "--to", out, "--layout", "{name}" + "x" * 400, "--json")   # one long name
    assert r.returncode == 0, r
    (name,) = [n for n in tree(out) if n.endswith(".safetensors")]
    assert len(name.encode()) <= 255


def test_targets_add_list_sync_rm(library, tmp_path, run_cli):
    comfy = tmp_path / "ComfyUI"
    (comfy / "models").mkdir(parents=True)
    r = run_cli("target", "add", "comfy", comfy, "--kind", "comfyui", "--tag", "anime", "--json")
    assert r.returncode == 0 and r.json()["folder"] == str(comfy / "models" / "loras")
    assert run_cli("target", "add", "comfy", comfy).returncode == 1          # already-exists
    assert [t["name"] for t in run_cli("target", "list", "--json").json()] == ["comfy"]
    r = run_cli("sync", "comfy", "--json")
    assert r.returncode == 0 and sorted(r.json()[0]["added"]) == ["sd1/style.json", "sd1/style.safetensors"]
    assert run_cli("sync", "nope").returncode == 1
    assert run_cli("target", "rm", "comfy").returncode == 0
    assert (comfy / "models/loras/sd1/style.safetensors").exists()
    assert run_cli("target", "list", "--json").json() == []


def test_extra_model_paths_keeps_the_users_stanzas(library, tmp_path, run_cli):
    import yaml

    comfy = tmp_path / "ComfyUI"
    comfy.mkdir()
    users = "# my own settings\na111:\n    base_path: /webui/\n    loras: models/Lora\n"
    (comfy / "extra_model_paths.yaml").write_text(users)
    tree_dir = tmp_path / "tree"
    for _ in range(2):   # a second run updates in place, never a second stanza
        r = run_cli("sync", "--to", tree_dir, "--comfyui-config", comfy)
        assert r.returncode == 0, r
    text = (comfy / "extra_model_paths.yaml").read_text()
    assert text.startswith(users) and text.count("lorahub:") == 1
    data = yaml.safe_load(text)
    assert data["a111"] == {"base_path": "/webui/", "loras": "models/Lora"}
    assert os.path.join(data["lorahub"]["base_path"], data["lorahub"]["loras"]) == str(tree_dir)
    (comfy / "extra_model_paths.yaml").write_text("a: [broken")
    r = run_cli("sync", "--to", tree_dir, "--comfyui-config", comfy)
    assert r.returncode == 1 and "damaged-file" in r.stderr
    assert (comfy / "extra_model_paths.yaml").read_text() == "a: [broken"


def test_civitai_info_and_previews_beside_the_file(library, tmp_path, tmp_home, run_cli):
    import hashlib

    from registry.api import Registry
    from registry.records import AdapterRecord, PreviewRecord

    image = b"\x89PNG\r\n\x1a\n" + b"preview bytes"
    sha = hashlib.sha256(image).hexdigest()
    with Registry(home=tmp_home) as registry:
        stored = registry.previews_dir / sha[:2] / f"{sha}.png"
        stored.parent.mkdir(parents=True)
        stored.write_bytes(image)
        registry.add_previews("style", [PreviewRecord(sha, ".png")])
        remote = {"civitai": {"model_id": 11, "version_id": 22, "data": {
            "model_name": "Ink Style", "version_name": "v2", "base_model": "SD 1.5", "type": "LORA"}}}
        registry.apply_remote("style", AdapterRecord(sha256=None, size=0, container="", format="", network="",
                                                      family="", remote=remote))
    out = tmp_path / "ui"
    r = run_cli("sync", "--to", out, "--json")
    assert r.returncode == 0, r
    assert {"sd1/style.civitai.info", "sd1/style.preview.png"} <= set(r.json()[0]["added"])
    assert "sd1/ink.civitai.info" not in r.json()[0]["added"]
    info = json.loads((out / "sd1/style.civitai.info").read_text())
    assert (info["id"], info["modelId"], info["baseModel"], info["model"]["name"]) == (22, 11, "SD 1.5", "Ink Style")
    assert info["trainedWords"] == ["mystyle"]
    assert (out / "sd1/style.preview.png").read_bytes() == image
    # and the sidecar reader takes the words back
    from lorahub_cli.export.sidecars import read_sidecar_facts

    facts, _ = read_sidecar_facts(out / "sd1/style.safetensors")
    assert ("trigger_word", "mystyle", "sidecar:style.civitai.info") in facts


def test_a_named_targets_missing_folder_is_never_made(library, tmp_path, run_cli):
    drive = tmp_path / "drive" / "ComfyUI"          # a UI on a drive that is not mounted now
    (drive / "models").mkdir(parents=True)
    assert run_cli("target", "add", "usb", drive, "--kind", "comfyui").returncode == 0
    import shutil

    shutil.rmtree(tmp_path / "drive")
    r = run_cli("sync", "usb", "--json")
    assert r.returncode == 1 and r.json()["error"]["code"] == "target-not-writable"
    assert not (tmp_path / "drive").exists()
    assert run_cli("target", "add", "nowhere", tmp_path / "nope").returncode == 2


def test_names_and_filters_together_keep_the_named_entries_the_filters_match(library, tmp_path, run_cli):
    r = run_cli("export", "style", "ink", "--tag", "anime", "--to", tmp_path / "ui", "--no-sidecars", "--json")
    assert r.returncode == 0 and r.json()["added"] == ["sd1/style.safetensors"]
    r = run_cli("export", "nope", "--to", tmp_path / "ui", "--json")
    assert r.returncode == 1 and r.json()["error"]["code"] == "not-found"


def test_a_sidecar_the_user_edited_is_theirs_and_never_a_collision(library, tmp_path, run_cli):
    out = tmp_path / "ui"
    assert run_cli("sync", "--to", out).returncode == 0
    edited = '{"activation text": "my own words", "notes": "edited in A1111"}'
    (out / "sd1/style.json").write_text(edited)
    first = run_cli("sync", "--to", out, "--json")
    assert first.returncode == 0 and first.json()[0]["released"] == ["sd1/style.json"]
    assert run_cli("set", "style", "--trigger", "changed").returncode == 0   # would rewrite lora's own sidecar
    for _ in range(2):
        r = run_cli("sync", "--to", out, "--json")
        assert r.returncode == 0, r
        assert not r.json()[0]["collisions"] and not r.json()[0]["updated"]
    assert (out / "sd1/style.json").read_text() == edited
    (out / "sd1/style.json").unlink()                  # given back: lora writes it again
    r = run_cli("sync", "--to", out, "--json")
    assert r.json()[0]["added"] == ["sd1/style.json"]
    assert json.loads((out / "sd1/style.json").read_text())["activation text"] == "changed"


def test_dry_run_lists_the_plan_for_a_person(library, tmp_path, run_cli):
    r = run_cli("sync", "--to", tmp_path / "ui", "--dry-run")
    assert r.returncode == 0 and "would add 6" in r.stdout and "+ sd1/style.safetensors" in r.stdout


def test_sync_that_empties_a_folder_removes_it(library, tmp_path, run_cli):
    """The last files of a folder lora made go, then the folder (it used to be fsynced after its removal:
    an internal FileNotFoundError)."""
    out = tmp_path / "ui"
    assert run_cli("sync", "--to", out).returncode == 0
    r = run_cli("sync", "--to", out, "--search", "no-such-entry", "--json")
    assert r.returncode == 0, r
    assert len(r.json()[0]["removed"]) == 6 and not (out / "sd1").exists() and tree(out) == {}
