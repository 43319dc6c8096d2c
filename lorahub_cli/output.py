"""The only module that knows about the terminal.

Results (tables, JSON) go to stdout; progress, logs, warnings and errors go to stderr. User-supplied text
(file names, adapter names, metadata) is always printed with markup off and control and bidi characters
escaped, so a crafted name can neither style, break nor visually reorder the terminal.

One ``Output`` is built per invocation from its flags (--json, -q, -v, --no-color) and the streams of that
moment; nothing here is process-wide, so two invocations in one process (tests, scripts) never share state.
A command hands back a ``Result`` and the face's one dispatch renders it: as JSON, or for a person.
"""

from __future__ import annotations

import json
import os
import re
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, TextIO

from lorahub_cli.errors import LoraError

# C0 and C1 controls and DEL (ESC, CR, BEL, CSI ...), and the characters that reorder or hide text in a
# terminal: bidi embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069), the implicit marks
# (U+200E/U+200F, U+061C) and the line/paragraph separators (U+2028/U+2029). A name with U+202E can make
# "evil\u202egpj.exe" read as "evilexe.jpg".
_UNSAFE_CODES = [*range(0x00, 0x20), *range(0x7F, 0xA0), 0x061C, 0x200E, 0x200F, *range(0x2028, 0x202F),
                 *range(0x2066, 0x206A)]
_ESCAPES = {c: (f"\\x{c:02x}" if c <= 0xFF else f"\\u{c:04x}") for c in _UNSAFE_CODES}
UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")


def clean(text: object) -> str:
    """Printable form of user text: control and bidi characters shown escaped (``\\x1b``, ``\\u202e``)."""
    return str(text).translate(_ESCAPES)


@dataclass
class Result:
    """What a command hands back: the JSON value (``--json``), the human view, and the exit status.

    ``data`` is printed as is (objects with ``to_dict`` are converted); ``show(out)`` draws it for a person,
    and None means the command already said everything (e.g. `generate` reports each image as it is made).
    """

    data: Any
    show: Optional[Callable[["Output"], None]] = None
    exit_code: int = 0


class Output:
    """One invocation's output settings and streams; built once from the flags, then only read."""

    def __init__(self, *, json: bool = False, quiet: bool = False, verbose: int = 0, color: Optional[bool] = None,
                 stdout: Optional[TextIO] = None, stderr: Optional[TextIO] = None) -> None:
        self.json = json
        self.quiet = quiet
        self.verbose = verbose
        self.color = color  # None: rich decides (tty, NO_COLOR); False: --no-color
        self.stdout = stdout if stdout is not None else sys.stdout
        self.stderr = stderr if stderr is not None else sys.stderr
        self._out = None
        self._err = None

    # consoles are built on first use: importing rich costs time that `lora --version` should not pay
    @property
    def out(self):
        if self._out is None:
            from rich.console import Console

            self._out = Console(file=self.stdout, no_color=self.color is False, highlight=False, soft_wrap=False)
        return self._out

    @property
    def err(self):
        if self._err is None:
            from rich.console import Console

            self._err = Console(file=self.stderr, stderr=True, no_color=self.color is False, highlight=False)
        return self._err

    # --- the one dispatch ---------------------------------------------------------------------------
    def render(self, result: Any) -> int:
        """Print what a command returned (JSON or its human view) and give its exit status."""
        if not isinstance(result, Result):   # a bare exit status (or None) from a command with nothing to print
            return result if isinstance(result, int) else 0
        if self.json:
            self.emit_json(result.data)
        elif result.show is not None:
            result.show(self)
        return result.exit_code

    # --- machine output ---------------------------------------------------------------------------
    def emit_json(self, data: Any) -> None:
        # indented for a person at a terminal; compact for pipes (5x cheaper on a 10,000-entry list)
        indent = 2 if self.stdout.isatty() else None
        self.stdout.write(json.dumps(data, indent=indent, ensure_ascii=False, default=_json_default) + "\n")
        self.stdout.flush()

    def write_text(self, text: str) -> None:
        """Pre-rendered, already-cleaned text straight to stdout (for very long tables rich is too slow for)."""
        self.stdout.write(text)
        self.stdout.flush()

    # --- human output -----------------------------------------------------------------------------
    def print(self, *renderables: Any) -> None:
        self.out.print(*renderables)

    def line(self, text: str) -> None:
        """A plain line of (possibly user-supplied) text on stdout, never broken by us: a terminal wraps it
        itself, and a pipe gets it whole (a long path or source must stay one line for grep and cut)."""
        self.out.print(clean(text), markup=False, highlight=False, soft_wrap=True)

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

    def progress_enabled(self) -> bool:
        """Live progress only for a person watching: not with -q, --json, a pipe or LORAHUB_NO_PROGRESS=1."""
        return (not self.quiet and not self.json and self.stderr.isatty()
                and os.environ.get("LORAHUB_NO_PROGRESS") != "1")

    @contextmanager
    def progress(self, description: str, total: int | None = None, *, unit: str = "files") -> Iterator[Any]:
        """A progress bar on stderr; yields ``advance(n=1, description=None)``. Silent when not useful.

        The engine never sees rich: it gets ``advance`` (or a lambda around it) as a plain callback."""
        if not self.progress_enabled():
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


def human_size(n: int | None) -> str:
    if n is None:
        return ""
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"
