"""Fixtures shared by every test area. Area-specific fixtures live in their own modules under tests/.

Every test runs in its own environment (``_isolated_environment``, autouse): its own library home and Hugging
Face home, offline, no colour, a fixed width, no progress bars. Nothing a test does reaches the developer's
library, cache or network, and nothing one test leaves behind reaches the next.

``run_cli`` runs `lora ARGS...` in this process through ``lorahub_cli.__main__.main`` (the console script's own
code path), which saves the interpreter start and the imports (torch alone is seconds) on every call.
``run_cli_subprocess`` runs a real process, for the tests where the process is the point: import-time checks,
kill -9, concurrency, isatty and signals.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CORPUS = Path(os.environ.get("LORAHUB_CORPUS", REPO.parent / "shared" / "corpus" / "wild"))
# module tables are derived from public configs alone (keyed by their hash and the library versions), so every
# test and every session may share them: a cold build costs seconds, a warm read milliseconds
TABLE_CACHE = Path(tempfile.gettempdir()) / f"lorahub-test-cache-{getattr(os, 'getuid', lambda: 0)()}"
# a developer's own settings that would change what a test sees (tokens, caches, a database)
_CLEARED = ("LORAHUB_DATABASE_URL", "LORAHUB_DEBUG", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_CACHE",
            "HUGGINGFACE_HUB_CACHE", "FORCE_COLOR")


@pytest.fixture(autouse=True)
def _isolated_environment(tmp_path, monkeypatch):
    """Its own LORAHUB_HOME and HF_HOME for every test, offline, plain and fixed-width output. A test (or an
    area's fixture) may set any of these again; monkeypatch restores them all afterwards."""
    for name in _CLEARED:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LORAHUB_HOME", str(tmp_path / "lorahub-home"))
    monkeypatch.setenv("LORAHUB_CACHE_DIR", str(TABLE_CACHE))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("LORAHUB_NO_PROGRESS", "1")
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None and constants.HF_HUB_OFFLINE:
        # huggingface_hub reads HF_HUB_OFFLINE once, at import: an import during an offline test would keep every
        # later test offline. The project reads the variable per call (HubSettings), and that is what tests see.
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    """The real-file corpus beside the checkout; tests using it skip cleanly where it is absent."""
    if not (CORPUS / "MANIFEST.json").is_file():
        pytest.skip(f"real-file corpus not found at {CORPUS}")
    return CORPUS


@pytest.fixture
def tmp_home() -> Path:
    """This test's library home (database and blobs), as the autouse fixture set it; also for subprocesses."""
    return Path(os.environ["LORAHUB_HOME"])


class CliResult:
    """What one `lora` run did: ``returncode``, ``stdout``, ``stderr`` (text), and ``json()`` of stdout."""

    def __init__(self, proc: subprocess.CompletedProcess):
        self.returncode = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr

    def json(self):
        import json

        return json.loads(self.stdout)

    def __repr__(self) -> str:
        return f"<CliResult rc={self.returncode}\nstdout={self.stdout[-2000:]}\nstderr={self.stderr[-2000:]}>"


class _Stream(io.TextIOWrapper):
    """A text stream over bytes, like a pipe's: has ``buffer``, is not a tty, has no file descriptor."""

    def __init__(self, errors: str = "strict", data: bytes = b""):
        super().__init__(io.BytesIO(data), encoding="utf-8", errors=errors, newline=None, write_through=True)

    def text(self) -> str:
        self.flush()
        return self.buffer.getvalue().decode("utf-8", errors="replace")


def run_in_process(args, *, env: dict | None = None, cwd=None) -> CliResult:
    """`lora ARGS` through ``main(argv)`` with stdin empty and stdout/stderr captured; ``env`` (None values
    unset a variable) and ``cwd`` apply to this call only and are restored afterwards."""
    from lorahub_cli.__main__ import main

    argv = [str(a) for a in args]
    out, err = _Stream(), _Stream(errors="backslashreplace")   # Python's own choice for each stream
    with pytest.MonkeyPatch.context() as mp:
        for key, value in (env or {}).items():
            if value is None:
                mp.delenv(key, raising=False)
            else:
                mp.setenv(key, str(value))
        if cwd is not None:
            mp.chdir(cwd)
        mp.setattr(sys, "stdin", _Stream(data=b""))
        mp.setattr(sys, "stdout", out)
        mp.setattr(sys, "stderr", err)
        try:
            code = main(argv)
        except SystemExit as exc:   # what the console script would turn into an exit status
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return CliResult(subprocess.CompletedProcess(["lora", *argv], code, out.text(), err.text()))


@pytest.fixture
def run_cli():
    """Run `lora ARGS...` in this process (see ``run_in_process``); ``timeout`` is accepted for the
    subprocess fixture's signature and ignored here (tests must not depend on time)."""

    def run(*args: str, env: dict | None = None, timeout: float = 300, cwd: str | None = None) -> CliResult:
        return run_in_process(args, env=env, cwd=cwd)

    return run


@pytest.fixture
def run_cli_subprocess():
    """Run `lora ARGS...` in a real subprocess (the way users and scripts do) and capture everything."""

    def run(*args: str, env: dict | None = None, timeout: float = 300, cwd: str | None = None) -> CliResult:
        full_env = {**os.environ, **(env or {})}
        proc = subprocess.run([sys.executable, "-m", "lorahub_cli", *map(str, args)], capture_output=True,
                              text=True, env=full_env, timeout=timeout, cwd=cwd,
                              stdin=subprocess.DEVNULL)
        return CliResult(proc)

    return run
