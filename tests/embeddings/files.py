"""Real embedding files in every layout met in the wild, written with torch and safetensors as their tools do."""

from __future__ import annotations

from pathlib import Path


def _vectors(n: int, width: int, seed: int):
    import torch

    return torch.randn(n, width, generator=torch.Generator().manual_seed(seed))


def a1111_pt(path: Path, *, n: int = 4, width: int = 768, seed: int = 0) -> Path:
    """A1111's own .pt: string_to_param holds a Parameter saved with requires_grad, name and step beside it."""
    import torch

    param = torch.nn.Parameter(_vectors(n, width, seed), requires_grad=True)
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": param}, "name": "bad-hands",
                "step": 3000, "sd_checkpoint": "e1441589", "sd_checkpoint_name": "v1-5-pruned"}, path)
    return path


def a1111_safetensors(path: Path, *, n: int = 8, width: int = 768, seed: int = 1) -> Path:
    from safetensors.torch import save_file

    save_file({"emb_params": _vectors(n, width, seed).half()}, str(path))
    return path


def diffusers_ti(path: Path, token: str = "<cat-toy>", *, width: int = 768, seed: int = 2) -> Path:
    """diffusers textual_inversion.py's learned_embeds (.safetensors, or .bin through torch.save)."""
    vectors = {token: _vectors(1, width, seed)[0]}
    if path.suffix == ".bin":
        import torch

        torch.save(vectors, path)
    else:
        from safetensors.torch import save_file

        save_file(vectors, str(path))
    return path


def sdxl_ti(path: Path, *, n: int = 2, keys: tuple[str, str] = ("clip_l", "clip_g"), seed: int = 3) -> Path:
    from safetensors.torch import save_file

    save_file({keys[0]: _vectors(n, 768, seed), keys[1]: _vectors(n, 1280, seed + 1)}, str(path))
    return path


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


def make_ti_sdxl_pipeline(path):
    """The tiny SDXL pipeline of tests/fixtures/pipelines.py with text encoders 768 (CLIP-L) and 1280 (OpenCLIP
    bigG) wide (one layer each), the widths real SDXL embeddings have, so trained ``clip_l``/``clip_g`` files
    are what a real SDXL base would load."""
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from tests.fixtures.pipelines import RESOLUTION, _vae, _write_tokenizer_files, make_tokenizer

    def clip(cls, width, seed):
        torch.manual_seed(seed)
        return cls(CLIPTextConfig(bos_token_id=0, eos_token_id=2, hidden_size=width, intermediate_size=37,
                                  num_attention_heads=4, num_hidden_layers=2, pad_token_id=1, vocab_size=1000,
                                  projection_dim=32))

    torch.manual_seed(0)
    unet = UNet2DConditionModel(block_out_channels=(32, 64), layers_per_block=1, sample_size=RESOLUTION // 2,
                                in_channels=4, out_channels=4, norm_num_groups=32,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
                                use_linear_projection=True, addition_embed_type="text_time",
                                addition_time_embed_dim=8, transformer_layers_per_block=(1, 1),
                                projection_class_embeddings_input_dim=6 * 8 + 32, cross_attention_dim=768 + 1280)
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, steps_offset=1,
                                       beta_schedule="scaled_linear", timestep_spacing="leading")
    pipe = StableDiffusionXLPipeline(unet=unet, scheduler=scheduler, vae=_vae(0),
                                     text_encoder=clip(CLIPTextModel, 768, 0),
                                     text_encoder_2=clip(CLIPTextModelWithProjection, 1280, 1),
                                     tokenizer=make_tokenizer(), tokenizer_2=make_tokenizer(),
                                     force_zeros_for_empty_prompt=True)
    pipe.save_pretrained(path, safe_serialization=True)
    _write_tokenizer_files(path / "tokenizer")
    _write_tokenizer_files(path / "tokenizer_2")
    return path
