"""Benchmark: `lora sync` of N library entries into a fresh folder (hard links + A1111 sidecars), the re-run with
nothing changed, and `cp -al` of the same blob files, side by side.

    .venv/bin/python scripts/bench_sync.py [--n 5000] [--runs 3]

The library is built the way scripts/bench_list.py builds its own (one bulk insert through the registry's
tables), plus one small real file per entry in the blob store (sync links the bytes, it never reads them).
Each measurement is a fresh `lora sync --to DIR` process (start-up, database read, plan, links, sidecars,
fsyncs, manifest), timed as wall time and as the process's CPU time (user + system; a busy shared machine
inflates wall time far more). `cp -al` links the same N blob files into a fresh folder, with no sidecars and
no fsync: the floor for making N links. The issue's targets: >= 1,000 entries/s fresh, re-run under 1 s.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))


def build(home: Path, n: int) -> None:
    from bench_list import fill   # the same bulk library as the `lora list` benchmark

    from registry.api import Registry

    fill(home, n)
    with Registry(home=home) as registry:
        for row in registry.list():
            blob = registry.store.path_for(row.sha256)
            blob.parent.mkdir(parents=True, exist_ok=True)
            blob.write_bytes(row.sha256.encode() * 16)   # 1 KB: links cost the same for any size


def timed(cmd: list[str], env: dict) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child) for one run of ``cmd``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        tmp = Path(tmp)
        home = tmp / "home"
        build(home, args.n)
        env = {**os.environ, "LORAHUB_HOME": str(home), "LORAHUB_NO_PROGRESS": "1"}
        lora = [sys.executable, "-m", "lorahub_cli"]
        fresh, rerun, cp = [], [], []
        for run in range(args.runs):
            out = tmp / f"ui-{run}"
            fresh.append(timed([*lora, "sync", "--to", str(out)], env))
            rerun.append(timed([*lora, "sync", "--to", str(out)], env))
            files = sum(1 for _ in out.rglob("*.safetensors"))
            assert files == args.n, files
            dest = tmp / f"cp-{run}"
            cp.append(timed(["cp", "-al", str(home / "blobs" / "sha256"), str(dest)], env))
            shutil.rmtree(out)
            shutil.rmtree(dest)
        floor = timed([*lora, "--version"], env)

    def line(label: str, rows: list[tuple[float, float]], per: bool) -> str:
        wall = statistics.median(w for w, _ in rows)
        cpu = min(c for _, c in rows)
        rate = f"  {args.n / wall:8,.0f} entries/s" if per else ""
        return f"{label:<44} wall {wall:6.3f} s (min {min(w for w, _ in rows):.3f})  cpu {cpu:6.3f} s{rate}"

    print(f"{args.n} entries, {args.runs} runs (median wall; min CPU = user+sys of the process)")
    print(line("lora sync, fresh folder (links + sidecars)", fresh, True))
    print(line("lora sync, re-run, nothing changed", rerun, False))
    print(line("cp -al of the same blob files (links only)", cp, True))
    print(line("lora --version (process start-up floor)", [floor], False))


if __name__ == "__main__":
    main()
