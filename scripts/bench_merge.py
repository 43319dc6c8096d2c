"""Benchmark `lora merge --method svd` against the dense way (kohya svd_merge_lora / PEFT combination_type="svd").

    .venv/bin/python scripts/bench_merge.py [--rank 32] [--targets attn] [--write docs/benchmarks/merge.md]

Three SD1.5-shaped rank-32 adapters (real SD1.5 layer names and shapes from the module tables: U-Net and text
encoder, attention q/k/v/out by default) with different alphas, weights 0.8 / 0.6 / -0.4, merged to rank 32:
  * lora svd (float64)  the shipped merge(): QR of the stacked factors + SVD of the small core (default dtype)
  * lora svd (float32)  the same in float32
  * dense svd (float32) per module: sum the dense updates, torch.linalg.svd(full_matrices=False), truncate;
                        kohya's arithmetic (without its 0.99 quantile clamp, which changes the result), with
                        torch's default thread count and with one thread (merge() itself runs its small
                        factored calls on one thread), so the reference gets its better setting too
Each method runs in its own subprocess on the same inputs (same seed), so its peak RSS (ru_maxrss) is its own;
"merge peak" is that peak minus the RSS just before the merge (torch imported, inputs built). The lora methods
run --repeat times (the best wall time is shown, with its CPU time); the dense way, minutes long, runs once.
CPU seconds (all threads) are shown beside wall seconds because the machine may be shared. The parent then
compares every module's update of each result with the dense one (max relative Frobenius difference).
Nothing here is imported by the product.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WEIGHTS = (0.8, 0.6, -0.4)
ALPHAS = (32.0, 16.0, 8.0)
METHODS = ("lora-svd-f64", "lora-svd-f32", "dense-svd-f32", "dense-svd-f32-1t")
LABELS = {"lora-svd-f64": "lora svd (float64, default)", "lora-svd-f32": "lora svd (float32)",
          "dense-svd-f32": "dense svd (float32, torch's default threads)",
          "dense-svd-f32-1t": "dense svd (float32, 1 thread)"}
DENSE = ("dense-svd-f32", "dense-svd-f32-1t")
_ATTN = {"unet": re.compile(r"\.attn[12]\.(to_q|to_k|to_v|to_out\.0)$"),
         "text_encoder": re.compile(r"\.self_attn\.(q_proj|k_proj|v_proj|out_proj)$")}


def make_inputs(rank: int, targets: str):
    """Three CanonicalAdapters on SD1.5's real layers, float32, seeded (identical in every subprocess)."""
    import torch

    from lorahub_cli.archs import module_table
    from lorahub_cli.canonical import CanonicalAdapter, LoraPair

    layers = {}
    for comp in ("unet", "text_encoder"):
        for name, layer in module_table("sd15", comp).items():
            if layer.kind == "linear" and (targets == "all-linear" or _ATTN[comp].search(name)):
                layers[f"{comp}.{name}"] = layer
    adapters = []
    for i, alpha in enumerate(ALPHAS):
        gen = torch.Generator().manual_seed(1000 + i)
        modules = {}
        for key, layer in layers.items():
            down = torch.randn(rank, layer.in_features, generator=gen) / layer.in_features ** 0.5
            up = torch.randn(layer.out_features, rank, generator=gen) * 0.01
            modules[key] = LoraPair(down=down, up=up, alpha=alpha)
        adapters.append(CanonicalAdapter(family="sd1", modules=modules))
    return adapters


def dense_svd(adapters, weights, rank: int):
    """The reference way: the dense sum per module, a full (thin) SVD, the top ``rank`` triplets."""
    import torch

    from lorahub_cli.canonical import LoraPair

    out = {}
    for key in adapters[0].modules:
        total = None
        for adapter, w in zip(adapters, weights):
            pair = adapter.modules[key]
            d = (w * pair.scale) * (pair.up @ pair.down)
            total = d if total is None else total + d
        u, s, vh = torch.linalg.svd(total, full_matrices=False)
        k = min(rank, s.numel())
        out[key] = LoraPair(down=vh[:k].contiguous(), up=(u[:, :k] * s[:k]).contiguous(), alpha=float(k))
    return out


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def worker(method: str, rank: int, targets: str, out_path: str, repeat: int) -> None:
    import torch
    from safetensors.torch import save_file

    from lorahub_cli.merge import merge

    if method == "dense-svd-f32-1t":
        torch.set_num_threads(1)
    adapters = make_inputs(rank, targets)
    before = rss_mb()
    walls, cpus = [], []
    for _ in range(repeat if method not in DENSE else 1):
        start, cpu = time.perf_counter(), time.process_time()
        with torch.no_grad():
            if method in DENSE:
                modules = dense_svd(adapters, WEIGHTS, rank)
            else:
                compute = torch.float64 if method == "lora-svd-f64" else torch.float32
                modules = merge(adapters, WEIGHTS, method="svd", rank=rank, compute_dtype=compute).modules
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tensors = {}
    for key, pair in modules.items():
        tensors[f"{key}.down"], tensors[f"{key}.up"] = pair.down.contiguous(), pair.up.contiguous()
    save_file(tensors, out_path)
    best = min(range(len(walls)), key=walls.__getitem__)
    print(json.dumps({"method": method, "wall_s": walls[best], "cpu_s": cpus[best], "runs": len(walls),
                      "wall_median_s": sorted(walls)[len(walls) // 2], "rss_before_mb": before,
                      "peak_rss_mb": peak, "modules": len(modules), "threads": torch.get_num_threads()}))


def compare(result: Path, reference: Path) -> float:
    """Max over modules of |dW - dW_ref|_F / |dW_ref|_F, in float64."""
    import torch
    from safetensors.torch import load_file

    a, b = load_file(str(result)), load_file(str(reference))
    worst = 0.0
    for key in (k[: -len(".down")] for k in b if k.endswith(".down")):
        da = a[f"{key}.up"].double() @ a[f"{key}.down"].double()
        db = b[f"{key}.up"].double() @ b[f"{key}.down"].double()
        worst = max(worst, float(torch.linalg.norm(da - db) / torch.linalg.norm(db)))
    return worst


def run(args) -> str:
    load_before = f"{os.getloadavg()[0]:.1f}"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        for method in METHODS:
            out = Path(tmp) / f"{method}.safetensors"
            proc = subprocess.run([sys.executable, __file__, "--worker", method, "--rank", str(args.rank),
                                   "--targets", args.targets, "--out", str(out), "--repeat", str(args.repeat)],
                                  capture_output=True, text=True, check=True)
            results[method] = json.loads(proc.stdout.strip().splitlines()[-1])
            results[method]["path"] = out
            print(f"{method}: {results[method]['wall_s']:.2f} s", file=sys.stderr)
        ref = results["dense-svd-f32"]
        fastest = min(results[m]["wall_s"] for m in DENSE)
        cheapest = min(results[m]["cpu_s"] for m in DENSE)
        for method in METHODS:
            r = results[method]
            rows.append((LABELS[method], r["runs"], r["wall_s"], r["cpu_s"], fastest / r["wall_s"],
                         cheapest / r["cpu_s"], r["peak_rss_mb"], r["peak_rss_mb"] - r["rss_before_mb"],
                         compare(r["path"], ref["path"])))
    import torch

    head = (f"inputs: 3 SD1.5-shaped LoRAs, rank {args.rank}, {ref['modules']} modules ({args.targets} targets, "
            f"U-Net + text encoder), float32, alphas {ALPHAS}, weights {WEIGHTS}; target rank {args.rank}; "
            f"torch {torch.__version__}, {ref['threads']} threads, Python {platform.python_version()}, "
            f"{os.cpu_count()} CPUs")
    head += f"; load average {load_before} before, {os.getloadavg()[0]:.1f} after (shared machine)"
    lines = [head, "", "| method | runs | wall s (best) | CPU s | speed-up, wall | speed-up, CPU | peak RSS MB | "
             "merge peak MB | max rel. diff vs dense |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label, runs, wall, cpu, speed, cpu_speed, peak, extra, diff in rows:
        lines.append(f"| {label} | {runs} | {wall:.2f} | {cpu:.2f} | {_times(speed)} | {_times(cpu_speed)} | "
                     f"{peak:.0f} | {max(extra, 0):.0f} | {diff:.1e} |")
    return "\n".join(lines)


def _times(ratio: float) -> str:
    return f"{ratio:.0f}x" if ratio >= 10 else f"{ratio:.2g}x"


def write_block(path: Path, block: str) -> None:
    text = path.read_text() if path.exists() else "<!-- bench_merge:begin -->\n<!-- bench_merge:end -->\n"
    start, end = "<!-- bench_merge:begin -->\n", "<!-- bench_merge:end -->"
    i, j = text.index(start) + len(start), text.index(end)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text[:i] + block + "\n" + text[j:])
    tmp.replace(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rank", type=int, default=32)
    p.add_argument("--targets", choices=("attn", "all-linear"), default="attn")
    p.add_argument("--repeat", type=int, default=5, help="runs of each lora method (best is shown); dense runs once")
    p.add_argument("--write", type=Path, help="replace the measured block of this markdown file")
    p.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args.worker, args.rank, args.targets, args.out, args.repeat)
        return
    block = run(args)
    print(block)
    if args.write:
        write_block(args.write, block)


if __name__ == "__main__":
    main()
