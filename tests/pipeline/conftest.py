"""One tiny SD base and a small library for all pipeline tests (built once per session: the tests share
them read-only; anything that writes uses its own tmp_path)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.pipeline.helpers import TinyAdapter, layer_shapes, load_plain, random_adapter, write_attn_procs, \
    write_diffusers


@dataclass
class World:
    base: Path                         # the tiny SD folder (a diffusers save_pretrained folder)
    home: Path                         # a library home holding style, subject, detail
    files: dict[str, Path]             # name -> the file added to the library (or written beside it)
    adapters: dict[str, TinyAdapter]   # name -> the pairs written


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> World:
    from lorahub_cli.ingest import ingest
    from registry.api import Registry
    from tests.fixtures.pipelines import make_tiny_sd_pipeline

    root = tmp_path_factory.mktemp("pipeline-world")
    base = make_tiny_sd_pipeline(root / "tiny-sd", seed=0)
    shapes = layer_shapes(load_plain(base))
    unet_attn = [k for k in shapes if k.startswith("unet.") and ".attn" in k]
    te = [k for k in shapes if k.startswith("text_encoder.")]
    adapters = {
        # attention + text encoder, alpha 8 on rank 4 (scale 2)
        "style": random_adapter(shapes, unet_attn + te, rank=4, alpha=8.0, seed=1),
        # self-attention, a 3x3 resnet conv and the 1x1 proj_in conv, scale 0.5
        "subject": random_adapter(shapes, [k for k in unet_attn if ".attn1." in k]
                                  + ["unet.down_blocks.0.resnets.0.conv1", "unet.down_blocks.1.attentions.0.proj_in"],
                                  rank=8, alpha=4.0, seed=2),
        # cross-attention and one text-encoder layer, no alpha (scale 1)
        "detail": random_adapter(shapes, [k for k in unet_attn if ".attn2." in k] + te[:1], rank=2, alpha=None,
                                 seed=3),
        # U-Net attention only, scale 1: written in the legacy attn-procs layout and as its diffusers twin
        "legacy": random_adapter(shapes, unet_attn, rank=4, alpha=None, seed=4),
    }
    files = {name: write_diffusers(a, root / "files" / f"{name}.safetensors") for name, a in adapters.items()}
    files["legacy-procs"] = write_attn_procs(adapters["legacy"], root / "files" / "legacy-procs.safetensors")
    home = root / "home"
    with Registry(home=home) as reg:
        for name in ("style", "subject", "detail", "legacy-procs"):
            ingest(files[name], reg, name=name)
    return World(base=base, home=home, files=files, adapters=adapters)


@pytest.fixture
def lib_env(world, monkeypatch) -> World:
    """The session library as $LORAHUB_HOME (in this process and the subprocesses it starts)."""
    monkeypatch.setenv("LORAHUB_HOME", str(world.home))
    monkeypatch.delenv("LORAHUB_DATABASE_URL", raising=False)
    monkeypatch.setenv("LORAHUB_NO_PROGRESS", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return world


@pytest.fixture(autouse=True, scope="session")
def _two_threads():
    # the tiny models are too small to gain from more threads; fewer keeps the shared CI box responsive
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(min(2, before))
    yield
    torch.set_num_threads(before)


@pytest.fixture
def umask_027():
    """A umask other than the usual 022 (restored after), so a mode that follows it is told from a fixed one."""
    import os

    before = os.umask(0o027)
    yield 0o027
    os.umask(before)
