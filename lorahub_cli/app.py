"""Root Typer app: root options, the list of commands, and the one dispatch every command goes through.

The root callback turns --home/-v/-q/--no-color into a ``Settings`` kept on the click context (never in the
environment). Each command is wrapped at registration: the wrapper builds the invocation's ``Output`` (its
--json plus the root flags), calls the command with a ``Run``, renders the ``Result`` it returns (JSON or for a
person) and renders a ``LoraError`` once, with its exit status. Command modules import only light code at top.
"""

from __future__ import annotations

import functools
import inspect
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from lorahub_cli import __version__
from lorahub_cli.options import Run, Settings

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
    ctx = _click().get_current_context()
    ctx.obj = Settings(home=home.expanduser() if home is not None else None, verbose=verbose, quiet=quiet,
                       color=False if no_color else None)


def dispatch(command: Callable[..., Any]) -> Callable[..., Any]:
    """``command(run, **options)`` as Typer sees it (``**options``): the one place that builds the Output,
    renders the result and maps a LoraError to its message and exit status."""
    from lorahub_cli.errors import LoraError
    from lorahub_cli.output import Output

    @functools.wraps(command)
    def run_command(**options: Any) -> int:
        settings = _click().get_current_context().find_root().obj or Settings()
        out = Output(json=bool(options.get("json")), quiet=settings.quiet, verbose=settings.verbose,
                     color=settings.color)
        try:
            return out.render(command(Run(settings, out), **options))
        except LoraError as err:
            out.error(err)
            return err.exit_code

    # Typer reads the options from the signature: hide the ``run`` that the wrapper supplies
    signature = inspect.signature(command, eval_str=True)
    run_command.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[p for name, p in signature.parameters.items() if name != "run"])
    run_command.__annotations__ = {k: v for k, v in command.__annotations__.items() if k != "run"}
    return run_command


def _wrap_commands(typer_app: typer.Typer) -> None:
    for info in typer_app.registered_commands:
        if info.callback is not None and "run" in inspect.signature(info.callback).parameters:
            info.callback = dispatch(info.callback)
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            _wrap_commands(group.typer_instance)


def _click():
    """Typer >= 0.20 vendors click as typer._click; older releases use the click package."""
    try:
        import typer._click as click
    except ImportError:  # pragma: no cover - depends on the installed typer
        import click
    return click


def _register() -> None:
    from lorahub_cli.commands import COMMAND_MODULES

    for module in COMMAND_MODULES:
        module.register(app)
    _wrap_commands(app)


_register()
