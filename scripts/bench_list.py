"""Benchmark: cold `lora --help` and `lora list` over a 10,000-adapter library, beside `python -c "import torch"`.

    .venv/bin/python scripts/bench_list.py [--n 10000] [--runs 5]

Builds the library in a temp home with one bulk insert (SQL through the registry's own tables, after the
registry created and migrated the database), then runs each command as a fresh process several times and
prints min / median wall time, and the min CPU time (user + system) of the process, which a busy machine
inflates far less than wall time: compare CPU seconds between runs on a shared machine. `lora --help` is the
start-up floor every command pays (imports and the Typer app, no database). The issue's targets: `lora list` under 0.5 s, and under a third of
`import torch` measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

FAMILIES = ("sd1", "sd2", "sdxl", "flux", "sd3")
FORMATS = ("kohya", "diffusers", "peft", "lycoris")
BASES = ("runwayml/stable-diffusion-v1-5", "stabilityai/stable-diffusion-xl-base-1.0",
         "black-forest-labs/FLUX.1-dev")


def fill(home: Path, n: int) -> None:
    from registry.api import Registry
    from registry.models import Adapter, AdapterMetadata, BaseModelRef, Blob, Tag, TriggerWord

    reg = Registry(home=home)
    engine = reg.db.engine  # creates and migrates the database
    start = datetime(2025, 1, 1)
    blobs, adapters, metas, tags, bases, triggers = [], [], [], [], [], []
    # real kohya files carry KBs of header metadata (ss_tag_frequency): list must not pay for reading it
    tag_frequency = json.dumps({"img": {f"tag{j}": j for j in range(400)}})
    for i in range(1, n + 1):
        sha = f"{i:064x}"
        blobs.append(dict(id=i, sha256=sha, tensor_sha256=None, size=10_000_000 + i * 997, stored=True,
                          created_at=start))
        adapters.append(dict(id=i, name=f"adapter-{i:05d}-{FAMILIES[i % 5]}-style", blob_id=i,
                             container="safetensors", format=FORMATS[i % 4], network="lora",
                             family=FAMILIES[i % 5], family_evidence="bench", components=["unet", "text_encoder"],
                             rank=(4, 8, 16, 32, 64)[i % 5], ranks=[16], alpha=8.0, dtype="F16", n_tensors=528,
                             n_modules=176, tokens=[], license=None, license_source=None, warnings=[],
                             added_at=start + timedelta(minutes=i), updated_at=start + timedelta(minutes=i)))
        metas.append(dict(adapter_id=i, data={"ss_network_dim": "16", "ss_tag_frequency": tag_frequency}))
        tags.append(dict(adapter_id=i, tag=("style", "character", "concept")[i % 3], source="user"))
        if i % 2:
            tags.append(dict(adapter_id=i, tag="anime", source="card"))
        bases.append(dict(adapter_id=i, model_id=BASES[i % 3], source="card:README.md", position=0))
        triggers.append(dict(adapter_id=i, word=f"trig{i}", source="metadata:ss_tag_frequency", position=0))
    with engine.begin() as conn:
        for model, rows in ((Blob, blobs), (Adapter, adapters), (AdapterMetadata, metas), (Tag, tags), (BaseModelRef, bases),
                            (TriggerWord, triggers)):
            conn.execute(model.__table__.insert(), rows)
    reg.close()


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(cmd: list[str], env: dict, runs: int) -> tuple[float, float, float, int]:
    """(min wall, median wall, min CPU, stdout bytes) over ``runs`` fresh processes, one at a time."""
    times, cpu, out_bytes = [], [], 0
    for _ in range(runs):
        c0, t0 = _children_cpu(), time.perf_counter()
        proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        times.append(time.perf_counter() - t0)
        cpu.append(_children_cpu() - c0)  # runs are sequential: the delta is this one process
        if proc.returncode != 0:
            raise SystemExit(f"{cmd} failed: {proc.stderr.decode()[-2000:]}")
        out_bytes = len(proc.stdout)
    return min(times), statistics.median(times), min(cpu), out_bytes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        t0 = time.perf_counter()
        fill(home, args.n)
        print(f"built a {args.n}-adapter library in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        env = {**os.environ, "LORAHUB_HOME": str(home), "LORAHUB_NO_PROGRESS": "1", "COLUMNS": "200"}
        env.pop("LORAHUB_DATABASE_URL", None)
        py = sys.executable
        cases = [
            ('python -c "pass"', [py, "-c", "pass"]),
            ('python -c "import torch"', [py, "-c", "import torch"]),
            ("lora --help", [py, "-m", "lorahub_cli", "--help"]),
            ("lora list", [py, "-m", "lorahub_cli", "list"]),
            ("lora list --json", [py, "-m", "lorahub_cli", "list", "--json"]),
            ("lora list --family sdxl --tag anime", [py, "-m", "lorahub_cli", "list", "--family", "sdxl",
                                                     "--tag", "anime"]),
        ]
        results = {label: timed(cmd, env, args.runs) for label, cmd in cases}
    torch_min = results['python -c "import torch"'][0]
    print(f"\n{args.n} adapters, {args.runs} cold runs each (wall seconds)\n")
    print(f"| {'command':38} | {'min':>6} | {'median':>6} | {'CPU min':>7} | {'vs import torch':>15} | {'stdout':>9} |")
    print(f"|{'-' * 40}|{'-' * 8}|{'-' * 8}|{'-' * 9}|{'-' * 17}|{'-' * 11}|")
    for label, (lo, med, cpu, size) in results.items():
        print(f"| {label:38} | {lo:6.3f} | {med:6.3f} | {cpu:7.3f} | {lo / torch_min:15.2f} | {size:9,d} |")
    lo = results["lora list"][0]
    print(f"\nlora list: {lo:.3f} s (target < 0.5 s: {'met' if lo < 0.5 else 'NOT met'}); "
          f"{lo / torch_min:.2f} x import torch (target < 0.33: {'met' if lo < torch_min / 3 else 'NOT met'})")


if __name__ == "__main__":
    main()
