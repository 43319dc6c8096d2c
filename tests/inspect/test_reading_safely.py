"""Reading any input safely: only regular files are opened (H4, M6), an empty folder is an answer of its own
(M6), over-long names do not stop a sidecar lookup (C1), the container is sniffed from the bytes whatever the
name (M1), and cards cost one pass with bounded results, read by one parser for inspect and pull (H3, #11 item 2).

Hangs are guarded by the subprocess timeout only (no timed assertions): a FIFO that blocks fails the test."""

from __future__ import annotations

import json
import os

import pytest

from lorahub_cli.errors import LoraError
from lorahub_cli.inspect import inspect_file, inspect_paths
from lorahub_cli.inspect.card import MAX_TRIGGER_WORDS, parse_front_matter
from lorahub_cli.inspect.facts import card_facts, metadata_facts
from lorahub_cli.inspect.regular import open_regular
from lorahub_cli.sources.card import card_facts as source_card_facts
from tests.fixtures.adapters import write_adapter

torch = pytest.importorskip("torch")


# --- only regular files ---------------------------------------------------------------------------------
def test_a_fifo_named_like_an_adapter_is_refused_not_waited_on(tmp_path, tmp_home, run_cli):
    folder = tmp_path / "loras"
    write_adapter(folder / "good.safetensors", "sd15", "kohya")
    os.mkfifo(folder / "pipe.safetensors")
    result = run_cli("inspect", "--json", "--no-hash", folder, timeout=120)
    assert result.returncode == 1, result
    by_name = {os.path.basename(r["path"]): r for r in result.json()}
    assert by_name["pipe.safetensors"]["error"]["code"] == "not-a-file"
    assert by_name["good.safetensors"]["family"] == "sd1"


def test_add_of_a_folder_with_a_fifo_adds_the_rest(tmp_path, tmp_home, run_cli):
    folder = tmp_path / "loras"
    write_adapter(folder / "good.safetensors", "sd15", "kohya")
    os.mkfifo(folder / "pipe.safetensors")
    result = run_cli("add", "--json", folder, timeout=120)
    assert result.returncode == 1, result
    codes = {os.path.basename(r["path"]): r.get("error", {}).get("code") for r in result.json()}
    assert codes == {"good.safetensors": None, "pipe.safetensors": "not-a-file"}


def test_a_device_is_refused_without_a_byte_dump(run_cli, tmp_home):
    result = run_cli("inspect", "--json", "/dev/zero", timeout=120)
    assert result.returncode == 1
    (item,) = result.json()
    assert item["error"]["code"] == "not-a-file"
    assert "character device" in item["error"]["message"]


def test_a_symlink_to_a_device_is_refused(tmp_path):
    (tmp_path / "x.safetensors").symlink_to("/dev/zero")
    with pytest.raises(LoraError) as err:
        inspect_file(tmp_path / "x.safetensors", hash=False)
    assert err.value.code == "not-a-file"


def test_open_regular_reads_a_regular_file_blocking(tmp_path):
    (tmp_path / "a").write_bytes(b"abc")
    with open_regular(tmp_path / "a") as f:
        assert f.read() == b"abc"
        assert os.get_blocking(f.fileno())


def test_an_empty_folder_is_a_failure_not_an_empty_list(tmp_path, tmp_home, run_cli):
    (tmp_path / "empty").mkdir()
    (results,) = [list(inspect_paths([tmp_path / "empty"]))]
    assert [r.error.code for r in results] == ["not-found"]
    result = run_cli("inspect", "--json", tmp_path / "empty")
    assert result.returncode == 1
    assert result.json()[0]["error"]["code"] == "not-found"


# --- names ----------------------------------------------------------------------------------------------
def test_a_name_too_long_for_its_sidecars_is_still_inspected(tmp_path, tmp_home, run_cli):
    name = "字" * 79 + ".safetensors"   # 249 bytes: "<stem>.adapter_config.json" would be 264
    write_adapter(tmp_path / "in" / name, "sd15", "kohya")
    write_adapter(tmp_path / "in" / "other.safetensors", "sd15", "kohya", seed=1)
    report = inspect_file(tmp_path / "in" / name, hash=False)
    assert report.family == "sd1"
    result = run_cli("add", "--json", tmp_path / "in")
    assert result.returncode == 0, result
    assert len(result.json()) == 2


def test_a_torch_pickle_named_safetensors_is_read_as_a_pickle(tmp_path):
    tensors_path = write_adapter(tmp_path / "a.pt", "sd15", "kohya")
    renamed = tmp_path / "a.safetensors"
    tensors_path.rename(renamed)
    report = inspect_file(renamed, hash=False)
    assert report.container == "pickle"
    assert report.family == "sd1"


# --- cards and trigger words ----------------------------------------------------------------------------
def test_one_card_parser_for_inspect_and_pull():
    text = ("---\nbase_model: runwayml/stable-diffusion-v1-5\ninstance_prompt: sks dog\n"
            "trigger_words: [zxc style, sks dog]\nactivation_text: qwe\nwidget:\n  - text: a photo of sks dog\n"
            "tags: [lora, lora]\nlicense: mit\n---\nbody\n")
    beside = card_facts(text, "README.md")
    pulled = source_card_facts(parse_front_matter(text), "o/r")
    assert [w.value for w in beside.trigger_words] == pulled.trigger_words
    assert pulled.trigger_words == ["sks dog", "zxc style", "qwe", "a photo of sks dog"]
    assert beside.tags == pulled.tags == ["lora"]
    assert beside.license.value == pulled.license == "mit"


def test_a_card_with_100k_widget_prompts_keeps_a_bounded_list():
    widget = "".join(f"  - text: prompt number {i}\n" for i in range(100_000))
    card = {"instance_prompt": "sks", "widget": [{"text": f"prompt number {i}"} for i in range(100_000)]}
    pulled = source_card_facts(card, "o/r")
    assert len(pulled.trigger_words) == MAX_TRIGGER_WORDS
    assert pulled.trigger_words[:2] == ["sks", "prompt number 0"]
    beside = card_facts(f"---\nwidget:\n{widget}---\n", "README.md")
    assert len(beside.trigger_words) == MAX_TRIGGER_WORDS
    assert any("first" in w for w in beside.warnings)


def test_a_large_readme_beside_an_adapter_is_bounded(tmp_path):
    path = write_adapter(tmp_path / "a.safetensors", "sd15", "kohya")
    words = "".join(f"  - word{i}\n  - word{i}\n" for i in range(20_000))
    (tmp_path / "README.md").write_text(f"---\ntrigger_words:\n{words}---\n" + "SD 1.5 " * 50_000)
    report = inspect_file(path, hash=False)
    assert report.trigger_words[:3] == ["word0", "word1", "word2"]
    assert len(report.trigger_words) == MAX_TRIGGER_WORDS


def test_kohya_tag_frequency_with_thousands_of_folders_is_bounded():
    frequency = {f"{i}_f{i}": {f"tag{i}": 5, "common": 5} for i in range(8_000)}
    folders = {f"{i}_f{i}": {"img_count": 5} for i in range(8_000)}
    facts = metadata_facts({"ss_tag_frequency": json.dumps(frequency), "ss_dataset_dirs": json.dumps(folders)})
    words = [w.value for w in facts.trigger_words]
    assert words[:3] == ["tag0", "common", "tag1"]
    assert len(words) == MAX_TRIGGER_WORDS == len(set(words))
