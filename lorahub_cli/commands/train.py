"""`lora train`: LoRA fine-tuning and DreamBooth-LoRA through accelerate, straight into the library."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from lorahub_cli.options import JsonOpt, Run
from lorahub_cli.output import Output, Result, clean

_DATA = "Data"
_ADAPTER = "Adapter"
_OPTIM = "Optimisation"
_SPEED = "Speed and memory"
_RUN = "Run, checkpoints and validation"
_FLUX = "Flux"
_PARTS = "Single-file base parts (also --text-encoder-2)"


def _opt(*names: str, help: str, panel: str, **kw):
    return typer.Option(*names, help=help, rich_help_panel=panel, **kw)


def train_command(
    run: Run,
    base: Annotated[str, _opt("--base", help="Base model: a local diffusers folder, a Hub id, or a single-file checkpoint "
                              "(or a base saved from one with its --borrow / --vae / --text-encoder parts by "
                              "`lora base add`) (SD 1.x/2.x, SDXL, Flux).",
                              panel=_DATA, show_default=False)],
    data: Annotated[str, _opt("--data", help="Folder of images with captions (metadata.jsonl or .txt beside "
                              "each image); DreamBooth: the instance images. A Hub dataset id needs `datasets`.",
                              panel=_DATA, show_default=False)],
    output: Annotated[str, _opt("--output", "-o", help="Name of the adapter in the library; the run folder is "
                                "$LORAHUB_HOME/runs/NAME unless --run-dir.", panel=_DATA, show_default=False)],
    mode: Annotated[str, _opt("--mode", help="finetune (captioned set) or dreambooth (a subject from a few "
                              "images).", panel=_DATA)] = "finetune",
    instance_prompt: Annotated[Optional[str], _opt("--instance-prompt", help="DreamBooth prompt with the "
                                                   "identifier, e.g. \"a photo of sks dog\" (the trigger word); "
                                                   "finetune: the caption of uncaptioned images.",
                                                   panel=_DATA)] = None,
    class_data: Annotated[Optional[str], _opt("--class-data", help="DreamBooth prior preservation: folder of "
                                              "class images.", panel=_DATA)] = None,
    class_prompt: Annotated[Optional[str], _opt("--class-prompt", help="Caption of class images without one, "
                                                "e.g. \"a photo of a dog\".", panel=_DATA)] = None,
    prior_loss_weight: Annotated[float, _opt("--prior-loss-weight", help="Weight of the class-image loss.",
                                             panel=_DATA)] = 1.0,
    caption_column: Annotated[str, _opt("--caption-column", help="Caption column of metadata.jsonl / .csv.",
                                        panel=_DATA)] = "text",
    resolution: Annotated[int, _opt("--resolution", help="Training size in pixels (shorter side, then crop); a "
                                    "multiple of the VAE factor (8; Flux 16).",
                                    panel=_DATA)] = 512,
    center_crop: Annotated[bool, _opt("--center-crop", help="Center crop (default: random crop).",
                                      panel=_DATA)] = False,
    random_flip: Annotated[bool, _opt("--random-flip", help="Flip images horizontally at random.",
                                      panel=_DATA)] = False,
    small_images: Annotated[str, _opt("--small-images", help="Images smaller than --resolution (with buckets: "
                                      "than their bucket): upscale (as the diffusers scripts; the count is "
                                      "reported), refuse (image-too-small), or bucket (a smaller aspect-ratio "
                                      "bucket that fits them, never enlarged; turns --buckets on).",
                                      panel=_DATA)] = "upscale",
    buckets: Annotated[bool, _opt("--buckets/--no-buckets", help="Aspect-ratio buckets (as kohya's "
                                  "--enable_bucket): each image trains at the bucket of about --resolution² "
                                  "pixels nearest its aspect ratio, a batch holds one bucket. Off: square "
                                  "crops, as the diffusers scripts.", panel=_DATA)] = False,
    bucket_step: Annotated[int, _opt("--bucket-step", help="Bucket sides are multiples of this (a multiple of "
                                     "the VAE factor; Flux: of 16).", panel=_DATA)] = 64,
    bucket_min_side: Annotated[Optional[int], _opt("--bucket-min-side", help="Shortest bucket side (default: "
                                                   "--resolution / 2).", panel=_DATA)] = None,
    bucket_max_side: Annotated[Optional[int], _opt("--bucket-max-side", help="Longest bucket side (default: "
                                                   "--resolution × 2); max/min bounds the aspect ratio.",
                                                   panel=_DATA)] = None,
    method: Annotated[str, _opt("--method", help="lora; ti (textual inversion: a new token's embedding, as "
                                "diffusers' textual_inversion.py); pivotal (new tokens and a U-Net LoRA "
                                "trained together).", panel=_ADAPTER)] = "lora",
    token: Annotated[Optional[str], _opt("--token", help="ti: the new token (default <NAME>).",
                                         panel=_ADAPTER)] = None,
    initializer: Annotated[Optional[str], _opt("--initializer", help="ti: a word of the vocabulary the token "
                                               "starts from (default: the vocabulary's mean).",
                                               panel=_ADAPTER)] = None,
    vectors: Annotated[int, _opt("--vectors", help="ti: vectors of the token.", panel=_ADAPTER)] = 1,
    rank: Annotated[int, _opt("--rank", help="LoRA rank.", panel=_ADAPTER)] = 4,
    alpha: Annotated[Optional[float], _opt("--alpha", help="LoRA alpha (default: = rank).",
                                           panel=_ADAPTER)] = None,
    targets: Annotated[Optional[str], _opt("--targets", help="Comma-separated UNet modules (default: "
                                           "to_q,to_k,to_v,to_out.0; DreamBooth adds add_k_proj,add_v_proj; "
                                           "Flux: the transformer's attention and feed-forward layers of "
                                           "train_dreambooth_lora_flux.py).",
                                           panel=_ADAPTER)] = None,
    train_text_encoder: Annotated[bool, _opt("--train-text-encoder", help="Also train a LoRA on the text "
                                             "encoder (q,k,v,out projections; SDXL: both encoders; not "
                                             "for Flux).", panel=_ADAPTER)] = False,
    batch_size: Annotated[Optional[int], _opt("--batch-size", help="Images per step per process (default: 16 "
                                              "finetune, 4 DreamBooth).", panel=_OPTIM)] = None,
    grad_accum: Annotated[int, _opt("--grad-accum", help="Gradient accumulation steps.", panel=_OPTIM)] = 1,
    lr: Annotated[Optional[float], _opt("--lr", help="Learning rate (default: 1e-4 finetune, 5e-4 DreamBooth).",
                                        panel=_OPTIM)] = None,
    lr_scheduler: Annotated[str, _opt("--lr-scheduler", help="constant, constant_with_warmup, linear, cosine, "
                                      "cosine_with_restarts or polynomial.", panel=_OPTIM)] = "constant",
    warmup: Annotated[int, _opt("--warmup", help="Warmup steps of the LR schedule.", panel=_OPTIM)] = 0,
    max_steps: Annotated[Optional[int], _opt("--max-steps", help="Optimizer steps (wins over --epochs; "
                                             "default: 100 epochs finetune, 500 steps DreamBooth).",
                                             panel=_OPTIM)] = None,
    epochs: Annotated[Optional[int], _opt("--epochs", help="Passes over the data.", panel=_OPTIM)] = None,
    snr_gamma: Annotated[Optional[float], _opt("--snr-gamma", help="Min-SNR loss weighting (5.0 is usual).",
                                               panel=_OPTIM)] = None,
    seed: Annotated[Optional[int], _opt("--seed", help="Seed of every random draw (default: drawn once, saved "
                                        "in the run folder).", panel=_OPTIM)] = None,
    mixed_precision: Annotated[str, _opt("--mixed-precision", help="auto (bf16 where the GPU has it), no, "
                                         "fp16 or bf16.", panel=_SPEED)] = "auto",
    gradient_checkpointing: Annotated[bool, _opt("--gradient-checkpointing", help="Less memory, slower steps.",
                                                 panel=_SPEED)] = False,
    optimizer: Annotated[str, _opt("--optimizer", help="adamw, or adamw8bit (bitsandbytes' 8-bit AdamW: less "
                                   "optimizer memory; needs bitsandbytes and a CUDA GPU).",
                                   panel=_SPEED)] = "adamw",
    fp8_base: Annotated[bool, _opt("--fp8-base", help="Store the frozen UNet/transformer weights in float8 "
                                   "(e4m3), upcast layer by layer: about half the bf16 weight memory, slower "
                                   "steps; where torch supports float8 on the device.", panel=_SPEED)] = False,
    text_encoder_2: Annotated[Optional[Path], _opt("--text-encoder-2", help="Flux: a T5 encoder folder (e.g. "
                                                   "FLUX.1-dev's text_encoder_2) for a base without one (for a "
                                                   "single file also a T5 weights file).",
                                                   panel=_FLUX, show_default=False)] = None,
    vae: Annotated[Optional[Path], _opt("--vae", help="For a single-file base: the VAE as a weights file or a "
                                        "diffusers folder, when the file lacks it.", panel=_PARTS,
                                        show_default=False)] = None,
    text_encoder: Annotated[Optional[Path], _opt("--text-encoder", help="For a single-file base: the first text "
                                                 "encoder (CLIP-L) as a weights file or a diffusers folder.",
                                                 panel=_PARTS, show_default=False)] = None,
    borrow: Annotated[Optional[Path], _opt("--borrow", help="For a single-file base: a diffusers folder to take "
                                           "configs, tokenizers and missing components from.", panel=_PARTS,
                                           show_default=False)] = None,
    t5_max_length: Annotated[int, _opt("--t5-max-length", help="Flux: T5 tokens per prompt (the script's "
                                       "max_sequence_length).", panel=_FLUX)] = 512,
    guidance: Annotated[float, _opt("--guidance", help="Flux dev: the guidance input while training (schnell "
                                    "has none).", panel=_FLUX)] = 3.5,
    weighting_scheme: Annotated[str, _opt("--weighting-scheme", help="Flux timestep sampling and loss "
                                          "weights: none (uniform), logit_normal, mode, cosmap, sigma_sqrt.",
                                          panel=_FLUX)] = "none",
    logit_mean: Annotated[float, _opt("--logit-mean", help="Flux logit_normal: mean.", panel=_FLUX)] = 0.0,
    logit_std: Annotated[float, _opt("--logit-std", help="Flux logit_normal: standard deviation.",
                                     panel=_FLUX)] = 1.0,
    mode_scale: Annotated[float, _opt("--mode-scale", help="Flux mode: scale.", panel=_FLUX)] = 1.29,
    cache: Annotated[str, _opt("--cache", help="Encode latents and prompts once: auto (when the encoders are "
                               "frozen and crops fixed), on, off.", panel=_SPEED)] = "auto",
    compile: Annotated[bool, _opt("--compile", help="torch.compile the UNet (slow first steps, faster after).",
                                  panel=_SPEED)] = False,
    device: Annotated[str, _opt("--device", help="auto, cuda or cpu.", panel=_SPEED)] = "auto",
    num_processes: Annotated[int, _opt("--num-processes", help="Processes (GPUs) to train on; >1 relaunches "
                                       "under accelerate launch.", panel=_SPEED)] = 1,
    accelerate_config: Annotated[Optional[Path], _opt("--accelerate-config", help="accelerate config file "
                                                      "(several machines, DeepSpeed, ...): relaunches under "
                                                      "accelerate launch with it.", panel=_SPEED)] = None,
    checkpointing_steps: Annotated[int, _opt("--checkpointing-steps", help="Save a resumable checkpoint every "
                                             "N steps.", panel=_RUN)] = 500,
    checkpoints_limit: Annotated[Optional[int], _opt("--checkpoints-limit", help="Keep only the newest N "
                                                     "checkpoints.", panel=_RUN)] = None,
    resume: Annotated[Optional[str], _opt("--resume", help="latest (the run's newest checkpoint; a fresh start "
                                          "when there is none) or a checkpoint folder.", panel=_RUN)] = None,
    validation_prompt: Annotated[Optional[str], _opt("--validation-prompt", help="Prompt of validation images "
                                                     "(at the end, and every --validation-every steps).",
                                                     panel=_RUN)] = None,
    validation_every: Annotated[Optional[int], _opt("--validation-every", help="Steps between validation "
                                                    "images.", panel=_RUN)] = None,
    validation_images: Annotated[int, _opt("--validation-images", help="Images per validation.",
                                           panel=_RUN)] = 4,
    validation_steps: Annotated[int, _opt("--validation-steps", help="Inference steps of validation images "
                                          "(1 to 1000, as lora generate --steps).", panel=_RUN)] = 30,
    run_dir: Annotated[Optional[Path], _opt("--run-dir", help="Run folder (default: $LORAHUB_HOME/runs/NAME).",
                                            panel=_RUN)] = None,
    tag: Annotated[list[str], _opt("--tag", "-t", help="Library tag (repeatable).", panel=_RUN,
                                   show_default=False)] = [],
    no_register: Annotated[bool, _opt("--no-register", help="Leave the adapter in the run folder only.",
                                      panel=_RUN)] = False,
    json: JsonOpt = False,
) -> Result:
    """Train a LoRA adapter on a base model and add it to the library.

    Fine-tuning (captioned images, as diffusers' train_text_to_image_lora.py) or DreamBooth (a subject from a
    few images, as train_dreambooth_lora.py), for SD 1.x/2.x, SDXL (both text encoders, size/crop
    conditioning, as the _sdxl scripts) and Flux (transformer LoRA, flow matching, as
    train_dreambooth_lora_flux.py), through accelerate: mixed precision, gradient accumulation,
    checkpoints, and one or several GPUs with the same command. Latents and prompt embeddings are computed
    once when the encoders are frozen. The result (diffusers layout, model card, validation images) is in the
    run folder and is registered in the library with provenance "trained". After an interruption, run the
    same command with --resume latest.

    Examples:

      lora train --base stable-diffusion-v1-5/stable-diffusion-v1-5 --data ./pokemon -o pokemon-style

      lora train --base ./sd15 --data ./dog --mode dreambooth --instance-prompt "a photo of sks dog" -o sks-dog

      lora train ... --class-data ./dogs --class-prompt "a photo of a dog" --train-text-encoder

      lora train ... -o pokemon-style --resume latest

      lora train --base ./sd15 --data ./cat --method ti --token "<cat-toy>" --initializer toy -o cat-toy

    --method ti trains only a new token's embedding (kind: embedding in the library; load it with
    `lora generate -e NAME`); captions are --instance-prompt (default "a photo of TOKEN"). --method pivotal
    trains the token and a U-Net LoRA together: NAME.safetensors (the LoRA with the token inside; `lora
    generate -a NAME` loads both) and NAME_emb.safetensors (the token alone, for A1111's embeddings folder).
    On SDXL both run on both text encoders (clip_l/clip_g files, as the advanced DreamBooth-LoRA script);
    Flux is refused (its T5 embeddings load in no UI or diffusers loader).
    """
    from lorahub_cli.train import TrainConfig, register_result, train
    from lorahub_cli.train.logs import quiet_libraries
    from registry.api import Registry

    if vae or text_encoder or borrow:   # checked before any run folder: they fit a single-file base only
        from lorahub_cli.commands.base import base_with_parts

        base_with_parts(run, base, borrow, vae, text_encoder, text_encoder_2, None)

    if run.settings.verbose == 0:
        quiet_libraries()
    config = TrainConfig(
        base=base, data=data, name=output, mode=mode, run_dir=_run_dir(run, run_dir, output), method=method,
        token=token, initializer=initializer, vectors=vectors,
        instance_prompt=instance_prompt, class_data=class_data, class_prompt=class_prompt,
        prior_loss_weight=prior_loss_weight, caption_column=caption_column, resolution=resolution,
        center_crop=center_crop, random_flip=random_flip, small_images=small_images, buckets=buckets,
        bucket_step=bucket_step, bucket_min_side=bucket_min_side, bucket_max_side=bucket_max_side, rank=rank,
        alpha=alpha,
        targets=[t.strip() for t in targets.split(",") if t.strip()] if targets else None,
        train_text_encoder=train_text_encoder, batch_size=batch_size, grad_accum=grad_accum, lr=lr,
        lr_scheduler=lr_scheduler, warmup=warmup, max_steps=max_steps, epochs=epochs, snr_gamma=snr_gamma,
        seed=seed, mixed_precision=mixed_precision, gradient_checkpointing=gradient_checkpointing, cache=cache,
        optimizer=optimizer, fp8_base=fp8_base, text_encoder_2=str(text_encoder_2) if text_encoder_2 else None,
        vae=str(vae) if vae else None, text_encoder=str(text_encoder) if text_encoder else None,
        borrow=str(borrow) if borrow else None,
        t5_max_length=t5_max_length, guidance=guidance, weighting_scheme=weighting_scheme, logit_mean=logit_mean,
        logit_std=logit_std, mode_scale=mode_scale,
        compile=compile, device=device, num_processes=num_processes,
        accelerate_config=str(accelerate_config) if accelerate_config else None,
        checkpointing_steps=checkpointing_steps, checkpoints_total_limit=checkpoints_limit, resume=resume,
        validation_prompt=validation_prompt, validation_every=validation_every,
        validation_images=validation_images, validation_inference_steps=validation_steps, tags=list(tag),
        register=not no_register)
    config.validate()
    with Registry(home=run.home) as registry:
        if config.register:
            from lorahub_cli.train.register import check_name_free

            check_name_free(config.name, registry=registry)
        with _Display(run.out) as display:
            result = train(config, progress=display)
        if config.register and result.adapter:
            register_result(result, registry=registry)
    return Result(result, lambda out: _render(out, result))


def _run_dir(run: Run, run_dir: Optional[Path], name: str) -> Optional[str]:
    """--run-dir, else runs/NAME in the --home given (the default home is train's own default)."""
    if run_dir is not None:
        return str(run_dir)
    return str(run.home / "runs" / name) if run.home is not None else None


class _Display:
    """Progress on stderr: a live bar (step, loss, it/s, ETA, memory) on a terminal; otherwise a line per
    phase and a step line every 30 s, for logs. Silent with -q or LORAHUB_NO_PROGRESS=1."""

    LOG_EVERY_S = 30.0

    def __init__(self, out: Output) -> None:
        self.out = out
        self.silent = out.quiet or os.environ.get("LORAHUB_NO_PROGRESS") == "1"
        self.live = not self.silent and sys.stderr.isatty()
        self.progress = None
        self.task = None
        self.last_line = 0.0

    def __enter__(self) -> "_Display":
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn("[bold]train[/]"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[speed]}"),
                                     TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[mem]}"),
                                     console=self.out.err, transient=False)
            self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.stop()

    def _say(self, text: str) -> None:
        if self.silent:
            return
        if self.progress is not None:
            self.progress.console.print(clean(text), markup=False, highlight=False)
        else:
            self.out.info(text)

    def __call__(self, event) -> None:
        kind = event.kind
        if kind in ("phase", "note", "checkpoint", "validation"):
            self._say(f"{event.message}" + (f": {event.path}" if kind == "checkpoint" and event.path else ""))
        elif kind == "start":
            self._say(event.message)
            if self.progress is not None:
                self.task = self.progress.add_task("train", total=event.total, completed=event.step, loss="-",
                                                   speed="", mem="")
        elif kind == "step":
            loss = f"{event.loss:.4f}" if event.loss is not None else "-"
            speed = f"{event.steps_per_s:.2f} it/s" if event.steps_per_s else ""
            mem = f"{event.memory_gib:.1f} GiB" if event.memory_gib is not None else ""
            if self.progress is not None and self.task is not None:
                self.progress.update(self.task, completed=event.step, loss=loss, speed=speed, mem=mem)
            elif not self.silent and (time.monotonic() - self.last_line >= self.LOG_EVERY_S
                                      or event.step == event.total):
                self.last_line = time.monotonic()
                self._say(f"step {event.step}/{event.total}  loss {loss}  {speed}  {mem}")


def _render(out: Output, result) -> None:
    loss = f", final loss {result.final_loss:.4f}" if result.final_loss is not None else ""
    speed = f", {result.samples_per_s:.1f} samples/s" if result.samples_per_s else ""
    out.line(f"trained {result.name}: {result.steps} steps on {result.world_size} process(es){loss}{speed}")
    out.line(f"  adapter: {result.adapter}")
    out.line(f"  run folder: {result.run_dir}")
    if result.buckets:
        out.line("  buckets: " + ", ".join(f"{size} ({n} images)" for size, n in result.buckets.items()))
    if result.validation_images:
        out.line(f"  validation images: {len(result.validation_images)} in {Path(result.validation_images[0]).parent}")
    if result.library:
        out.line(f"  library: {result.library.get('status', 'added')} as {result.library.get('name')} "
                 f"(sha256 {(result.library.get('sha256') or '')[:12]})")


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
