"""Embeddings are described, not refused: every layout with its tokens, vectors, widths, family and dtype,
and the refusals that are an embedding's own (impossible width, zero vectors, pickled code)."""

from __future__ import annotations

import os

import pytest

from lorahub_cli.errors import LoraError, TextualInversion
from lorahub_cli.inspect import inspect_any, inspect_file
from tests.embeddings.files import a1111_pt, a1111_safetensors, diffusers_ti, sdxl_ti


@pytest.mark.parametrize("make, name, expected", [
    (a1111_pt, "BadHands.pt", ("a1111", "sd1", ["BadHands"], 4, [768], "F32", "pickle")),
    (a1111_safetensors, "EasyNeg.safetensors", ("a1111", "sd1", ["EasyNeg"], 8, [768], "F16", "safetensors")),
    (diffusers_ti, "learned_embeds.safetensors", ("diffusers-ti", "sd1", ["<cat-toy>"], 1, [768], "F32",
                                                  "safetensors")),
    (lambda p: diffusers_ti(p, width=1024), "learned_embeds.bin",
     ("diffusers-ti", "sd2", ["<cat-toy>"], 1, [1024], "F32", "pickle")),
    (sdxl_ti, "xl_style.safetensors", ("sdxl-ti", "sdxl", ["xl_style"], 2, [768, 1280], "F32", "safetensors")),
    (lambda p: sdxl_ti(p, keys=("text_encoders_0", "text_encoders_1")), "pivot_emb.safetensors",
     ("sdxl-ti", "sdxl", ["pivot_emb"], 2, [768, 1280], "F32", "safetensors")),
])
def test_each_layout_is_an_embedding_with_its_tokens_and_widths(tmp_path, make, name, expected):
    report = inspect_any(make(tmp_path / name))
    assert report.kind == "embedding" and report.network == "embedding"
    assert (report.format, report.family, report.tokens, report.vectors, report.widths, report.dtype,
            report.container) == expected
    assert report.rank is None and report.sha256 and "tokens" in report.components
    if expected[1] == "sdxl":
        assert report.components == ["tokens", "text_encoder", "text_encoder_2"]


def test_a1111_pt_keeps_name_and_step_and_says_which_token_a1111_uses(tmp_path):
    report = inspect_any(a1111_pt(tmp_path / "BadHands.pt"))
    assert (report.metadata["name"], report.metadata["step"]) == ("bad-hands", "3000")
    assert any("prompts it by its file name, 'BadHands'" in w for w in report.warnings)


def test_a_lora_caller_still_gets_textual_inversion(tmp_path):
    # merge, convert and fuse need a LoRA: for them an embedding stays the textual-inversion refusal
    with pytest.raises(TextualInversion):
        inspect_file(a1111_safetensors(tmp_path / "neg.safetensors"))


@pytest.mark.parametrize("tensors, words", [
    ({"emb_params": (2, 700)}, "700 wide"),
    ({"emb_params": (0, 768)}, "zero vectors"),
    ({"<tok>": (3, 4, 768)}, "[width] or [vectors, width]"),
    ({"clip_l": (2, 1280), "clip_g": (2, 1280)}, "clip_l is the CLIP ViT-L encoder's"),
])
def test_impossible_embeddings_are_invalid_embedding(tmp_path, tensors, words):
    import torch
    from safetensors.torch import save_file

    path = tmp_path / "bad.safetensors"
    save_file({k: torch.zeros(shape) for k, shape in tensors.items()}, str(path))
    with pytest.raises(LoraError) as err:
        inspect_any(path)
    assert err.value.code == "invalid-embedding" and err.value.exit_code == 1
    assert words in err.value.message


class _RunsCode:
    def __reduce__(self):
        return (os.getcwd, ())   # harmless here, but a pickle that imports code is never loaded


def test_a_pickled_embedding_that_imports_code_is_unsafe_pickle(tmp_path):
    import torch

    path = tmp_path / "evil.pt"
    torch.save({"string_to_param": {"*": torch.zeros(1, 768)}, "hook": _RunsCode()}, path)
    with pytest.raises(LoraError) as err:
        inspect_any(path)
    assert err.value.code == "unsafe-pickle" and "getcwd" in err.value.message
