"""CPU side by side: the per-step cost of stacked adapters, ours (fp32 merge, exact undo) vs diffusers + PEFT.

    .venv/bin/python scripts/bench_generate.py [--size 128] [--rank 16] [--repeat 3] [--threads 1] [--write docs/benchmarks/generate.md]

Part A, an SD1.5-shaped U-Net (the packaged sd15 config, random weights, fp32, CPU), one denoising step at
batch 2 (one classifier-free-guidance step) at --size pixels, with three random rank --rank adapters on every
attention projection (to_q/k/v/out.0, the usual LoRA targets), weights 0.8 / 0.6 / -0.4:
  * base                       nothing loaded
  * peft, 1 adapter            unet.load_lora_adapter + set_adapters (diffusers' way, unfused)
  * peft, 3 stacked            the three with set_adapters weights
  * ours, 3 merged             lorahub's MergedStack: fp32 sum merged into the weights, originals kept
  * diffusers fuse_lora, 3     PEFT's fuse of the three stacked adapters
and the time to change the adapter set / weights each way. Each configuration's steps run in a fresh process
(configurations in turn, --repeat rounds; min and median shown): on a shared CPU box a step's time also depends
on the process's memory history, by as much as 1.6x for bit-identical weights, so rows must not share one.
Part B: bf16 weights, what a fuse and an undo leave behind, ours vs PEFT's fuse_lora / unfuse_lora.
Part C: whole images with the tiny test pipeline through the Python API (rows again in turn).
The machine may be shared: compare rows of one run. Nothing here is imported by the product.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WEIGHTS = (0.8, 0.6, -0.4)
ALPHAS = (16.0, 8.0, 32.0)
_ATTN = re.compile(r"\.attn[12]\.(to_q|to_k|to_v|to_out\.0)$")


def build_unet():
    import torch
    from diffusers import UNet2DConditionModel

    config = json.loads((ROOT / "lorahub_cli/archs/configs/sd15/unet/config.json").read_text())
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(config)
    return unet.eval().requires_grad_(False)


def make_adapters(unet, rank: int, magnitude: float = 0.02):
    """Three CanonicalAdapters on the U-Net's attention projections (the canonical names are the module names)."""
    import torch

    from lorahub_cli.canonical import CanonicalAdapter, LoraPair

    out = []
    for i, alpha in enumerate(ALPHAS):
        gen = torch.Generator().manual_seed(100 + i)
        modules = {}
        for name, mod in unet.named_modules():
            if _ATTN.search(name):
                o, n = mod.weight.shape
                modules[f"unet.{name}"] = LoraPair(torch.randn(rank, n, generator=gen) * magnitude,
                                                   torch.randn(o, rank, generator=gen) * magnitude, alpha)
        out.append(CanonicalAdapter(family="sd1", modules=modules))
    return out


def peft_state(adapter) -> dict:
    """Unprefixed lora_A / lora_B with the scale folded into B, for unet.load_lora_adapter(prefix=None)."""
    sd = {}
    for key, pair in adapter.modules.items():
        path = key.split(".", 1)[1]
        sd[f"{path}.lora_A.weight"] = pair.down
        sd[f"{path}.lora_B.weight"] = pair.up * pair.scale
    return sd


class Holder:
    """What MergedStack expects of a pipeline: components as attributes."""

    def __init__(self, unet):
        self.unet = unet


def step_timer(unet, size: int):
    import torch

    gen = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 4, size // 8, size // 8, generator=gen)
    text = torch.randn(2, 77, 768, generator=gen)
    t = torch.tensor([500, 500])

    def run(repeat: int) -> list[float]:
        times = []
        with torch.inference_mode():
            for _ in range(repeat):
                start = time.perf_counter()
                unet(latents, t, encoder_hidden_states=text)
                times.append(time.perf_counter() - start)
        return times

    return run


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


CONFIGS = ("base", "ours, 3 merged", "peft, 1 adapter (unfused)", "peft, 3 stacked (unfused)",
           "diffusers fuse_lora, 3")


def prepare(unet, config: str, rank: int):
    """Put ``unet`` in ``config``'s state (the adapters are rebuilt from their seeds: the same in every process)."""
    from lorahub_cli.pipeline.stack import MergedStack

    adapters = make_adapters(unet, rank)
    names = [f"bench{i}" for i in range(3)]
    keep = None
    if config == "ours, 3 merged":
        keep = MergedStack(Holder(unet))
        keep.apply(list(zip(adapters, WEIGHTS)))        # originals kept, as lorahub does by default
    elif config != "base":
        k = 1 if config.startswith("peft, 1") else 3
        for a, n in zip(adapters[:k], names):
            unet.load_lora_adapter(peft_state(a), adapter_name=n, prefix=None)
        unet.set_adapters(names[:k], weights=list(WEIGHTS[:k]))
        if config.startswith("diffusers fuse_lora"):
            unet.fuse_lora(adapter_names=names)
    return keep


def child(args) -> None:
    """One configuration in a fresh process: load the saved U-Net, prepare, warm up, time --steps-per-run steps."""
    import torch
    from diffusers import UNet2DConditionModel
    from safetensors.torch import load_file

    config = json.loads((ROOT / "lorahub_cli/archs/configs/sd15/unet/config.json").read_text())
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(config)
    unet.load_state_dict(load_file(str(args.weights)), assign=True)
    unet.eval().requires_grad_(False)
    keep = prepare(unet, args.child, args.rank)
    run = step_timer(unet, args.size)
    run(1)
    print(json.dumps({"config": args.child, "times": run(args.steps_per_run), "kept": keep is not None}))


def part_a(args) -> tuple[list, list]:
    """Switch times in this process; step times of each configuration in fresh processes (configurations
    taken in turn, --repeat rounds), so no row inherits another's memory state or a slow moment alone."""
    import copy
    import subprocess

    from safetensors.torch import save_file

    from lorahub_cli.pipeline.stack import MergedStack

    unet = build_unet()
    adapters = make_adapters(unet, args.rank)
    n_layers = len(adapters[0].modules)
    stack = MergedStack(Holder(unet))
    twin = copy.deepcopy(unet)
    names = [f"bench{i}" for i in range(3)]
    switches = [("ours: merge 3 (fp32, originals kept)", timed(lambda: stack.apply(list(zip(adapters, WEIGHTS))))),
                ("ours: change weights (exact restore + merge 3)",
                 timed(lambda: stack.apply(list(zip(adapters, (0.5, 0.5, 0.5)))))),
                ("ours: restore the base exactly", timed(stack.restore)),
                ("peft: load_lora_adapter x3", timed(lambda: [twin.load_lora_adapter(peft_state(a), adapter_name=n,
                                                                                     prefix=None)
                                                              for a, n in zip(adapters, names)])),
                ("peft: set_adapters 3 with weights", timed(lambda: twin.set_adapters(names, weights=list(WEIGHTS)))),
                ("peft: fuse_lora 3", timed(lambda: twin.fuse_lora(adapter_names=names))),
                ("peft: unfuse_lora", timed(twin.unfuse_lora))]
    del twin
    times: dict[str, list[float]] = {c: [] for c in CONFIGS}
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "unet.safetensors"
        save_file({k: v.contiguous() for k, v in unet.state_dict().items()}, str(weights))
        del unet, stack
        for _ in range(args.repeat):
            for config in CONFIGS:
                out = subprocess.run([sys.executable, __file__, "--child", config, "--weights", str(weights),
                                      "--size", str(args.size), "--rank", str(args.rank), "--threads",
                                      str(args.threads), "--steps-per-run", str(args.steps_per_run)],
                                     capture_output=True, text=True, check=True)
                times[config] += json.loads(out.stdout.strip().splitlines()[-1])["times"]
    return [(c, times[c], n_layers) for c in CONFIGS], switches


def part_b(rank: int) -> list[dict]:
    """bf16 U-Net: error of the fused weights against the fp32 truth, and what an undo leaves changed."""
    import torch

    from lorahub_cli.pipeline.stack import MergedStack, merged_update

    results = []
    for way in ("ours", "peft"):
        unet = build_unet().to(torch.bfloat16)
        adapters = make_adapters(unet, rank, magnitude=0.004)   # a subtle update: well under 1% of the weights' norm
        originals = {k: unet.get_submodule(k.split(".", 1)[1]).weight.detach().clone() for k in adapters[0].modules}
        if way == "ours":
            stack = MergedStack(Holder(unet))
            stack.apply(list(zip(adapters, WEIGHTS)))
        else:
            names = [f"bench{i}" for i in range(3)]
            for a, n in zip(adapters, names):
                unet.load_lora_adapter(peft_state(a), adapter_name=n, prefix=None)
            unet.set_adapters(names, weights=list(WEIGHTS))
            unet.fuse_lora(adapter_names=names)
        err = ref = 0.0
        rho = []
        for key, w0 in originals.items():
            layer = unet.get_submodule(key.split(".", 1)[1])
            layer = getattr(layer, "base_layer", layer)
            delta = merged_update([(a.modules[key], w) for a, w in zip(adapters, WEIGHTS)], "cpu").reshape(w0.shape)
            truth = w0.float() + delta
            err += float((layer.weight.float() - truth).norm() ** 2)
            ref += float(delta.norm() ** 2)
            rho.append(float(delta.norm() / w0.float().norm()))
        if way == "ours":
            stack.restore()
        else:
            unet.unfuse_lora()
        changed = total = 0
        drift = 0.0
        for key, w0 in originals.items():
            layer = unet.get_submodule(key.split(".", 1)[1])
            w = getattr(layer, "base_layer", layer).weight.detach()
            changed += int((w != w0).sum())
            total += w0.numel()
            drift = max(drift, float((w.float() - w0.float()).norm() / w0.float().norm()))
        results.append({"way": way, "rho": statistics.median(rho), "fuse_error": (err / ref) ** 0.5,
                        "undo_changed": changed / total, "undo_drift": drift})
        del unet
    return results


def part_c(repeat: int) -> list[tuple[str, float]]:
    from lorahub_cli.ingest import ingest
    from lorahub_cli.pipeline import Library
    from registry.api import Registry
    from tests.fixtures.pipelines import make_tiny_sd_pipeline
    from tests.pipeline.helpers import layer_shapes, load_plain, random_adapter, write_diffusers

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base = make_tiny_sd_pipeline(root / "tiny")
        shapes = layer_shapes(load_plain(base))
        keys = [k for k in shapes if ".attn" in k or k.startswith("text_encoder.")]
        with Registry(home=root / "home") as reg:
            for i in range(3):
                path = write_diffusers(random_adapter(shapes, keys, 4, 4.0, seed=i), root / f"a{i}.safetensors")
                ingest(path, reg, name=f"a{i}")
        with Library(home=root / "home") as lib:
            configs = [(label, lib.pipeline(str(base), adapters, stack=stack, device="cpu"))
                       for label, adapters, stack in (("tiny: base", {}, "merge"),
                                                      ("tiny: ours, 3 merged", THREE, "merge"),
                                                      ("tiny: peft, 3 stacked", THREE, "peft"))]
            times: dict[str, list[float]] = {label: [] for label, _ in configs}
            for round_ in range(repeat + 1):      # round 0 is the warm-up
                for label, pipe in configs:
                    took = lib.generate("lower newer", pipe=pipe, steps=25, seed=1)[0].seconds
                    if round_:
                        times[label].append(took)
            rows = [(label, min(times[label])) for label, _ in configs]
    return rows


THREE = {"a0": 0.8, "a1": 0.6, "a2": -0.4}


def report(args, a_rows, switches, b_rows, c_rows) -> str:
    import diffusers
    import peft
    import torch

    base = min(a_rows[0][1])
    lines = [f"torch {torch.__version__}, diffusers {diffusers.__version__}, peft {peft.__version__}; Python "
             f"{platform.python_version()}, {os.cpu_count()} CPUs ({platform.machine()}), {torch.get_num_threads()} "
             f"torch threads, load average {', '.join(f'{x:.1f}' for x in os.getloadavg())} at the end.", "",
             f"**A. SD1.5-shaped U-Net, one step at batch 2 (CFG), {args.size}x{args.size} px, fp32, CPU.** Three "
             f"rank-{args.rank} adapters on all {a_rows[0][2]} attention projections. Each configuration runs in a "
             f"fresh process (the U-Net loaded from one saved copy; ours keeps the originals as it does by default): "
             f"a warm-up step, then {args.steps_per_run} timed; configurations in turn, {args.repeat} rounds.", "",
             "| configuration | min s/step | median s/step | vs base (min) |", "|---|---:|---:|---:|"]
    for label, times, _n in a_rows:
        lines.append(f"| {label} | {min(times):.3f} | {statistics.median(times):.3f} | "
                     f"{(min(times) / base - 1) * 100:+.1f}% |")
    lines += ["", "| changing the adapters | seconds |", "|---|---:|"]
    lines += [f"| {label} | {sec:.3f} |" for label, sec in switches]
    lines += ["", "**B. bf16 weights, three subtle adapters** (the summed update is a fraction of a percent of each "
              "weight's norm): error of the fused weights against W + the exact fp32 sum (relative to the update's "
              "norm), and what undoing it leaves behind.", "",
              "| way | median update / weight | fuse error / update | weights changed after undo | max drift after undo |",
              "|---|---:|---:|---:|---:|"]
    for r in b_rows:
        label = "ours (fp32 sum, one rounding; restore from kept originals)" if r["way"] == "ours" else \
            "PEFT fuse_lora (each update added in bf16; unfuse_lora subtracts)"
        lines.append(f"| {label} | {r['rho']:.2%} | {r['fuse_error']:.1%} | {r['undo_changed']:.2%} | "
                     f"{r['undo_drift']:.1e} |")
    lines += ["", "**C. Whole images, tiny test pipeline (32x32, 25 steps, CPU)**, through the Python API.", "",
              "| configuration | best s/image |", "|---|---:|"]
    lines += [f"| {label} | {sec:.3f} |" for label, sec in c_rows]
    return "\n".join(lines) + "\n"


def write_block(path: Path, text: str) -> None:
    begin, end = "<!-- bench_generate:begin -->", "<!-- bench_generate:end -->"
    doc = path.read_text(encoding="utf-8")
    head, _, rest = doc.partition(begin)
    _, _, tail = rest.partition(end)
    path.write_text(f"{head}{begin}\n{text}{end}{tail}", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: steadier timings on a shared machine)")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--steps-per-run", type=int, default=2, help="timed steps per process (after a warm-up)")
    parser.add_argument("--write", type=Path, help="rewrite the measured block of this markdown file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--weights", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    import torch
    from diffusers.utils import logging as dlog

    torch.set_num_threads(args.threads)
    dlog.set_verbosity_error()
    dlog.disable_progress_bar()
    if args.child:
        child(args)
        return
    a_rows, switches = part_a(args)
    b_rows = part_b(args.rank)
    c_rows = part_c(args.repeat)
    text = report(args, a_rows, switches, b_rows, c_rows)
    print(text)
    if args.write:
        write_block(args.write, text)


if __name__ == "__main__":
    main()
