"""`lora check` of an embedding: by the widths of the base's text encoders (configs only, no weights)."""

from __future__ import annotations

import json

from lorahub_cli.embeddings.fit import suggest_name, token_collisions
from tests.embeddings.files import a1111_safetensors, diffusers_ti, sdxl_ti


def test_check_by_width(tmp_path, run_cli):
    files = [a1111_safetensors(tmp_path / "neg.safetensors"), sdxl_ti(tmp_path / "xl.safetensors"),
             diffusers_ti(tmp_path / "learned_embeds.safetensors", width=1024)]
    run_cli("add", *files)
    sd15 = run_cli("check", "neg", "xl", "learned_embeds", "--base", "sd15", "--json")
    assert sd15.returncode == 1, sd15
    verdicts = {r["adapter"]: r for r in sd15.json()}
    assert verdicts["neg"]["verdict"] == "compatible"
    assert verdicts["xl"]["verdict"] == "partial" and "clip_g" in verdicts["xl"]["summary"]
    sd2 = verdicts["learned_embeds"]
    assert sd2["verdict"] == "incompatible"
    assert "1024" in sd2["summary"] and "text_encoder 768" in sd2["summary"]   # the widths are named
    sdxl = run_cli("check", "xl", "--base", "sdxl", "--json")
    assert sdxl.returncode == 0 and sdxl.json()[0]["coverage"]["per_component"] == {
        "text_encoder": {"matched": 1, "total": 1}, "text_encoder_2": {"matched": 1, "total": 1}}


def test_a_token_that_is_a_word_of_the_vocabulary_collides(tmp_path, run_cli):
    vocab = {"style</w>": 1, "style": 2, "<style>": 3, "cat</w>": 4}
    assert token_collisions(["style", "EasyNegative", "Cat"], vocab=vocab) == {"style": "<style-2>",
                                                                               "Cat": "<Cat>"}
    assert suggest_name("cat", vocab) == "<cat>"
    # a base folder with a tokenizer: check says so and suggests a name
    base = tmp_path / "base"
    for folder, config in (("text_encoder", {"hidden_size": 768}), ("unet", {"cross_attention_dim": 768})):
        (base / folder).mkdir(parents=True)
        (base / folder / "config.json").write_text(json.dumps(config))
    (base / "tokenizer").mkdir()
    (base / "tokenizer" / "vocab.json").write_text(json.dumps(vocab))
    (base / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    run_cli("add", a1111_safetensors(tmp_path / "style.safetensors"))
    out = run_cli("check", "style", "--base", base, "--json")
    assert out.json()[0]["verdict"] == "compatible", out
    assert any("'style' is a word of the base's vocabulary" in n and "<style-2>" in n
               for n in out.json()[0]["notes"])
    assert run_cli("check", "style", "--base", "sd15", "--json").json()[0]["notes"] == []   # no vocabulary there
