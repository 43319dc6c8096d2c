"""The checks of values a person gives: one place for the command line, recipes and the Python API.

An option (`--steps 30`, `-a style:0.8`), a field of a recipe embedded in a PNG (`"steps": 30`) and a keyword
of ``Library.generate`` pass through the same function here, so a recipe is exactly as strict as the command
line. Each check raises ``UsageError`` naming ``what`` was given; the recipe reader turns that into
``bad-recipe`` (the value came from a file, not from the person typing). Stdlib only: merge and pipeline both
use this module and neither imports the other.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Callable, Optional

from lorahub_cli.errors import UsageError

MAX_STEPS = 1000          # the schedulers' own num_train_timesteps: no sampler takes more steps than that
MAX_SIDE = 8192           # pixels per side; larger is no diffusion model's size and only runs out of memory
MAX_SEED = 2**64 - 1      # torch.Generator.manual_seed takes a 64-bit seed

# only a trailing ":<number>" is a weight, so "C:\loras\a.safetensors:0.5" and "author:style" parse sensibly
_WEIGHTED = re.compile(r"^(?P<ref>.+):(?P<weight>[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)$")
# digits bounded: int() refuses a 5000-digit string
_SIZE = re.compile(r"\s*(\d{1,12})\s*(?:[xX\u00d7]\s*(\d{1,12}))?\s*")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# --- adapter weights ---------------------------------------------------------------------------------
def finite_weight(ref: str, weight: Any) -> float:
    """A weight must be a finite number: 1e309 parses as inf, and inf or NaN poisons every layer it touches."""
    if not _is_number(weight) or not math.isfinite(weight):
        raise UsageError(f"the weight of {ref} must be a finite number, got {weight!r}")
    return float(weight)


def parse_weighted(spec: str) -> tuple[str, float]:
    """"A:0.7" -> ("A", 0.7); "A" -> ("A", 1.0). An existing file whose name ends in ":<number>" is a file."""
    m = _WEIGHTED.match(spec)
    if m is None or Path(spec).exists():
        return spec, 1.0
    return m["ref"], finite_weight(m["ref"], float(m["weight"]))


def bad_weight(ref: str, names_something: Callable[[str], bool]) -> Optional[UsageError]:
    """For a reference that names nothing: when the text before its last ':' names a file or an adapter, the
    rest was meant as its weight and is not a number ("style:abc", "style:nan") -- say so, not "not found"."""
    head, colon, tail = ref.rpartition(":")
    if not colon or not head or not names_something(head):
        return None
    return UsageError(f"the weight {tail!r} of {head} must be a finite number (NAME:WEIGHT, e.g. {head}:0.8)")


# --- generation settings -----------------------------------------------------------------------------
def check_steps(steps: Any, what: str = "--steps") -> int:
    """Denoising steps: a whole number from 1 to MAX_STEPS (1e12 would run for ever; 1e308 is not a count)."""
    if not _is_int(steps) or not 1 <= steps <= MAX_STEPS:
        raise UsageError(f"{what} must be a whole number from 1 to {MAX_STEPS} (got {steps!r})")
    return int(steps)


def check_seed(seed: Any, what: str = "--seed") -> int:
    if not _is_int(seed) or not 0 <= seed <= MAX_SEED:
        raise UsageError(f"{what} must be a whole number from 0 to 2**64-1 (got {seed!r})")
    return int(seed)


def check_guidance(guidance: Any, what: str = "--guidance") -> float:
    """The CFG scale must be a finite number, not negative: NaN or inf would render a blank image and write a
    recipe that is not valid JSON."""
    if not _is_number(guidance) or not math.isfinite(guidance) or guidance < 0:
        raise UsageError(f"{what} must be a finite number of at least 0 (got {guidance!r})")
    return float(guidance)


def check_side(value: Any, what: str = "--size") -> int:
    """One side of the image: a whole number from 1 to MAX_SIDE (the base's own multiple is checked later,
    when the pipeline is known)."""
    if not _is_int(value) or not 1 <= value <= MAX_SIDE:
        raise UsageError(f"{what} must be a whole number of pixels from 1 to {MAX_SIDE} (got {value!r})")
    return int(value)


def parse_size(text: Optional[str], what: str = "--size") -> tuple[Optional[int], Optional[int]]:
    """"768x512" -> (768, 512); "512" -> (512, 512); None -> (None, None)."""
    if text is None:
        return None, None
    m = _SIZE.fullmatch(text)
    if m is None:
        raise UsageError(f"{what} {text!r}: give WIDTHxHEIGHT, e.g. 512x512")
    width = int(m[1])
    height = int(m[2]) if m[2] else width
    return check_side(width, f"{what} width"), check_side(height, f"{what} height")


def check_text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise UsageError(f"{what} must be text (got {type(value).__name__})")
    return value
