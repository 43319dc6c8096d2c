"""Training data: imagefolder metadata, .txt captions, DreamBooth folders, and the errors for bad sets."""

from __future__ import annotations

import json

import pytest

from lorahub_cli.errors import EmptyDataset, MissingCaption, MissingDependency, NotFound, UnreadableImage
from lorahub_cli.train.config import TrainConfig
from lorahub_cli.train.data import load_captioned, load_train_data, pixels
from tests.train.conftest import BLUE, RED, write_images


def test_metadata_jsonl_captions_follow_the_imagefolder_convention(tmp_path):
    write_images(tmp_path / "d", [(RED, "lower"), (BLUE, "newer")])
    sub = write_images(tmp_path / "d" / "more", [(RED, "wider")], captions="none")
    (sub / "metadata.jsonl").write_text(json.dumps({"file_name": "0.png", "text": "row"}) + "\n")
    found = {e.image.relative_to(tmp_path / "d").as_posix(): e.caption for e in load_captioned(str(tmp_path / "d"))}
    assert found == {"0.png": "lower", "1.png": "newer", "more/0.png": "row"}


def test_txt_captions_beside_images(tmp_path):
    write_images(tmp_path / "d", [(RED, "lower"), (BLUE, "newer wow")], captions="txt")
    assert [e.caption for e in load_captioned(str(tmp_path / "d"))] == ["lower", "newer wow"]


def test_missing_captions_are_named(tmp_path):
    folder = write_images(tmp_path / "d", [(RED, "lower"), (BLUE, "newer"), (RED, "x")], captions="txt")
    (folder / "1.txt").unlink()
    with pytest.raises(MissingCaption) as err:
        load_captioned(str(folder))
    assert err.value.code == "missing-caption" and "1.png" in err.value.message and "0.png" not in err.value.message


def test_instance_prompt_captions_uncaptioned_images(tmp_path):
    folder = write_images(tmp_path / "d", [(RED, ""), (BLUE, "")], captions="none")
    assert {e.caption for e in load_captioned(str(folder), fallback="lower")} == {"lower"}


def test_empty_caption_in_metadata_is_refused(tmp_path):
    folder = write_images(tmp_path / "d", [(RED, "lower"), (BLUE, " ")])
    with pytest.raises(MissingCaption, match="row 2"):
        load_captioned(str(folder))


def test_metadata_naming_a_missing_file(tmp_path):
    folder = write_images(tmp_path / "d", [(RED, "lower")])
    with open(folder / "metadata.jsonl", "a") as f:
        f.write(json.dumps({"file_name": "gone.png", "text": "newer"}) + "\n")
    with pytest.raises(NotFound, match="gone.png"):
        load_captioned(str(folder))


def test_empty_folder(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "notes.txt").write_text("no images here")
    with pytest.raises(EmptyDataset) as err:
        load_captioned(str(tmp_path / "d"))
    assert err.value.code == "empty-dataset"


def test_unreadable_image(tmp_path):
    folder = write_images(tmp_path / "d", [(RED, "lower")])
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png")
    with pytest.raises(UnreadableImage) as err:
        load_captioned(str(folder))
    assert err.value.code == "unreadable-image" and "broken.png" in err.value.message


def test_hub_dataset_id_without_the_datasets_package_is_not_found(tmp_path, monkeypatch):
    from lorahub_cli.train.data import load_hub_dataset

    monkeypatch.chdir(tmp_path)
    try:
        import datasets  # noqa: F401
        pytest.skip("datasets is installed here; this checks the message given without it")
    except ImportError:
        pass
    # most likely a folder that is not there: say so, and how a Hub dataset would work
    with pytest.raises(NotFound) as err:
        load_captioned("someone/pokemon-captions")
    assert "no such folder" in err.value.message and "pip install datasets" in err.value.hint
    with pytest.raises(MissingDependency) as err:     # asked for a Hub dataset outright: the package is missing
        load_hub_dataset("someone/pokemon-captions")
    assert err.value.exit_code == 3 and "pip install datasets" in err.value.hint


def test_a_mistyped_local_path_is_not_found(tmp_path, monkeypatch):
    # "data/nope" reads like owner/name, but data/ is a folder here: a typo, not a Hub dataset
    monkeypatch.chdir(tmp_path)
    write_images(tmp_path / "data" / "set", [(RED, "lower")])
    with pytest.raises(NotFound, match=r"no such folder: data/nope \(the folder data exists"):
        load_captioned("data/nope")


def test_dreambooth_uses_the_instance_prompt_and_class_captions(tmp_path):
    inst = write_images(tmp_path / "inst", [(RED, "ignored"), (RED, "ignored")])
    cls = write_images(tmp_path / "cls", [(BLUE, ""), (BLUE, ""), (BLUE, "")], captions="none")
    config = TrainConfig(base="b", data=str(inst), name="n", mode="dreambooth", instance_prompt="lower wow",
                         class_data=str(cls), class_prompt="lower").resolved()
    data = load_train_data(config)
    assert [e.caption for e in data.instances] == ["lower wow"] * 2
    assert [e.caption for e in data.classes] == ["lower"] * 3
    assert len(data) == 3  # the longer list sets the epoch, as the diffusers script


def test_pixels_resize_crop_and_flip(tmp_path):
    from PIL import Image

    img = Image.new("RGB", (64, 32), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 32, 32))   # left half white
    img.save(tmp_path / "half.png")
    from lorahub_cli.train.data import Example

    ex = Example(tmp_path / "half.png", "x", (64, 32))
    left = pixels(ex, 16, center_crop=False, crop_u=0.0)          # 32x16 after resize; crop at x=0
    right = pixels(ex, 16, center_crop=False, crop_u=0.999)       # crop at x=16
    assert left.shape == (3, 16, 16)
    assert left.mean().item() > 0.9 and right.mean().item() < -0.9
    flipped = pixels(ex, 16, center_crop=True, flip=True)
    centred = pixels(ex, 16, center_crop=True)
    assert flipped[0, 0, 0] == centred[0, 0, -1] and flipped[0, 0, 0] != centred[0, 0, 0]
