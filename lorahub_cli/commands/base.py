"""`lora base add / list / rm`: the base models you work with, remembered with their family and table hash."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from lorahub_cli.options import JsonOpt

base_app = typer.Typer(name="base", help="Remember the base models you work with (id, family, module table hash).",
                       no_args_is_help=True)


@base_app.command("add")
def add_command(
    base: Annotated[str, typer.Argument(help="A Hub model id (owner/name[@revision]), a local diffusers folder or "
                                        "an alias.", show_default=False)],
    name: Annotated[Optional[str], typer.Option("--name", "-n", help="Name to use with --base (default: from the "
                                                "id).")] = None,
    json: JsonOpt = False,
) -> int:
    """Resolve BASE (a Hub id's configs are fetched anew), hash its module tables and save it under a name.

    Saving an existing name again replaces it. Saved bases live in $LORAHUB_HOME/bases.json.

    Examples:

      lora base add stabilityai/stable-diffusion-xl-base-1.0 --name xl

      lora base add ~/models/my-sd15-finetune
    """
    from lorahub_cli.bases import add_base
    from lorahub_cli.output import ui

    ui.json = json
    record = add_base(base, name=name)
    if json:
        ui.emit_json(record.to_dict())
    else:
        ui.line(f"saved {record.name}: {record.id} ({record.family}, {', '.join(record.components)}; "
                f"table hash {record.table_hash})")
    return 0


@base_app.command("list")
def list_command(json: JsonOpt = False) -> int:
    """The saved bases."""
    from lorahub_cli.bases import list_bases
    from lorahub_cli.output import ui

    ui.json = json
    rows = list_bases()
    if json:
        ui.emit_json([r.to_dict() for r in rows])
    else:
        from lorahub_cli.render.check import render_bases

        render_bases(rows)
    return 0


@base_app.command("rm")
def rm_command(
    name: Annotated[str, typer.Argument(help="A saved base's name.", show_default=False)],
    json: JsonOpt = False,
) -> int:
    """Forget a saved base (the Hugging Face cache and module tables are left alone)."""
    from lorahub_cli.bases import remove_base
    from lorahub_cli.output import ui

    ui.json = json
    record = remove_base(name)
    if json:
        ui.emit_json(record.to_dict())
    else:
        ui.line(f"removed {record.name} ({record.id})")
    return 0


def register(app: typer.Typer) -> None:
    app.add_typer(base_app)
