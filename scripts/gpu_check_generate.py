"""GPU check for `lora generate` / `lora fuse`: per-image latency, adapter-set switch time and peak memory, ours
against plain diffusers + PEFT, side by side in one run (called by scripts/gpu_check.sh; not run in CI).

    .venv/bin/python scripts/gpu_check_generate.py [--size 512] [--steps 25] [--repeat 3] [--out DIR]
    .venv/bin/python scripts/gpu_check_generate.py --tiny        # CPU smoke test of this script (tiny model)

Base: an SD1.5-shaped pipeline with random weights (lorahub_cli/archs/configs/sd15 U-Net and CLIP text encoder,
the SD VAE config, DPM++ 2M), saved once as a diffusers folder and loaded in --dtype (fp16). Adapters: three
SD1.5 diffusers-layout files (rank --rank on every U-Net and text-encoder attention projection, alphas 16 / 8 /
32, weights 0.8 / 0.6 / -0.4), added to a temporary library. Timing does not depend on the weight values.

Rows (median seconds per image over --repeat images after one warm-up, same prompt and seed; peak = the
largest torch.cuda.max_memory_allocated while that configuration was built and run):
  ours    base / 1 merged / 3 merged / 3 fused       Library.pipeline + set_adapters (fp32 merge, exact undo)
  plain   base / 1 unfused / 3 unfused / 3 fused     load_lora_weights + set_adapters (+ fuse_lora)
Switch: ours set_adapters (restore + merge 3) vs plain set_adapters (weights) and fuse_lora / unfuse_lora.
Agreement: the largest pixel difference between ours (3 merged) and plain (3 unfused) images.
Reference (issue 8, H100, diffusers 0.42.1 / peft 0.21, SD1.5 shapes, 512x512, 25 steps): base 0.76 s,
one unfused LoRA 1.08 s, three unfused 1.54 s, three fused 0.86 s; target: any stack within 2% of base.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.gpu_common import build_sd15  # noqa: E402

NAMES = ("a0", "a1", "a2")
WEIGHTS = (0.8, 0.6, -0.4)
ALPHAS = (16.0, 8.0, 32.0)
PROMPT = "lower newer wider"
PAIRS = (("base", "base", "base"), ("1 adapter (ours merged / plain unfused)", "1 adapter, merged", "1 adapter, unfused"),
         ("3 adapters (ours merged / plain unfused)", "3 adapters, merged", "3 adapters, unfused"),
         ("3 adapters, fused", "3 adapters, fused", "3 adapters, fused"))


def make_adapters(root: Path, tiny_base: Path | None, rank: int) -> dict[str, Path]:
    files = {}
    if tiny_base is None:
        from tests.fixtures.adapters import write_adapter

        for i, (name, alpha) in enumerate(zip(NAMES, ALPHAS)):
            files[name] = write_adapter(root / f"{name}.safetensors", "sd15", "diffusers", rank=rank, alpha=alpha,
                                        components=["unet", "text_encoder"], seed=i + 1)
        return files
    from tests.pipeline.helpers import layer_shapes, load_plain, random_adapter, write_diffusers

    shapes = layer_shapes(load_plain(tiny_base))
    keys = [k for k in shapes if ".attn" in k or k.startswith("text_encoder.")]
    for i, (name, alpha) in enumerate(zip(NAMES, ALPHAS)):
        files[name] = write_diffusers(random_adapter(shapes, keys, rank, alpha, seed=i + 1, magnitude=0.05),
                                      root / f"{name}.safetensors")
    return files


class Meter:
    """Per-image latency (synchronised) and peak memory on one device."""

    def __init__(self, device: str, repeat: int):
        import torch

        self.torch, self.device, self.repeat = torch, device, repeat
        self.cuda = device.startswith("cuda")

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def reset_peak(self) -> None:
        if self.cuda:
            self.torch.cuda.reset_peak_memory_stats()

    def peak_gib(self) -> float:
        return self.torch.cuda.max_memory_allocated() / 2**30 if self.cuda else float("nan")

    def timed(self, fn) -> float:
        self.sync()
        start = time.perf_counter()
        fn()
        self.sync()
        return time.perf_counter() - start

    def images(self, make) -> tuple[float, object]:
        """(median seconds per image, the last image) after one warm-up."""
        last = make()
        times = []
        for _ in range(self.repeat):
            self.sync()
            start = time.perf_counter()
            last = make()
            self.sync()
            times.append(time.perf_counter() - start)
        return statistics.median(times), last


def run_ours(base: Path, home: Path, args, meter: Meter) -> tuple[list, list, object]:
    import numpy as np

    from lorahub_cli.pipeline import Library

    rows, switches = [], []
    three = dict(zip(NAMES, WEIGHTS))
    with Library(home=home) as lib:
        meter.reset_peak()
        pipe = lib.pipeline(str(base), device=args.device, dtype=args.dtype)

        def shot():
            return np.asarray(lib.generate(PROMPT, pipe=pipe, steps=args.steps, seed=1, size=(args.size, args.size),
                                           scheduler="dpm")[0].image)

        rows.append(("ours", "base", *meter.images(shot)[:1], meter.peak_gib()))
        switches.append(("ours: set_adapters 1 (check + read + merge)",
                         meter.timed(lambda: lib.set_adapters(pipe, {NAMES[0]: WEIGHTS[0]}))))
        rows.append(("ours", "1 adapter, merged", meter.images(shot)[0], meter.peak_gib()))
        switches.append(("ours: set_adapters 3 (exact restore, read 2 new, merge 3)",
                         meter.timed(lambda: lib.set_adapters(pipe, three))))
        seconds, merged_image = meter.images(shot)
        rows.append(("ours", "3 adapters, merged", seconds, meter.peak_gib()))
        switches.append(("ours: change the 3 weights (exact restore + merge 3)",
                         meter.timed(lambda: lib.set_adapters(pipe, {n: 0.5 for n in NAMES}))))
        switches.append(("ours: back to the base (exact restore)", meter.timed(lambda: lib.set_adapters(pipe, {}))))
        del pipe
        _free(meter)
        meter.reset_peak()
        fused = lib.pipeline(str(base), three, fuse=True, device=args.device, dtype=args.dtype)
        rows.append(("ours", "3 adapters, fused", meter.images(
            lambda: np.asarray(lib.generate(PROMPT, pipe=fused, steps=args.steps, seed=1, size=(args.size, args.size),
                                            scheduler="dpm")[0].image))[0], meter.peak_gib()))
        del fused
    _free(meter)
    return rows, switches, merged_image


def run_plain(base: Path, files: dict[str, Path], args, meter: Meter) -> tuple[list, list, object]:
    import numpy as np
    import torch
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    from lorahub_cli.pipeline.build import choose_dtype

    rows, switches = [], []
    meter.reset_peak()
    pipe = StableDiffusionPipeline.from_pretrained(base, dtype=choose_dtype(args.dtype, args.device)).to(args.device)
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)

    def shot():
        out = pipe(prompt=PROMPT, num_inference_steps=args.steps, guidance_scale=7.5, width=args.size,
                   height=args.size, generator=torch.Generator("cpu").manual_seed(1))
        return np.asarray(out.images[0])

    rows.append(("plain", "base", meter.images(shot)[0], meter.peak_gib()))
    switches.append(("plain: load_lora_weights x3", meter.timed(
        lambda: [pipe.load_lora_weights(str(files[n]), adapter_name=n) for n in NAMES])))
    pipe.set_adapters([NAMES[0]], adapter_weights=[WEIGHTS[0]])
    rows.append(("plain", "1 adapter, unfused", meter.images(shot)[0], meter.peak_gib()))
    switches.append(("plain: set_adapters 3 with weights", meter.timed(
        lambda: pipe.set_adapters(list(NAMES), adapter_weights=list(WEIGHTS)))))
    seconds, stacked_image = meter.images(shot)
    rows.append(("plain", "3 adapters, unfused", seconds, meter.peak_gib()))
    switches.append(("plain: fuse_lora 3", meter.timed(lambda: pipe.fuse_lora(adapter_names=list(NAMES)))))
    rows.append(("plain", "3 adapters, fused", meter.images(shot)[0], meter.peak_gib()))
    switches.append(("plain: unfuse_lora", meter.timed(pipe.unfuse_lora)))
    del pipe
    _free(meter)
    return rows, switches, stacked_image


def _free(meter: Meter) -> None:
    import gc

    gc.collect()
    if meter.cuda:
        meter.torch.cuda.empty_cache()


def report(args, rows, switches, agreement: float) -> str:
    import diffusers
    import peft
    import torch

    card = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else f"CPU ({platform.machine()})"
    base = {who: s for who, what, s, _ in rows if what == "base"}
    lines = [f"{card}; torch {torch.__version__}, diffusers {diffusers.__version__}, peft {peft.__version__}; "
             f"{args.size}x{args.size}, {args.steps} steps, {args.dtype}, batch 1 (CFG), median of {args.repeat} "
             "images after a warm-up.", "",
             "| configuration | ours s/image | vs base | ours peak GiB | plain diffusers+peft s/image | vs base | plain peak GiB |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    by = {(who, what): (s, peak) for who, what, s, peak in rows}
    for label, ours_key, plain_key in PAIRS:
        o, p = by[("ours", ours_key)], by[("plain", plain_key)]
        lines.append(f"| {label} | {o[0]:.3f} | {(o[0] / base['ours'] - 1) * 100:+.1f}% | {o[1]:.2f} | {p[0]:.3f} | "
                     f"{(p[0] / base['plain'] - 1) * 100:+.1f}% | {p[1]:.2f} |")
    lines += ["", "| changing the adapters | seconds |", "|---|---:|"]
    lines += [f"| {label} | {sec:.3f} |" for label, sec in switches]
    lines += ["", f"Largest pixel difference, ours 3 merged vs plain 3 unfused: {agreement:.0f} / 255."]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--dtype", default="fp16")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", type=Path, help="also write gpu_check_generate.json / .md here")
    parser.add_argument("--tiny", action="store_true", help="CPU smoke test with the tiny test pipeline")
    args = parser.parse_args()
    if args.tiny:
        args.size, args.steps, args.repeat, args.rank, args.dtype, args.device = 32, 4, 1, 4, "fp32", "cpu"
    import torch
    from diffusers.utils import logging as dlog

    dlog.set_verbosity_error()
    dlog.disable_progress_bar()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: run with --tiny for the CPU smoke test", file=sys.stderr)
        return 3
    meter = Meter(args.device, args.repeat)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.tiny:
            from tests.fixtures.pipelines import make_tiny_sd_pipeline

            base = make_tiny_sd_pipeline(root / "tiny")
        else:
            base = build_sd15(root / "sd15", scheduler="dpm")
        files = make_adapters(root / "adapters", base if args.tiny else None, args.rank)
        from lorahub_cli.ingest import ingest
        from registry.api import Registry

        with Registry(home=root / "home") as reg:
            for name, path in files.items():
                ingest(path, reg, name=name)
        ours_rows, ours_switch, ours_img = run_ours(base, root / "home", args, meter)
        plain_rows, plain_switch, plain_img = run_plain(base, files, args, meter)
    import numpy as np

    agreement = float(np.abs(ours_img.astype(int) - plain_img.astype(int)).max())
    text = report(args, ours_rows + plain_rows, ours_switch + plain_switch, agreement)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gpu_check_generate.md").write_text(text, encoding="utf-8")
        (args.out / "gpu_check_generate.json").write_text(json.dumps({
            "args": {k: str(v) for k, v in vars(args).items()},
            "rows": [{"who": w, "config": c, "seconds": s, "peak_gib": p} for w, c, s, p in ours_rows + plain_rows],
            "switches": dict(ours_switch + plain_switch), "max_pixel_difference": agreement}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
