"""Every real LoRA of the corpus (shared/corpus/wild): converted, it loads into the real pipeline of its base
with every module active and equal to the file's; unconverted, plain diffusers loads nothing or the same; and
the float64 update scale * up @ down of every module of the output equals the source's."""

from __future__ import annotations

import json

import pytest

from tests.convert.proof import ERROR, NOOP, SAME, prove_it_loads
from tests.convert.reference import assert_same_updates, diffusers_deltas, read_file, source_deltas

pytest.importorskip("peft")

# file -> (base alias, layout as tests/archs/keymap.py names it, component, what plain diffusers does with it)
REAL = {
    "catundchat_sd15_attnprocs.bin": ("sd15", "attn-procs", "unet", NOOP),
    "wellch4n_pokemon_attnprocs.safetensors": ("sd15", "attn-procs", "unet", NOOP),
    "haseebae_attnprocs_unetprefix.safetensors": ("sd15", "attn-procs", "unet", SAME),
    "jettooss_diffusers_old.safetensors": ("sd15", "diffusers-old", "unet", SAME),
    "justinjiang_diffusers_old_sd21.safetensors": ("sd21", "diffusers-old", "unet", SAME),
    "faithsang_diffusers_peft_unprefixed.safetensors": ("sd15", "diffusers-unprefixed", "unet", NOOP),
    "hansjohn_sd15_text_encoder_peft.safetensors": ("sd15", "peft", "text_encoder", NOOP),
    "cloneofsimo_analog_svd_rank4.safetensors": ("sd15", "cloneofsimo", "unet", ERROR),
    "wchesley_lora_weight.pt": ("sd15", "cloneofsimo-pt", "unet", ERROR),
}


def test_the_table_covers_every_real_lora(corpus_dir):
    manifest = json.loads((corpus_dir / "MANIFEST.json").read_text())
    loras = {f["name"] for f in manifest["files"] if f["role"] == "lora" and "TRUNCATED" not in f["name"]}
    assert loras == set(REAL)


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_lora_converts_and_loads(corpus_dir, tmp_path, name):
    alias, fmt, component, legacy = REAL[name]
    src = corpus_dir / name
    peft = None
    if fmt == "peft":   # a PEFT folder's adapter_config.json, saved beside the file in the corpus
        peft = json.loads((corpus_dir / name.replace(".safetensors", ".adapter_config.json")).read_text())
    want = source_deltas(src, alias, fmt, component=component, peft_config=peft)
    assert len(want) == len([k for k in read_file(src)[0] if k.endswith(("down", "down.weight", "lora_A.weight"))])
    out = prove_it_loads(src, alias, want, legacy, tmp_path)
    assert_same_updates(diffusers_deltas(out), want)
