"""What a run reports while it works: plain events, handed to a callback (the CLI draws them; the engine never
prints). Worker processes write them as JSON lines to the run folder, where the launching process reads them."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable, Optional

KINDS = ("phase", "start", "step", "checkpoint", "validation", "note", "done")


@dataclass
class TrainEvent:
    kind: str                           # one of KINDS
    message: str = ""
    step: int = 0                       # optimizer steps done
    total: int = 0                      # optimizer steps the run will make
    loss: Optional[float] = None        # mean loss over the steps since the last step event (all processes)
    lr: Optional[float] = None
    steps_per_s: Optional[float] = None
    samples_per_s: Optional[float] = None
    memory_gib: Optional[float] = None  # peak: GPU memory allocated, or the process's peak RSS on a CPU
    path: Optional[str] = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainEvent":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


ProgressFn = Callable[[TrainEvent], None]


def no_progress(event: TrainEvent) -> None:
    return None


class JsonlProgress:
    """Appends each event as one JSON line (flushed) for a process that is not ours to call back."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def __call__(self, event: TrainEvent) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(event.to_dict()) + "\n")
            f.flush()


class JsonlReader:
    """Reads the events appended since the last call (whole lines only)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.offset = 0

    def read(self) -> list[TrainEvent]:
        if not self.path.is_file():
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            chunk = f.read()
        end = chunk.rfind(b"\n")
        if end < 0:
            return []
        self.offset += end + 1
        out = []
        for line in chunk[:end].splitlines():
            try:
                out.append(TrainEvent.from_dict(json.loads(line)))
            except (ValueError, TypeError):
                continue
        return out
