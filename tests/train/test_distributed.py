"""--num-processes 2 on a CPU: accelerate launch starts two gloo workers; one adapter comes out."""

from __future__ import annotations

import json

import pytest

from tests.fixtures.pipelines import RESOLUTION
from tests.train.conftest import colour_set

pytestmark = pytest.mark.slow


def test_two_processes_train_one_adapter(tiny_base, tmp_path, tmp_home, run_cli_subprocess):
    from safetensors import safe_open

    data = colour_set(tmp_path / "data")
    result = run_cli_subprocess("train", "--base", tiny_base, "--data", data, "-o", "ddp",
                                "--resolution", RESOLUTION, "--batch-size", 1, "--max-steps", 2,
                                "--checkpointing-steps", 2, "--seed", 1, "--num-processes", 2, "--json", timeout=400)
    assert result.returncode == 0, result
    out = result.json()
    assert out["world_size"] == 2 and out["steps"] == 2
    run = tmp_home / "runs" / "ddp"
    assert sorted(p.name for p in run.glob("*.safetensors")) == ["ddp.safetensors"]   # named after the run
    # every rank saved its own RNG state into the shared checkpoint: both took part
    ckpt = run / "checkpoints" / "checkpoint-2"
    assert sorted(p.name for p in ckpt.glob("random_states_*.pkl")) == ["random_states_0.pkl",
                                                                          "random_states_1.pkl"]
    with safe_open(out["adapter"], framework="pt") as f:
        summary = json.loads(f.metadata()["lorahub.training"])["summary"]
    assert summary["world_size"] == 2 and summary["effective_batch_size"] == 2
    assert out["library"]["status"] == "added"
