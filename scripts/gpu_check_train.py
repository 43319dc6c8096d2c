"""GPU check for `lora train`: samples/s and peak memory against a loop equivalent to diffusers'
train_text_to_image_lora.py, side by side in one run (called by scripts/gpu_check.sh; not run in CI).

    .venv/bin/python scripts/gpu_check_train.py [--steps 100] [--warmup 20] [--out DIR] [--write FILE]
    .venv/bin/python scripts/gpu_check_train.py --tiny          # CPU smoke test of this script (tiny model)

Base: SD1.5-shaped models with random weights, built from lorahub_cli/archs/configs/sd15 (UNet, CLIP text
encoder) plus the SD VAE config, saved once as a diffusers folder (--base DIR reuses any SD1.x folder). Data:
32 synthetic 512x512 captioned images. Timing does not depend on weight values.

Variants, each in its own process (so each peak memory is its own):
  diffusers-loop       the script's loop: fp16 frozen weights, fp32 LoRA (cast_training_params), AdamW,
                       VAE + text encoder every step, latent_dist.sample(), loss.item() every step, batch 1
  lora-train           `lora train` defaults at fp16, batch 1 (latents/embeddings cached, channels_last, fused AdamW)
  lora-train-nocache   the same with --cache off (what the caching alone is worth)
  lora-train-bf16      bf16 instead of fp16
  lora-train-bs8       batch 8 (host-bound small steps: samples/s from larger batches)
  lora-train-compile   --compile (torch.compile of the UNet)
Reference measured on an H100 with diffusers 0.42.1 / peft 0.21 (issue 9): 6.1 steps/s at batch 1, 3.2 GiB.
samples/s and steps/s are over the timed steps (after --warmup steps); peak is torch.cuda.max_memory_allocated
over the whole process (model placement, caching and training).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts import gpu_common  # noqa: E402
from scripts.gpu_common import build_sd15, peak_gib  # noqa: E402

VARIANTS = ("diffusers-loop", "lora-train", "lora-train-nocache", "lora-train-bf16", "lora-train-bs8",
            "lora-train-compile")
IMAGES = 32


# --- inputs and workers ----------------------------------------------------------------------------
def build_data(folder: Path, resolution: int) -> Path:
    return gpu_common.build_data(folder, resolution, IMAGES)


def diffusers_loop(base: str, data: str, *, steps: int, warmup: int, resolution: int, precision: str) -> dict:
    """train_text_to_image_lora.py's training step, minus logging/validation/saving."""
    import torch
    import torch.nn.functional as F
    from accelerate import Accelerator
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import cast_training_params
    from peft import LoraConfig
    from transformers import CLIPTextModel, CLIPTokenizer

    from lorahub_cli.train.data import load_captioned, pixels

    cpu = not torch.cuda.is_available()
    accelerator = Accelerator(mixed_precision=precision, cpu=cpu)
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision, torch.float32)
    noise_scheduler = DDPMScheduler.from_pretrained(base, subfolder="scheduler")
    tokenizer = CLIPTokenizer.from_pretrained(base, subfolder="tokenizer")
    text_encoder = CLIPTextModel.from_pretrained(base, subfolder="text_encoder")
    vae = AutoencoderKL.from_pretrained(base, subfolder="vae")
    unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet")
    for m in (unet, vae, text_encoder):
        m.requires_grad_(False)
    unet.to(accelerator.device, dtype=weight_dtype)
    vae.to(accelerator.device, dtype=weight_dtype)
    text_encoder.to(accelerator.device, dtype=weight_dtype)
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian",
                                target_modules=["to_k", "to_q", "to_v", "to_out.0"]))
    if precision == "fp16":
        cast_training_params(unet, dtype=torch.float32)
    params = [p for p in unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)

    examples = load_captioned(data)

    class Dataset(torch.utils.data.Dataset):   # Resize + CenterCrop + ToTensor + Normalize, every step
        def __len__(self):
            return len(examples)

        def __getitem__(self, i):
            ids = tokenizer(examples[i].caption, max_length=tokenizer.model_max_length, padding="max_length",
                            truncation=True, return_tensors="pt").input_ids[0]
            return {"pixel_values": pixels(examples[i], resolution, center_crop=True), "input_ids": ids}

    loader = torch.utils.data.DataLoader(Dataset(), shuffle=True, batch_size=1, num_workers=0)
    lr_scheduler = get_scheduler("constant", optimizer=optimizer)
    unet, optimizer, loader, lr_scheduler = accelerator.prepare(unet, optimizer, loader, lr_scheduler)
    unet.train()
    done, started = 0, None
    while done < warmup + steps:
        for batch in loader:
            if done == warmup:
                if not cpu:
                    torch.cuda.synchronize()
                started = time.perf_counter()
            with accelerator.accumulate(unet):
                latents = vae.encode(batch["pixel_values"].to(dtype=weight_dtype)).latent_dist.sample()
                latents = latents * vae.config.scaling_factor
                noise = torch.randn_like(latents)
                timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (latents.shape[0],),
                                          device=latents.device).long()
                noisy = noise_scheduler.add_noise(latents, noise, timesteps)
                hidden = text_encoder(batch["input_ids"], return_dict=False)[0]
                pred = unet(noisy, timesteps, hidden, return_dict=False)[0]
                loss = F.mse_loss(pred.float(), noise.float(), reduction="mean")
                accelerator.gather(loss.repeat(1)).mean().item()   # the script's train_loss logging
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(params, 1.0)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad()
            done += 1
            if done >= warmup + steps:
                break
    if not cpu:
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - started
    return {"steps_per_s": steps / elapsed, "samples_per_s": steps / elapsed, "batch": 1}


def lora_train(base: str, data: str, *, steps: int, warmup: int, resolution: int, precision: str, batch: int,
               cache: str, compile: bool, run_dir: str) -> dict:
    from lorahub_cli.train import TrainConfig, train

    clock = gpu_common.StepClock()
    result = train(TrainConfig(base=base, data=data, name="gpu-check", run_dir=run_dir, resolution=resolution,
                               center_crop=True, batch_size=batch, max_steps=warmup + steps, lr=1e-4, rank=4,
                               mixed_precision=precision, cache=cache, compile=compile, seed=0,
                               checkpointing_steps=10**9, register=False), progress=clock)
    rate = clock.rate(warmup)
    return {"steps_per_s": rate, "samples_per_s": rate * batch, "batch": batch, "cache": result.cache}


def worker(args) -> dict:
    import torch

    precision = args.precision
    common = dict(steps=args.steps, warmup=args.warmup, resolution=args.resolution)
    v = args.worker
    if v == "diffusers-loop":
        out = diffusers_loop(args.base, args.data, precision=precision, **common)
    else:
        out = lora_train(args.base, args.data, precision="bf16" if v == "lora-train-bf16" else precision,
                         batch=8 if v == "lora-train-bs8" else 1, cache="off" if v == "lora-train-nocache" else "auto",
                         compile=v == "lora-train-compile", run_dir=str(Path(args.result).parent / f"run-{v}"),
                         **common)
    out.update(variant=v, peak_gib=peak_gib(), torch=torch.__version__,
               device=torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu")
    return out


# --- parent -------------------------------------------------------------------------------------------
def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=100, help="timed steps per variant")
    p.add_argument("--warmup", type=int, default=20, help="untimed steps first (multiple of 10 on CUDA)")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--base", help="an SD1.x diffusers folder (default: build SD1.5-shaped random models)")
    p.add_argument("--out", type=Path, help="write results.json here")
    p.add_argument("--write", type=Path, help="append a markdown section with the table to this file")
    p.add_argument("--tiny", action="store_true", help="CPU smoke test with the tests' tiny pipeline, fp32")
    p.add_argument("--timeout", type=int, default=480, help="seconds per variant")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--resolution", type=int, default=512, help=argparse.SUPPRESS)
    p.add_argument("--precision", default="fp16", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        from lorahub_cli.train.logs import quiet_libraries

        quiet_libraries()
        Path(args.result).write_text(json.dumps(worker(args)))
        return 0

    work = Path(tempfile.mkdtemp(prefix="gpu-check-train-"))
    resolution, precision = (32, "no") if args.tiny else (512, "fp16")
    if args.tiny:
        from tests.fixtures.pipelines import make_tiny_sd_pipeline

        base = str(make_tiny_sd_pipeline(work / "base"))
    else:
        base = args.base or str(build_sd15(work / "base"))
    data = str(build_data(work / "data", resolution))
    rows = []
    for v in [v for v in args.variants.split(",") if v]:
        result_file = work / f"{v}.json"
        cmd = [sys.executable, __file__, "--worker", v, "--base", base, "--data", data, "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--resolution", str(resolution), "--precision", precision,
               "--result", str(result_file)]
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
        except subprocess.TimeoutExpired:
            rows.append({"variant": v, "error": f"timed out after {args.timeout} s"})
            print(f"{v}: timed out", file=sys.stderr, flush=True)
            continue
        if proc.returncode != 0 or not result_file.is_file():
            rows.append({"variant": v, "error": proc.stderr[-2000:]})
            print(f"{v}: failed\n{proc.stderr[-2000:]}", file=sys.stderr, flush=True)
            continue
        row = json.loads(result_file.read_text())
        rows.append(row)
        print(f"{v}: {row['samples_per_s']:.2f} samples/s, {row['steps_per_s']:.2f} steps/s, "
              f"peak {row['peak_gib']:.2f} GiB", file=sys.stderr, flush=True)
    shutil.rmtree(work, ignore_errors=True)   # the built base is several GB
    table = render(rows, args)
    print(table)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(rows, indent=2))
        (args.out / "table.md").write_text(table)
    if args.write:
        with open(args.write, "a", encoding="utf-8") as f:
            f.write("\n" + table)
    return 0 if all("error" not in r for r in rows) else 1


def render(rows: list[dict], args) -> str:
    ok = [r for r in rows if "error" not in r]
    ref = next((r for r in ok if r["variant"] == "diffusers-loop"), None)
    device = ok[0]["device"] if ok else "?"
    what = "tiny CPU smoke test" if args.tiny else "SD1.5 512 px"
    lines = [f"### lora train vs the diffusers loop ({device}, {what})",
             "", f"{args.steps} timed steps after {args.warmup} warm-up steps; rank 4, attention targets.", "",
             "| variant | batch | samples/s | steps/s | vs diffusers loop | peak GiB |", "|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['variant']} | | failed | | | |")
            continue
        speedup = f"{r['samples_per_s'] / ref['samples_per_s']:.2f}x" if ref else ""
        lines.append(f"| {r['variant']} | {r['batch']} | {r['samples_per_s']:.2f} | {r['steps_per_s']:.2f} | "
                     f"{speedup} | {r['peak_gib']:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
