"""Sampler names: ours (short, for --scheduler) -> the diffusers scheduler class, its options, and the name
A1111 writes in its "parameters" text (so other tools show the same sampler)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lorahub_cli.errors import UsageError

DEFAULT_SCHEDULER = "dpm"   # DPMSolverMultistep (DPM++ 2M), as the diffusers LoRA blog uses


@dataclass(frozen=True)
class SchedulerSpec:
    cls: str                      # diffusers class name
    a1111: str                    # the "Sampler:" value A1111 writes
    options: dict[str, Any] = field(default_factory=dict)


SCHEDULERS: dict[str, SchedulerSpec] = {
    "dpm": SchedulerSpec("DPMSolverMultistepScheduler", "DPM++ 2M",
                         {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": False}),
    "dpm-karras": SchedulerSpec("DPMSolverMultistepScheduler", "DPM++ 2M Karras",
                                {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True}),
    "dpm-sde": SchedulerSpec("DPMSolverMultistepScheduler", "DPM++ 2M SDE",
                             {"algorithm_type": "sde-dpmsolver++", "solver_order": 2, "use_karras_sigmas": False}),
    "euler": SchedulerSpec("EulerDiscreteScheduler", "Euler"),
    "euler-a": SchedulerSpec("EulerAncestralDiscreteScheduler", "Euler a"),
    "ddim": SchedulerSpec("DDIMScheduler", "DDIM"),
    "pndm": SchedulerSpec("PNDMScheduler", "PLMS"),
    "heun": SchedulerSpec("HeunDiscreteScheduler", "Heun"),
    "unipc": SchedulerSpec("UniPCMultistepScheduler", "UniPC"),
}


def scheduler_spec(name: str) -> SchedulerSpec:
    key = name.strip().lower()
    if key not in SCHEDULERS:
        raise UsageError(f"unknown scheduler {name!r}; choose one of: {', '.join(SCHEDULERS)}",
                         code="unknown-scheduler")
    return SCHEDULERS[key]


def name_of_class(cls_name: str) -> str | None:
    """Our name for a diffusers scheduler class (its first, plainest entry), None when we have none."""
    return next((name for name, spec in SCHEDULERS.items() if spec.cls == cls_name), None)


def set_scheduler(pipe: Any, name: str) -> None:
    """Replace the pipeline's scheduler by ``name``'s, built from the base's own scheduler config (betas,
    prediction type and timestep spacing carry over)."""
    import diffusers

    spec = scheduler_spec(name)
    cls = getattr(diffusers, spec.cls)
    pipe.scheduler = cls.from_config(pipe.scheduler.config, **spec.options)
