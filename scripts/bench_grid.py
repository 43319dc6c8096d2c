"""Benchmark: `lora grid` (4 adapters x 3 weights) on the tiny SD pipeline, beside 12 plain generations on one
already-loaded pipeline, and beside 12 separate `lora generate` runs (a fresh process each).

    .venv/bin/python scripts/bench_grid.py [--steps 10] [--runs 3]

All three make the same 12 images (same base, adapters, weights, seed, prompt and steps). "Plain" is
``Library.generate(pipe=..., adapters=...)`` on a pipeline loaded beforehand (the adapter set switched by the
exact undo, as the grid does; images not saved); the grid's time is `make_grid` without the base load (the
load is timed apart and shown), so the two compare what each cell costs. The issue's target: grid <= 1.15x the
plain generations, and far below the separate runs. Torch uses 2 threads (the machine is shared).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PROMPT = "lower newer wider"
WEIGHTS = (0.0, 0.5, 1.0)
SEED = 5


def build(root: Path) -> tuple[Path, Path, list[str]]:
    from lorahub_cli.ingest import ingest
    from registry.api import Registry
    from tests.fixtures.pipelines import make_tiny_sd_pipeline
    from tests.pipeline.helpers import layer_shapes, load_plain, random_adapter, write_diffusers

    base = make_tiny_sd_pipeline(root / "tiny-sd", seed=0)
    shapes = layer_shapes(load_plain(base))
    attn = [k for k in shapes if k.startswith("unet.") and ".attn" in k]
    te = [k for k in shapes if k.startswith("text_encoder.")]
    home, names = root / "home", []
    with Registry(home=home) as reg:
        for i in range(4):
            a = random_adapter(shapes, attn + te[: i + 1], rank=4, alpha=4.0, seed=10 + i)
            names.append(f"a{i}")
            ingest(write_diffusers(a, root / f"a{i}.safetensors"), reg, name=names[-1])
    return base, home, names


def main() -> None:
    import torch

    from lorahub_cli.pipeline import Library
    from lorahub_cli.pipeline.grid import GridSpec, make_grid

    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--separate-only", action="store_true", help="Only the 12 separate runs (a re-measurement).")
    args = ap.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base, home, names = build(root)
        cells = [(n, w) for n in names for w in WEIGHTS]
        grid_s, plain_s, load_s = [], [], []
        with Library(home=home) as lib:
            for run in range(0 if args.separate_only else args.runs):
                t0 = time.perf_counter()
                pipe = lib.pipeline(str(base), {})
                load_s.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                for name, w in cells:
                    lib.generate(PROMPT, pipe=pipe, adapters={name: w} if w else {}, seed=SEED, steps=args.steps)
                plain_s.append(time.perf_counter() - t0)
                del pipe
                spec = GridSpec(base=str(base), adapters=names, weights=list(WEIGHTS), seeds=[SEED],
                                prompts=[PROMPT], steps=args.steps)
                t0 = time.perf_counter()
                make_grid(lib, spec, root / f"grid{run}" / "grid.png")
                grid_s.append(time.perf_counter() - t0 - load_s[-1])
        if args.separate_only:
            grid_s, plain_s, load_s = [float("nan")], [float("nan")], [float("nan")]
        g, p, load = statistics.median(grid_s), statistics.median(plain_s), statistics.median(load_s)
        print(f"| 12 images, 4 adapters x 3 weights, {args.steps} steps, tiny SD on CPU | seconds "
              f"(median of {args.runs}) | vs plain |")
        print("|---|---:|---:|")
        print(f"| base load (once, apart from both) | {load:.2f} | |")
        print(f"| 12 plain generations on the loaded pipeline (`Library.generate`) | {p:.2f} | 1.00x |")
        print(f"| `lora grid` cells + grid PNG + sidecar + contact sheet (`make_grid` minus its load) | {g:.2f} | "
              f"{g / p:.2f}x |")
        print(f"| `lora grid` including its one base load | {g + load:.2f} | {(g + load) / p:.2f}x |", flush=True)
        env = {**os.environ, "LORAHUB_HOME": str(home), "LORAHUB_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1",
               "OMP_NUM_THREADS": "2"}
        t0 = time.perf_counter()
        for name, w in cells:
            cmd = [sys.executable, "-m", "lorahub_cli", "-q", "generate", PROMPT, "--base", str(base), "--seed",
                   str(SEED), "--steps", str(args.steps), "-o", str(root / "separate")]
            if w:
                cmd += ["-a", f"{name}:{w}"]
            subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
        separate = time.perf_counter() - t0
    print(f"| 12 separate `lora generate` runs (fresh process each, one run) | {separate:.2f} | {separate / p:.1f}x |")
    print(f"(one separate run: {separate / 12:.2f} s)")


if __name__ == "__main__":
    main()
