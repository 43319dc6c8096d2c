"""Bad training input for every family: images smaller than --resolution enlarged (counted) or refused as
--small-images says, and a set with mixed or missing captions says how many images each source captioned."""

from __future__ import annotations

import json

from PIL import Image

from lorahub_cli.train import TrainConfig
from lorahub_cli.train.data import check_sizes, load_captioned, load_train_data
from tests.fixtures.pipelines import RESOLUTION
from tests.train.conftest import RED, write_images


def _mixed(folder):
    """4 images: 2 captioned by metadata.jsonl, 1 by a .txt file, 1 not at all."""
    folder.mkdir(parents=True)
    for i in range(4):
        Image.new("RGB", (RESOLUTION, RESOLUTION), RED).save(folder / f"{i}.png")
    (folder / "metadata.jsonl").write_text("\n".join(json.dumps({"file_name": f"{i}.png", "text": "lower"})
                                                     for i in (0, 1)) + "\n")
    (folder / "2.txt").write_text("newer")
    return folder


def test_mixed_captions_are_counted_by_source(tmp_path):
    folder = _mixed(tmp_path / "mixed")
    data = load_train_data(TrainConfig(base="b", data=str(folder), name="n", instance_prompt="wider",
                                       resolution=RESOLUTION).resolved())
    assert data.caption_counts() == {"metadata": 2, "txt": 1, "prompt": 1}


def test_missing_captions_say_what_captioned_the_others(tmp_home, tmp_path, run_cli):
    folder = _mixed(tmp_path / "mixed")
    result = run_cli("train", "--base", tmp_path / "no-base", "--data", folder, "-o", "m", "--resolution",
                     RESOLUTION, "--json")
    assert result.returncode == 1
    error = result.json()["error"]
    assert error["code"] == "missing-caption"
    assert "1 of 4 images" in error["message"]
    assert "captioned 2 by metadata.jsonl/.csv, 1 by .txt files" in error["message"]
    assert not (tmp_home / "runs" / "m").exists()


def test_small_images_are_refused_when_the_flag_says_so(tmp_home, tmp_path, run_cli):
    folder = write_images(tmp_path / "small", [(RED, "lower"), (RED, "newer")], size=(RESOLUTION // 2, RESOLUTION))
    write_images(tmp_path / "small" / "big", [(RED, "lower")])
    args = ["train", "--base", tmp_path / "no-base", "--data", folder, "-o", "s", "--resolution", RESOLUTION]
    refused = run_cli(*args, "--small-images", "refuse", "--json")
    assert refused.returncode == 1
    error = refused.json()["error"]
    assert error["code"] == "image-too-small" and "2 of 3 images" in error["message"]
    assert f"({RESOLUTION // 2}x{RESOLUTION})" in error["message"] and "--small-images upscale" in error["hint"]
    assert not (tmp_home / "runs" / "s").exists()
    bad = run_cli(*args, "--small-images", "shrink", "--json")
    assert bad.returncode == 2 and "--small-images must be one of" in bad.json()["error"]["message"]


def test_small_images_are_enlarged_and_counted_by_default(tmp_path):
    folder = write_images(tmp_path / "small", [(RED, "lower"), (RED, "newer")], size=(RESOLUTION // 2, RESOLUTION))
    write_images(tmp_path / "small" / "big", [(RED, "lower")])
    data = load_train_data(TrainConfig(base="b", data=str(folder), name="n", resolution=RESOLUTION).resolved())
    assert len(data.examples) == 3
    assert check_sizes(data, RESOLUTION, "upscale").startswith("2 of 3 images are smaller than")
    assert check_sizes(data, RESOLUTION // 2, "refuse") is None
    assert [e.caption_from for e in load_captioned(str(folder))] == ["metadata"] * 3
