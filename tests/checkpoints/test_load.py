"""A single-file base loads through diffusers' from_single_file with local configs only (HF_HUB_OFFLINE=1, an
empty cache): weights equal to the diffusers folder it was written from; what it lacks is missing-component."""

from __future__ import annotations

import pytest
import torch

from lorahub_cli.bases import add_base, resolve_base
from lorahub_cli.errors import MissingComponent
from lorahub_cli.pipeline.build import load_pipeline


def _state(pipe) -> dict[str, torch.Tensor]:
    return {f"{c}.{k}": v for c in ("unet", "vae", "text_encoder") for k, v in getattr(pipe, c).state_dict().items()
            if not k.endswith("position_ids")}


def test_round_trip_folder_file_folder(home, tiny_file, tmp_path):
    """folder -> single file (original layout) -> pipeline -> folder again: every weight bit for bit, offline."""
    from tests.pipeline.helpers import load_plain

    add_base(str(tiny_file["full"]), name="tiny-file", borrow=tiny_file["folder"])
    pipe, base = load_pipeline("tiny-file", device="cpu", dtype="fp32")
    assert (base.kind, base.borrow) == ("checkpoint", str(tiny_file["folder"]))
    want, got = _state(load_plain(tiny_file["folder"])), _state(pipe)
    assert set(want) == set(got)
    assert [k for k in want if not torch.equal(want[k], got[k])] == []
    pipe.save_pretrained(tmp_path / "again")
    again = _state(load_plain(tmp_path / "again"))
    assert [k for k in want if not torch.equal(want[k], again[k])] == []


def test_generate_from_a_single_file(home, run_cli, tiny_file, tmp_path):
    add_base(str(tiny_file["full"]), name="tiny-file", borrow=tiny_file["folder"])
    result = run_cli("generate", "lower newer", "--base", "tiny-file", "--steps", "2", "--size", "32x32",
                     "--device", "cpu", "-o", str(tmp_path / "out"), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert list((tmp_path / "out").glob("*.png"))


def test_a_file_without_its_vae_is_missing_component(home, tiny_file):
    base = resolve_base(str(tiny_file["no_vae"]))
    with pytest.raises(MissingComponent) as err:
        load_pipeline(base, device="cpu", dtype="fp32")
    assert "vae" in err.value.message and "--borrow" in err.value.hint
    # borrowing the folder supplies it
    add_base(str(tiny_file["no_vae"]), name="no-vae", borrow=tiny_file["folder"])
    pipe, _ = load_pipeline("no-vae", device="cpu", dtype="fp32")
    assert pipe.vae is not None


def test_offline_with_nothing_cached_never_reads_the_weights(home, real_files, monkeypatch):
    """A real-shaped SD1.5 file (GBs of holes) with no borrowed folder and an empty HF cache: missing-component
    naming the configs, raised before the weights are read (the file's data would read as zeros)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    base = resolve_base(str(real_files["sd15"]))
    with pytest.raises(MissingComponent) as err:
        load_pipeline(base, device="cpu", dtype="fp32")
    assert "runwayml/stable-diffusion-v1-5" in err.value.message and "Hugging Face cache" in err.value.message


def test_borrow_only_for_a_checkpoint(home, tiny_file):
    from lorahub_cli.errors import UsageError

    with pytest.raises(UsageError):
        add_base(str(tiny_file["folder"]), name="x", borrow=tiny_file["folder"])


def test_train_loads_a_single_file_base(home, tiny_file):
    """`lora train --base NAME` with a base saved from a single file: the parts training needs, the folder's
    weights bit for bit, and the pipeline's own scheduler for validation images."""
    from lorahub_cli.train.models import load_base

    add_base(str(tiny_file["full"]), name="tiny-file", borrow=tiny_file["folder"])
    got, want = load_base("tiny-file"), load_base(str(tiny_file["folder"]))
    for part in ("unet", "vae", "text_encoder"):
        a, b = getattr(got, part).state_dict(), getattr(want, part).state_dict()
        assert [k for k in b if not k.endswith("position_ids") and not torch.equal(a[k], b[k])] == []
    assert got.prediction_type == want.prediction_type and got.scheduler is not None


def test_train_refuses_a_single_file_without_configs(home, tiny_file):
    from lorahub_cli.train.models import load_base

    with pytest.raises(MissingComponent):
        load_base(str(tiny_file["full"]))   # a custom-sized U-Net with no borrowed folder: no configs to read it
