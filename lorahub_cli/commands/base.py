"""`lora base add / list / rm`: the base models you work with, remembered with their family and table hash."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from lorahub_cli.options import JsonOpt, Run
from lorahub_cli.output import Result

base_app = typer.Typer(name="base", help="Remember the base models you work with (id, family, module table hash).",
                       no_args_is_help=True)


@base_app.command("add")
def add_command(
    run: Run,
    base: Annotated[str, typer.Argument(help="A Hub model id (owner/name[@revision]), a local diffusers folder, a "
                                        "single-file checkpoint (.safetensors/.ckpt) or an alias.", show_default=False)],
    name: Annotated[Optional[str], typer.Option("--name", "-n", help="Name to use with --base (default: from the "
                                                "id).")] = None,
    borrow: Annotated[Optional[Path], typer.Option("--borrow", help="For a single-file checkpoint: a diffusers "
                                                   "folder to take configs, tokenizers and missing components "
                                                   "(VAE, text encoders) from.")] = None,
    json: JsonOpt = False,
) -> Result:
    """Resolve BASE (a Hub id's configs are fetched anew), hash its module tables and save it under a name.

    Saving an existing name again replaces it. Saved bases live in $LORAHUB_HOME/bases.json.

    Examples:

      lora base add stabilityai/stable-diffusion-xl-base-1.0 --name xl

      lora base add ~/models/my-sd15-finetune

      lora base add ~/ComfyUI/models/checkpoints/realisticVision_v60.safetensors --name rv --borrow ~/sd15-diffusers
    """
    from lorahub_cli.bases import add_base

    record = add_base(base, name=name, home=run.home, borrow=borrow)
    return Result(record, lambda out: out.line(f"saved {record.name}: {record.id} ({record.family}, "
                                               f"{', '.join(record.components)}; table hash {record.table_hash})"))


@base_app.command("list")
def list_command(run: Run, json: JsonOpt = False) -> Result:
    """The saved bases."""
    from lorahub_cli.bases import list_bases
    from lorahub_cli.render.check import render_bases

    rows = list_bases(home=run.home)
    return Result([r.to_dict() for r in rows], lambda out: render_bases(out, rows))


@base_app.command("rm")
def rm_command(
    run: Run,
    name: Annotated[str, typer.Argument(help="A saved base's name.", show_default=False)],
    json: JsonOpt = False,
) -> Result:
    """Forget a saved base (the Hugging Face cache and module tables are left alone)."""
    from lorahub_cli.bases import remove_base

    record = remove_base(name, home=run.home)
    return Result(record, lambda out: out.line(f"removed {record.name} ({record.id})"))


def register(app: typer.Typer) -> None:
    app.add_typer(base_app)
