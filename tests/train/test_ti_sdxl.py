"""`lora train --method ti|pivotal` on an SDXL base (a tiny one whose encoders are 768 and 1280 wide, as real
SDXL's): the token's rows learn in BOTH text encoders and nowhere else, the denoising loss on fixed draws falls,
the files are the advanced script's (``clip_l``/``clip_g``; a pivotal LoRA carries kohya's ``bundle_emb``
keys), a resumed run ends bit for bit where an uninterrupted one does, and the outputs load back through
`lora generate -e` / `-a` on the same base. A Flux base is refused with the reason."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from tests.train.conftest import uncaptioned_reds

pytestmark = pytest.mark.slow

TOKEN = "<tiny>"
PROMPT = f"a photo of {TOKEN}"
DRAWS = 40   # the tiny random U-Net barely listens to its prompt: many draws, so a real gain is not noise


@pytest.fixture(scope="session")
def xl_base(tmp_path_factory):
    from tests.embeddings.files import make_ti_sdxl_pipeline

    return make_ti_sdxl_pipeline(tmp_path_factory.mktemp("ti-xl") / "tiny-sdxl-768-1280")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return uncaptioned_reds(tmp_path_factory.mktemp("ti-xl-images"))


def _train(run_cli, base, images, run_dir, *extra):
    return run_cli("train", "--base", base, "--data", images, "--token", TOKEN, "--resolution", "32",
                   "--batch-size", "2", "--lr", "0.05", "--seed", "1", "--device", "cpu", "--run-dir", run_dir,
                   "--json", *extra)


def _initial_rows(base_path) -> dict:
    """Where the token's rows start: the mean of each encoder's vocabulary rows (no --initializer)."""
    from lorahub_cli.train.models import load_base

    base = load_base(str(base_path))
    return {key: te.get_input_embeddings().weight.mean(dim=0, keepdim=True).detach()
            for key, te in (("clip_l", base.text_encoder), ("clip_g", base.text_encoder_2))}


def _fixed_loss(base_path, rows: dict) -> float:
    """The denoising loss of the training prompt on fixed draws with ``rows`` as the token's vectors in both
    encoders (SDXL conditioning: both encoders' penultimate states, the pooled projection, size ids)."""
    from lorahub_cli.train.models import load_base
    from lorahub_cli.train.ti import Conditioning, token_slots

    base = load_base(str(base_path))
    slots = token_slots(base, TOKEN, 1, None)
    with torch.no_grad():
        for slot in slots:
            slot.embeddings.weight[slot.ids] = rows[slot.key]
        gen = torch.Generator().manual_seed(0)
        red = torch.tensor([[[0.7]], [[-0.7]], [[-0.7]]]).expand(1, 3, 32, 32)
        latents = base.vae.encode(red).latent_dist.mean.expand(DRAWS, -1, -1, -1) * base.vae.config.scaling_factor
        noise = torch.randn(latents.shape, generator=gen)
        t = torch.randint(0, 1000, (DRAWS,), generator=gen)
        hidden, extra = Conditioning(base, PROMPT, 32, "cpu")([SimpleNamespace(size=(32, 32))] * DRAWS)
        pred = base.unet(base.noise_scheduler.add_noise(latents, noise, t), t, hidden, **extra).sample
        return float(torch.nn.functional.mse_loss(pred, noise))


def _pixels(path):
    return np.asarray(Image.open(path))


def test_sdxl_ti_learns_both_encoders_rows_and_loads_back(tmp_path, xl_base, images, run_cli):
    out = _train(run_cli, xl_base, images, tmp_path / "run", "--method", "ti", "-o", "xl-tiny", "--max-steps",
                 "80", "--lr", "0.01", "--validation-prompt", PROMPT, "--validation-images", "1",
                 "--validation-steps", "2")
    assert out.returncode == 0, out
    result = out.json()
    learned = load_file(result["adapter"])
    assert {k: tuple(v.shape) for k, v in learned.items()} == {"clip_l": (1, 768), "clip_g": (1, 1280)}
    init = _initial_rows(xl_base)
    assert not torch.equal(learned["clip_l"], init["clip_l"]) and not torch.equal(learned["clip_g"], init["clip_g"])
    assert _fixed_loss(xl_base, learned) < _fixed_loss(xl_base, init)   # it learned the images

    shown = run_cli("show", "xl-tiny", "--json").json()
    assert (shown["kind"], shown["family"]) == ("embedding", "sdxl")
    check = run_cli("check", "xl-tiny", "--base", xl_base, "--json")
    assert check.returncode == 0, check

    # the validation image's recipe names the embedding: `generate --from` loads it (-e) and remakes the image
    recipe = run_cli("recipe", result["validation_images"][0], "--json").json()
    assert recipe["embeddings"][0]["token"] == TOKEN and recipe["adapters"] == []
    again = run_cli("generate", "--from", result["validation_images"][0], "--device", "cpu", "-o",
                    tmp_path / "again", "--json")
    assert again.returncode == 0, again
    assert np.array_equal(_pixels(again.json()[0]["path"]), _pixels(result["validation_images"][0]))
    args = ["--base", xl_base, "--steps", "2", "--seed", "3", "--size", "32x32", "--device", "cpu", "--json"]
    used = run_cli("generate", PROMPT, *args, "-e", f"xl-tiny:{TOKEN}", "-o", tmp_path / "used")
    plain = run_cli("generate", PROMPT, *args, "-o", tmp_path / "plain")
    assert used.returncode == 0 and plain.returncode == 0, used
    assert not np.array_equal(_pixels(used.json()[0]["path"]), _pixels(plain.json()[0]["path"]))


def test_a_resumed_sdxl_ti_run_ends_where_an_uninterrupted_one_does(tmp_path, xl_base, images, run_cli):
    common = ("--method", "ti", "--checkpointing-steps", "2", "--no-register")
    whole = _train(run_cli, xl_base, images, tmp_path / "whole", "-o", "whole", "--max-steps", "4", *common)
    part = _train(run_cli, xl_base, images, tmp_path / "part", "-o", "part", "--max-steps", "3", *common)
    resumed = _train(run_cli, xl_base, images, tmp_path / "part", "-o", "part", "--max-steps", "4", *common,
                     "--resume", "latest")
    assert whole.returncode == 0 and part.returncode == 0 and resumed.returncode == 0, resumed
    assert resumed.json()["resumed_from"] == 2
    a, b = load_file(resumed.json()["adapter"]), load_file(whole.json()["adapter"])
    assert a.keys() == b.keys() == {"clip_l", "clip_g"} and all(torch.equal(a[k], b[k]) for k in a)


def test_sdxl_pivotal_trains_tokens_in_both_encoders_and_a_lora(tmp_path, xl_base, images, run_cli):
    common = ("--method", "pivotal", "--rank", "2", "--checkpointing-steps", "2")
    out = _train(run_cli, xl_base, images, tmp_path / "run", "-o", "xl-piv", "--max-steps", "4", *common)
    assert out.returncode == 0, out
    lora = load_file(out.json()["adapter"])
    emb = load_file(str(tmp_path / "run" / "xl-piv_emb.safetensors"))
    assert emb.keys() == {"clip_l", "clip_g"}
    for key in ("clip_l", "clip_g"):   # the same vectors in both files; they moved from where they started
        assert torch.equal(lora[f"bundle_emb.{TOKEN}.{key}"], emb[key])
        assert not torch.equal(emb[key], _initial_rows(xl_base)[key])
    ups = [v for k, v in lora.items() if "lora_B" in k or "lora.up" in k]
    assert ups and any(v.abs().sum() > 0 for v in ups)   # the LoRA learned too (B starts at zero)
    shown = run_cli("show", "xl-piv", "--json").json()
    assert (shown["kind"], shown["family"], shown["tokens"]) == ("lora", "sdxl", [TOKEN])

    # both parts load: the tokens into both encoders through the loader `generate -a` uses for a pivotal LoRA
    # (Library.pipeline itself checks the LoRA against real SDXL's layer shapes, which this tiny U-Net lacks),
    # the U-Net part through diffusers
    from pathlib import Path

    from diffusers import StableDiffusionXLPipeline

    from lorahub_cli.embeddings.load import adapter_tokens, load_embeddings

    pipe = StableDiffusionXLPipeline.from_pretrained(xl_base, local_files_only=True)
    tokens = adapter_tokens(Path(out.json()["adapter"]), "xl-piv", shown["sha256"])
    assert load_embeddings(pipe, [tokens]) == [] and tokens.loaded == {"text_encoder": [TOKEN],
                                                                       "text_encoder_2": [TOKEN]}
    for key, tok, te in (("clip_l", pipe.tokenizer, pipe.text_encoder),
                         ("clip_g", pipe.tokenizer_2, pipe.text_encoder_2)):
        row = te.get_input_embeddings().weight[tok.convert_tokens_to_ids([TOKEN])]
        assert torch.equal(row.detach(), emb[key])
    # diffusers users: the LoRA alone beside it (load_lora_weights refuses the token keys), and the card says so
    plain = load_file(str(tmp_path / "run" / "pytorch_lora_weights.safetensors"))
    assert plain.keys() == {k for k in lora if not k.startswith("bundle_emb.")}
    assert all(torch.equal(plain[k], lora[k]) for k in plain)
    pipe.load_lora_weights(str(tmp_path / "run"), weight_name="pytorch_lora_weights.safetensors",
                           adapter_name="xl-piv")
    assert pipe.get_list_adapters() == {"unet": ["xl-piv"]}
    card = (tmp_path / "run" / "README.md").read_text()
    assert "- lora" in card and "method: pivotal" in card and 'state["clip_g"]' in card and "load_lora_weights" in card

    # resumed from its step-2 checkpoint, a second run ends where the first did
    part = _train(run_cli, xl_base, images, tmp_path / "part", "-o", "part", "--max-steps", "3", *common,
                  "--no-register")
    resumed = _train(run_cli, xl_base, images, tmp_path / "part", "-o", "part", "--max-steps", "4", *common,
                     "--no-register", "--resume", "latest")
    assert part.returncode == 0 and resumed.returncode == 0, resumed
    a = load_file(resumed.json()["adapter"])
    assert a.keys() == lora.keys()
    assert all(torch.equal(a[k], lora[k]) for k in a)


def test_ti_on_a_flux_base_is_refused_with_the_reason(tmp_path, images, run_cli):
    from tests.fixtures.pipelines import make_tiny_flux_pipeline

    flux = make_tiny_flux_pipeline(tmp_path / "flux")
    out = _train(run_cli, flux, images, tmp_path / "run", "--method", "ti", "-o", "flux-ti", "--max-steps", "1")
    assert out.returncode == 1, out
    error = out.json()["error"]
    assert error["code"] == "incompatible" and "T5" in error["message"]
    assert not (tmp_path / "run").exists()
