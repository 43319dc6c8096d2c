"""Write and read lockfiles as TOML: stdlib ``tomllib`` reads; this tiny writer writes the one shape we use.

The writer emits only strings, integers, finite floats, top-level keys and arrays of tables
(``[[adapters]]``, ``[[adapters.sources]]``), with strings escaped as TOML basic strings, so every file it
writes reads back equal (a test round-trips odd names). Reading is bounded (MAX_LOCK_BYTES) and goes
through ``LockFile.from_dict``, which checks every field.
"""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path
from typing import Any

from lorahub_cli.errors import BadLock, NotAFile
from lorahub_cli.lock.model import LockFile

MAX_LOCK_BYTES = 16 << 20
HEADER = ("# lora.lock: adapters by sha256, with where to fetch each (most precise source first).\n"
          "# Written by `lora lock`; review it, keep it with your project, and run `lora install lora.lock`.\n")


def dumps(lock: LockFile) -> str:
    data = lock.to_dict()
    lines = [HEADER]
    for key in ("version", "base", "base_id"):
        if key in data:
            lines.append(f"{key} = {_value(data[key])}\n")
    for entry in data["adapters"]:
        lines.append("\n[[adapters]]\n")
        for key, value in entry.items():
            if key != "sources":
                lines.append(f"{key} = {_value(value)}\n")
        for source in entry["sources"]:
            lines.append("[[adapters.sources]]\n")
            lines.extend(f"{k} = {_value(v)}\n" for k, v in source.items())
    return "".join(lines)


def loads(text: str, what: str = "the lock") -> LockFile:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BadLock(f"{what} is not valid TOML: {str(exc)[:200]}") from None
    return LockFile.from_dict(data, what)


def read_lock(path: Path) -> LockFile:
    """The lock at ``path``: a regular file of at most MAX_LOCK_BYTES, UTF-8 TOML."""
    path = Path(path)
    if not path.is_file():
        raise NotAFile(f"{path} is not a file", hint="Write one with `lora lock NAME... -o lora.lock`.")
    with open(path, "rb") as fh:
        raw = fh.read(MAX_LOCK_BYTES + 1)
    if len(raw) > MAX_LOCK_BYTES:
        raise BadLock(f"{path} is larger than {MAX_LOCK_BYTES >> 20} MiB; a lock is a small text file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadLock(f"{path} is not UTF-8 text") from None
    return loads(text, str(path))


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("a lock holds finite numbers only")
        return repr(value)
    # a JSON string is a valid TOML basic string once non-ASCII stays literal and \u escapes are kept
    # (TOML has no \/ escape and JSON never writes one)
    return json.dumps(str(value), ensure_ascii=False).replace("\x7f", "\\u007f")
