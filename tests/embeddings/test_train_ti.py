"""`lora train --method ti` on the tiny 768-wide pipeline: only the new token's rows learn, the loss on fixed
draws falls, the result is a kind: embedding entry with its token as trigger; a resumed run ends bit for bit
where an uninterrupted one does; validation images name the embedding in their recipe."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

TOKEN = "<tiny>"


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from tests.train.conftest import uncaptioned_reds

    return uncaptioned_reds(tmp_path_factory.mktemp("ti-images"))


def _train(run_cli, ti_base, images, run_dir, *extra):
    return run_cli("train", "--base", ti_base, "--data", images, "--method", "ti", "--token", TOKEN,
                   "--resolution", "32", "--batch-size", "2", "--lr", "0.05", "--seed", "1", "--device", "cpu",
                   "--run-dir", run_dir, "--json", *extra)


def _fixed_loss(ti_base, vector) -> float:
    """The denoising loss of the token's prompt on fixed draws, with ``vector`` as the token's embedding."""
    from lorahub_cli.train.models import load_base
    from lorahub_cli.train.ti import add_tokens

    base = load_base(str(ti_base))
    ids = add_tokens(base.tokenizer, base.text_encoder, TOKEN, 1, None)
    with torch.no_grad():
        base.text_encoder.get_input_embeddings().weight[ids] = vector
        gen = torch.Generator().manual_seed(0)
        latents = base.vae.encode(torch.tensor([[[0.7]], [[-0.7]], [[-0.5]]]).expand(1, 3, 32, 32)).latent_dist.mean
        latents = latents.expand(8, -1, -1, -1) * base.vae.config.scaling_factor
        noise = torch.randn(latents.shape, generator=gen)
        t = torch.randint(0, 1000, (8,), generator=gen)
        ids_in = base.tokenizer(f"a photo of {TOKEN}", padding="max_length", max_length=77,
                                return_tensors="pt").input_ids.expand(8, -1)
        hidden = base.text_encoder(ids_in)[0]
        pred = base.unet(base.noise_scheduler.add_noise(latents, noise, t), t, hidden).sample
        return float(torch.nn.functional.mse_loss(pred, noise))


def test_ti_learns_the_token_only_and_registers_an_embedding(tmp_path, ti_base, images, run_cli):
    out = _train(run_cli, ti_base, images, tmp_path / "run", "-o", "tiny", "--max-steps", "30",
                 "--validation-prompt", f"a photo of {TOKEN}", "--validation-images", "1", "--validation-steps", "2")
    assert out.returncode == 0, out
    result = out.json()
    learned = load_file(result["adapter"])[TOKEN]
    assert learned.shape == (1, 768)
    from lorahub_cli.train.models import load_base

    base = load_base(str(ti_base))
    init = base.text_encoder.get_input_embeddings().weight.mean(dim=0)
    assert not torch.equal(learned[0], init)
    assert _fixed_loss(ti_base, learned[0]) < _fixed_loss(ti_base, init)   # it learned the images
    shown = run_cli("show", "tiny", "--json").json()
    assert (shown["kind"], shown["format"], shown["tokens"], shown["trigger_words"]) == (
        "embedding", "diffusers-ti", [TOKEN], [TOKEN])
    assert [s["kind"] for s in shown["sources"]] == ["trained"]
    recipe = run_cli("recipe", result["validation_images"][0], "--json").json()
    assert recipe["embeddings"][0]["token"] == TOKEN and recipe["adapters"] == []


def test_a_resumed_ti_run_ends_where_an_uninterrupted_one_does(tmp_path, ti_base, images, run_cli):
    whole = _train(run_cli, ti_base, images, tmp_path / "whole", "-o", "whole", "--max-steps", "6",
                   "--no-register")
    assert whole.returncode == 0, whole
    # stopped after step 4 with a checkpoint at step 3; resumed from it up to step 6
    part = _train(run_cli, ti_base, images, tmp_path / "parts2", "-o", "parts2", "--max-steps", "4",
                  "--checkpointing-steps", "3", "--no-register")
    assert part.returncode == 0 and part.json()["checkpoints"], part
    resumed = _train(run_cli, ti_base, images, tmp_path / "parts2", "-o", "parts2", "--max-steps", "6",
                     "--checkpointing-steps", "3", "--no-register", "--resume", "latest")
    assert resumed.returncode == 0, resumed
    assert resumed.json()["resumed_from"] == 3
    assert torch.equal(load_file(resumed.json()["adapter"])[TOKEN], load_file(whole.json()["adapter"])[TOKEN])


def test_pivotal_trains_the_token_and_a_lora_together(tmp_path, ti_base, images, run_cli):
    out = _train(run_cli, ti_base, images, tmp_path / "run", "-o", "piv", "--method", "pivotal", "--max-steps",
                 "8", "--rank", "2")
    assert out.returncode == 0, out
    result = out.json()
    lora = load_file(result["adapter"])
    emb = load_file(str(tmp_path / "run" / "piv_emb.safetensors"))
    # the token's vectors are in both files, and they moved from where they started
    assert torch.equal(lora[TOKEN], emb[TOKEN][0] if lora[TOKEN].dim() == 1 else emb[TOKEN])
    from lorahub_cli.train.models import load_base

    init = load_base(str(ti_base)).text_encoder.get_input_embeddings().weight.mean(dim=0)
    assert not torch.equal(emb[TOKEN][0], init)
    ups = [v for k, v in lora.items() if "lora_B" in k or "lora.up" in k]
    assert ups and any(v.abs().sum() > 0 for v in ups)   # the LoRA learned too (B starts at zero)
    # the LoRA alone, for diffusers' load_lora_weights (which refuses a file holding the token too)
    from diffusers import StableDiffusionPipeline

    plain = load_file(str(tmp_path / "run" / "pytorch_lora_weights.safetensors"))
    assert plain.keys() == lora.keys() - {TOKEN} and all(torch.equal(plain[k], lora[k]) for k in plain)
    pipe = StableDiffusionPipeline.from_pretrained(ti_base, local_files_only=True)
    pipe.load_lora_weights(str(tmp_path / "run"), weight_name="pytorch_lora_weights.safetensors")
    pipe.load_textual_inversion(str(tmp_path / "run" / "piv_emb.safetensors"), token=TOKEN)
    assert pipe.get_list_adapters() == {"unet": ["default_0"]}
    shown = run_cli("show", "piv", "--json").json()
    assert (shown["kind"], shown["tokens"], shown["trigger_words"]) == ("lora", [TOKEN], [TOKEN])
    assert "tokens" in shown["components"] and "unet" in shown["components"]


def test_a_resumed_pivotal_run_ends_where_an_uninterrupted_one_does(tmp_path, ti_base, images, run_cli):
    common = ("--method", "pivotal", "--rank", "2", "--checkpointing-steps", "2", "--no-register")
    whole = _train(run_cli, ti_base, images, tmp_path / "whole", "-o", "whole", "--max-steps", "4", *common)
    part = _train(run_cli, ti_base, images, tmp_path / "part", "-o", "part", "--max-steps", "3", *common)
    resumed = _train(run_cli, ti_base, images, tmp_path / "part", "-o", "part", "--max-steps", "4", *common,
                     "--resume", "latest")
    assert whole.returncode == 0 and part.returncode == 0 and resumed.returncode == 0, resumed
    assert resumed.json()["resumed_from"] == 2
    a, b = load_file(resumed.json()["adapter"]), load_file(whole.json()["adapter"])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
