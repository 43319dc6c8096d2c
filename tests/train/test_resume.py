"""A run killed (SIGKILL) right after a checkpoint and resumed with --resume latest ends with exactly the
weights of an uninterrupted run, and lands in the library with provenance "trained"."""

from __future__ import annotations

import json
import signal

import pytest

from lorahub_cli.train import TrainConfig, train
from lorahub_cli.train.loop import KILL_ENV
from tests.fixtures.pipelines import RESOLUTION
from tests.train.conftest import colour_set

pytestmark = pytest.mark.slow


def test_killed_and_resumed_run_matches_an_uninterrupted_one(tiny_base, tmp_path, tmp_home,
                                                              run_cli_subprocess):
    from safetensors.torch import load_file

    from registry.api import Registry

    data = colour_set(tmp_path / "data")
    settings = dict(resolution=RESOLUTION, batch_size=2, max_steps=6, checkpointing_steps=2, seed=7, lr=1e-3,
                    random_flip=True)
    reference = train(TrainConfig(base=str(tiny_base), data=str(data), name="reference", register=False,
                                  **settings))

    args = ["train", "--base", tiny_base, "--data", data, "-o", "resumed", "--resolution", RESOLUTION,
            "--batch-size", 2, "--max-steps", 6, "--checkpointing-steps", 2, "--seed", 7, "--lr", 1e-3,
            "--random-flip"]
    killed = run_cli_subprocess(*args, env={KILL_ENV: "4"})
    assert killed.returncode == -signal.SIGKILL, killed
    run = tmp_home / "runs" / "resumed"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-4"]
    assert not list(run.glob("*.safetensors"))   # no finished adapter

    again = run_cli_subprocess(*args)   # without --resume the killed run is protected
    assert again.returncode == 1 and "--resume latest" in again.stderr, again

    resumed = run_cli_subprocess(*args, "--resume", "latest", "--json")
    assert resumed.returncode == 0, resumed
    out = resumed.json()
    assert out["resumed_from"] == 4 and out["steps"] == 6

    expected, got = load_file(reference.adapter), load_file(out["adapter"])
    at_4 = load_file(str(run / "checkpoints" / "checkpoint-4" / "pytorch_lora_weights.safetensors"))
    assert expected.keys() == got.keys()
    assert all(expected[k].equal(got[k]) for k in expected)       # bit for bit
    assert any(not at_4[k].equal(got[k]) for k in got)             # and steps 5-6 did train

    entry = Registry().get("resumed")
    assert entry.sources[0].kind == "trained" and entry.sources[0].path == str(run)
    assert "trained" in entry.tags and entry.base_model == str(tiny_base)
    recorded = json.loads(entry.metadata["lorahub.training"])["config"]
    assert recorded["seed"] == 7 and recorded["random_flip"] is True and recorded["max_steps"] == 6
    assert out["library"]["name"] == "resumed"


def test_data_errors_come_before_any_run_folder(tiny_base, tmp_path, tmp_home, run_cli):
    (tmp_path / "empty").mkdir()
    result = run_cli("train", "--base", tiny_base, "--data", tmp_path / "empty", "-o", "nothing", "--json")
    assert result.returncode == 1
    assert result.json()["error"]["code"] == "empty-dataset"
    assert not (tmp_home / "runs" / "nothing").exists()


def test_resuming_past_a_lowered_max_steps_reports_the_checkpoint_steps(tiny_base, tmp_path, tmp_home):
    data = colour_set(tmp_path / "data")
    settings = dict(base=str(tiny_base), data=str(data), name="past", register=False, resolution=RESOLUTION,
                    batch_size=2, checkpointing_steps=2, seed=3)
    train(TrainConfig(max_steps=4, **settings))
    again = train(TrainConfig(max_steps=2, resume="latest", **settings))   # checkpoint-4 is newer than step 2
    assert again.resumed_from == 4 and again.steps == 4                   # what the saved weights have seen
    assert again.samples_per_s is None and again.steps_per_s is None       # no step was trained here
