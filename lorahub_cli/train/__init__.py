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
    from lorahub_cli.train.rundir import prepare_run

    load_train_data(config.resolved())  # data problems surface now, before a run folder or a model exists
    config, run = prepare_run(config)
    if needs_relaunch(config):
        return launch(config, run, progress)
    return run_training(config, run, progress)


def register_result(result: TrainResult, *, registry=None):
    """Add the trained adapter to the library (see register.py); returns the registry's AddResult."""
    from lorahub_cli.train.register import register_result as _register

    return _register(result, registry=registry)
