"""Sampler names: ours (short, for --scheduler) -> the diffusers scheduler class, its options, and the name
A1111 writes in its "parameters" text (so other tools show the same sampler)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lorahub_cli.errors import UsageError

DEFAULT_SCHEDULER = "dpm"   # DPMSolverMultistep (DPM++ 2M), as the diffusers LoRA blog uses
FLOW_SCHEDULER = "flow-euler"   # flow-matching bases (Flux, SD3) sample with their own Euler; the others refuse


@dataclass(frozen=True)
class SchedulerSpec:
    cls: str                      # diffusers class name
    a1111: str                    # the "Sampler:" value A1111 writes
    options: dict[str, Any] = field(default_factory=dict)
    flow: bool = False            # a flow-matching sampler (Flux, SD3): it takes sigmas the others refuse


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
    FLOW_SCHEDULER: SchedulerSpec("FlowMatchEulerDiscreteScheduler", "Euler", flow=True),
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


def is_flow_matching(pipe: Any) -> bool:
    """Whether ``pipe``'s base samples by flow matching (its own scheduler, before any swap, says so)."""
    original = getattr(pipe, "_lorahub_base_scheduler", None) or getattr(pipe, "scheduler", None)
    return type(original).__name__.startswith("FlowMatch")


def scheduler_for(pipe: Any, name: str | None) -> str:
    """The scheduler ``pipe`` samples with: ``name`` (checked to fit the base), else the base kind's default."""
    flow = is_flow_matching(pipe)
    if name is None:
        return FLOW_SCHEDULER if flow else DEFAULT_SCHEDULER
    key = name.strip().lower()
    spec = scheduler_spec(key)
    if spec.flow != flow:
        fits = [n for n, s in SCHEDULERS.items() if s.flow == flow]
        kind = "a flow-matching base (Flux, SD3)" if flow else "a noise-prediction base (SD1/SD2/SDXL)"
        raise UsageError(f"--scheduler {key} does not sample {kind}; choose one of: {', '.join(fits)}",
                         code="unknown-scheduler")
    return key


def set_scheduler(pipe: Any, name: str) -> None:
    """Replace the pipeline's scheduler by ``name``'s, built from the base's own scheduler config (betas,
    prediction type and timestep spacing carry over)."""
    import diffusers

    spec = scheduler_spec(name)
    cls = getattr(diffusers, spec.cls)
    pipe.scheduler = cls.from_config(pipe.scheduler.config, **spec.options)
