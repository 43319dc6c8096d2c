"""What a finished run hands back (also written to result.json by relaunched workers)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Optional


@dataclass
class TrainResult:
    name: str
    run_dir: str
    adapter: Optional[str]               # the adapter file (None on processes other than the main one)
    card: Optional[str]
    steps: int                           # optimizer steps the weights have seen
    resumed_from: Optional[int]          # the checkpoint step this process started from
    world_size: int
    final_loss: Optional[float]
    elapsed_s: float
    samples_per_s: Optional[float]       # training samples per second over this process's steps
    steps_per_s: Optional[float]
    cache: str                           # what was cached, for people
    mixed_precision: str
    device: str
    checkpoints: list[str] = field(default_factory=list)
    validation_images: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    library: Optional[dict[str, Any]] = None   # the registry's AddResult, once registered
    buckets: Optional[dict[str, int]] = None   # aspect-ratio buckets: images per "WIDTHxHEIGHT"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainResult":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
