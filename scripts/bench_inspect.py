"""Benchmark `lora inspect` against the reference way of learning what a file holds.

Side by side, in one run, on the same files:
  1. 1,000 small SD1.5-shaped kohya LoRA files: `lora inspect DIR --json` (one process, hashing on and off)
     against loading each file with `safetensors.torch.load_file` (the usual way: it reads every tensor).
  2. A 2 GB sparse file with a valid header: `lora inspect --no-hash` reads the header only.
  3. Start-up: which heavy modules `lora --help` and `lora inspect FILE` import.

Usage: python scripts/bench_inspect.py [--files 1000] [--workdir .bench/inspect]
Prints a Markdown table (paste into docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

# SD1.5 UNet transformer blocks (diffusers names) and their channel width
SD1_BLOCKS = ([(f"down_blocks_{b}_attentions_{a}", c) for b, c in ((0, 320), (1, 640), (2, 1280)) for a in (0, 1)]
              + [("mid_block_attentions_0", 1280)]
              + [(f"up_blocks_{b}_attentions_{a}", c) for b, c in ((1, 1280), (2, 640), (3, 320)) for a in (0, 1, 2)])


def sd1_kohya_tensors(rank: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    out = {}
    for block, ch in SD1_BLOCKS:
        for attn in ("attn1", "attn2"):
            for proj in ("to_q", "to_k", "to_v", "to_out_0"):
                in_f = 768 if attn == "attn2" and proj in ("to_k", "to_v") else ch
                stem = f"lora_unet_{block}_transformer_blocks_0_{attn}_{proj}"
                out[f"{stem}.lora_down.weight"] = rng.standard_normal((rank, in_f)).astype(np.float16)
                out[f"{stem}.lora_up.weight"] = (rng.standard_normal((ch, rank)) * 0.01).astype(np.float16)
                out[f"{stem}.alpha"] = np.array(rank, dtype=np.float16)
    return out


def make_files(folder: Path, n: int) -> list[Path]:
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    template = sd1_kohya_tensors(rank=2, rng=rng)
    paths = []
    for i in range(n):
        path = folder / f"adapter_{i:04d}.safetensors"
        if not path.exists():
            template[next(iter(template))][0, 0] = i  # distinct content, so distinct hashes
            save_file(template, str(path), metadata={"ss_base_model_version": "sd_v1", "ss_network_dim": "2"})
        paths.append(path)
    return paths


def time_cli(args: list[str], repeat: int = 3) -> tuple[float, subprocess.CompletedProcess]:
    times, proc = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "lorahub_cli", *args], capture_output=True, text=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times), proc


def time_load_file(paths: list[Path]) -> float:
    code = ("import sys,time;t=time.perf_counter();from safetensors.torch import load_file\n"
            "for p in sys.argv[1:]: load_file(p)\nprint(time.perf_counter()-t)")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, *map(str, paths)], check=True, capture_output=True)
    return time.perf_counter() - start


def sparse_file(path: Path, size: int) -> Path:
    """A valid SD1.5-shaped kohya header at a rank that makes the data section ~size bytes; data left sparse."""
    shapes = {k: v.shape for k, v in sd1_kohya_tensors(rank=1, rng=np.random.default_rng(0)).items()}
    per_rank = sum(2 * (s[0] * s[1] if len(s) == 2 else 1) for s in shapes.values())
    rank = max(1, size // per_rank)
    header, offset = {}, 0
    for key, shape in shapes.items():
        if key.endswith("alpha"):
            shape = ()
        elif key.endswith("lora_down.weight"):
            shape = (rank, shape[1])
        else:
            shape = (shape[0], rank)
        nbytes = 2 * int(np.prod(shape)) if shape else 2
        header[key] = {"dtype": "F16", "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little") + raw)
        f.truncate(8 + len(raw) + offset)
    return path


def heavy_imports(args: list[str]) -> list[str]:
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "lorahub_cli", *args], capture_output=True, text=True)
    names = {line.rsplit("|", 1)[1].strip().split(".")[0] for line in proc.stderr.splitlines()
             if line.startswith("import time:") and "|" in line}
    return sorted(names & {"torch", "diffusers", "transformers", "peft", "accelerate"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--workdir", type=Path, default=Path(".bench/inspect"))
    args = parser.parse_args()

    folder = args.workdir / "small"
    paths = make_files(folder, args.files)
    total_mb = sum(p.stat().st_size for p in paths) / 1e6
    subprocess.run([sys.executable, "-m", "lorahub_cli", "inspect", str(folder), "--json"], capture_output=True)  # warm cache

    t_hash, proc = time_cli(["inspect", str(folder), "--json"])
    reports = json.loads(proc.stdout)
    assert len(reports) == len(paths) and all("error" not in r for r in reports), proc.stderr[-500:]
    t_nohash, _ = time_cli(["inspect", str(folder), "--json", "--no-hash"])
    t_load = statistics.median(time_load_file(paths) for _ in range(3))

    big = sparse_file(args.workdir / "sparse_2gb.safetensors", 2 * 1024**3)
    t_big, proc = time_cli(["inspect", str(big), "--json", "--no-hash"], repeat=5)
    in_process = json.loads(proc.stdout)
    t_start, _ = time_cli(["--version"], repeat=5)

    rows = [
        (f"`lora inspect DIR --json` ({len(paths)} files, {total_mb:.0f} MB, with hashes)", t_hash),
        (f"`lora inspect DIR --json --no-hash` ({len(paths)} files)", t_nohash),
        (f"`safetensors.torch.load_file` on each file (reference, {len(paths)} files)", t_load),
        ("`lora inspect 2GB-sparse.safetensors --no-hash` (whole process)", t_big),
        ("`lora --version` (process start-up alone)", t_start),
    ]
    print("| job | wall time |\n|---|---|")
    for label, t in rows:
        print(f"| {label} | {t * 1000:.0f} ms |")
    print(f"\nper file: lora inspect {t_hash / len(paths) * 1000:.2f} ms (hashing), "
          f"{t_nohash / len(paths) * 1000:.2f} ms (--no-hash); load_file {t_load / len(paths) * 1000:.2f} ms")
    print(f"2 GB sparse file: header-only inspect reported {in_process[0].get('n_tensors', '?')} tensor(s), "
          f"process total {t_big * 1000:.0f} ms vs start-up {t_start * 1000:.0f} ms")
    print(f"heavy imports: `lora --help`: {heavy_imports(['--help']) or 'none'}; "
          f"`lora inspect FILE`: {heavy_imports(['inspect', str(paths[0])]) or 'none'}")
    if os.environ.get("BENCH_KEEP") != "1":
        big.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
