"""Human output of `lora generate`, `lora fuse` and `lora recipe`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lorahub_cli.output import Output, clean


def quiet_libraries() -> None:
    """diffusers / transformers progress bars and info logs would interleave with ours on stderr."""
    import os
    import warnings

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    # PEFT says this for every adapter after the first: expected here (--stack peft loads several on purpose)
    warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()


def render_generated(out: Output, shot: Any) -> None:
    r = shot.recipe
    note = "  (blanked by the base's safety checker)" if shot.blanked else ""
    out.line(f"wrote {shot.path}  seed {r.seed}  {r.width}x{r.height}  {r.steps} steps  {shot.seconds:.1f} s{note}")


def render_fused(out: Output, result: Any) -> None:
    for warning in result.warnings:
        out.warn(warning)
    out.line(f"fused {len(result.adapters)} adapter(s) into {result.base} ({result.layers} layers, "
            f"{result.dtype}) -> {result.output}")
    out.table(["ADAPTER", "WEIGHT", "SHA256"],
              [(a["name"], f"{a['weight']:g}", a["sha256"][:12]) for a in result.adapters])


def render_recipe(out: Output, recipe: Any, image: Path) -> None:
    from rich.table import Table
    from rich.text import Text

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold cyan", no_wrap=True)
    grid.add_column(overflow="fold")
    rows = [("image", str(image)), ("prompt", recipe.prompt), ("negative", recipe.negative_prompt or "-"),
            ("base", recipe.base if recipe.base == recipe.base_id else f"{recipe.base} ({recipe.base_id})"),
            ("seed", str(recipe.seed)), ("steps", str(recipe.steps)), ("guidance", f"{recipe.guidance:g}"),
            ("scheduler", recipe.scheduler), ("size", f"{recipe.width}x{recipe.height}"),
            ("applied", f"{recipe.stack}{', fused' if recipe.fused else ''} on {recipe.device}, {recipe.dtype}")]
    for key, value in rows:
        grid.add_row(key, Text(clean(value)))
    out.print(grid)
    if recipe.adapters:
        out.table(["ADAPTER", "WEIGHT", "SHA256", "FILE"],
                  [(a["name"], f"{a['weight']:g}", a["sha256"][:12], a.get("path", "library"))
                   for a in recipe.adapters])
    else:
        out.line("no adapters")


def render_parameters(out: Output, parameters: dict, image: Path) -> None:
    out.line(f"{image}: A1111 parameters (no lorahub recipe; not re-runnable with --from)")
    out.line(f"prompt: {parameters['prompt']}")
    if parameters["negative_prompt"]:
        out.line(f"negative: {parameters['negative_prompt']}")
    out.table(["KEY", "VALUE"], list(parameters["settings"].items()))
