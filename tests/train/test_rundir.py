"""Run folders: defaults resolved and saved, earlier runs protected, resumes checked against the first run."""

from __future__ import annotations

import json

import pytest

from lorahub_cli.errors import AlreadyExists, UsageError
from lorahub_cli.train.config import TrainConfig
from lorahub_cli.train.rundir import RunFolder, prepare_run
from lorahub_cli.train.setup import mixed_precision


def _config(tmp_path, **kw) -> TrainConfig:
    return TrainConfig(base=str(tmp_path), data=str(tmp_path), name="run", run_dir=str(tmp_path / "run"), **kw)


def test_defaults_follow_the_diffusers_scripts(tmp_path):
    ft = _config(tmp_path).resolved()
    assert (ft.rank, ft.alpha, ft.lr, ft.batch_size, ft.epochs) == (4, 4.0, 1e-4, 16, 100)
    assert ft.targets == ["to_k", "to_q", "to_v", "to_out.0"]
    db = _config(tmp_path, mode="dreambooth", instance_prompt="a photo of sks dog").resolved()
    assert (db.lr, db.batch_size, db.max_steps) == (5e-4, 4, 500)
    assert db.targets[-2:] == ["add_k_proj", "add_v_proj"]


def test_prepare_saves_the_resolved_config_with_a_seed(tmp_path):
    config, run = prepare_run(_config(tmp_path))
    saved = json.loads(run.config_file.read_text())
    assert saved["seed"] == config.seed and isinstance(config.seed, int)
    assert saved["lr"] == 1e-4 and saved["run_dir"] == str(tmp_path / "run")


def _fake_checkpoint(run: RunFolder, step: int) -> None:
    ckpt = run.checkpoint(step)
    ckpt.mkdir(parents=True)
    (ckpt / "train_state.json").write_text(json.dumps({"step": step}))


def test_a_folder_with_a_run_is_not_overwritten(tmp_path):
    _, run = prepare_run(_config(tmp_path, seed=1))
    prepare_run(_config(tmp_path, seed=1))   # nothing saved yet: starting again is fine
    _fake_checkpoint(run, 2)
    with pytest.raises(AlreadyExists) as err:
        prepare_run(_config(tmp_path, seed=1))
    assert "--resume latest" in err.value.hint


def test_resume_latest_picks_the_newest_finished_checkpoint(tmp_path):
    _, run = prepare_run(_config(tmp_path, seed=5))
    _fake_checkpoint(run, 2)
    _fake_checkpoint(run, 10)
    (run.checkpoints / ".tmp-checkpoint-12").mkdir()   # a half-written one is never used
    config, _ = prepare_run(_config(tmp_path, resume="latest"))
    assert config.resume == str(run.checkpoint(10)) and config.seed == 5


def test_resume_refuses_changed_training_settings(tmp_path):
    _, run = prepare_run(_config(tmp_path, seed=5, rank=4))
    _fake_checkpoint(run, 2)
    with pytest.raises(UsageError) as err:
        prepare_run(_config(tmp_path, rank=8, resume="latest"))
    assert err.value.code == "resume-mismatch" and "rank" in err.value.message
    config, _ = prepare_run(_config(tmp_path, rank=4, max_steps=900, resume="latest"))   # more steps: fine
    assert config.max_steps == 900


def test_fp16_needs_a_gpu(tmp_path):
    with pytest.raises(UsageError, match="fp16"):
        mixed_precision(_config(tmp_path, mixed_precision="fp16"), cpu=True)
    assert mixed_precision(_config(tmp_path), cpu=True) == "no"


def test_dreambooth_needs_an_instance_prompt(tmp_path):
    with pytest.raises(UsageError, match="instance-prompt"):
        _config(tmp_path, mode="dreambooth").resolved()


@pytest.mark.parametrize("setting, flag", [("checkpoints_total_limit", "--checkpoints-limit"),
                                           ("validation_images", "--validation-images"),
                                           ("validation_inference_steps", "--validation-steps")])
def test_counts_below_one_are_refused(tmp_path, setting, flag):
    # --checkpoints-limit 0 would delete every checkpoint, the one just written included
    with pytest.raises(UsageError, match=flag):
        _config(tmp_path, **{setting: 0}).validate()


@pytest.mark.parametrize("setting, value, flag", [
    ("lr", float("nan"), "--lr"), ("lr", float("inf"), "--lr"), ("alpha", float("nan"), "--alpha"),
    ("alpha", -1.0, "--alpha"), ("prior_loss_weight", float("inf"), "--prior-loss-weight"),
    ("prior_loss_weight", -0.5, "--prior-loss-weight"), ("snr_gamma", float("nan"), "--snr-gamma"),
    ("snr_gamma", 0.0, "--snr-gamma"), ("validation_guidance", float("nan"), "validation_guidance"),
])
def test_float_settings_must_be_finite_and_in_range(tmp_path, setting, value, flag):
    # NaN passes "lr > 0"-style checks by failing every comparison; it must be refused before a run starts
    with pytest.raises(UsageError, match=flag):
        _config(tmp_path, **{setting: value}).validate()


# --- a start that fails leaves no run folder behind -------------------------------------------------------
def _start(tmp_path, tiny_base, **kw) -> TrainConfig:
    from tests.fixtures.pipelines import RESOLUTION
    from tests.train.conftest import colour_set

    data = colour_set(tmp_path / "data")
    settings = dict(base=str(tiny_base), data=str(data), name="failed", resolution=RESOLUTION, batch_size=2,
                    max_steps=1, seed=0, register=False)
    return TrainConfig(**{**settings, **kw})


@pytest.mark.parametrize("change, error", [
    (dict(mixed_precision="fp16"), "fp16 needs a CUDA GPU"),              # refused before the folder is made
    (dict(targets=["foo_bar"]), "foo_bar"),                               # found when the adapters attach
    (dict(base="no/such-base-anywhere"), "no/such-base-anywhere"),        # found when the base loads (offline)
])
def test_a_failed_start_leaves_no_run_folder(tiny_base, tmp_path, tmp_home, monkeypatch, change, error):
    from lorahub_cli.errors import LoraError
    from lorahub_cli.train import train

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(LoraError, match=error):
        train(_start(tmp_path, tiny_base, **change))
    assert not (tmp_home / "runs" / "failed").exists()


def test_a_failed_resume_keeps_the_folder_it_found(tiny_base, tmp_path, tmp_home):
    from lorahub_cli.errors import LoraError
    from lorahub_cli.train import train

    config = _start(tmp_path, tiny_base, targets=["foo_bar"])
    _, run = prepare_run(config)                 # an earlier start left its folder (nothing trained yet)
    with pytest.raises(LoraError, match="foo_bar"):
        train(config.replace(resume="latest"))
    assert run.config_file.is_file()


def test_validation_every_without_a_prompt_is_refused(tmp_path):
    """It would silently make no images at all."""
    with pytest.raises(UsageError, match="--validation-prompt"):
        _config(tmp_path, validation_every=1).validate()
    _config(tmp_path, validation_every=1, validation_prompt="a dog").validate()
