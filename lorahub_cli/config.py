"""The user's settings file: ``<home>/config.toml``, beside the library (``$LORAHUB_HOME``, or ``--home``).

    [civitai]
    token = "..."     # an API key; CIVITAI_API_TOKEN, when set, wins over it

Read only by the code that needs one of its values (never at start-up, never by `lora list`), and only when
the environment does not already give that value. The token is a secret: it is never printed, logged or
stored in the database, and a file that other users may read or write (any of the mode bits 0o077) is
used with a warning that says how to fix it. A file that is not valid TOML, or a value of the wrong type,
is ``bad-config``. No file is no settings.
"""

from __future__ import annotations

import os
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from lorahub_cli.errors import BadConfig

FILENAME = "config.toml"
CIVITAI_TOKEN_ENV = "CIVITAI_API_TOKEN"
MAX_SIZE = 1 << 20   # a settings file, not a data file: refuse anything bigger before reading it


@dataclass
class Config:
    """What the file says (None: not set). ``warnings``: what the user should know about the file itself."""

    path: Path
    civitai_token: Optional[str] = field(default=None, repr=False)
    warnings: list[str] = field(default_factory=list)


def config_path(home: Path) -> Path:
    return Path(home) / FILENAME


def load_config(home: Path) -> Config:
    """The settings at ``<home>/config.toml`` (an empty ``Config`` when there is no file)."""
    path = config_path(home)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return Config(path)
    except OSError as exc:
        raise BadConfig(f"cannot read {path}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise BadConfig(f"{path} is not a regular file")
    if info.st_size > MAX_SIZE:
        raise BadConfig(f"{path} is {info.st_size:,} bytes; a settings file is at most {MAX_SIZE:,}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise BadConfig(f"cannot read {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise BadConfig(f"{path} is not valid TOML: {exc}") from None
    except RecursionError:   # tomllib recurses per nesting level
        raise BadConfig(f"{path} nests too deeply to be a settings file") from None
    civitai = data.get("civitai", {})
    if not isinstance(civitai, dict):
        raise BadConfig(f"{path}: [civitai] must be a table")
    token = civitai.get("token")
    if token is not None and not _usable_token(token):
        raise BadConfig(f"{path}: civitai.token must be a non-empty string of printable ASCII characters")
    config = Config(path, civitai_token=token.strip() if token else None)
    if config.civitai_token and info.st_mode & 0o077:
        config.warnings.append(f"{path} holds your Civitai token and other users may read or change it "
                               f"(mode {stat.S_IMODE(info.st_mode):04o}); run `chmod 600 {path}`")
    return config


def civitai_token(home: Path) -> tuple[Optional[str], list[str]]:
    """(the Civitai API token, warnings): ``$CIVITAI_API_TOKEN`` when set, else the file's ``civitai.token``
    (the file is not read at all when the variable is set)."""
    token = os.environ.get(CIVITAI_TOKEN_ENV)
    if token:
        if not _usable_token(token):   # it would go into an HTTP header: say so without showing it
            raise BadConfig(f"${CIVITAI_TOKEN_ENV} must be printable ASCII (no spaces inside, no line breaks)")
        return token.strip(), []
    config = load_config(home)
    return config.civitai_token, list(config.warnings)


def _usable_token(token: object) -> bool:
    """A token that fits an ``Authorization: Bearer`` header as it is: printable ASCII with no inner space
    (a line break or a non-Latin-1 character would otherwise surface, token and all, in an HTTP error)."""
    return isinstance(token, str) and bool(token.strip()) and token.strip().isascii() \
        and token.strip().isprintable() and " " not in token.strip()
