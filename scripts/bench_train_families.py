"""SDXL and Flux training speed: `lora train` against a loop equivalent to the diffusers script, side by side
in one run, each variant in its own process (so each peak memory is its own).

    .venv/bin/python scripts/bench_train_families.py --tiny          # CPU: the tests' tiny pipelines, fp32
    .venv/bin/python scripts/bench_train_families.py --gpu [--out DIR] [--write docs/benchmarks.md]

--gpu (called by scripts/gpu_check.sh) builds SDXL- and Flux-shaped models with random weights from
lorahub_cli/archs/configs (no download; timing does not depend on weight values) and trains at 1024 px in
bf16, rank 16 (SDXL) / 16 (Flux), batch 1. Flux's T5 is a one-layer T5 of the real width: its embeddings are
cached and the encoder freed before training, so its depth changes nothing that is timed.

Variants (per family):
  script-loop            the diffusers script's step: VAE and (SDXL) both text encoders every step,
                         latent_dist.sample(), loss gathered and .item() every step
                         (train_text_to_image_lora_sdxl.py / train_dreambooth_lora_flux.py)
  lora-train             `lora train` defaults: latents and embeddings cached, encoders parked or freed
  lora-train-nocache     --cache off (SDXL: both encoders every step; Flux: latents every step)
  lora-train-gc          --gradient-checkpointing
  lora-train-gc-nocache  both (SDXL only)
samples/s is over the timed steps (after --warmup); peak is torch.cuda.max_memory_allocated on a GPU, the
process's peak RSS on a CPU (which includes the Python runtime and libraries).

On a shared CPU the wall clock moves with everyone else's load, so --tiny runs every variant in --repeats
interleaved rounds (3), each worker on --threads 1 thread (torch's default of one per core oversubscribes a
loaded machine and made earlier runs 10-20x slower and erratic), gives each variant's ratio to the script
loop of the same round, and also measures samples per second of the worker's own CPU time, which barely
depends on the load. The table's title has the load average seen during the run.
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
from scripts.gpu_common import peak_gib  # noqa: E402

VARIANTS = {"sdxl": ("script-loop", "lora-train", "lora-train-nocache", "lora-train-gc", "lora-train-gc-nocache"),
            "flux": ("script-loop", "lora-train", "lora-train-nocache", "lora-train-gc")}
IMAGES = 16
SDXL_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]


# --- inputs -------------------------------------------------------------------------------------------
def build_data(folder: Path, resolution: int) -> Path:
    return gpu_common.build_data(folder, resolution, IMAGES)


def build_bases(work: Path, tiny: bool) -> dict[str, str]:
    if tiny:
        from tests.fixtures.pipelines import make_tiny_flux_pipeline, make_tiny_sdxl_pipeline

        return {"sdxl": str(make_tiny_sdxl_pipeline(work / "sdxl")), "flux": str(make_tiny_flux_pipeline(work / "flux"))}
    return {"sdxl": str(_build_sdxl(work / "sdxl")), "flux": str(_build_flux(work / "flux"))}


def _configs(family: str) -> Path:
    return ROOT / "lorahub_cli" / "archs" / "configs" / family


def _read(path: Path) -> dict:
    return json.loads(path.read_text())


def _build_sdxl(folder: Path) -> Path:
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from scripts.gpu_common import SD_VAE
    from tests.fixtures.pipelines import make_tokenizer

    c = _configs("sdxl")
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(_read(c / "unet" / "config.json"))
    te1 = CLIPTextModel(CLIPTextConfig(**_read(c / "text_encoder" / "config.json")))
    te2 = CLIPTextModelWithProjection(CLIPTextConfig(**_read(c / "text_encoder_2" / "config.json")))
    vae = AutoencoderKL.from_config({**SD_VAE, "sample_size": 1024, "scaling_factor": 0.13025})
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       steps_offset=1, timestep_spacing="leading")
    pipe = StableDiffusionXLPipeline(unet=unet, vae=vae, text_encoder=te1, text_encoder_2=te2,
                                     tokenizer=make_tokenizer(), tokenizer_2=make_tokenizer(), scheduler=scheduler)
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def _build_flux(folder: Path) -> Path:
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    from scripts.gpu_common import SD_VAE
    from tests.fixtures.pipelines import make_t5_tokenizer, make_tokenizer

    c = _configs("flux")
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)   # 12B parameters: built and saved in bf16 (24 GB, not 48)
    try:
        transformer = FluxTransformer2DModel.from_config(_read(c / "transformer" / "config.json"))
        t5 = T5EncoderModel(T5Config(**{**_read(c / "text_encoder_2" / "config.json"), "num_layers": 1}))
        clip = CLIPTextModel(CLIPTextConfig(**_read(c / "text_encoder" / "config.json")))
    finally:
        torch.set_default_dtype(torch.float32)
    vae = AutoencoderKL.from_config({**SD_VAE, "latent_channels": 16, "sample_size": 1024, "use_quant_conv": False,
                                     "use_post_quant_conv": False, "scaling_factor": 0.3611, "shift_factor": 0.1159})
    pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True),
                        vae=vae, text_encoder=clip, tokenizer=make_tokenizer(), text_encoder_2=t5,
                        tokenizer_2=make_t5_tokenizer(), transformer=transformer)
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


# --- workers ------------------------------------------------------------------------------------------
class _Timer:
    def __init__(self, warmup: int):
        import torch

        self.warmup, self.cuda, self.started, self.cpu_started = warmup, torch.cuda.is_available(), None, None

    def tick(self, done: int) -> None:
        if done == self.warmup:
            self._sync()
            self.started, self.cpu_started = time.perf_counter(), time.process_time()

    def rate(self, steps: int) -> float:
        self._sync()
        return steps / (time.perf_counter() - self.started)

    def cpu_rate(self, steps: int) -> float:
        """Steps per second of this process's CPU time (read right after ``rate``)."""
        return steps / (time.process_time() - self.cpu_started)

    def _sync(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()


def _prepare_common(base: str, precision: str):
    import torch
    from accelerate import Accelerator

    accelerator = Accelerator(mixed_precision=precision, cpu=not torch.cuda.is_available())
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision, torch.float32)
    return accelerator, dtype


def script_loop_sdxl(base: str, data: str, *, steps: int, warmup: int, resolution: int, precision: str,
                     rank: int, batch: int) -> dict:
    """train_text_to_image_lora_sdxl.py's step (VAE kept in fp32 as the script does without a fixed VAE)."""
    import torch
    import torch.nn.functional as F
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from diffusers.training_utils import cast_training_params
    from peft import LoraConfig
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from lorahub_cli.train import sdxl
    from lorahub_cli.train.data import load_captioned, pixels

    accelerator, dtype = _prepare_common(base, precision)
    dev = accelerator.device
    sched = DDPMScheduler.from_pretrained(base, subfolder="scheduler")
    tok1 = CLIPTokenizer.from_pretrained(base, subfolder="tokenizer")
    tok2 = CLIPTokenizer.from_pretrained(base, subfolder="tokenizer_2")
    te1 = CLIPTextModel.from_pretrained(base, subfolder="text_encoder").to(dev, dtype)
    te2 = CLIPTextModelWithProjection.from_pretrained(base, subfolder="text_encoder_2").to(dev, dtype)
    vae = AutoencoderKL.from_pretrained(base, subfolder="vae").to(dev, torch.float32)
    unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet").to(dev, dtype)
    for m in (unet, vae, te1, te2):
        m.requires_grad_(False)
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=SDXL_TARGETS))
    cast_training_params(unet, dtype=torch.float32)
    params = [p for p in unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-2)
    examples = load_captioned(data)

    class Dataset(torch.utils.data.Dataset):   # resize + crop + tensor, and both tokenizations, every step
        def __len__(self):
            return len(examples)

        def __getitem__(self, i):
            e = examples[i]
            ids = [t(e.caption, max_length=77, padding="max_length", truncation=True, return_tensors="pt").input_ids[0]
                   for t in (tok1, tok2)]
            time_ids = torch.tensor(sdxl.time_ids(e.size, resolution, center_crop=True, crop_u=0.5, crop_v=0.5))
            return {"pixel_values": pixels(e, resolution, center_crop=True), "ids": torch.stack(ids),
                    "time_ids": time_ids}

    loader = torch.utils.data.DataLoader(Dataset(), shuffle=True, batch_size=batch, num_workers=0, drop_last=True)
    unet, optimizer, loader = accelerator.prepare(unet, optimizer, loader)
    unet.train()
    timer, done = _Timer(warmup), 0
    while done < warmup + steps:
        for b in loader:
            timer.tick(done)
            with accelerator.accumulate(unet):
                latents = vae.encode(b["pixel_values"].float()).latent_dist.sample() * vae.config.scaling_factor
                latents = latents.to(dtype)
                noise = torch.randn_like(latents)
                t = torch.randint(0, sched.config.num_train_timesteps, (latents.shape[0],), device=dev).long()
                noisy = sched.add_noise(latents, noise, t)
                hidden, pooled = sdxl.encode([te1, te2], b["ids"])
                with accelerator.autocast():
                    pred = unet(noisy, t, hidden, return_dict=False, **sdxl.unet_kwargs(pooled, b["time_ids"],
                                                                                        hidden.dtype))[0]
                loss = F.mse_loss(pred.float(), noise.float(), reduction="mean")
                accelerator.gather(loss.repeat(batch)).mean().item()   # the script's train_loss logging
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(params, 1.0)
                optimizer.step()
                optimizer.zero_grad()
            done += 1
            if done >= warmup + steps:
                break
    rate = timer.rate(steps)
    return {"steps_per_s": rate, "samples_per_s": rate * batch, "batch": batch,
            "cpu_samples_per_s": timer.cpu_rate(steps) * batch}


def script_loop_flux(base: str, data: str, *, steps: int, warmup: int, resolution: int, precision: str,
                     rank: int, batch: int) -> dict:
    """train_dreambooth_lora_flux.py's step without --cache_latents: the instance prompt's embeddings once, the
    VAE every step, timesteps by the weighting scheme (none) and sigmas looked up per sample."""
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from diffusers.training_utils import cast_training_params, compute_density_for_timestep_sampling
    from peft import LoraConfig
    from transformers import CLIPTextModel, CLIPTokenizer, T5EncoderModel, T5TokenizerFast

    from lorahub_cli.train import flux
    from lorahub_cli.train.data import load_captioned, pixels
    from lorahub_cli.train.models import Base

    accelerator, dtype = _prepare_common(base, precision)
    dev = accelerator.device
    sched = FlowMatchEulerDiscreteScheduler.from_pretrained(base, subfolder="scheduler")
    vae = AutoencoderKL.from_pretrained(base, subfolder="vae").to(dev, dtype)
    transformer = FluxTransformer2DModel.from_pretrained(base, subfolder="transformer").to(dev, dtype)
    encoders = Base(base, "FluxPipeline", None, None,
                    CLIPTextModel.from_pretrained(base, subfolder="text_encoder").to(dev, dtype),
                    CLIPTokenizer.from_pretrained(base, subfolder="tokenizer"), None,
                    text_encoder_2=T5EncoderModel.from_pretrained(base, subfolder="text_encoder_2").to(dev, dtype),
                    tokenizer_2=T5TokenizerFast.from_pretrained(base, subfolder="tokenizer_2"), family="flux")
    for m in (transformer, vae, encoders.text_encoder, encoders.text_encoder_2):
        m.requires_grad_(False)
    with torch.no_grad():
        hidden, pooled = flux.encode(encoders, ["wider lowest"], 512)
    del encoders   # the script frees the text encoders once the instance prompt is encoded
    transformer.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                                       target_modules=flux.TARGETS))
    cast_training_params(transformer, dtype=torch.float32)
    params = [p for p in transformer.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-4)
    examples = load_captioned(data)

    class Dataset(torch.utils.data.Dataset):
        def __len__(self):
            return len(examples)

        def __getitem__(self, i):
            return pixels(examples[i], resolution, center_crop=True)

    loader = torch.utils.data.DataLoader(Dataset(), shuffle=True, batch_size=batch, num_workers=0, drop_last=True)
    transformer, optimizer, loader = accelerator.prepare(transformer, optimizer, loader)
    transformer.train()
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    guidance_on = accelerator.unwrap_model(transformer).config.guidance_embeds
    timer, done = _Timer(warmup), 0
    while done < warmup + steps:
        for px in loader:
            timer.tick(done)
            with accelerator.accumulate(transformer):
                x = vae.encode(px.to(dtype)).latent_dist.sample()
                x = ((x - (vae.config.shift_factor or 0.0)) * vae.config.scaling_factor).to(dtype)
                b, c, h, w = x.shape
                img_ids = FluxPipeline._prepare_latent_image_ids(b, h // 2, w // 2, dev, dtype)
                noise = torch.randn_like(x)
                u = compute_density_for_timestep_sampling("none", b, 0.0, 1.0, 1.29)
                idx = (u * sched.config.num_train_timesteps).long()
                t = sched.timesteps[idx].to(dev)
                step_idx = [(sched.timesteps.to(dev) == s).nonzero().item() for s in t]   # the script's get_sigmas
                sigmas = sched.sigmas.to(dev, dtype)[step_idx].view(-1, 1, 1, 1)
                noisy = (1.0 - sigmas) * x + sigmas * noise
                packed = FluxPipeline._pack_latents(noisy, b, c, h, w)
                guidance = torch.full((b,), 3.5, device=dev) if guidance_on else None
                with accelerator.autocast():
                    pred = transformer(hidden_states=packed, timestep=t / 1000, guidance=guidance,
                                       pooled_projections=pooled.expand(b, -1),
                                       encoder_hidden_states=hidden.expand(b, -1, -1),
                                       txt_ids=torch.zeros(hidden.shape[1], 3, device=dev, dtype=dtype),
                                       img_ids=img_ids, return_dict=False)[0]
                pred = FluxPipeline._unpack_latents(pred, height=h * factor, width=w * factor, vae_scale_factor=factor)
                loss = ((pred.float() - (noise - x).float()) ** 2).reshape(b, -1).mean(1).mean()
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(params, 1.0)
                optimizer.step()
                optimizer.zero_grad()
                accelerator.gather(loss.detach().repeat(b)).mean().item()   # logged every step
            done += 1
            if done >= warmup + steps:
                break
    rate = timer.rate(steps)
    return {"steps_per_s": rate, "samples_per_s": rate * batch, "batch": batch,
            "cpu_samples_per_s": timer.cpu_rate(steps) * batch}


def lora_train(family: str, base: str, data: str, *, steps: int, warmup: int, resolution: int, precision: str,
               rank: int, batch: int, variant: str, run_dir: str) -> dict:
    from lorahub_cli.train import TrainConfig, train

    clock = gpu_common.StepClock()
    extra = {"targets": SDXL_TARGETS} if family == "sdxl" else {"mode": "dreambooth", "instance_prompt": "wider lowest"}
    result = train(TrainConfig(base=base, data=data, name=f"bench-{family}", run_dir=run_dir, resolution=resolution,
                               center_crop=True, batch_size=batch, max_steps=warmup + steps, lr=1e-4, rank=rank,
                               mixed_precision=precision, cache="off" if "nocache" in variant else "auto",
                               gradient_checkpointing="-gc" in variant, seed=0, checkpointing_steps=10**9,
                               register=False, **extra), progress=clock)
    rate = clock.rate(warmup)
    return {"steps_per_s": rate, "samples_per_s": rate * batch, "batch": batch, "cache": result.cache,
            "cpu_samples_per_s": clock.cpu_rate(warmup) * batch}


def worker(args) -> dict:
    import torch

    common = dict(steps=args.steps, warmup=args.warmup, resolution=args.resolution, precision=args.precision,
                  rank=args.rank, batch=args.batch)
    family, variant = args.worker.split(":")
    if variant == "script-loop":
        loop = script_loop_sdxl if family == "sdxl" else script_loop_flux
        out = loop(args.base, args.data, **common)
    else:
        out = lora_train(family, args.base, args.data, variant=variant,
                         run_dir=str(Path(args.result).with_suffix(".run")), **common)
    out.update(family=family, variant=variant, peak_gib=peak_gib(), torch=torch.__version__,
               device=torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu")
    return out


# --- parent -------------------------------------------------------------------------------------------
def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--tiny", action="store_true", help="CPU: the tests' tiny SDXL and Flux pipelines, fp32")
    mode.add_argument("--gpu", action="store_true", help="SDXL/Flux-shaped random models at 1024 px, bf16")
    p.add_argument("--families", default="sdxl,flux")
    p.add_argument("--variants", help="comma-separated subset of each family's variants (default: all)")
    p.add_argument("--steps", type=int, help="timed steps per variant (default: 30 tiny, 50 gpu)")
    p.add_argument("--warmup", type=int, help="untimed steps first (default: 5 tiny, 10 gpu)")
    p.add_argument("--batch", type=int, default=None, help="images per step (default: 4 tiny, 1 gpu)")
    p.add_argument("--out", type=Path, help="write results.json here")
    p.add_argument("--write", type=Path, help="append a markdown section with the table to this file")
    p.add_argument("--timeout", type=int, default=900, help="seconds per variant")
    p.add_argument("--repeats", type=int, help="rounds over all variants, interleaved (default: 3 tiny, 1 gpu)")
    p.add_argument("--threads", type=int, help="torch/OpenMP threads per worker (default: 1 tiny, torch's own "
                                               "on a GPU); the same for every variant")
    for hidden in ("--worker", "--base", "--data", "--result"):
        p.add_argument(hidden, help=argparse.SUPPRESS)
    p.add_argument("--resolution", type=int, help=argparse.SUPPRESS)
    p.add_argument("--precision", help=argparse.SUPPRESS)
    p.add_argument("--rank", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        from lorahub_cli.train.logs import quiet_libraries

        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        quiet_libraries()
        Path(args.result).write_text(json.dumps(worker(args)))
        return 0

    tiny = args.tiny
    steps = args.steps or (30 if tiny else 50)
    warmup = args.warmup or (5 if tiny else 10)
    batch = args.batch or (4 if tiny else 1)
    repeats = args.repeats or (3 if tiny else 1)
    threads = args.threads or (1 if tiny else None)
    resolution, precision, rank = (32, "no", 4) if tiny else (1024, "bf16", 16)
    work = Path(tempfile.mkdtemp(prefix="bench-train-families-"))
    families = [f for f in args.families.split(",") if f]
    bases = build_bases(work, tiny)
    data = str(build_data(work / "data", resolution))
    plan = []
    for family in families:
        chosen = set(args.variants.split(",")) if args.variants else set(VARIANTS[family])
        plan += [(family, v) for v in VARIANTS[family] if v in chosen]
    rows = []
    # rounds interleave the variants, so a change in the machine's load falls on all of them alike
    for rep in range(repeats):
        for family, v in plan:
            result_file = work / f"{family}-{v}-{rep}.json"
            cmd = [sys.executable, __file__, "--tiny" if tiny else "--gpu", "--worker", f"{family}:{v}",
                   "--base", bases[family], "--data", data, "--steps", str(steps), "--warmup", str(warmup),
                   "--batch", str(batch), "--resolution", str(resolution), "--precision", precision,
                   "--rank", str(rank), "--result", str(result_file)]
            env = {**os.environ, "HF_HUB_OFFLINE": "1"}
            if threads:
                cmd += ["--threads", str(threads)]
                env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
            if tiny:
                env["CUDA_VISIBLE_DEVICES"] = ""
            load = os.getloadavg()[0]
            try:
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
            except subprocess.TimeoutExpired:
                rows.append({"family": family, "variant": v, "round": rep, "error": f"timed out after {args.timeout} s"})
                continue
            if proc.returncode != 0 or not result_file.is_file():
                rows.append({"family": family, "variant": v, "round": rep, "error": proc.stderr[-2000:]})
                print(f"{family} {v}: failed\n{proc.stderr[-2000:]}", file=sys.stderr, flush=True)
                continue
            row = {**json.loads(result_file.read_text()), "round": rep, "load_before": load,
                   "load_after": os.getloadavg()[0], "threads": threads}
            rows.append(row)
            print(f"round {rep + 1}/{repeats} {family} {v}: {row['samples_per_s']:.2f} samples/s, peak "
                  f"{row['peak_gib']:.2f} GiB, load {load:.1f}", file=sys.stderr, flush=True)
    shutil.rmtree(work, ignore_errors=True)
    table = render(rows, tiny=tiny, steps=steps, warmup=warmup, batch=batch, resolution=resolution,
                   repeats=repeats, threads=threads)
    print(table)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(rows, indent=2))
    if args.write:
        with open(args.write, "a", encoding="utf-8") as f:
            f.write("\n" + table + "\n")
    return 0 if all("error" not in r for r in rows) else 1


def render(rows: list[dict], *, tiny: bool, steps: int, warmup: int, batch: int, resolution: int, repeats: int,
           threads) -> str:
    """One line per variant: the median samples/s over the rounds (and their range), the median of each
    round's ratio to that round's script loop (paired, so a load change between rounds cancels out), the
    same per second of the worker's CPU time on a CPU (one thread: what the work costs, nearly whatever
    else the shared machine runs), and peak memory."""
    from statistics import median

    good = [r for r in rows if "error" not in r]
    device = next((r["device"] for r in good), "?")
    loads = [x for r in good for x in (r["load_before"], r["load_after"])]
    load = f"load average {min(loads):.1f}-{max(loads):.1f}" if loads else "load unknown"
    lines = [f"### SDXL and Flux training ({'tiny models, CPU' if tiny else 'GPU'}: {device}; {resolution} px, "
             f"batch {batch}, {steps} timed steps after {warmup}; {repeats} interleaved round(s)"
             + (f", {threads} thread(s) per worker" if threads else "") + f"; {load})", "",
             "| family | variant | samples/s (median) | range | vs the script loop | "
             + ("samples per CPU-second (median) | range | vs the script loop, CPU time | " if tiny else "")
             + "peak GiB |", "|---|---|---|---|---|" + ("---|---|---|" if tiny else "") + "---|"]
    keys = ("samples_per_s", "cpu_samples_per_s") if tiny else ("samples_per_s",)   # CPU time: on a CPU only
    loop = {(r["family"], r["round"]): r for r in good if r["variant"] == "script-loop"}
    seen = []
    for r in rows:
        if (r["family"], r["variant"]) not in seen:
            seen.append((r["family"], r["variant"]))
    for family, variant in seen:
        mine = [r for r in good if r["family"] == family and r["variant"] == variant]
        failed = sum(1 for r in rows if "error" in r and r["family"] == family and r["variant"] == variant)
        if not mine:
            lines.append(f"| {family} | {variant} | failed |" + " |" * (3 * len(keys)))
            continue
        cells = []
        for key in keys:
            rates = [r[key] for r in mine]
            # each round's ratio to the same round's script loop (paired: a load change between rounds cancels)
            ratios = [r[key] / loop[(family, r["round"])][key] for r in mine if (family, r["round"]) in loop]
            spread = f"{min(rates):.2f}-{max(rates):.2f}" + (f" ({failed} failed)" if failed else "")
            ratio = f"{median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})" if ratios else ""
            cells += [f"{median(rates):.2f}", spread, ratio]
        lines.append(f"| {family} | {variant} | " + " | ".join(cells) + f" | {max(r['peak_gib'] for r in mine):.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
