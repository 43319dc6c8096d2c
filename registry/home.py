"""Where the library lives: ``$LORAHUB_HOME`` (default: the platform's user data dir) and the database URL."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional
from urllib.parse import quote, unquote

HOME_ENV = "LORAHUB_HOME"
DATABASE_URL_ENV = "LORAHUB_DATABASE_URL"


def home_dir() -> Path:
    value = os.environ.get(HOME_ENV)
    if value:
        return Path(value).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("lorahub", appauthor=False))


def database_url(home: Optional[Path] = None) -> str:
    url = os.environ.get(DATABASE_URL_ENV)
    if url:
        return url
    return sqlite_url((home or home_dir()) / "registry.db")


def sqlite_url(path: Path) -> str:
    """The SQLAlchemy URL of the SQLite file ``path``, percent-quoted: a home holding ``%2F``, ``?`` or ``#``
    names that folder, never another place or URL options. ``sqlite_file`` and SQLAlchemy's ``make_url``
    both unquote it back to ``path`` (built here by hand so that start-up does not import SQLAlchemy)."""
    return "sqlite:///" + quote(str(path), safe="/")


def sqlite_file(url: str) -> Optional[Path]:
    """The file of a plain ``sqlite:///path`` URL, or None (another backend, in-memory, or URL options).

    Parsed by hand so that read-only commands can open SQLite with the stdlib driver without importing
    SQLAlchemy (which alone costs about a third of a second at start-up).
    """
    for scheme in ("sqlite:///", "sqlite+pysqlite:///"):
        if url.startswith(scheme):
            rest = url[len(scheme):]
            if not rest or "?" in rest or rest == ":memory:":
                return None
            return Path(unquote(rest))
    return None
