"""`lora inspect`: what each adapter file is, from its bytes alone."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lorahub_cli.options import JsonOpt, NoHashOpt, Run
from lorahub_cli.output import Result


def inspect_command(
    run: Run,
    paths: Annotated[list[Path], typer.Argument(help="Adapter files, or folders to search recursively.",
                                                show_default=False)],
    json: JsonOpt = False,
    no_hash: NoHashOpt = False,
) -> Result:
    """Say what each adapter file is: format, base family (and why), rank, components, hashes, metadata.

    Reads only the safetensors header (no torch) plus one streaming pass for the hashes; pickles are read with
    torch's weights-only loader and never executed, after a bounded scan of their opcodes. Files that cannot be
    inspected are reported with a stable error code (not-an-adapter-file, not-a-file, lfs-pointer, truncated,
    corrupt-header, unsafe-pickle, pickle-bomb, unsupported-dtype, not-a-lora, not-diffusion,
    invalid-embedding, textual-inversion for token vectors no embedding layout holds) and the command exits 1; the other files are still reported. A folder with no adapter
    file in it is a failure too (not-found).

    Textual-inversion embeddings (A1111 .pt/.safetensors, diffusers learned_embeds, SDXL clip_l/clip_g) are
    reported as kind "embedding": their tokens (an A1111 file's is its stem), vector count, widths (768 SD1,
    1024 SD2, 768+1280 SDXL), family and dtype.

    Examples:

      lora inspect pytorch_lora_weights.safetensors

      lora inspect ~/models/Lora --json --no-hash

      lora inspect embeddings/EasyNegative.safetensors
    """
    from lorahub_cli.inspect import InspectFailure, inspect_paths
    from lorahub_cli.render.inspect import render_reports

    results = list(inspect_paths(paths, hash=not no_hash))
    return Result([r.to_dict() for r in results], lambda out: render_reports(out, results),
                  1 if any(isinstance(r, InspectFailure) for r in results) else 0)


def register(app: typer.Typer) -> None:
    app.command("inspect")(inspect_command)
