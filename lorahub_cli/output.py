"""The only module that knows about the terminal.

Results (tables, JSON) go to stdout; progress, logs, warnings and errors go to stderr. User-supplied text
(file names, adapter names, metadata) is always printed with markup off and control characters escaped,
so a crafted name can neither style nor break the terminal.
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from typing import Any, Iterable, Iterator, Sequence

from lorahub_cli.errors import LoraError

_CONTROL = {c: f"\\x{c:02x}" for c in list(range(0x00, 0x20)) + [0x7F]}


def clean(text: object) -> str:
    """Printable form of user text: control characters (ESC, CR, BEL, ...) shown escaped."""
    return str(text).translate(_CONTROL)


class UI:
    """Process-wide output settings; commands set ``json`` from their --json flag."""

    def __init__(self) -> None:
        self.json = False
        self.quiet = False
        self.verbose = 0
        self.color: bool | None = None  # None: rich decides (tty, NO_COLOR)
        self._out = None
        self._err = None

    # consoles are built on first use: importing rich costs time that `lora --version` should not pay
    @property
    def out(self):
        if self._out is None:
            from rich.console import Console

            self._out = Console(file=sys.stdout, no_color=self.color is False, highlight=False, soft_wrap=False)
        return self._out

    @property
    def err(self):
        if self._err is None:
            from rich.console import Console

            self._err = Console(file=sys.stderr, stderr=True, no_color=self.color is False, highlight=False)
        return self._err

    # --- machine output ---------------------------------------------------------------------------
    def emit_json(self, data: Any) -> None:
        # indented for a person at a terminal; compact for pipes (5x cheaper on a 10,000-entry list)
        indent = 2 if sys.stdout.isatty() else None
        sys.stdout.write(json.dumps(data, indent=indent, ensure_ascii=False, default=_json_default) + "\n")
        sys.stdout.flush()

    def write_text(self, text: str) -> None:
        """Pre-rendered, already-cleaned text straight to stdout (for very long tables rich is too slow for)."""
        sys.stdout.write(text)
        sys.stdout.flush()

    # --- human output -----------------------------------------------------------------------------
    def print(self, *renderables: Any) -> None:
        self.out.print(*renderables)

    def line(self, text: str) -> None:
        """A plain line of (possibly user-supplied) text on stdout."""
        self.out.print(clean(text), markup=False, highlight=False)

    def table(self, columns: Sequence[str], rows: Iterable[Sequence[Any]], *, title: str | None = None,
              justify: dict[str, str] | None = None) -> None:
        from rich.table import Table
        from rich.text import Text

        table = Table(title=title, header_style="bold", box=None, pad_edge=False, show_edge=False)
        justify = justify or {}
        for col in columns:
            table.add_column(col, justify=justify.get(col, "left"), overflow="fold")
        for row in rows:
            table.add_row(*(Text(clean(v if v is not None else "")) for v in row))
        self.out.print(table)

    # --- stderr ------------------------------------------------------------------------------------
    def info(self, message: str) -> None:
        if not self.quiet:
            self.err.print(clean(message), markup=False, highlight=False)

    def debug(self, message: str) -> None:
        if self.verbose:
            self.err.print(clean(message), markup=False, highlight=False, style="dim")

    def warn(self, message: str) -> None:
        if not self.quiet:
            from rich.text import Text

            self.err.print(Text("warning: ", style="yellow bold") + Text(clean(message)))

    def error(self, err: LoraError) -> None:
        """Render a LoraError once: JSON object on stdout with --json, else a line on stderr."""
        if self.json:
            self.emit_json({"error": err.to_dict()})
            return
        from rich.text import Text

        text = Text(f"error[{err.code}]: ", style="red bold") + Text(clean(err.message))
        self.err.print(text)
        if err.hint:
            self.err.print(Text("hint: ", style="bold") + Text(clean(err.hint)))

    @contextmanager
    def progress(self, description: str, total: int | None = None, *, unit: str = "files") -> Iterator[Any]:
        """A progress bar on stderr; yields ``advance(n=1, description=None)``. Silent when not useful."""
        enabled = not self.quiet and sys.stderr.isatty() and os.environ.get("LORAHUB_NO_PROGRESS") != "1"
        if not enabled:
            yield lambda n=1, description=None: None
            return
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TimeRemainingColumn()]
        with Progress(*columns, console=self.err, transient=True) as progress:
            task = progress.add_task(clean(description), total=total)

            def advance(n: int = 1, description: str | None = None) -> None:
                kwargs = {"description": clean(description)} if description else {}
                progress.update(task, advance=n, **kwargs)

            yield advance


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


ui = UI()


def human_size(n: int | None) -> str:
    if n is None:
        return ""
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"
