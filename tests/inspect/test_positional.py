"""#11 item 8, #10 M5: a cloneofsimo list's component comes from its shapes (the name only breaks ties), and a
companion X.text_encoder.pt is reported as itself."""

from __future__ import annotations

import os
import pickle

import pytest

from lorahub_cli.convert.pickle import read_pickle_source
from lorahub_cli.inspect import inspect_file
from tests.fixtures.adapters import write_adapter

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("name", ["anything.pt", "lora_weight.pt", "te.bin"])
def test_a_text_encoder_list_under_any_name_is_a_text_encoder(tmp_path, name):
    path = write_adapter(tmp_path / name, "sd15", "cloneofsimo-pt", components=["text_encoder"])
    assert len(torch.load(path, weights_only=True)) == 96   # 48 modules, all 768 -> 768
    report = inspect_file(path, hash=False)
    assert report.components == ["text_encoder"]
    assert report.n_modules == 48


def test_a_unet_list_named_like_a_text_encoder_is_a_unet(tmp_path):
    path = write_adapter(tmp_path / "x.text_encoder.pt", "sd15", "cloneofsimo-pt")
    report = inspect_file(path, hash=False)
    assert report.components == ["unet"]
    assert any("whatever its name says" in w for w in report.warnings)


class _Reduce:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def test_an_unsafe_companion_is_named_and_not_merged(tmp_path):
    unet = write_adapter(tmp_path / "lora_weight.pt", "sd15", "cloneofsimo-pt")
    marker = tmp_path / "ran"
    (tmp_path / "lora_weight.text_encoder.pt").write_bytes(
        pickle.dumps(_Reduce(os.system, f"touch {marker}"), protocol=2))
    source = read_pickle_source(unet)
    assert source.companion is None
    assert all(k.startswith("unet:") for k in source.tensors)
    (note,) = [n for n in source.raw.notes if "was not merged" in n]
    assert note.startswith("lora_weight.text_encoder.pt was not merged: ")
    assert "unsafe-pickle" in note or "not-an-adapter-file" in note
    assert not marker.exists()


def test_a_pickle_name_too_long_for_its_companion_is_read(tmp_path):
    name = "字" * 80 + ".pt"   # 243 bytes: "<stem>.text_encoder.pt" would be 256
    path = write_adapter(tmp_path / name, "sd15", "cloneofsimo-pt")
    source = read_pickle_source(path)
    assert source.companion is None and source.tensors
