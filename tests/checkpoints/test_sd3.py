"""SD3 single files end to end: the transformer in SAI's MMDiT layout (written from the tiny diffusers pipeline with
the project's naming rules), loaded offline through from_single_file (diffusers' own converter reads every width
from the shapes) with a borrowed folder or with its VAE and three text encoders supplied apart, bit for bit;
`fuse --single-file` from an SD3 folder writes that layout."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from lorahub_cli.archs import module_table
from lorahub_cli.bases import add_base, resolve_base, with_parts
from lorahub_cli.errors import MissingComponent
from lorahub_cli.pipeline import Library
from lorahub_cli.pipeline.build import load_pipeline

PARTS = ("transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3")


def _weights(pipe, parts=PARTS) -> dict[str, torch.Tensor]:
    return {f"{c}.{k}": v for c in parts for k, v in getattr(pipe, c).state_dict().items()
            if not k.endswith("position_ids")}


def _source(tiny_sd3) -> dict[str, torch.Tensor]:
    from diffusers import StableDiffusion3Pipeline

    return _weights(StableDiffusion3Pipeline.from_pretrained(tiny_sd3["folder"], local_files_only=True))


def _differ(want: dict, got: dict) -> list[str]:
    assert set(want) == set(got)
    return [k for k in want if not torch.equal(want[k], got[k])]


def test_sd3_file_round_trip_folder_file_folder(home, tiny_sd3, tmp_path):
    from diffusers import StableDiffusion3Pipeline

    base, folder = resolve_base(str(tiny_sd3["transformer"])), resolve_base(str(tiny_sd3["folder"]))
    assert (base.family, base.holds) == ("sd3", ("transformer",))
    assert module_table(base.folder, "transformer") == module_table(folder.folder, "transformer")
    add_base(str(tiny_sd3["transformer"]), name="tiny-sd3", borrow=tiny_sd3["folder"])
    pipe, _ = load_pipeline("tiny-sd3", device="cpu", dtype="fp32")
    want = _source(tiny_sd3)
    assert _differ(want, _weights(pipe)) == []
    pipe.save_pretrained(tmp_path / "again")
    again = StableDiffusion3Pipeline.from_pretrained(tmp_path / "again", local_files_only=True)
    assert _differ(want, _weights(again)) == []


def test_sd3_transformer_with_its_parts_apart(home, run_cli, tiny_sd3):
    base = with_parts(resolve_base(str(tiny_sd3["transformer"])), borrow=tiny_sd3["configs"])
    with pytest.raises(MissingComponent) as err:
        load_pipeline(base, device="cpu", dtype="fp32")
    for flag in ("--vae", "--text-encoder", "--text-encoder-2", "--text-encoder-3"):
        assert flag in err.value.hint
    saved = run_cli("base", "add", str(tiny_sd3["transformer"]), "--name", "sd3-parts", "--borrow",
                    str(tiny_sd3["configs"]), "--vae", str(tiny_sd3["vae"]), "--text-encoder",
                    str(tiny_sd3["text_encoder"]), "--text-encoder-2", str(tiny_sd3["text_encoder_2"]),
                    "--text-encoder-3", str(tiny_sd3["text_encoder_3"]), "--json")
    assert saved.returncode == 0, saved.stdout + saved.stderr
    pipe, _ = load_pipeline("sd3-parts", device="cpu", dtype="fp32")
    assert _differ(_source(tiny_sd3), _weights(pipe)) == []


@pytest.mark.parametrize("source", ["folder", "checkpoint"])
def test_fuse_single_file_sd3(home, tiny_sd3, tmp_path, source):
    """`fuse --single-file`'s writer from an SD3 folder (the merged pipeline in SAI's layout) and from the SAI file
    (rewritten tensor by tensor), loaded back: the fused transformer bit for bit at fp32. The adapter also targets
    the two norms SAI keeps with swapped halves (norm_out, the last block's context norm); it is checked against the
    tiny base's own tables, as a test-sized SD3 fits no published SD3 table."""
    from lorahub_cli.pipeline.fuse_file import fuse_to_single_file
    from tests.fixtures.adapters import FIXTURE_CACHE
    from tests.pipeline.helpers import random_adapter, write_diffusers

    table = module_table(tiny_sd3["folder"], "transformer", cache_dir=FIXTURE_CACHE)
    shapes = {f"transformer.{n}": (l.out_features, l.in_features) for n, l in table.items() if l.kind == "linear"}
    keys = [k for k in shapes if ".attn." in k or k.endswith(("norm_out.linear", "1.norm1_context.linear"))]
    adapter = write_diffusers(random_adapter(shapes, keys, rank=4, alpha=8.0, seed=5),
                              tmp_path / "sd3-style.safetensors")
    base = resolve_base(str(tiny_sd3["folder" if source == "folder" else "transformer"]))
    own_tables = dataclasses.replace(resolve_base(str(tiny_sd3["folder"])), family="unknown")
    out = tmp_path / "sd3-fused.safetensors"
    with Library() as lib:
        loaded = lib._load(lib._resolve([f"{adapter}:0.7"]), own_tables)
        written = fuse_to_single_file(base, loaded, out, dtype="fp32", force=False)
        want = _weights(lib.pipeline(own_tables, [f"{adapter}:0.7"], fuse=True, device="cpu", dtype="fp32"),
                        ("transformer",))
    assert written.layers == len(keys) and written.warnings == []
    add_base(str(out), name="sd3-fused", borrow=tiny_sd3["folder"])
    got = _weights(load_pipeline("sd3-fused", device="cpu", dtype="fp32")[0], ("transformer",))
    assert [k for k in want if not torch.equal(want[k], _source(tiny_sd3)[k])]   # the adapter changed weights
    assert _differ(want, got) == []


def test_generate_from_an_sd3_file_with_its_parts(home, run_cli, tiny_sd3, tmp_path):
    """`lora generate --base FILE --borrow CONFIGS --vae ... --text-encoder-3 ...`, offline: a PNG whose recipe names
    the file; the same image as generating from the folder it was written from (same seed)."""
    import numpy as np
    from PIL import Image

    parts = [a for c, flag in (("vae", "--vae"), ("text_encoder", "--text-encoder"),
                               ("text_encoder_2", "--text-encoder-2"), ("text_encoder_3", "--text-encoder-3"))
             for a in (flag, str(tiny_sd3[c]))]
    common = ("--steps", "2", "--size", "32x32", "--device", "cpu", "--seed", "7", "--json")
    on_file = run_cli("generate", "low", "--base", str(tiny_sd3["transformer"]), "--borrow", str(tiny_sd3["configs"]),
                      *parts, "-o", str(tmp_path / "file"), *common)
    assert on_file.returncode == 0, on_file.stdout + on_file.stderr
    on_folder = run_cli("generate", "low", "--base", str(tiny_sd3["folder"]), "-o", str(tmp_path / "folder"), *common)
    assert on_folder.returncode == 0, on_folder.stdout + on_folder.stderr
    shot, reference = on_file.json()[0], on_folder.json()[0]
    assert shot["recipe"]["base"] == str(tiny_sd3["transformer"])
    assert np.array_equal(np.asarray(Image.open(shot["path"])), np.asarray(Image.open(reference["path"])))
