"""Shared command-line options, declared once so every command spells and documents them the same way, and
the per-invocation ``Settings`` / ``Run`` that the root options become."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

if TYPE_CHECKING:
    from lorahub_cli.output import Output

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout (errors too).")]
OutputOpt = Annotated[Optional[Path], typer.Option("--output", "-o", help="Where to write the result.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cuda, cuda:N or cpu.")]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="auto, fp16, bf16 or fp32.")]
NoHashOpt = Annotated[bool, typer.Option("--no-hash", help="Skip hashing (and the zero-weight check): header only, milliseconds even for GB files.")]
AdapterRef = Annotated[str, typer.Argument(help="A library name, a unique sha256 prefix, or a file path.", show_default=False)]


@dataclass(frozen=True)
class Settings:
    """The root options of one invocation (--home, -v, -q, --no-color), built by the root callback.

    ``home`` is None when neither --home nor LORAHUB_HOME names one: the registry's default then applies.
    Nothing is written to the environment; commands pass ``home`` down (``Registry(home=run.home)``).
    """

    home: Optional[Path] = None
    verbose: int = 0
    quiet: bool = False
    color: Optional[bool] = None


@dataclass(frozen=True)
class Run:
    """What a command receives besides its own arguments: the invocation's settings and its one Output."""

    settings: Settings
    out: "Output"

    @property
    def home(self) -> Optional[Path]:
        return self.settings.home
