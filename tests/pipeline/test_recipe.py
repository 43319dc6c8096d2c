"""The PNG recipe: JSON and A1111 "parameters" written, read back; numbered files never overwritten."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from lorahub_cli.errors import NoRecipe, UsageError
from lorahub_cli.pipeline.generate import next_number, parse_size, read_batch_file, save_png
from lorahub_cli.pipeline.recipe import (PARAMETERS_KEY, RECIPE_KEY, Recipe, parse_parameters, png_text,
                                         read_parameters, read_recipe)


def _recipe(**changes) -> Recipe:
    values = dict(prompt='a "quoted", comma: prompt\nsecond line — ünïcode', negative_prompt="blurry, low",
                  seed=2**40 + 7, steps=25, guidance=7.5, scheduler="dpm-karras", width=64, height=32,
                  base="sd15", base_id="stable-diffusion-v1-5/stable-diffusion-v1-5",
                  adapters=[{"name": "style", "sha256": "ab" * 32, "weight": 0.8, "tensor_sha256": "ef" * 32},
                            {"name": "my:odd, name", "sha256": "cd" * 32, "weight": -0.25, "path": "/x/y.safetensors"}],
                  stack="merge", fused=False, device="cpu", dtype="fp32", versions={"lorahub-cli": "0.1.0"})
    values.update(changes)
    return Recipe(**values)


def test_recipe_round_trips_through_png(tmp_path):
    recipe = _recipe()
    image = Image.new("RGB", (64, 32), (10, 20, 30))
    path = save_png(image, recipe, tmp_path / "out")
    assert path.name == f"00001-{recipe.seed}.png"
    assert read_recipe(path) == recipe
    with Image.open(path) as back:
        assert back.size == (64, 32) and back.getpixel((3, 3)) == (10, 20, 30)
    assert json.loads(png_text(path)[RECIPE_KEY])["adapters"][1]["path"] == "/x/y.safetensors"


def test_a1111_parameters_text_is_written_and_parses_back(tmp_path):
    recipe = _recipe()
    text = recipe.a1111_parameters()
    lines = text.split("\n")
    assert lines[-1].startswith("Steps: 25, Sampler: DPM++ 2M Karras, CFG scale: 7.5, Seed: 1099511627783, "
                                "Size: 64x32, Model: stable-diffusion-v1-5/stable-diffusion-v1-5, ")
    path = save_png(Image.new("RGB", (8, 8)), recipe, tmp_path)
    parsed = read_parameters(path)
    # A1111's <lora:NAME:W> tags end the prompt; Lora hashes holds the tensor hash (AutoV3) where it is known
    assert parsed["prompt"] == recipe.prompt + " <lora:style:0.8> <lora:my_odd_ name:-0.25>"
    assert parsed["negative_prompt"] == recipe.negative_prompt
    settings = parsed["settings"]
    assert settings["Seed"] == str(recipe.seed) and settings["Size"] == "64x32"
    assert settings["Lora hashes"] == f"style: {'ef' * 6}"
    assert settings["Version"] == "lorahub-cli 0.1.0"


def test_plain_a1111_text_without_negative_prompt():
    parsed = parse_parameters("a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 42, Size: 512x768")
    assert parsed == {"prompt": "a cat", "negative_prompt": "",
                      "settings": {"Steps": "20", "Sampler": "Euler a", "CFG scale": "7", "Seed": "42",
                                   "Size": "512x768"}}


def test_images_without_a_recipe_are_refused_clearly(tmp_path):
    from PIL.PngImagePlugin import PngInfo

    plain = tmp_path / "plain.png"
    Image.new("RGB", (4, 4)).save(plain)
    with pytest.raises(NoRecipe, match="no generation settings"):
        read_recipe(plain)
    a1111 = tmp_path / "a1111.png"
    info = PngInfo()
    info.add_text(PARAMETERS_KEY, "a cat\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 4x4")
    Image.new("RGB", (4, 4)).save(a1111, pnginfo=info)
    with pytest.raises(NoRecipe, match="only A1111"):
        read_recipe(a1111)
    broken = tmp_path / "broken.png"
    info = PngInfo()
    info.add_itxt(RECIPE_KEY, json.dumps({"prompt": "x", "seed": 1}))
    Image.new("RGB", (4, 4)).save(broken, pnginfo=info)
    with pytest.raises(NoRecipe, match="lacks steps"):
        read_recipe(broken)
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(NoRecipe, match="not an image"):
        read_recipe(tmp_path / "text.png")


def test_numbered_files_are_never_overwritten(tmp_path):
    (tmp_path / "00007-1.png").write_bytes(b"keep me")
    (tmp_path / "notes.txt").write_text("x")
    assert next_number(tmp_path) == 8
    first = save_png(Image.new("RGB", (4, 4)), _recipe(seed=5), tmp_path)
    second = save_png(Image.new("RGB", (4, 4)), _recipe(seed=5), tmp_path)
    assert (first.name, second.name) == ("00008-5.png", "00009-5.png")
    assert (tmp_path / "00007-1.png").read_bytes() == b"keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00007-1.png", "00008-5.png", "00009-5.png", "notes.txt"]


def test_saved_pngs_get_the_modes_of_the_umask_not_private_ones(tmp_path, umask_027):
    import stat

    path = save_png(Image.new("RGB", (4, 4)), _recipe(seed=5), tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640          # 0o666 & ~0o027; tempfile alone gives 0o600


def test_sizes_and_batch_files(tmp_path):
    assert parse_size("768x512") == (768, 512) and parse_size("640") == (640, 640) and parse_size(None) == (None, None)
    with pytest.raises(UsageError):
        parse_size("big")
    batch = tmp_path / "prompts.txt"
    batch.write_text("# comment\nfirst prompt\n\n  second prompt  \n", encoding="utf-8")
    assert read_batch_file(batch) == ["first prompt", "second prompt"]
    batch.write_text("\n# only comments\n")
    with pytest.raises(UsageError):
        read_batch_file(batch)


@pytest.mark.parametrize("version", ["two", None, [1]])
def test_a_recipe_with_an_unreadable_version_is_refused(version):
    data = {**_recipe().to_dict(), "version": version}
    with pytest.raises(NoRecipe, match="version"):
        Recipe.from_dict(data)
