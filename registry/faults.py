"""Test-only fault injection: ``LORAHUB_TEST_KILL_AT=<point>`` makes the process SIGKILL itself at that point.

Points: ``copy`` (a blob half-written to its temp file), ``before-commit`` (blob in place, nothing recorded),
``after-commit`` (recorded, before anything else happens). The reliability tests use it to prove that a
killed ``lora add`` leaves the registry and the store consistent. It costs one dict lookup when unset.
"""

from __future__ import annotations

import os
import signal

KILL_ENV = "LORAHUB_TEST_KILL_AT"


def kill_point(name: str) -> None:
    if os.environ.get(KILL_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
