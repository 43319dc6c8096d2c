"""Fixtures for the training tests: one tiny SD pipeline per session, synthetic solid-colour image sets,
and one compute thread (the test machine is shared: oversubscribed OpenMP threads make tiny models crawl)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fixtures.pipelines import RESOLUTION, make_tiny_sd_pipeline

RED, BLUE, GREEN = (220, 30, 30), (30, 30, 220), (30, 200, 60)


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # these tests are about the CPU path, on any machine
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    return make_tiny_sd_pipeline(tmp_path_factory.mktemp("bases") / "tiny-sd", seed=0)


def write_images(folder: Path, items: list[tuple[tuple[int, int, int], str]], *, captions: str = "jsonl",
                 size: tuple[int, int] = (RESOLUTION, RESOLUTION)) -> Path:
    """Solid-colour PNGs ``0.png, 1.png, ...`` with captions as metadata.jsonl, .txt files, or none."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (colour, caption) in enumerate(items):
        Image.new("RGB", size, colour).save(folder / f"{i}.png")
        if captions == "txt":
            (folder / f"{i}.txt").write_text(caption)
        rows.append({"file_name": f"{i}.png", "text": caption})
    if captions == "jsonl":
        (folder / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return folder


def colour_set(folder: Path, *, captions: str = "jsonl") -> Path:
    """Two colours, each with its own caption spelt in the tiny tokenizer's vocabulary."""
    return write_images(folder, [(RED, "lower"), (BLUE, "newer"), (RED, "lower"), (BLUE, "newer")],
                        captions=captions)
