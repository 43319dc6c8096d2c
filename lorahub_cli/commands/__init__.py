"""Command modules. Typer lives only here. Each module exposes ``register(app)``; each command parses its
arguments, makes one or two engine/registry calls and renders. Heavy imports stay inside the command body."""

from lorahub_cli.commands import inspect as _inspect

COMMAND_MODULES = [_inspect]
