"""Base resolution (alias, known repo id, folder, saved name), family from configs, `lora base` memory."""

from __future__ import annotations

import json
import shutil

import pytest

from lorahub_cli.archs import REPOS, config_dir
from lorahub_cli.bases import (ALIAS, FOLDER, add_base, bases_file, family_of_configs, list_bases, remove_base,
                               resolve_base, table_hash)
from lorahub_cli.errors import DamagedFile, NotFound, UsageError
from tests.check.conftest import ALIASES, FAMILY


@pytest.mark.parametrize("text", ["sd15", "SD1", "sd1.5", "runwayml/stable-diffusion-v1-5",
                                  "stable-diffusion-v1-5/stable-diffusion-v1-5"])
def test_aliases_and_known_repo_ids_use_the_packaged_configs(home, text):
    base = resolve_base(text)
    assert (base.kind, base.family, base.id) == (ALIAS, "sd1", REPOS["sd15"])
    assert base.folder == config_dir("sd15") and base.components == ("text_encoder", "unet")


@pytest.mark.parametrize("alias", [*ALIASES, "sd3", "flux"])
def test_family_comes_from_the_configs(alias, tmp_path):
    folder = shutil.copytree(config_dir(alias), tmp_path / "model")
    assert family_of_configs(folder) == {"sd3": "sd3", **FAMILY}[alias]


def test_sd1_and_sd2_share_a_pipeline_class_and_differ_in_cross_attention(base_folders):
    index = {a: json.loads((base_folders[a] / "model_index.json").read_text())["_class_name"] for a in ("sd15", "sd21")}
    assert index["sd15"] == index["sd21"]
    assert (family_of_configs(base_folders["sd15"]), family_of_configs(base_folders["sd21"])) == ("sd1", "sd2")


def test_folder_base(home, base_folders):
    base = resolve_base(str(base_folders["sdxl"]))
    assert base.kind == FOLDER and base.family == "sdxl" and base.id == str(base_folders["sdxl"].resolve())
    assert set(base.components) == {"unet", "text_encoder", "text_encoder_2"}


def test_unknown_and_incomplete_bases_are_refused(home, tmp_path):
    with pytest.raises(NotFound, match="not an alias"):
        resolve_base("no such base")
    (tmp_path / "empty").mkdir()
    with pytest.raises(NotFound, match="model_index.json"):
        resolve_base(str(tmp_path / "empty"))
    with pytest.raises(UsageError):
        resolve_base("  ")


def test_table_hash_follows_the_architecture(home, base_folders):
    assert table_hash(resolve_base("sd15")) == table_hash(resolve_base(str(base_folders["sd15"])))
    assert table_hash(resolve_base("sd15")) != table_hash(resolve_base("sd21"))


def test_saved_bases_round_trip_in_python(home, base_folders):
    record = add_base(str(base_folders["sd21"]), name="mine")
    assert (record.name, record.kind, record.family) == ("mine", FOLDER, "sd2")
    assert record.table_hash == table_hash(resolve_base(str(base_folders["sd21"])))
    assert [b.name for b in list_bases()] == ["mine"]
    resolved = resolve_base("mine")          # a saved name works wherever --base does
    assert resolved.family == "sd2" and resolved.folder == base_folders["sd21"].resolve()
    stored = json.loads(bases_file().read_text())
    assert [b["name"] for b in stored["bases"]] == ["mine"]
    assert not [p for p in bases_file().parent.iterdir() if p.name.startswith(".bases-")]  # no temp left
    with pytest.raises(UsageError):
        add_base("sd15", name="sdxl")       # an alias name for another base would be shadowed
    with pytest.raises(UsageError):
        add_base("sd15", name="../evil")
    assert remove_base("mine").name == "mine" and list_bases() == []
    with pytest.raises(NotFound):
        remove_base("mine")
    bases_file().write_text("{not json")
    with pytest.raises(DamagedFile):
        list_bases()


def test_base_add_list_rm_cli_json(home, base_folders, run_cli, adapters):
    added = run_cli("base", "add", base_folders["sd15"], "--name", "my-sd15", "--json")
    assert added.returncode == 0, added
    record = added.json()
    assert record["name"] == "my-sd15" and record["family"] == "sd1" and record["kind"] == "folder"
    assert record["table_hash"] == table_hash(resolve_base(str(base_folders["sd15"])))
    add_base("sdxl")                                  # a second one, saved from Python: one list for both
    listed = run_cli("base", "list", "--json")
    assert listed.returncode == 0 and [b["name"] for b in listed.json()] == ["my-sd15", "stable-diffusion-xl-base-1.0"]
    checked = run_cli("check", adapters["sd15"], "--base", "my-sd15", "--json")
    assert checked.returncode == 0 and checked.json()[0]["verdict"] == "compatible"
    assert run_cli("base", "rm", "my-sd15", "--json").json()["name"] == "my-sd15"
    assert [b.name for b in list_bases()] == ["stable-diffusion-xl-base-1.0"]
