"""Benchmark `lora convert` of pickles against the plain torch.load + safetensors.torch.save_file path.

    .venv/bin/python scripts/bench_convert.py [--reps 5] [--mb 200] [--write docs/benchmarks/convert.md]

Side by side, in one run, on the same files (page-cached; every variant writes a new file):
  plain          torch.load(weights_only=True) -> name a bare list / unwrap state_dict -> .contiguous() ->
                 save_file: the reference way, with no checks
  to safetensors convert_file(to="safetensors"): the same container change plus inspection, source sha256,
                 metadata, fsync, bit-for-bit read-back and atomic rename (what the library stores)
  to diffusers   convert_file(to="diffusers"): also maps every module onto the architecture, writes the
                 diffusers layout and reads the result back as an adapter
  CLI            `python -m lorahub_cli convert` in a fresh process (includes the interpreter and torch import)
The engine rows also report their stages (reading / mapping / writing / verifying) from the progress callback.
Files: the corpus pickles (if shared/corpus/wild is there), real-shaped generated ones, and a --mb synthetic
SDXL kohya pickle. Nothing here is imported by the product.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

CORPUS = Path(os.environ.get("LORAHUB_CORPUS", REPO.parent / "shared" / "corpus" / "wild"))
BEGIN, END = "<!-- bench_convert:begin -->", "<!-- bench_convert:end -->"


def plain(src: Path, dst: Path) -> None:
    import torch
    from safetensors.torch import save_file

    obj = torch.load(src, map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if isinstance(obj, list):
        obj = {f"unet:{i // 2}:{'up' if i % 2 == 0 else 'down'}": t for i, t in enumerate(obj)}
    save_file({k: v.contiguous() for k, v in obj.items()}, str(dst), metadata={"format": "pt"})


def engine(to: str, stages: dict[str, list[float]]) -> Callable[[Path, Path], None]:
    from lorahub_cli.convert import convert_file

    def run(src: Path, dst: Path) -> None:
        marks: list[tuple[str, float]] = []
        convert_file(src, dst, to=to, force=True, progress=lambda stage: marks.append((stage, time.perf_counter())))
        marks.append(("end", time.perf_counter()))
        for (stage, start), (_, stop) in zip(marks, marks[1:]):
            stages.setdefault(stage, []).append(stop - start)

    return run


def cli(src: Path, dst: Path) -> None:
    subprocess.run([sys.executable, "-m", "lorahub_cli", "-q", "convert", str(src), "-o", str(dst), "--force"],
                   check=True, capture_output=True, cwd=REPO, env={**os.environ, "LORAHUB_NO_PROGRESS": "1"})


def make_inputs(folder: Path, mb: float) -> list[tuple[str, Path]]:
    import torch

    from tests.fixtures.adapters import make_adapter, write_adapter

    inputs = [(f"corpus {p.name}", p) for p in (CORPUS / "catundchat_sd15_attnprocs.bin",
                                                CORPUS / "wchesley_lora_weight.pt") if p.is_file()]
    inputs.append(("sd15 kohya r32 .pt", write_adapter(folder / "sd15_kohya.pt", "sd15", "kohya", rank=32,
                                                         alpha=16.0, targets="kohya", dtype="float16")))
    inputs.append(("sdxl attn-procs r16 .bin", write_adapter(folder / "sdxl_procs.bin", "sdxl", "attn-procs-bin",
                                                              rank=16)))
    # a real-shaped SDXL kohya adapter whose rank makes it about `mb` megabytes of float16
    probe, _ = make_adapter("sdxl", "kohya", rank=1, targets="kohya", dtype="float16")
    per_rank = sum(t.numel() * 2 for k, t in probe.items() if not k.endswith(".alpha"))
    rank = max(1, round(mb * 1e6 / per_rank))
    tensors, _ = make_adapter("sdxl", "kohya", rank=rank, alpha=rank / 2, targets="kohya", dtype="float16")
    big = folder / "sdxl_kohya_big.pt"
    torch.save(tensors, big)
    inputs.append((f"synthetic sdxl kohya r{rank} .pt", big))
    return inputs


def timed(fn: Callable[[Path, Path], None], src: Path, dst: Path) -> float:
    dst.unlink(missing_ok=True)
    start = time.perf_counter()
    fn(src, dst)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--mb", type=float, default=200.0, help="size of the synthetic pickle")
    parser.add_argument("--write", type=Path, help="write the markdown table into this file")
    args = parser.parse_args()
    os.environ.setdefault("LORAHUB_HOME", tempfile.mkdtemp(prefix="bench-convert-home-"))
    lines = []
    with tempfile.TemporaryDirectory(prefix="bench-convert-") as tmp:
        work = Path(tmp)
        for label, src in make_inputs(work, args.mb):
            stages: dict[str, dict[str, list[float]]] = {"to safetensors": {}, "to diffusers": {}}
            variants = {"plain torch.load + save_file": plain,
                        "lora convert --to safetensors": engine("safetensors", stages["to safetensors"]),
                        "lora convert --to diffusers": engine("diffusers", stages["to diffusers"])}
            rows: dict[str, list[float]] = {name: [] for name in variants}
            for name, fn in variants.items():   # warm-up: imports, module tables, page cache
                timed(fn, src, work / "out.safetensors")
            for part in stages.values():
                part.clear()
            for _ in range(args.reps):
                for name, fn in variants.items():   # interleaved, so drift hits every variant alike
                    rows[name].append(timed(fn, src, work / "out.safetensors"))
            rows["lora convert (CLI, fresh process)"] = [timed(cli, src, work / "out.safetensors")]
            lines += render(label, src.stat().st_size, rows, stages)
    text = header(args.reps) + "\n".join(lines) + "\n"
    print(text)
    if args.write:
        write_block(args.write, text)


def header(reps: int) -> str:
    import safetensors
    import torch

    return (f"{reps} repetitions after a warm-up, variants interleaved; torch {torch.__version__}, safetensors "
            f"{safetensors.__version__}, Python {platform.python_version()}, {os.cpu_count()} CPUs (shared machine: "
            "compare rows of the same file)\n\n")


def render(label: str, size: int, rows: dict[str, list[float]], stages: dict[str, dict[str, list[float]]]) -> list[str]:
    base = statistics.median(rows["plain torch.load + save_file"])
    out = [f"**{label}** ({size / 1e6:.1f} MB)", "",
           "| variant | median s | min s | vs plain | extra s |", "|---|---:|---:|---:|---:|"]
    for name, values in rows.items():
        med = statistics.median(values)
        out.append(f"| {name} | {med:.3f} | {min(values):.3f} | {med / base:.2f}x | {med - base:+.3f} |")
    for variant, parts in stages.items():
        shown = ", ".join(f"{stage} {statistics.median(v):.3f}" for stage, v in parts.items() if v)
        out.append(f"| &nbsp;&nbsp;{variant} stages (median s) | {shown} | | | |")
    return out + [""]


def write_block(doc: Path, text: str) -> None:
    """Replace the measured block of ``doc`` (between the markers), keeping the prose around it."""
    block = f"{BEGIN}\n{text}{END}"
    old = doc.read_text() if doc.exists() else f"# `lora convert` benchmark\n\n{BEGIN}\n{END}\n"
    if BEGIN not in old or END not in old:
        old += f"\n{BEGIN}\n{END}\n"
    head, rest = old.split(BEGIN, 1)
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(head + block + rest.split(END, 1)[1])


if __name__ == "__main__":
    main()
