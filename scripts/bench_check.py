"""Benchmark `lora check` and `compatible_filter` (the engine of `lora list --compatible-with`).

    .venv/bin/python scripts/bench_check.py [--runs 7] [--entries 1000] [--write docs/benchmarks/check.md]

1. `lora check ADAPTER --base B --json` as a fresh process, module tables already cached (the state after the
   first check against a base), for an SD1.5 and an SDXL kohya file against an alias and a local folder base;
   beside it `lora --version` (interpreter + CLI start-up) and `lora inspect --no-hash` on the same file
   (what reading the header alone costs), measured in the same run.
2. ``compatible_filter`` over N library-like entries (a mix of SD1.5 / SDXL / SD2.1 / Flux kohya files, each
   entry its own path: hard links to one generated file per kind) against sdxl: cold (no verdict cache: every
   header is read and assessed) and warm (verdicts cached), in entries per second.
All in a temporary LORAHUB_HOME; nothing outside it is written except the fixture generator's table cache.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
MIX = (("sd15", "kohya", 4), ("sdxl", "kohya", 4), ("sd21", "kohya", 1), ("flux", "kohya-flux", 1))  # weights


@dataclass
class Entry:  # what compatible_filter reads from a registry row
    name: str
    sha256: str
    family: str
    path: str
    base_model: Optional[str] = None


def timed_process(cmd: list[str], env: dict, runs: int) -> tuple[float, float]:
    subprocess.run(cmd, env=env, capture_output=True)  # warm-up: page cache, .pyc
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True)
        times.append(time.perf_counter() - t0)
        if proc.returncode not in (0, 1):
            raise SystemExit(f"{cmd} failed ({proc.returncode}): {proc.stderr.decode()[-2000:]}")
    return min(times), statistics.median(times)


def make_files(work: Path) -> dict[str, Path]:
    from tests.fixtures.adapters import kohya_metadata, write_adapter

    files = {}
    for alias, fmt, _weight in MIX:
        meta = kohya_metadata(alias, 16) if fmt == "kohya" else None
        files[alias] = write_adapter(work / f"{alias}.safetensors", alias, fmt, rank=16, metadata=meta)
    return files


def make_entries(work: Path, files: dict[str, Path], n: int) -> list[Entry]:
    from lorahub_cli.inspect import inspect_file

    families = {alias: inspect_file(path, hash=False).family for alias, path in files.items()}
    cycle = [alias for alias, _fmt, weight in MIX for _ in range(weight)]
    links = work / "library"
    links.mkdir()
    entries = []
    for i in range(n):
        alias = cycle[i % len(cycle)]
        path = links / f"adapter-{i:05d}.safetensors"
        os.link(files[alias], path)
        entries.append(Entry(f"adapter-{i:05d}", f"{i:064x}", families[alias], str(path)))
    return entries


def bench_stages(path: Path, base: str, runs: int) -> dict[str, float]:
    """In one warm process: what a check of ``path`` spends where (median seconds)."""
    from lorahub_cli.bases import resolve_base
    from lorahub_cli.compat.coverage import assess
    from lorahub_cli.compat.index import base_index
    from lorahub_cli.compat.keys import map_modules
    from lorahub_cli.compat.model import FamilyComparison
    from lorahub_cli.inspect import inspect_file_full

    stages: dict[str, list[float]] = {}
    for _ in range(runs + 1):   # the first round pays imports and JSON tables: dropped
        t0 = time.perf_counter()
        resolved = resolve_base(base)
        index = base_index(resolved)
        t1 = time.perf_counter()
        report, _raw, layout = inspect_file_full(path, hash=False)
        t2 = time.perf_counter()
        mapping = map_modules(layout, report.family)
        t3 = time.perf_counter()
        assess(mapping, index, adapter=str(path), family=FamilyComparison(report.family, resolved.family))
        t4 = time.perf_counter()
        for name, seconds in (("base + index", t1 - t0), ("inspect header", t2 - t1), ("keymap", t3 - t2),
                              ("assess", t4 - t3)):
            stages.setdefault(name, []).append(seconds)
    return {name: statistics.median(values[1:]) for name, values in stages.items()}


def bench_filter(entries: list[Entry], base: str, runs: int) -> dict[str, float]:
    from lorahub_cli.bases import resolve_base
    from lorahub_cli.compat.filter import _cache_root, compatibility

    resolved = resolve_base(base)
    compatibility(entries[:1], resolved, use_cache=False)  # imports, index, keymap tables: once per process
    out = {}
    shutil.rmtree(_cache_root(), ignore_errors=True)
    t0 = time.perf_counter()
    rows = compatibility(entries, resolved)   # one cold pass: already N samples, and minutes on a slow box
    cold = [time.perf_counter() - t0]
    warm = []
    for _ in range(runs):
        t0 = time.perf_counter()
        compatibility(entries, resolved)
        warm.append(time.perf_counter() - t0)
    out["cold"], out["warm"] = statistics.median(cold), statistics.median(warm)
    out["kept"] = sum(r.verdict == "compatible" for r in rows)
    return out


def render(process_rows: list[tuple[str, float, float]], stages: dict[str, float], filt: dict[str, float], n: int,
           runs: int) -> str:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    lines = [f"{runs} runs each after a warm-up; Python {platform.python_version()}, {os.cpu_count()} CPUs "
             f"({platform.machine()}), load average {load} at the end; module tables cached, nothing on the "
             "network.", "",
             "| command (fresh process) | min s | median s |", "|---|---:|---:|"]
    lines += [f"| `{label}` | {lo:.3f} | {med:.3f} |" for label, lo, med in process_rows]
    lines += ["", "| one SDXL kohya check in a warm process (736 modules) | ms (median) |", "|---|---:|"]
    lines += [f"| {name} | {seconds * 1000:.1f} |" for name, seconds in stages.items()]
    lines += ["", f"| `compatible_filter` over {n:,} entries, base sdxl | seconds (median) | entries/s |",
              "|---|---:|---:|",
              f"| cold: no verdict cache, every header read (one pass) | {filt['cold']:.3f} | {n / filt['cold']:,.0f} |",
              f"| warm: verdicts cached for this base | {filt['warm']:.4f} | {n / filt['warm']:,.0f} |",
              "", f"{int(filt['kept'])} of {n:,} entries kept (compatible with sdxl)."]
    return "\n".join(lines)


def write_block(path: Path, text: str) -> None:
    begin, end = "<!-- bench_check:begin -->", "<!-- bench_check:end -->"
    doc = path.read_text()
    head, _, rest = doc.partition(begin)
    _, _, tail = rest.partition(end)
    path.write_text(f"{head}{begin}\n{text}\n{end}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--entries", type=int, default=1000)
    parser.add_argument("--write", type=Path, help="rewrite the measured block of this markdown file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.environ["LORAHUB_HOME"] = str(work / "home")
        files = make_files(work)
        folder = shutil.copytree(REPO / "lorahub_cli" / "archs" / "configs" / "sdxl", work / "my-sdxl")
        env = {**os.environ, "LORAHUB_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1"}
        lora = [sys.executable, "-m", "lorahub_cli"]
        subprocess.run([*lora, "check", files["sd15"], files["sdxl"], "--base", "sdxl"], env=env,
                       capture_output=True)  # builds and caches the module tables (torch, once)
        subprocess.run([*lora, "check", files["sd15"], "--base", "sd15"], env=env, capture_output=True)
        cases = [
            ("lora --version", ["--version"]),
            ("lora inspect sdxl.safetensors --no-hash --json", ["inspect", files["sdxl"], "--no-hash", "--json"]),
            ("lora check sd15.safetensors --base sd15 --json", ["check", files["sd15"], "--base", "sd15", "--json"]),
            ("lora check sdxl.safetensors --base sdxl --json", ["check", files["sdxl"], "--base", "sdxl", "--json"]),
            ("lora check sdxl.safetensors --base ./my-sdxl --json", ["check", files["sdxl"], "--base", str(folder),
                                                                     "--json"]),
            ("lora check sd15.safetensors --base sdxl (human output)", ["check", files["sd15"], "--base", "sdxl"]),
        ]
        rows = []
        for label, argv in cases:
            lo, med = timed_process([*lora, *map(str, argv)], env, args.runs)
            rows.append((label, lo, med))
            print(f"{label}: min {lo:.3f} s, median {med:.3f} s", file=sys.stderr)
        entries = make_entries(work, files, args.entries)
        stages = bench_stages(files["sdxl"], "sdxl", args.runs)
        filt = bench_filter(entries, "sdxl", args.runs)
    text = render(rows, stages, filt, args.entries, args.runs)
    print(text)
    if args.write:
        write_block(args.write, text)


if __name__ == "__main__":
    main()
