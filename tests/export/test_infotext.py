"""A1111-compatible infotext: <lora:NAME:W> tags and `Lora hashes` with the tensor hash (AutoV3), checked with
A1111's own parsing rules (modules/infotext_utils.py ``re_param``, extra_networks.py ``<name:args>``, and
extensions-builtin/Lora's ``infotext_pasted``: split on ',' then on the first ':'), re-stated here."""

from __future__ import annotations

import json
import re

from lorahub_cli.export.conventions import a1111_alias, data_sha256
from lorahub_cli.pipeline.recipe import Recipe, parse_parameters
from tests.registry.helpers import write_kohya_sd1

# A1111's rules, as its sources state them
A1111_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
A1111_EXTRA_NET = re.compile(r"<(\w+):([^>]+)>")


def a1111_parse(text: str) -> dict:
    """What A1111 makes of an image's parameters: the prompt, and the last line's pairs (when it holds >= 3)."""
    *lines, last = text.strip().split("\n")
    if len(A1111_PARAM.findall(last)) < 3:
        lines.append(last)
        last = ""
    prompt = "\n".join(line for line in lines if not line.startswith("Negative prompt:"))
    pairs = {}
    for key, value in A1111_PARAM.findall(last):
        pairs[key.strip()] = json.loads(value) if value[:1] == '"' and value[-1:] == '"' else value
    return {"Prompt": prompt, **pairs}


def a1111_loras(params: dict) -> dict[str, tuple[str, str]]:
    """alias -> (weight, short hash), as A1111 pairs a prompt's <lora:...> tags with `Lora hashes`."""
    hashes = dict(x.strip().split(":", 1) for x in params["Lora hashes"].split(","))
    hashes = {k.strip().replace(",", ""): v.strip() for k, v in hashes.items()}
    out = {}
    for kind, args in A1111_EXTRA_NET.findall(params["Prompt"]):
        assert kind == "lora"
        alias, weight = args.split(":")[:2]
        out[alias] = (weight, hashes[alias])
    return out


def _recipe(adapters) -> Recipe:
    return Recipe(prompt="a cat, detailed", negative_prompt="blurry", seed=1, steps=20, guidance=7.0,
                  scheduler="euler", width=64, height=64, base="sd15", base_id="runwayml/stable-diffusion-v1-5",
                  adapters=adapters, versions={"lorahub-cli": "0.1.0"})


def test_a1111_reads_our_tags_and_tensor_hashes():
    adapters = [{"name": "ink style", "sha256": "ab" * 32, "weight": 0.8, "tensor_sha256": "12" * 32},
                {"name": "odd: name, here", "sha256": "cd" * 32, "weight": -0.5, "tensor_sha256": "34" * 32}]
    text = _recipe(adapters).checked().a1111_parameters()
    params = a1111_parse(text)
    assert a1111_loras(params) == {"ink style": ("0.8", "12" * 6), "odd_ name_ here": ("-0.5", "34" * 6)}
    assert "Lora weights" not in params and params["Steps"] == "20"
    ours = parse_parameters(text)   # `lora recipe` of the same text
    assert ours["loras"] == [{"name": "ink style", "weight": 0.8, "hash": "12" * 6},
                             {"name": "odd_ name_ here", "weight": -0.5, "hash": "34" * 6}]


def test_an_adapter_without_a_tensor_hash_gets_a_tag_but_no_invented_hash():
    text = _recipe([{"name": "old", "sha256": "ab" * 32, "weight": 1.0}]).a1111_parameters()
    assert "<lora:old:1>" in text and "Lora hashes" not in text


def test_the_alias_is_the_exported_file_stem(library, tmp_path, run_cli):
    out = tmp_path / "ui"
    assert run_cli("export", "style", "--to", out, "--layout", "{name}").returncode == 0
    entry = run_cli("show", "style", "--json").json()
    assert (out / f"{a1111_alias(entry['name'], entry['sha256'])}.safetensors").is_file()


def test_autov3_is_the_data_section_hash_and_survives_header_edits(tmp_path, run_cli):
    a = write_kohya_sd1(tmp_path / "a.safetensors", seed=5)
    b = write_kohya_sd1(tmp_path / "b.safetensors", seed=5, metadata={"ss_output_name": "renamed"})
    assert a.read_bytes() != b.read_bytes()
    assert data_sha256(a) == data_sha256(b)
    assert run_cli("add", a).returncode == 0
    assert run_cli("show", "a", "--json").json()["tensor_sha256"] == data_sha256(a)


def test_old_recipes_without_tensor_hashes_still_read(tmp_path):
    old = _recipe([{"name": "style", "sha256": "ab" * 32, "weight": 0.8}]).to_dict()
    assert Recipe.from_dict(old).adapters[0] == {"name": "style", "sha256": "ab" * 32, "weight": 0.8}
    old_a1111 = ('a cat\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 64x64, '
                 'Lora hashes: "style: abababababab", Lora weights: "style: 0.8"')
    assert parse_parameters(old_a1111)["settings"]["Lora weights"] == "style: 0.8"
