"""Benchmark: `lora add --in-place` over 1,000 small real-shaped adapter files, then the same folder again.

    .venv/bin/python scripts/bench_add.py [--n 1000]

The first run inspects, hashes and records every file (files/s); the second run over the unchanged folder
must hash nothing: it is checked from the command's own JSON ("hashed": false, status "unchanged" for every
file), not inferred from timing. For scale, `lora add` that copies into the store is timed on the same
files, and one `lora inspect --json` pass (inspection and hashing alone, nothing recorded).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def run(args: list[str], env: dict) -> tuple[float, list]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "lorahub_cli", *args], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"lora {' '.join(args)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return wall, json.loads(proc.stdout)


def main() -> None:
    from tests.registry.helpers import write_kohya_sd1

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        lora_dir = Path(tmp) / "models" / "Lora"
        for i in range(args.n):
            write_kohya_sd1(lora_dir / f"sub{i % 10}" / f"adapter_{i:04d}.safetensors", seed=i)
        size = sum(p.stat().st_size for p in lora_dir.rglob("*.safetensors"))
        base = {**os.environ, "LORAHUB_NO_PROGRESS": "1"}
        base.pop("LORAHUB_DATABASE_URL", None)
        env_in_place = {**base, "LORAHUB_HOME": str(Path(tmp) / "home-in-place")}
        env_copy = {**base, "LORAHUB_HOME": str(Path(tmp) / "home-copy")}

        rows = []
        wall, out = run(["inspect", str(lora_dir), "--json"], env_in_place)
        rows.append(("lora inspect (no recording)", wall, len(out), "-"))
        wall, out = run(["add", "--in-place", str(lora_dir), "--json"], env_in_place)
        assert [r["status"] for r in out] == ["added"] * args.n, "first run must add every file"
        rows.append(("lora add --in-place (first run)", wall, sum(r["hashed"] for r in out), "added"))
        wall, out = run(["add", "--in-place", str(lora_dir), "--json"], env_in_place)
        hashed = sum(r["hashed"] for r in out)
        assert {r["status"] for r in out} == {"unchanged"} and hashed == 0, "second run must hash nothing"
        rows.append(("lora add --in-place (unchanged rerun)", wall, hashed, "unchanged"))
        wall, out = run(["add", str(lora_dir), "--json"], env_copy)
        rows.append(("lora add (copy into the store)", wall, sum(r["hashed"] for r in out), "added"))

    print(f"\n{args.n} files, {size / 1e6:.1f} MB in all; one cold process per command (wall seconds)\n")
    print(f"| {'command':38} | {'wall s':>7} | {'files/s':>8} | {'files hashed':>12} | {'status':9} |")
    print(f"|{'-' * 40}|{'-' * 9}|{'-' * 10}|{'-' * 14}|{'-' * 11}|")
    for label, wall, hashed, status in rows:
        print(f"| {label:38} | {wall:7.2f} | {args.n / wall:8.0f} | {hashed:>12} | {status:9} |")


if __name__ == "__main__":
    main()
