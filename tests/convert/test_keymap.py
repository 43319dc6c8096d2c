"""Key normalisation from names and shapes only: every layout's modules land on the real layers.

The expected names come from tests/archs/keymap.py, written from the formats' descriptions independently of
lorahub_cli.convert.keymap.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from lorahub_cli.archs import base_components, module_table
from lorahub_cli.archs.fused import flux_layers, sd3_layers
from lorahub_cli.archs.positional import cloneofsimo_order
from lorahub_cli.convert.keymap import map_layout
from lorahub_cli.inspect import inspect_file_full
from lorahub_cli.inspect.layout import detect_layout
from lorahub_cli.inspect.model import RawFile, TensorSpec
from tests.archs.keymap import group
from tests.fixtures.adapters import FIXTURE_CACHE, default_components, make_adapter, write_adapter

CASES = [(a, f) for a in ("sd15", "sd21", "sdxl") for f in (
    "diffusers", "diffusers-unprefixed", "diffusers-old", "attn-procs", "peft", "kohya", "cloneofsimo", "loha", "lokr",
    "locon")] + [("flux", "kohya-flux"), ("sd3", "kohya-sd3"), ("flux", "diffusers"), ("sd3", "peft")]
FAMILY = {"sd15": "sd1", "sd21": "sd2", "sdxl": "sdxl", "flux": "flux", "sd3": "sd3"}


def header_layout(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None):
    """The Layout a safetensors header of these tensors gives (names, dtypes, shapes; no values)."""
    specs = {k: TensorSpec("F32", tuple(v.shape)) for k, v in tensors.items()}
    return detect_layout(RawFile(path=None, size=0, container="safetensors", tensors=specs, metadata=metadata or {}))


def expected_targets(alias: str, fmt: str, tensors: dict, component: str) -> set[str]:
    tables = {c: module_table(alias, c, cache_dir=FIXTURE_CACHE) for c in base_components(alias)}
    out = set()
    for comp, name in group(fmt, alias, list(tensors), tables, component=component):
        if comp == "transformer" and name not in tables[comp]:   # a fused layer: its diffusers parts
            fused = (flux_layers if alias == "flux" else sd3_layers)(tables[comp])[name]
            out.update(f"{comp}.{p}" for p in fused.parts)
        else:
            out.add(f"{comp}.{name}")
    return out


@pytest.mark.parametrize("alias, fmt", CASES)
def test_every_module_of_every_layout_maps_onto_the_architecture(alias, fmt):
    tensors, meta = make_adapter(alias, fmt, rank=1, targets="kohya" if fmt.startswith("kohya") else "attn")
    component = default_components(alias, fmt)[0]
    keymap = map_layout(header_layout(tensors, meta), FAMILY[alias])
    assert keymap.unmapped == {}
    assert set(keymap.targets) == expected_targets(alias, fmt, tensors, component)
    assert len(keymap.targets) == len(set(keymap.targets))   # no two modules on one layer


def test_sdxl_kohya_sai_and_diffusers_names_reach_the_same_layers():
    sai, _ = make_adapter("sdxl", "kohya", rank=1, components=["unet"])
    plain, _ = make_adapter("sdxl", "kohya", rank=1, components=["unet"], sdxl_naming="diffusers")
    assert set(sai) != set(plain)
    a, b = map_layout(header_layout(sai), "sdxl"), map_layout(header_layout(plain), "sdxl")
    assert sorted(a.targets) == sorted(b.targets) and len(a.targets) == len(sai) // 3


def test_text_encoder_names_with_and_without_text_model_agree():
    """kohya files written under transformers >= 5.6 lack CLIP's text_model level."""
    nested, _ = make_adapter("sd15", "kohya", rank=1, components=["text_encoder"])
    flat = {k.replace("lora_te_text_model_", "lora_te_"): v for k, v in nested.items()}
    a, b = map_layout(header_layout(nested), "sd1"), map_layout(header_layout(flat), "sd1")
    assert sorted(a.targets) == sorted(b.targets)
    assert all(t.startswith("text_encoder.text_model.encoder.layers.") for t in a.targets)


def test_cloneofsimo_positions_follow_the_order_the_file_was_written_in():
    """Files from late-2022 diffusers walk GEGLU before attn2; a file written by today's would not. The shapes
    decide which order a file has."""
    table = module_table("sd15", "unet", cache_dir=FIXTURE_CACHE)
    for legacy in (True, False):
        order = cloneofsimo_order(table, legacy=legacy)
        tensors = {}
        for i, name in enumerate(order):
            layer = table[name]
            tensors[f"unet:{i}:up"] = torch.zeros(layer.out_features, 1)
            tensors[f"unet:{i}:down"] = torch.zeros(1, layer.in_features)
        keymap = map_layout(header_layout(tensors), "sd1")
        assert [keymap.mapped[f"unet:{i}"].targets[0] for i in range(len(order))] == [f"unet.{n}" for n in order]
    assert cloneofsimo_order(table, legacy=True) != cloneofsimo_order(table, legacy=False)


def test_what_does_not_map_is_reported_with_a_reason():
    sd15, _ = make_adapter("sd15", "kohya", rank=1, components=["unet"])
    as_sdxl = map_layout(header_layout(sd15), "sdxl")          # an SD1 LoRA read as SDXL
    assert as_sdxl.unmapped and all("does not fit" in r or "no unet layer" in r for r in as_sdxl.unmapped.values())
    junk = dict(sd15)
    junk["lora_unet_down_blocks_0_nonsense_layer.lora_down.weight"] = torch.zeros(1, 4)
    junk["lora_unet_down_blocks_0_nonsense_layer.lora_up.weight"] = torch.zeros(4, 1)
    keymap = map_layout(header_layout(junk), "sd1")
    assert list(keymap.unmapped) == ["lora_unet_down_blocks_0_nonsense_layer"]
    assert "down_blocks_0_nonsense_layer" in keymap.unmapped["lora_unet_down_blocks_0_nonsense_layer"]
    unknown = map_layout(header_layout(sd15), "unknown")
    assert len(unknown.unmapped) == len(sd15) // 3 and not unknown.mapped


def test_names_alone_need_no_torch(tmp_path):
    """`lora check` maps a safetensors file from its header: no tensor is read and torch is never imported."""
    path = write_adapter(tmp_path / "a.safetensors", "sdxl", "kohya", rank=1)
    report, _, layout = inspect_file_full(path, hash=False)
    map_layout(layout, report.family)   # builds the module tables into this session's cache (a first run's cost)
    code = ("import json, sys\n"
            "from lorahub_cli.inspect import inspect_file_full\n"
            "from lorahub_cli.convert.keymap import map_layout\n"
            f"report, raw, layout = inspect_file_full({str(path)!r}, hash=False)\n"
            "keymap = map_layout(layout, report.family)\n"
            "print(json.dumps({'torch': 'torch' in sys.modules, 'mapped': len(keymap.mapped),"
            " 'unmapped': len(keymap.unmapped), 'family': keymap.family}))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    tensors, _ = make_adapter("sdxl", "kohya", rank=1)
    assert result == {"torch": False, "mapped": len(tensors) // 3, "unmapped": 0, "family": "sdxl"}


def test_a_local_diffusers_folder_can_name_the_layers(tmp_path):
    """`lora check --base DIR`: the tables come from the folder's own configs (here a copy of SD1.5's)."""
    import shutil

    from lorahub_cli.archs import config_dir

    folder = tmp_path / "my-finetune"
    shutil.copytree(config_dir("sd15"), folder)
    tensors, _ = make_adapter("sd15", "kohya", rank=1)
    by_family = map_layout(header_layout(tensors), "sd1")
    by_folder = map_layout(header_layout(tensors), "sd1", base=folder)
    assert by_folder.unmapped == {} and sorted(by_folder.targets) == sorted(by_family.targets)
    assert by_folder.base == str(folder)
