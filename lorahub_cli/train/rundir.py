"""The run folder: where a run keeps its configuration, checkpoints, validation images and result.

    $LORAHUB_HOME/runs/<name>/            (or --run-dir)
      config.json                         the resolved TrainConfig (seed included): what ran
      <name>.safetensors                  the adapter, diffusers layout, named after the run (older runs:
                                          pytorch_lora_weights.safetensors)
      README.md                           model card
      checkpoints/checkpoint-<step>/      accelerate state + the adapter at that step + train_state.json
      validation/step-<step>-<i>.png      validation images, with the `lora generate` recipe in PNG text chunks
      validation/step-<step>/             the adapter at a step validated during training (named by the recipe)
      progress.jsonl, result.json         (relaunched runs) events and outcome of the worker processes

A new run refuses a folder that already holds a run; ``--resume latest`` continues it (or starts it, when it
has no checkpoint yet), after checking that what would change the weights is unchanged.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from lorahub_cli.errors import AlreadyExists, NotFound, UsageError
from lorahub_cli.targets import check_folder_output
from lorahub_cli.train.config import RESUMABLE_CHANGES, TrainConfig

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
STATE_FILE = "train_state.json"


@dataclass(frozen=True)
class RunFolder:
    root: Path
    created: bool = field(default=False, compare=False)   # made by this process's prepare_run (not resumed)

    @property
    def config_file(self) -> Path:
        return self.root / "config.json"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def validation(self) -> Path:
        return self.root / "validation"

    @property
    def progress_file(self) -> Path:
        return self.root / "progress.jsonl"

    @property
    def result_file(self) -> Path:
        return self.root / "result.json"

    @property
    def error_file(self) -> Path:
        return self.root / "error.json"

    @property
    def launch_log(self) -> Path:
        return self.root / "launch.log"

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints / f"checkpoint-{step}"

    def list_checkpoints(self) -> list[tuple[int, Path]]:
        """Finished checkpoints (a renamed folder is a finished one), oldest first."""
        if not self.checkpoints.is_dir():
            return []
        found = []
        for p in self.checkpoints.iterdir():
            m = _CHECKPOINT.match(p.name)
            if m and p.is_dir() and (p / STATE_FILE).is_file():
                found.append((int(m.group(1)), p))
        return sorted(found)

    def holds_a_run(self) -> bool:
        """Whether there is work to lose: a checkpoint or a finished adapter (a run that failed before its
        first checkpoint may simply be started again)."""
        # the finished adapter: <name>.safetensors (pytorch_lora_weights.safetensors before it was named)
        return any(p.is_file() for p in self.root.glob("*.safetensors")) or bool(self.list_checkpoints())


def default_run_dir(name: str) -> Path:
    from registry.home import home_dir

    return home_dir() / "runs" / name


def checkpoint_step(path: Path) -> int:
    state = Path(path) / STATE_FILE
    if not state.is_file():
        raise NotFound(f"{path} is not a lora train checkpoint (no {STATE_FILE})")
    return int(json.loads(state.read_text(encoding="utf-8"))["step"])


def write_json_atomic(path: Path, data: dict) -> None:
    from registry.publish import publish_file

    publish_file(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def prepare_run(config: TrainConfig) -> tuple[TrainConfig, RunFolder]:
    """Resolve defaults, the run folder, the seed and the checkpoint to resume from; write config.json."""
    from registry.names import validate_name

    validate_name(config.name)
    config = config.resolved()
    config = config.replace(**{k: _absolute(getattr(config, k)) for k in ("base", "data", "class_data")})
    root = Path(config.run_dir).expanduser() if config.run_dir else default_run_dir(config.name)
    check_folder_output(root, what="--run-dir")   # a folder, and not one of the library's own
    run = RunFolder(root.resolve())
    saved = _saved_config(run)
    resume = None
    if config.resume is not None:
        if saved is not None:
            _check_resumable(saved, config)
            if config.seed is None:
                config = config.replace(seed=saved.seed)
        resume = _resume_point(run, config.resume)
    elif run.holds_a_run():
        raise AlreadyExists(f"the run folder {run.root} holds an earlier run",
                            hint="Add --resume latest to continue it, or pick another -o NAME or --run-dir.")
    if config.seed is None:
        config = config.replace(seed=random.SystemRandom().randrange(2**31))
    config = config.replace(run_dir=str(run.root), resume=str(resume) if resume else None)
    if not run.root.exists():
        run = RunFolder(run.root, created=True)
    run.root.mkdir(parents=True, exist_ok=True)
    for stale in (run.result_file, run.error_file, run.progress_file):
        stale.unlink(missing_ok=True)
    write_json_atomic(run.config_file, config.to_dict())
    return config, run


def discard_unstarted(run: RunFolder) -> None:
    """Remove the folder of a run that failed before its first step, when this process made it: a failed
    start leaves nothing behind (a folder it found, resumed or not, is never touched)."""
    if run.created and not run.holds_a_run():
        shutil.rmtree(run.root, ignore_errors=True)


def _absolute(value: Optional[str]) -> Optional[str]:
    """Local paths made absolute (a resumed run may start elsewhere); Hub ids kept as they are."""
    if value is None:
        return None
    path = Path(value).expanduser()
    return str(path.resolve()) if path.exists() else value


def _saved_config(run: RunFolder) -> Optional[TrainConfig]:
    if not run.config_file.is_file():
        return None
    return TrainConfig.from_dict(json.loads(run.config_file.read_text(encoding="utf-8")))


def _check_resumable(saved: TrainConfig, new: TrainConfig) -> None:
    old, cur = saved.to_dict(), new.to_dict()
    ignore = set(RESUMABLE_CHANGES) | ({"seed"} if new.seed is None else set())
    changed = [k for k in cur if k not in ignore and old.get(k) != cur[k]]
    if changed:
        shown = ", ".join(f"{k}: {old.get(k)!r} -> {cur[k]!r}" for k in changed[:6])
        raise UsageError(f"cannot resume {new.name}: settings that shape the weights changed ({shown})",
                         code="resume-mismatch",
                         hint="Resume with the settings of the first run, or start a new run under another name.")


def _resume_point(run: RunFolder, resume: str) -> Optional[Path]:
    if resume == "latest":
        found = run.list_checkpoints()
        return found[-1][1] if found else None   # nothing saved yet: start from the beginning
    path = Path(resume).expanduser().resolve()
    checkpoint_step(path)
    return path


def prune_checkpoints(run: RunFolder, keep: Optional[int]) -> None:
    if keep is None:
        return
    found = run.list_checkpoints()
    for _, path in found[:max(0, len(found) - keep)]:
        shutil.rmtree(path, ignore_errors=True)
