"""The shared tiny-pipeline fixtures load offline through diffusers and generate."""

from __future__ import annotations

import torch

from tests.fixtures.pipelines import RESOLUTION, TINY_WORDS, make_tiny_sdxl_pipeline


def test_tiny_sd_tokenizer_spells_the_test_words(tiny_base):
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(tiny_base, subfolder="tokenizer")
    assert all("<unk>" not in tok.tokenize(w) for w in TINY_WORDS)
    assert tok.model_max_length == 77


def test_tiny_sdxl_pipeline_loads_and_generates(tmp_path):
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(make_tiny_sdxl_pipeline(tmp_path / "xl"), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    out = pipe("lower", num_inference_steps=1, height=RESOLUTION, width=RESOLUTION, output_type="latent",
               generator=torch.Generator().manual_seed(0)).images
    assert out.shape == (1, 4, RESOLUTION // 2, RESOLUTION // 2) and torch.isfinite(out).all()
