"""LoRA training (text-to-image fine-tuning and DreamBooth) for Stable Diffusion 1.x/2.x, through accelerate.

    from lorahub_cli.train import TrainConfig, train, register_result

    result = train(TrainConfig(base="runwayml/stable-diffusion-v1-5", data="photos/", name="my-style"),
                   progress=print)
    register_result(result)   # into the library, provenance "trained"

``train`` prepares the run folder (rundir.py), then trains in this process, or relaunches itself under
``accelerate launch`` for several processes (launch.py). Nothing here prints: progress goes to the callback.
Heavy libraries are imported inside the functions that need them.
"""

from __future__ import annotations

from typing import Optional

from lorahub_cli.train.config import TrainConfig
from lorahub_cli.train.events import ProgressFn, TrainEvent
from lorahub_cli.train.result import TrainResult

__all__ = ["TrainConfig", "TrainEvent", "TrainResult", "train", "register_result"]


def train(config: TrainConfig, progress: Optional[ProgressFn] = None) -> TrainResult:
    """Run (or resume) the training ``config`` describes; return where the adapter is and how it went."""
    from lorahub_cli.train.data import load_train_data
    from lorahub_cli.train.launch import launch, needs_relaunch
    from lorahub_cli.train.loop import run_training
    from lorahub_cli.train.rundir import discard_unstarted, prepare_run
    from lorahub_cli.train.setup import check_device

    check_device(config)                # cheap refusals first: no run folder for a start that cannot work
    if config.method in ("ti", "pivotal"):   # new tokens (and a LoRA): their own loop (train/ti.py)
        from lorahub_cli.train.ti import train_ti

        return train_ti(config, progress)
    load_train_data(config.resolved())  # data problems surface now, before a run folder or a model exists
    config, run = prepare_run(config)
    watch = _FirstStep(progress)
    try:
        if needs_relaunch(config):
            return launch(config, run, watch)
        return run_training(config, run, watch)
    except BaseException:
        if not watch.started:           # the base, targets, ... failed to load: leave no half-made run folder
            discard_unstarted(run)
        raise


class _FirstStep:
    """Passes progress events on, noting whether training reached its first step."""

    def __init__(self, progress: Optional[ProgressFn]):
        self.progress = progress
        self.started = False

    def __call__(self, event: TrainEvent) -> None:
        self.started = self.started or event.kind == "step"
        if self.progress is not None:
            self.progress(event)


def register_result(result: TrainResult, *, registry=None):
    """Add the trained adapter to the library (see register.py); returns the registry's AddResult."""
    from lorahub_cli.train.register import register_result as _register

    return _register(result, registry=registry)
