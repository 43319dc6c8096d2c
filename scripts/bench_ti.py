"""Textual-inversion training speed: `lora train --method ti` (lorahub_cli.train.ti) against a loop equivalent
to diffusers' examples/textual_inversion/textual_inversion.py, side by side in one run, same base, same data,
same batch, fp32.

    .venv/bin/python scripts/bench_ti.py [--steps 40] [--warmup 5] [--repeats 3] [--threads 1]  # tiny model, CPU
    .venv/bin/python scripts/bench_ti.py --sd15 --device cuda --resolution 512 --out ti.json  # SD1.5-shaped (GPU)
    .venv/bin/python scripts/bench_ti.py --sdxl --threads 1      # tiny SDXL, against textual_inversion_sdxl.py

The reference loop is the script's: accelerate's Accelerator, AdamW over the input embeddings, the VAE run
every step with latent_dist.sample(), the placeholder rows kept and every other row restored after each
step (index_no_updates), a DataLoader that opens and crops the images. Ours also reads the images each step
(there is nothing to cache: the text encoder's input changes every step). steps/s is over the steps after
--warmup; each variant builds its models first (not timed). CPU seconds per step (process time) are reported
too: on a shared machine, with --threads 1, they measure the work a step does where wall time mostly measures
the neighbours.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
TOKEN = "<bench>"


def make_images(folder: Path, n: int = 8, size: int = 64) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (size, size), (30 * i % 255, 90, 200 - 20 * i)).save(folder / f"{i}.png")
    return folder


def reference_loop(base: str, images: Path, *, steps: int, warmup: int, batch: int, resolution: int,
                   device: str) -> tuple[float, float]:
    """(steps/s, CPU s/step) of a loop equivalent to diffusers' textual_inversion.py (fp32)."""
    import torch
    import torch.nn.functional as F
    from accelerate import Accelerator
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from diffusers.optimization import get_scheduler
    from torch.utils.data import DataLoader, Dataset
    from transformers import CLIPTextModel, CLIPTokenizer

    from lorahub_cli.train.data import Example, pixels

    accelerator = Accelerator(mixed_precision="no", cpu=device == "cpu")
    tokenizer = CLIPTokenizer.from_pretrained(base, subfolder="tokenizer")
    text_encoder = CLIPTextModel.from_pretrained(base, subfolder="text_encoder")
    vae = AutoencoderKL.from_pretrained(base, subfolder="vae")
    unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet")
    noise_scheduler = DDPMScheduler.from_pretrained(base, subfolder="scheduler")
    tokenizer.add_tokens([TOKEN])
    token_id = tokenizer.convert_tokens_to_ids(TOKEN)
    text_encoder.resize_token_embeddings(len(tokenizer))
    embeds = text_encoder.get_input_embeddings().weight.data
    with torch.no_grad():
        embeds[token_id] = embeds[:token_id].mean(dim=0)
    vae.requires_grad_(False)
    unet.requires_grad_(False)
    text_encoder.requires_grad_(False)   # the script freezes all but the token embedding
    text_encoder.get_input_embeddings().requires_grad_(True)
    optimizer = torch.optim.AdamW(text_encoder.get_input_embeddings().parameters(), lr=5e-4, betas=(0.9, 0.999),
                                  weight_decay=1e-2, eps=1e-8)
    files = sorted(images.glob("*.png"))

    class Images(Dataset):
        def __len__(self):
            return len(files) * 100

        def __getitem__(self, i):
            ids = tokenizer(f"a photo of {TOKEN}", padding="max_length", truncation=True,
                            max_length=tokenizer.model_max_length, return_tensors="pt").input_ids[0]
            return {"pixel_values": pixels(Example(files[i % len(files)], ""), resolution, center_crop=True),
                    "input_ids": ids}

    loader = DataLoader(Images(), batch_size=batch, shuffle=True)
    lr_scheduler = get_scheduler("constant", optimizer=optimizer)
    text_encoder, optimizer, loader, lr_scheduler = accelerator.prepare(text_encoder, optimizer, loader, lr_scheduler)
    unet.to(accelerator.device)
    vae.to(accelerator.device)
    orig = accelerator.unwrap_model(text_encoder).get_input_embeddings().weight.data.clone()
    text_encoder.train()
    it = iter(loader)
    start = None
    for step in range(steps + warmup):
        if step == warmup:
            _sync(device)
            start, cpu = time.perf_counter(), time.process_time()
        batch_ = next(it)
        latents = vae.encode(batch_["pixel_values"]).latent_dist.sample().detach() * vae.config.scaling_factor
        noise = torch.randn_like(latents)
        timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (latents.shape[0],),
                                  device=latents.device).long()
        noisy = noise_scheduler.add_noise(latents, noise, timesteps)
        hidden = text_encoder(batch_["input_ids"])[0]
        pred = unet(noisy, timesteps, hidden).sample
        loss = F.mse_loss(pred.float(), noise.float(), reduction="mean")
        accelerator.backward(loss)
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad()
        index_no_updates = torch.ones((len(tokenizer),), dtype=torch.bool)
        index_no_updates[token_id] = False
        with torch.no_grad():
            accelerator.unwrap_model(text_encoder).get_input_embeddings().weight[index_no_updates] = \
                orig[index_no_updates]
    _sync(device)
    return steps / (time.perf_counter() - start), (time.process_time() - cpu) / steps


def reference_loop_sdxl(base: str, images: Path, *, steps: int, warmup: int, batch: int, resolution: int,
                        device: str) -> tuple[float, float]:
    """(steps/s, CPU s/step) of a loop equivalent to diffusers' research_projects textual_inversion_sdxl.py
    (fp32): the token in both tokenizers, both encoders' input embeddings in AdamW, the UNet's context the two
    penultimate hidden states side by side, the second encoder's pooled output and the size/crop ids as
    added conditions, the VAE every step, every other row of both matrices restored after each step."""
    import torch
    import torch.nn.functional as F
    from accelerate import Accelerator
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from diffusers.optimization import get_scheduler
    from torch.utils.data import DataLoader, Dataset
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from lorahub_cli.train.data import Example, pixels

    accelerator = Accelerator(mixed_precision="no", cpu=device == "cpu")
    tokenizers = [CLIPTokenizer.from_pretrained(base, subfolder=f) for f in ("tokenizer", "tokenizer_2")]
    encoders = [CLIPTextModel.from_pretrained(base, subfolder="text_encoder"),
                CLIPTextModelWithProjection.from_pretrained(base, subfolder="text_encoder_2")]
    vae = AutoencoderKL.from_pretrained(base, subfolder="vae")
    unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet")
    noise_scheduler = DDPMScheduler.from_pretrained(base, subfolder="scheduler")
    ids = []
    for tokenizer, encoder in zip(tokenizers, encoders):
        tokenizer.add_tokens([TOKEN])
        ids.append(tokenizer.convert_tokens_to_ids(TOKEN))
        encoder.resize_token_embeddings(len(tokenizer))
        with torch.no_grad():
            w = encoder.get_input_embeddings().weight
            w[ids[-1]] = w[:ids[-1]].mean(dim=0)
        encoder.requires_grad_(False)
        encoder.get_input_embeddings().requires_grad_(True)
    vae.requires_grad_(False)
    unet.requires_grad_(False)
    params = [p for e in encoders for p in e.get_input_embeddings().parameters()]
    optimizer = torch.optim.AdamW(params, lr=5e-4, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
    files = sorted(images.glob("*.png"))

    class Images(Dataset):
        def __len__(self):
            return len(files) * 100

        def __getitem__(self, i):
            text = f"a photo of {TOKEN}"
            out = {f"input_ids_{j}": t(text, padding="max_length", truncation=True, max_length=t.model_max_length,
                                       return_tensors="pt").input_ids[0] for j, t in enumerate(tokenizers)}
            out["pixel_values"] = pixels(Example(files[i % len(files)], ""), resolution, center_crop=True)
            out["time_ids"] = torch.tensor([resolution, resolution, 0, 0, resolution, resolution], dtype=torch.float)
            return out

    loader = DataLoader(Images(), batch_size=batch, shuffle=True)
    lr_scheduler = get_scheduler("constant", optimizer=optimizer)
    te1, te2, optimizer, loader, lr_scheduler = accelerator.prepare(*encoders, optimizer, loader, lr_scheduler)
    unet.to(accelerator.device)
    vae.to(accelerator.device)
    origs = [accelerator.unwrap_model(e).get_input_embeddings().weight.data.clone() for e in (te1, te2)]
    it = iter(loader)
    start = cpu = None
    for step in range(steps + warmup):
        if step == warmup:
            _sync(device)
            start, cpu = time.perf_counter(), time.process_time()
        batch_ = next(it)
        latents = vae.encode(batch_["pixel_values"]).latent_dist.sample().detach() * vae.config.scaling_factor
        noise = torch.randn_like(latents)
        timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (latents.shape[0],),
                                  device=latents.device).long()
        noisy = noise_scheduler.add_noise(latents, noise, timesteps)
        out1 = te1(batch_["input_ids_0"], output_hidden_states=True)
        out2 = te2(batch_["input_ids_1"], output_hidden_states=True)
        hidden = torch.cat([out1.hidden_states[-2], out2.hidden_states[-2]], dim=-1)
        added = {"text_embeds": out2[0], "time_ids": batch_["time_ids"]}
        pred = unet(noisy, timesteps, hidden, added_cond_kwargs=added).sample
        loss = F.mse_loss(pred.float(), noise.float(), reduction="mean")
        accelerator.backward(loss)
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad()
        with torch.no_grad():
            for e, orig, tid, tok in zip((te1, te2), origs, ids, tokenizers):
                keep = torch.ones((len(tok),), dtype=torch.bool)
                keep[tid] = False
                accelerator.unwrap_model(e).get_input_embeddings().weight[keep] = orig[keep]
    _sync(device)
    return steps / (time.perf_counter() - start), (time.process_time() - cpu) / steps


def ours(base: str, images: Path, work: Path, *, steps: int, warmup: int, batch: int, resolution: int,
         device: str) -> tuple[float, float]:
    """(steps/s, CPU s/step) of `lora train --method ti` over the steps after ``warmup`` (from its progress
    events)."""
    from lorahub_cli.train import TrainConfig, train

    marks: dict[int, float] = {}
    cpu: dict[int, float] = {}

    def progress(event):
        if event.kind == "step":
            if event.step in (warmup, steps + warmup):
                _sync(device)
            marks[event.step] = time.perf_counter()
            cpu[event.step] = time.process_time()

    config = TrainConfig(base=base, data=str(images), name=f"bench-{time.monotonic_ns()}", method="ti",
                         token=TOKEN, resolution=resolution, batch_size=batch, max_steps=steps + warmup, seed=1,
                         device=device, register=False, run_dir=str(work / f"run-{time.monotonic_ns()}"),
                         checkpointing_steps=10**6)
    train(config, progress=progress)
    return steps / (marks[steps + warmup] - marks[warmup]), (cpu[steps + warmup] - cpu[warmup]) / steps


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--sd15", action="store_true", help="an SD1.5-shaped base with random weights")
    parser.add_argument("--sdxl", action="store_true", help="the tiny SDXL with 768/1280-wide encoders, against "
                        "a loop equivalent to diffusers' textual_inversion_sdxl.py")
    parser.add_argument("--threads", type=int, help="torch threads (1: CPU seconds per step are the work "
                        "done, whatever else the machine runs)")
    parser.add_argument("--out", type=Path, help="write the numbers as JSON here")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads or max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        reference = reference_loop
        if args.sd15:
            from scripts.gpu_common import build_sd15

            base = str(build_sd15(work / "sd15"))
        elif args.sdxl:
            from tests.embeddings.files import make_ti_sdxl_pipeline

            base, reference = str(make_ti_sdxl_pipeline(work / "tiny-xl")), reference_loop_sdxl
        else:
            from tests.embeddings.files import make_ti_sd_pipeline

            base = str(make_ti_sd_pipeline(work / "tiny"))
        images = make_images(work / "images", size=max(64, args.resolution))
        kw = dict(steps=args.steps, warmup=args.warmup, batch=args.batch, resolution=args.resolution,
                  device=args.device)
        rows = {"diffusers-loop": [], "lora-train-ti": []}
        cpu = {"diffusers-loop": [], "lora-train-ti": []}
        for _ in range(args.repeats):   # interleaved: the shared machine's load hits both alike
            for name, run in (("diffusers-loop", lambda: reference(base, images, **kw)),
                              ("lora-train-ti", lambda: ours(base, images, work, **kw))):
                rate, seconds = run()
                rows[name].append(rate)
                cpu[name].append(seconds)
    result = {"device": args.device, "base": "sd15-shaped" if args.sd15 else "tiny-sdxl-768-1280" if args.sdxl
              else "tiny-768", **kw,
              "threads": torch.get_num_threads(),
              "steps_per_s": {k: {"max": max(v), "median": statistics.median(v), "all": v} for k, v in rows.items()},
              # process CPU time per step: with --threads 1 the work a step costs, little moved by other load
              "cpu_s_per_step": {k: {"min": min(v), "median": statistics.median(v), "all": v}
                                 for k, v in cpu.items()}}
    result["ratio_median"] = (result["steps_per_s"]["lora-train-ti"]["median"]
                              / result["steps_per_s"]["diffusers-loop"]["median"])
    result["cpu_ratio_median"] = (result["cpu_s_per_step"]["diffusers-loop"]["median"]
                                  / result["cpu_s_per_step"]["lora-train-ti"]["median"])
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
