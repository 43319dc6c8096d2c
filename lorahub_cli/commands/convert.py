"""`lora convert`: a pickle or a legacy-layout adapter -> a new, verified safetensors file that today's tools load."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lorahub_cli.options import JsonOpt, OutputOpt

STAGES = ("reading", "mapping", "writing", "verifying")


def convert_command(
    source: Annotated[str, typer.Argument(help="An adapter file (.safetensors, .bin, .pt, .pth, .ckpt).",
                                          show_default=False)],
    to: Annotated[str, typer.Option("--to", help="Target layout: diffusers (what load_lora_weights loads), kohya "
                                    "(A1111 / ComfyUI, SD1/SD2/SDXL), or safetensors (same keys, only the "
                                    "container changes).")] = "diffusers",
    output: OutputOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Replace OUT if it exists.")] = False,
    json: JsonOpt = False,
) -> int:
    """Convert an adapter into a new safetensors file: pickles safely, legacy layouts to ones that load.

    Pickles are read with torch's weights-only loader and nothing else (a pickle that asks to import code is
    refused with unsafe-pickle). Module names are mapped onto the real architecture of the adapter's base
    (attn-procs, diffusers-old, peft, unprefixed diffusers, kohya and cloneofsimo positional files); each
    module keeps its rank and alpha. The output is written to a temporary file, read back and compared bit
    for bit with what was read, then renamed into place; the source's sha256, format, family and ModelSpec
    keys are added to its header. A cloneofsimo X.pt is merged with the X.text_encoder.pt beside it.

    Default OUT: beside the source, <stem>.diffusers.safetensors (or .kohya.safetensors; .safetensors for
    --to safetensors).

    Examples:

      lora convert pytorch_lora_weights.bin

      lora convert my_lora.safetensors --to kohya -o my_lora_a1111.safetensors

      lora convert lora_weight.pt --json
    """
    from lorahub_cli.convert import TARGETS, convert_file, default_output
    from lorahub_cli.errors import UsageError
    from lorahub_cli.output import ui

    ui.json = json
    if to not in TARGETS:
        raise UsageError(f"--to {to!r} is not a target layout; use one of: {', '.join(TARGETS)}")
    path = resolve_source(source)
    dst = output or default_output(path, to)
    with ui.progress(f"converting {path.name}", total=len(STAGES), unit="steps") as advance:
        result = convert_file(path, dst, to=to, force=force,
                              progress=lambda stage: advance(1, description=f"{stage} {path.name}"))
    if json:
        ui.emit_json(result.to_dict())
    else:
        from lorahub_cli.render.convert import render_result

        render_result(result)
    return 0


def resolve_source(source: str) -> Path:
    """SOURCE as a file. The seam for library entries: once `lora convert NAME` should accept a library name or
    sha256 prefix, resolve it to the stored blob's path here (and record the new entry after converting)."""
    from lorahub_cli.errors import NotFound

    path = Path(source).expanduser()
    if not path.exists():
        raise NotFound(f"no such file: {source}", hint="Give the path of an adapter file.")
    return path


def register(app: typer.Typer) -> None:
    app.command("convert")(convert_command)
