"""DreamBooth with prior preservation, with and without a text-encoder LoRA: the adapter loads into the base
pipeline through diffusers and changes what it generates; the library learns the trigger word."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lorahub_cli.train import TrainConfig, register_result, train
from tests.fixtures.pipelines import RESOLUTION
from tests.train.conftest import BLUE, GREEN, write_images

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("train_text_encoder", [True, False], ids=["with-text-encoder", "unet-only"])
def test_dreambooth_with_prior_preservation(tiny_base, tmp_path, tmp_home, train_text_encoder):
    import yaml
    from diffusers import StableDiffusionPipeline
    from safetensors import safe_open

    from registry.api import Registry

    instances = write_images(tmp_path / "dog", [(GREEN, "")] * 3, captions="none")
    classes = write_images(tmp_path / "dogs", [(BLUE, "")] * 2, captions="none")
    result = train(TrainConfig(base=str(tiny_base), data=str(instances), name="sks", mode="dreambooth",
                               instance_prompt="lower wow", class_data=str(classes), class_prompt="lower",
                               prior_loss_weight=0.5, train_text_encoder=train_text_encoder,
                               resolution=RESOLUTION, batch_size=1, max_steps=3, lr=1e-2, seed=0,
                               checkpointing_steps=100))
    assert ("prompts encoded every step" in result.cache) == train_text_encoder

    with safe_open(result.adapter, framework="pt") as f:
        components = {k.split(".")[0] for k in f.keys()}
    assert components == ({"unet", "text_encoder"} if train_text_encoder else {"unet"})

    pipe = StableDiffusionPipeline.from_pretrained(tiny_base, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)

    def generate():
        return pipe("lower wow", num_inference_steps=3, height=RESOLUTION, width=RESOLUTION, output_type="latent",
                    generator=torch.Generator().manual_seed(0)).images

    before = generate()
    pipe.load_lora_weights(result.run_dir, weight_name=Path(result.adapter).name, adapter_name="sks")
    expected = {"unet": ["sks"], "text_encoder": ["sks"]} if train_text_encoder else {"unet": ["sks"]}
    assert pipe.get_list_adapters() == expected
    assert (generate() - before).abs().max().item() > 1e-3

    front = yaml.safe_load((tmp_home / "runs" / "sks" / "README.md").read_text().split("---")[1])
    assert front["instance_prompt"] == "lower wow" and "dreambooth" in front["tags"]
    assert front["lorahub"]["training"]["prior_preservation"] is True

    added = register_result(result)
    entry = Registry().get(added.name)
    assert "lower wow" in entry.trigger_words
    # found by training, not typed by the user: `lora show` must not say "set by you"
    assert entry.trigger_word_sources["lower wow"] == "training" and "trigger_words" not in entry.overrides
    assert entry.sources[0].kind == "trained"
    assert sorted(entry.components) == sorted(components)
