"""Benchmark: `lora serve` over a 10,000-adapter library: the first page and filtered pages, over real HTTP.

    .venv/bin/python scripts/bench_serve.py [--n 10000] [--runs 20]

Builds the library the way scripts/bench_list.py does (one bulk insert through the registry's own tables),
gives every tenth entry a preview image, starts `lora serve --port 0` as a real process (the URL is its first
stdout line), and times each request from send to the last byte, one at a time. The issue's target: the first
page and a filter each answer in under 200 ms.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

CASES = [
    ("first page (HTML, 50 rows, thumbnails)", "/"),
    ("first page, JSON API", "/api/adapters"),
    ("filter: family", "/?family=sdxl"),
    ("filter: tag", "/?tag=anime"),
    ("filter: text search", "/?q=trig99"),
    ("filter: text search, nothing matches", "/?q=no-such-thing"),
    ("last page", "/?page=200"),
    ("entry page", "/adapters/adapter-00042-sdxl-style"),
]


def add_previews(home: Path, every: int) -> int:
    from PIL import Image

    from lorahub_cli.previews import save_preview
    from registry.api import Registry

    n = 0
    with Registry(home=home) as reg:
        for row in reg.list()[::every]:
            buffer = io.BytesIO()
            Image.new("RGB", (64, 64), (n % 256, 80, 160)).save(buffer, format="PNG")
            save_preview(reg, row.name, buffer.getvalue(), source="bench")
            n += 1
    return n


def timed(url: str, runs: int) -> tuple[float, float, int]:
    times, size = [], 0
    for _ in range(runs):
        t0 = time.perf_counter()
        with urllib.request.urlopen(url, timeout=60) as response:
            size = len(response.read())
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times), size


def main() -> None:
    from bench_list import fill

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        t0 = time.perf_counter()
        fill(home, args.n)
        previews = add_previews(home, 10)
        print(f"built a {args.n}-adapter library ({previews} previews) in {time.perf_counter() - t0:.1f} s",
              file=sys.stderr)
        env = {**os.environ, "LORAHUB_HOME": str(home), "LORAHUB_NO_PROGRESS": "1"}
        env.pop("LORAHUB_DATABASE_URL", None)
        proc = subprocess.Popen([sys.executable, "-m", "lorahub_cli", "serve", "--port", "0"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            base = proc.stdout.readline().strip().rstrip("/")
            timed(base + "/", 3)   # warm: imports, templates compiled, SQLite pages cached
            print(f"| request ({args.n} entries) | min ms | median ms | bytes |")
            print("|---|---:|---:|---:|")
            for label, path in CASES:
                best, median, size = timed(base + path, args.runs)
                print(f"| {label} `{path}` | {best * 1000:.1f} | {median * 1000:.1f} | {size} |")
        finally:
            proc.terminate()
            proc.wait(timeout=60)


if __name__ == "__main__":
    main()
