"""Fixtures shared by every test area. Area-specific fixtures live in their own modules under tests/."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CORPUS = Path(os.environ.get("LORAHUB_CORPUS", REPO.parent / "shared" / "corpus" / "wild"))


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    """The real-file corpus beside the checkout; tests using it skip cleanly where it is absent."""
    if not (CORPUS / "MANIFEST.json").is_file():
        pytest.skip(f"real-file corpus not found at {CORPUS}")
    return CORPUS


@pytest.fixture
def tmp_home(tmp_path, monkeypatch) -> Path:
    """A fresh, empty library home for this test (database and blobs), also for subprocesses."""
    home = tmp_path / "lorahub-home"
    monkeypatch.setenv("LORAHUB_HOME", str(home))
    monkeypatch.delenv("LORAHUB_DATABASE_URL", raising=False)
    monkeypatch.setenv("LORAHUB_NO_PROGRESS", "1")
    return home


class CliResult:
    def __init__(self, proc: subprocess.CompletedProcess):
        self.returncode = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr

    def json(self):
        import json

        return json.loads(self.stdout)

    def __repr__(self) -> str:
        return f"<CliResult rc={self.returncode}\nstdout={self.stdout[-2000:]}\nstderr={self.stderr[-2000:]}>"


@pytest.fixture
def run_cli():
    """Run `lora ARGS...` in a real subprocess (the way users and scripts do) and capture everything."""

    def run(*args: str, env: dict | None = None, timeout: float = 300, cwd: str | None = None) -> CliResult:
        full_env = {**os.environ, "LORAHUB_NO_PROGRESS": "1", "COLUMNS": "200", **(env or {})}
        proc = subprocess.run([sys.executable, "-m", "lorahub_cli", *map(str, args)], capture_output=True,
                              text=True, env=full_env, timeout=timeout, cwd=cwd)
        return CliResult(proc)

    return run
