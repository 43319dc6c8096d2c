"""The Hub area's fake Hub (loopback) for pull tests of embeddings."""

from tests.hub.conftest import hf_env, hub, hub_server  # noqa: F401 - fixtures shared with the Hub area

import pytest


def make_ti_sd_pipeline(path):
    """The tiny SD pipeline of tests/fixtures/pipelines.py with a CLIP text encoder 768 wide (one layer), the
    width real SD1 embeddings have: an embedding of any other width is refused as impossible."""
    import torch
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from tests.fixtures.pipelines import RESOLUTION, _vae, _write_tokenizer_files, make_tokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(block_out_channels=(32, 64), layers_per_block=1, sample_size=RESOLUTION // 2,
                                in_channels=4, out_channels=4, norm_num_groups=32,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=768)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    text_encoder = CLIPTextModel(CLIPTextConfig(bos_token_id=0, eos_token_id=2, hidden_size=768,
                                                intermediate_size=37, num_attention_heads=4, num_hidden_layers=1,
                                                pad_token_id=1, vocab_size=1000))
    pipe = StableDiffusionPipeline(unet=unet, scheduler=scheduler, vae=_vae(0), text_encoder=text_encoder,
                                   tokenizer=make_tokenizer(), safety_checker=None, feature_extractor=None,
                                   image_encoder=None, requires_safety_checker=False)
    pipe.save_pretrained(path, safe_serialization=True)
    _write_tokenizer_files(path / "tokenizer")
    return path


@pytest.fixture(scope="session")
def ti_base(tmp_path_factory):
    """One tiny SD1-width base for every embedding test that builds a pipeline (2 CPU cores: built once)."""
    return make_ti_sd_pipeline(tmp_path_factory.mktemp("ti-base") / "tiny-sd-768")
