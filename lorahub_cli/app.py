"""Root Typer app: root options, the list of commands, and the one dispatch every command goes through.

The root callback turns --home/-v/-q/--no-color into a ``Settings`` kept on the click context (never in the
environment). Each command is wrapped at registration: the wrapper builds the invocation's ``Output`` (its
--json plus the root flags), calls the command with a ``Run``, renders the ``Result`` it returns (JSON or for a
person) and renders a ``LoraError`` once, with its exit status. Command modules import only light code at top.
"""

from __future__ import annotations

import copy
import functools
import inspect
import os
from pathlib import Path
from typing import Annotated, Any, Callable, Optional, Sequence

import typer

from lorahub_cli import __version__
from lorahub_cli.options import Run, Settings

_VALUE_OPTIONS = {"--home"}   # root options that take a value (the next argument is not a command)

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


class dispatch:
    """``command(run, **options)`` as Typer sees it (``**options``): the one place that builds the Output,
    renders the result and maps a LoraError to its message and exit status.

    Typer reads the options from ``__signature__`` (without the ``run`` this wrapper supplies); it is worked
    out when Typer first asks, so `lora list` evaluates the annotations of one command, not of all of them.
    """

    def __init__(self, command: Callable[..., Any]) -> None:
        functools.update_wrapper(self, command)
        self.command = command
        self.__annotations__ = {k: v for k, v in command.__annotations__.items() if k != "run"}
        self._signature: Optional[inspect.Signature] = None

    @property
    def __signature__(self) -> inspect.Signature:
        if self._signature is None:
            signature = inspect.signature(self.command, eval_str=True)
            self._signature = signature.replace(
                parameters=[p for name, p in signature.parameters.items() if name != "run"])
        return self._signature

    def __call__(self, **options: Any) -> int:
        from lorahub_cli.errors import LoraError
        from lorahub_cli.output import Output

        settings = _click().get_current_context().find_root().obj or Settings()
        out = Output(json=bool(options.get("json")), quiet=settings.quiet, verbose=settings.verbose,
                     color=settings.color)
        try:
            return out.render(self.command(Run(settings, out), **options))
        except LoraError as err:
            out.error(err)
            return err.exit_code


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


def app_for(args: Sequence[str]) -> typer.Typer:
    """The app to run ``lora ARGS`` with: only the named command when ARGS name one, because click builds the
    options of every registered command before it runs any (a large part of `lora list`'s start-up); the
    commands without their options for help before a command, --version, or a name that is not a command
    (click then says so, with the names it knows); the whole app for shell completion."""
    if os.environ.get("_LORA_COMPLETE"):   # shell completion needs every command's options
        return app
    name = _command_name(args)
    commands = [c for c in app.registered_commands if c.name == name]
    groups = [g for g in app.registered_groups if _group_name(g) == name]
    if name is None or not (commands or groups):
        return _listed(app)   # help, --version, or a name that is not a command: names and summaries suffice
    one = copy.copy(app)
    one.registered_commands, one.registered_groups = commands, groups
    return one


def _listed(typer_app: typer.Typer) -> typer.Typer:
    """``typer_app`` with each command's options left out (its help text kept): what `lora --help` lists."""
    listed = copy.copy(typer_app)
    listed.registered_commands = []
    for info in typer_app.registered_commands:
        stub = copy.copy(info)
        stub.callback = _no_options(inspect.getdoc(info.callback) or "")
        listed.registered_commands.append(stub)
    listed.registered_groups = []
    for group in typer_app.registered_groups:
        stub = copy.copy(group)
        stub.typer_instance = _listed(group.typer_instance)
        listed.registered_groups.append(stub)
    return listed


def _no_options(doc: str) -> Callable[[], None]:
    def command() -> None:
        pass

    command.__doc__ = doc
    return command


def _command_name(args: Sequence[str]) -> Optional[str]:
    """The first argument that is not a root option (or its value), or None if help is asked for first."""
    value_next = False
    for arg in args:
        if value_next:
            value_next = False
        elif arg in ("-h", "--help", "--"):
            return None
        elif arg.startswith("-"):
            value_next = arg in _VALUE_OPTIONS
        else:
            return arg
    return None


def _group_name(group: Any) -> Optional[str]:
    name = group.name if isinstance(group.name, str) else group.typer_instance.info.name
    return name if isinstance(name, str) else None


def _register() -> None:
    from lorahub_cli.commands import COMMAND_MODULES

    for module in COMMAND_MODULES:
        module.register(app)
    _wrap_commands(app)


_register()
