"""Command modules. Typer lives only here. Each module exposes ``register(app)``; each command takes the
invocation's ``Run`` (settings such as ``home``, and its ``Output`` for progress and warnings) and its own
options, makes one or two engine/registry calls, and returns a ``Result`` (JSON value, human view, exit
status) that ``app.dispatch`` renders; a LoraError is rendered there too. Heavy imports stay inside the
command body."""

from lorahub_cli.commands import base as _base
from lorahub_cli.commands import check as _check
from lorahub_cli.commands import civitai as _civitai
from lorahub_cli.commands import convert as _convert
from lorahub_cli.commands import export as _export
from lorahub_cli.commands import extract as _extract
from lorahub_cli.commands import generate as _generate
from lorahub_cli.commands import grid as _grid
from lorahub_cli.commands import inspect as _inspect
from lorahub_cli.commands import library as _library
from lorahub_cli.commands import lock as _lock
from lorahub_cli.commands import merge as _merge
from lorahub_cli.commands import preview as _preview
from lorahub_cli.commands import pull as _pull
from lorahub_cli.commands import resize as _resize
from lorahub_cli.commands import push as _push
from lorahub_cli.commands import serve as _serve
from lorahub_cli.commands import train as _train

COMMAND_MODULES = [_inspect, _library, _pull, _push, _civitai, _check, _base, _merge, _train, _generate, _convert, _resize, _extract, _export, _lock, _serve, _grid, _preview]
