"""`lora check`: does an adapter fit a base model, and how much of it will apply."""

from __future__ import annotations

from typing import Annotated

import typer

from lorahub_cli.options import JsonOpt, Run
from lorahub_cli.output import Result

BaseOpt = Annotated[str, typer.Option("--base", "-b", help="A Hub model id (owner/name[@revision]), a local "
                                      "diffusers folder, an alias (sd15, sd21, sdxl, sd3, flux) or a name saved "
                                      "with `lora base add`.", show_default=False)]


def check_command(
    run: Run,
    adapters: Annotated[list[str], typer.Argument(help="Adapter files, or library names / sha256 prefixes.",
                                                  show_default=False)],
    base: BaseOpt,
    json: JsonOpt = False,
) -> Result:
    """Say whether each adapter fits BASE: compatible, partial or incompatible, with coverage.

    Each adapter's layers are named by the same key normalisation `convert` uses and looked up in the base's
    module tables, built from its configs alone (model_index.json and each component's config.json, fetched
    once into the Hugging Face cache for a Hub id; never weights). A module applies when the base has that
    layer with the same shape, and it is the model the adapter was trained on: across families only the
    shared text encoders count (SDXL's first text encoder is SD1's CLIP ViT-L), never the U-Net.

    compatible: every module applies. partial: some do (or all of them, on text encoders shared by another
    family). incompatible: none, or none of the U-Net/transformer part.

    Exit status: 0 all compatible; 1 any partial, incompatible or unreadable; 3 could not decide (the base's
    configs are not reachable, e.g. offline and not cached).

    Examples:

      lora check my_style.safetensors --base sdxl

      lora check my-style other-style --base stabilityai/stable-diffusion-xl-base-1.0 --json
    """
    from lorahub_cli.bases import resolve_base
    from lorahub_cli.compat.engine import check_many
    from lorahub_cli.compat.model import COMPATIBLE, CheckFailure
    from lorahub_cli.errors import EXIT_UNREACHABLE
    from lorahub_cli.render.check import render_checks
    from registry.api import Registry

    resolved = resolve_base(base, home=run.home)
    with Registry(home=run.home) as registry:
        results = list(check_many(adapters, resolved, registry=registry))
    if any(isinstance(r, CheckFailure) and r.error.exit_code == EXIT_UNREACHABLE for r in results):
        code = EXIT_UNREACHABLE
    else:
        code = 0 if all(not isinstance(r, CheckFailure) and r.verdict == COMPATIBLE for r in results) else 1
    return Result([r.to_dict() for r in results], lambda out: render_checks(out, results, resolved.id), code)


def register(app: typer.Typer) -> None:
    app.command("check")(check_command)
