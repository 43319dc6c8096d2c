"""Real read-only homes and real full disks for subprocess runs of `lora`, with no mocks.

Root ignores permission bits, so a read-only home for root is a read-only bind mount inside a private mount
namespace (``unshare -m``: nothing changes outside that one process tree). Other users get ``chmod -w``,
which they cannot ignore. A full disk is a small tmpfs mounted the same way and filled to the brim. A
file-size limit (RLIMIT_FSIZE, Python ignores SIGXFSZ so writes fail with EFBIG) needs no privilege. Tests
skip, with the reason, where none of these is possible.
"""

from __future__ import annotations

import os
import resource
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Optional

import pytest

_unshare_ok: Optional[bool] = None


def can_unshare() -> bool:
    global _unshare_ok
    if _unshare_ok is None:
        tool = shutil.which("unshare")
        _unshare_ok = bool(tool) and os.geteuid() == 0 and subprocess.run(
            [tool, "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt 2>/dev/null || "
                                     "mount -t tmpfs -o size=64k tmpfs /tmp"],
            capture_output=True).returncode == 0
    return _unshare_ok


def _env(home: Path, env: Optional[dict]) -> dict:
    return {**os.environ, "LORAHUB_HOME": str(home), "LORAHUB_NO_PROGRESS": "1", "COLUMNS": "200", **(env or {})}


def _lora(*args: str) -> str:
    return " ".join(shlex.quote(a) for a in (sys.executable, "-m", "lorahub_cli", *map(str, args)))


def run_read_only(home: Path, *args: str, env: Optional[dict] = None) -> subprocess.CompletedProcess:
    """`lora ARGS` with ``home`` read-only for it (a read-only bind mount as root, chmod -w otherwise)."""
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in [home, *home.rglob("*")] if p.is_dir()}
        for p in modes:
            p.chmod(stat.S_IMODE(modes[p]) & ~0o222)
        try:
            return subprocess.run([sys.executable, "-m", "lorahub_cli", *map(str, args)], capture_output=True,
                                  text=True, env=_env(home, env), timeout=300)
        finally:
            for p, mode in modes.items():
                p.chmod(stat.S_IMODE(mode))
    if not can_unshare():
        pytest.skip("no way to make a read-only home for root here (unshare -m with mount is not permitted)")
    h = shlex.quote(str(home))
    script = f"mount --bind {h} {h} && mount -o remount,bind,ro {h} {h} && exec {_lora(*args)}"
    return subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True,
                          env=_env(home, env), timeout=300)


def run_on_full_disk(home: Path, *args: str, room: int = 0) -> subprocess.CompletedProcess:
    """`lora ARGS` with ``home`` copied onto a small tmpfs that is then filled until ``room`` bytes are left
    (the copy on the tmpfs is thrown away with the mount namespace; ``home`` itself is not touched)."""
    if not can_unshare():
        pytest.skip("no way to mount a small tmpfs here (needs root and unshare -m)")
    size = sum(p.stat().st_size for p in home.rglob("*") if p.is_file()) + (1 << 20)
    h = shlex.quote(str(home))
    script = (f"mount -t tmpfs -o size={size} tmpfs {h}.full 2>/dev/null || exit 97; "
              f"cp -a {h}/. {h}.full/ && mount --bind {h}.full {h} && "
              f"(dd if=/dev/zero of={h}/.filler bs=4096 2>/dev/null; true) && "
              f"(dd if=/dev/zero of={h}/.filler2 bs=1 2>/dev/null; true) && "
              f"{'truncate -s -' + str(room) + ' ' + h + '/.filler && ' if room else ''}"
              f"exec {_lora(*args)}")
    Path(f"{home}.full").mkdir(exist_ok=True)
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True,
                          env=_env(home, None), timeout=300)
    if proc.returncode == 97:
        pytest.skip("could not mount a tmpfs")
    return proc


def run_with_file_size_limit(home: Path, limit: int, *args: str) -> subprocess.CompletedProcess:
    """`lora ARGS` under RLIMIT_FSIZE = ``limit`` bytes (writes past it fail with EFBIG)."""

    def limit_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run([sys.executable, "-m", "lorahub_cli", *map(str, args)], capture_output=True, text=True,
                          env=_env(home, None), timeout=300, preexec_fn=limit_files)
