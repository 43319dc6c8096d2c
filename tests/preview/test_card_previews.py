"""A Hub card's sample images (its widget outputs) become previews of the pulled entry, from the local Hub
server: only repo files, only images, never a URL or a path outside the repo; a failed image only warns."""

from __future__ import annotations

import io

from PIL import Image

from lorahub_cli.previews import card_image_paths
from lorahub_cli.sources.pull import pull
from registry.api import Registry
from tests.hubserver import lora_safetensors, model_card

WEIGHTS = "pytorch_lora_weights.safetensors"


def _png(colour) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def test_only_relative_image_files_of_the_repo_are_taken():
    card = {"widget": [{"text": "a", "output": {"url": "images/a.png"}}, {"output": {"url": "../secret.png"}},
                       {"output": {"url": "https://elsewhere.example/x.png"}}, {"output": {"url": "/etc/x.png"}},
                       {"output": {"url": "./b.jpg"}}, {"output": {"url": "notes.txt"}}, "bare text",
                       {"output": {"url": "missing.png"}}]}
    assert card_image_paths(card) == ["images/a.png", "b.jpg", "missing.png"]
    assert card_image_paths(card, ["images/a.png", "b.jpg"]) == ["images/a.png", "b.jpg"]
    assert card_image_paths({"widget": "nope"}) == [] and card_image_paths(None) == []


def test_pull_keeps_the_cards_images_as_previews(hub, hf_env, tmp_path):
    red, blue = _png((255, 0, 0)), _png((0, 0, 255))
    card = model_card("# A LoRA\n", base_model="runwayml/stable-diffusion-v1-5",
                      widget=[{"text": "sks dog", "output": {"url": "images/red.png"}},
                              {"text": "sks cat", "output": {"url": "images/blue.png"}},
                              {"text": "gone", "output": {"url": "images/not-there.png"}},
                              {"text": "away", "output": {"url": "../../etc/passwd.png"}}])
    hub.create_repo("o/with-samples", {"README.md": card, WEIGHTS: lora_safetensors(),
                                       "images/red.png": red, "images/blue.png": blue})
    with Registry(home=tmp_path / "library") as registry:
        result = pull("o/with-samples", registry=registry)
        entry = registry.get(result.name)
        assert [p["source"] for p in entry.previews] == ["card:README.md@o/with-samples"] * 2
        assert [(tmp_path / "library" / p["path"]).read_bytes() for p in entry.previews] == [red, blue]
        assert entry.previews[0]["url"].endswith(f"/o/with-samples/resolve/{result.provenance.commit}/images/red.png")
        assert result.warnings == []   # files the repo lacks are not asked for at all
