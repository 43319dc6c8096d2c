"""Root Typer app: root options and the list of commands. Command modules import only light code at top."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from lorahub_cli import __version__
from lorahub_cli.output import ui

app = typer.Typer(
    name="lora",
    help=(
        "Collect, inspect, repair, combine and use LoRA adapters for Stable Diffusion-family models.\n\n"
        "Exit status: 0 success; 1 negative answer or rejected input; 2 usage error; "
        "3 could not decide or reach what was needed."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"lora {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    home: Annotated[Optional[Path], typer.Option("--home", envvar="LORAHUB_HOME", show_envvar=True,
                                                 help="Library folder (database and blobs).")] = None,
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="More detail on stderr.")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only results and errors.")] = False,
    no_color: Annotated[bool, typer.Option("--no-color", envvar="NO_COLOR", help="Plain text output.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    if home is not None:
        os.environ["LORAHUB_HOME"] = str(home.expanduser())
    ui.verbose = verbose
    ui.quiet = quiet
    if no_color:
        ui.color = False


def _register() -> None:
    from lorahub_cli.commands import COMMAND_MODULES

    for module in COMMAND_MODULES:
        module.register(app)


_register()
