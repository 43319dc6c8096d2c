"""Shared command-line options, declared once so every command spells and documents them the same way."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout (errors too).")]
OutputOpt = Annotated[Optional[Path], typer.Option("--output", "-o", help="Where to write the result.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cuda, cuda:N or cpu.")]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="auto, fp16, bf16 or fp32.")]
NoHashOpt = Annotated[bool, typer.Option("--no-hash", help="Skip hashing (and the zero-weight check): header only, milliseconds even for GB files.")]
AdapterRef = Annotated[str, typer.Argument(help="A library name, a unique sha256 prefix, or a file path.", show_default=False)]
