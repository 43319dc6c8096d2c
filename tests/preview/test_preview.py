"""`lora preview` on the tiny SD pipeline: a preview per adapter with its trigger words, fixed seed and recipe,
stored by content with the entry, listed by `lora show`, skipped when present unless --force, and made again
bit for bit by `lora generate --from`."""

from __future__ import annotations

import shutil

import pytest
from PIL import Image

from lorahub_cli.pipeline.preview import preview_prompt
from lorahub_cli.previews import image_suffix


@pytest.fixture
def own_library(world, tmp_path, monkeypatch):
    """A copy of the session library (previews are written into it)."""
    home = tmp_path / "home"
    shutil.copytree(world.home, home)
    monkeypatch.setenv("LORAHUB_HOME", str(home))
    return home


def test_prompt_uses_trigger_words_else_the_name():
    assert preview_prompt("{triggers}, a picture", ["zap", "zip"], "my-style") == "zap, zip, a picture"
    assert preview_prompt("{triggers} by {name}", [], "my_style") == "my style by my_style"


def test_only_images_become_previews():
    assert image_suffix(b"\x89PNG\r\n\x1a\n....") == ".png"
    assert image_suffix(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == ".webp"
    assert image_suffix(b"<svg onload=alert(1)>") is None


def test_preview_makes_stores_skips_and_remakes(world, own_library, run_cli, tmp_path):
    run_cli("set", "style", "--trigger", "lower newer")
    made = run_cli("preview", "style", "detail", "--base", str(world.base), "--steps", "2", "--seed", "9", "--json")
    assert made.returncode == 0, made.stderr
    outcomes = {o["name"]: o for o in made.json()}
    assert {o["status"] for o in outcomes.values()} == {"made"}
    assert outcomes["style"]["prompt"] == "lower newer, a detailed picture"
    path = outcomes["style"]["path"]
    shown = run_cli("show", "style", "--json").json()
    assert [p["source"] for p in shown["previews"]] == ["lora preview"]
    assert str(own_library / shown["previews"][0]["path"]) == path
    assert shown["previews"][0]["sha256"] in path   # content-addressed
    recipe = run_cli("recipe", path, "--json").json()
    assert recipe["seed"] == 9 and recipe["prompt"] == "lower newer, a detailed picture"
    assert [a["name"] for a in recipe["adapters"]] == ["style"]
    # present: skipped; --force makes it again (same seed: the same bytes, so still one preview)
    again = run_cli("preview", "style", "--base", str(world.base), "--steps", "2", "--seed", "9", "--json")
    assert again.json()[0]["status"] == "skipped" and again.json()[0]["path"] == path
    forced = run_cli("preview", "style", "--base", str(world.base), "--steps", "2", "--seed", "9", "--force",
                     "--json")
    assert forced.json()[0]["status"] == "made" and forced.json()[0]["path"] == path
    assert len(run_cli("show", "style", "--json").json()["previews"]) == 1
    remade = run_cli("generate", "--from", path, "-o", str(tmp_path / "again"), "--json")
    assert remade.returncode == 0, remade.stderr
    assert Image.open(remade.json()[0]["path"]).tobytes() == Image.open(path).tobytes()


def test_unknown_names_fail_before_the_base_loads(own_library, run_cli):
    result = run_cli("preview", "nope", "--base", "/nonexistent/base", "--json")
    assert result.returncode == 1 and result.json()["error"]["code"] == "not-found"
