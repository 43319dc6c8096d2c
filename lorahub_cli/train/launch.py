"""Several processes: relaunch the training under ``accelerate launch`` and follow it from here.

``--num-processes N`` starts N local workers (torch distributed through accelerate's launcher: NCCL on GPUs,
gloo on CPUs); ``--accelerate-config FILE`` hands the whole topology (several machines, DeepSpeed, SLURM
settings) to accelerate. The workers run ``python -m lorahub_cli.train.worker RUN_DIR``, which reads the run's
config.json; the main worker writes progress events to progress.jsonl (read back here and passed on to the
caller's callback), and result.json or error.json at the end. Their own output goes to launch.log.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Optional

from lorahub_cli.errors import LoraError, TrainingFailed
from lorahub_cli.train.config import TrainConfig
from lorahub_cli.train.events import JsonlReader, ProgressFn, no_progress
from lorahub_cli.train.result import TrainResult
from lorahub_cli.train.rundir import RunFolder

WORKER_ENV = "LORAHUB_TRAIN_WORKER"   # set in launched workers: they must not launch again
_POLL_S = 0.2


def inside_worker() -> bool:
    return os.environ.get(WORKER_ENV) == "1"


def needs_relaunch(config: TrainConfig) -> bool:
    return (config.num_processes > 1 or config.accelerate_config is not None) and not inside_worker()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_command(config: TrainConfig, run: RunFolder) -> list[str]:
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    if config.accelerate_config:
        cmd += ["--config_file", str(config.accelerate_config)]
        if config.num_processes > 1:
            cmd += ["--num_processes", str(config.num_processes)]
    else:
        # accelerate's multi-GPU launcher is torch.distributed.run; on a CPU-only machine the workers'
        # Accelerator(cpu=True) then joins a gloo process group instead of NCCL
        cmd += ["--multi_gpu", "--num_processes", str(config.num_processes), "--num_machines", "1",
                "--main_process_port", str(free_port()), "--mixed_precision", "no", "--dynamo_backend", "no"]
    return cmd + ["-m", "lorahub_cli.train.worker", str(run.root)]


def launch(config: TrainConfig, run: RunFolder, progress: Optional[ProgressFn] = None) -> TrainResult:
    """Run the workers to the end, passing their progress on; return the main worker's result."""
    emit = progress or no_progress
    env = {**os.environ, WORKER_ENV: "1", "PYTHONUNBUFFERED": "1"}
    if config.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    reader = JsonlReader(run.progress_file)
    with open(run.launch_log, "wb") as log:
        proc = subprocess.Popen(launch_command(config, run), stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            while proc.poll() is None:
                for event in reader.read():
                    emit(event)
                time.sleep(_POLL_S)
        except BaseException:
            _stop(proc)
            raise
    for event in reader.read():
        emit(event)
    if run.error_file.is_file():
        raise _error_from(json.loads(run.error_file.read_text(encoding="utf-8")))
    if proc.returncode != 0 or not run.result_file.is_file():
        raise TrainingFailed(f"the training processes failed (exit status {proc.returncode})",
                             hint=f"Their output is in {run.launch_log}:\n{_tail(run.launch_log)}")
    return TrainResult.from_dict(json.loads(run.result_file.read_text(encoding="utf-8")))


def _stop(proc: subprocess.Popen) -> None:
    """Interrupt the launcher's process group (ours: started with a new session), then make sure."""
    try:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=20)
    except (ProcessLookupError, PermissionError):
        return
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _error_from(data: dict) -> LoraError:
    err = LoraError(data.get("message", "training failed"), hint=data.get("hint"), code=data.get("code"))
    err.exit_code = int(data.get("exit_code", err.exit_code))
    return err


def _tail(path, lines: int = 15) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
