"""One training process started by ``accelerate launch`` (see launch.py): ``python -m lorahub_cli.train.worker
RUN_DIR``. Reads RUN_DIR/config.json; the main process reports progress to progress.jsonl and writes
result.json, or error.json with the error's code, message and hint."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def _is_main() -> bool:
    return os.environ.get("RANK", "0") == "0"


def main(argv: list[str]) -> int:
    from lorahub_cli.train.logs import quiet_libraries

    quiet_libraries()
    from lorahub_cli.errors import LoraError
    from lorahub_cli.train.config import TrainConfig
    from lorahub_cli.train.events import JsonlProgress
    from lorahub_cli.train.loop import run_training
    from lorahub_cli.train.rundir import RunFolder, write_json_atomic

    run = RunFolder(Path(argv[1]))
    try:
        config = TrainConfig.from_dict(json.loads(run.config_file.read_text(encoding="utf-8")))
        result = run_training(config, run, JsonlProgress(run.progress_file))
    except LoraError as err:
        if _is_main():
            write_json_atomic(run.error_file, {**err.to_dict(), "exit_code": err.exit_code})
        return 1
    if _is_main():
        write_json_atomic(run.result_file, result.to_dict())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
