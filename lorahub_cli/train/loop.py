"""The training loop, through accelerate: mixed precision, gradient accumulation, DDP when launched on several
processes, checkpoint and resume.

Checkpoints are ``accelerator.save_state`` (optimizer, LR schedule, grad scaler, RNG states, step) plus the
adapter in its final file format, written to a temporary folder that is renamed into place once complete, so
a killed run never leaves a half checkpoint behind. Every random draw is a function of (seed, micro-step,
process) (order.py), which is what makes a resumed run bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any, Optional

from lorahub_cli.errors import TrainingFailed
from lorahub_cli.train.config import TrainConfig
from registry.publish import publish_folder
from lorahub_cli.train.events import ProgressFn, TrainEvent, no_progress
from lorahub_cli.train.result import TrainResult
from lorahub_cli.train.rundir import (STATE_FILE, RunFolder, checkpoint_step, prune_checkpoints,
                                      write_json_atomic)

# Test-only: SIGKILL this process right after checkpoint N is complete (to test resuming a killed run).
KILL_ENV = "LORAHUB_TEST_KILL_AFTER_CHECKPOINT"
METADATA_KEY = "lorahub.training"


def total_steps(config: TrainConfig, micro_steps_per_epoch: int) -> int:
    if config.max_steps:
        return config.max_steps
    return max(1, math.ceil(config.epochs * micro_steps_per_epoch / config.grad_accum))


def run_training(config: TrainConfig, run: RunFolder, progress: Optional[ProgressFn] = None) -> TrainResult:
    """Train as ``config`` says (already prepared: see rundir.prepare_run) in this process (one of several
    when launched by accelerate); the main process writes the adapter, card and validation images."""
    import torch

    from lorahub_cli.train.batches import BatchMaker
    from lorahub_cli.train.cache import plan_cache
    from lorahub_cli.train.data import load_train_data
    from lorahub_cli.train.models import load_base
    from lorahub_cli.train.order import BucketSchedule, Schedule
    from lorahub_cli.train.setup import (attach_adapters, compile_unet, make_accelerator, make_lr_scheduler,
                                         make_optimizer, place_encoders, place_unet)

    started = time.perf_counter()
    accelerator = make_accelerator(config, run.root)
    main = accelerator.is_main_process
    say: ProgressFn = (progress or no_progress) if main else no_progress
    say(TrainEvent("phase", "reading the training images"))
    data = load_train_data(config)
    _describe_data(data, config, say)
    say(TrainEvent("phase", f"loading the base model {config.base}"))
    base = load_base(config.base, text_encoder_2=config.text_encoder_2, vae=config.vae,
                     text_encoder=config.text_encoder, borrow=config.borrow)
    config = _family_settings(config, base)
    trained = attach_adapters(config, base)
    place_encoders(config, base, accelerator)
    plan = plan_cache(config, data, base.family)
    say(TrainEvent("note", plan.reason))
    latent_cache, embedding_cache = _build_caches(config, base, data, plan, accelerator, say)
    if base.family == "flux":
        from lorahub_cli.train.flux import free_text_encoders

        free_text_encoders(base)
    encoders = _Encoders(base, accelerator, offload=plan.latents, offload_text=plan.embeddings
                         and not config.train_text_encoder)
    encoders.park()
    params = place_unet(config, base, accelerator, trained)

    if data.buckets is not None:
        schedule = BucketSchedule(data.buckets.of, config.batch_size, accelerator.num_processes, config.seed)
    else:
        schedule = Schedule(len(data), config.batch_size, accelerator.num_processes, config.seed)
    max_steps = total_steps(config, schedule.micro_steps_per_epoch)
    optimizer = make_optimizer(config, params, accelerator.device)
    lr_scheduler = make_lr_scheduler(config, optimizer, max_steps, accelerator.num_processes)
    unet_module = compile_unet(base.unet) if config.compile else base.unet
    to_prepare = [unet_module] + (base.text_encoders if config.train_text_encoder else [])
    prepared = accelerator.prepare(*to_prepare, optimizer, lr_scheduler)
    unet, optimizer, lr_scheduler = prepared[0], prepared[-2], prepared[-1]
    text_encoders = list(prepared[1:-2]) if config.train_text_encoder else base.text_encoders
    _register_state_hooks(accelerator, base, config)

    start = 0
    if config.resume:
        say(TrainEvent("phase", f"resuming from {config.resume}"))
        accelerator.load_state(config.resume)
        start = checkpoint_step(Path(config.resume))
    if start >= max_steps:
        say(TrainEvent("note", f"the checkpoint is at step {start}, which already reaches --max-steps {max_steps}"))
    steps_done = max(0, max_steps - start)          # trained in this process
    steps_seen = max(start, max_steps)              # what the finished weights have seen

    workers = config.dataloader_workers
    if workers is None:
        workers = 0 if accelerator.device.type == "cpu" else min(4, (os.cpu_count() or 1) // accelerator.num_processes)
    maker = BatchMaker(config, base, data, schedule, accelerator, latent_cache=latent_cache,
                       embedding_cache=embedding_cache, workers=workers)
    samples_per_step = config.batch_size * accelerator.num_processes * config.grad_accum * (2 if data.classes else 1)
    say(TrainEvent("start", f"{len(data)} training samples, {samples_per_step} per step over "
                            f"{accelerator.num_processes} process(es)", step=start, total=max_steps))

    accum = config.grad_accum
    log_every = 1 if accelerator.device.type == "cpu" else 10
    batches = maker.batches(start * accum, max_steps * accum)
    loss_sum = torch.zeros((), device=accelerator.device)
    window_steps, window_start = 0, time.perf_counter()
    loop_start, side_time = time.perf_counter(), 0.0
    final_loss: Optional[float] = None
    checkpoints: list[str] = []
    validation_images: list[str] = []
    models = [unet] + (text_encoders if config.train_text_encoder else [])
    for step in range(start, max_steps):
        for _ in range(accum):
            batch = next(batches)
            with accelerator.accumulate(*models):
                loss = _loss(batch, unet, text_encoders, base, config, accelerator)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(params, config.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            loss_sum += loss.detach()
        done = step + 1
        window_steps += 1
        if done % log_every == 0 or done == max_steps:
            mean = accelerator.gather(loss_sum.reshape(1)).mean().item() / (window_steps * accum)
            if not math.isfinite(mean):
                raise TrainingFailed(f"the loss became {mean} at step {done}",
                                     hint="Lower --lr, or train in bf16 or fp32 (fp16 overflows more easily); "
                                          "--resume latest restarts from the last checkpoint.")
            final_loss = mean
            elapsed = max(time.perf_counter() - window_start, 1e-9)
            say(TrainEvent("step", step=done, total=max_steps, loss=mean, lr=lr_scheduler.get_last_lr()[0],
                           steps_per_s=window_steps / elapsed,
                           samples_per_s=window_steps * samples_per_step / elapsed,
                           memory_gib=peak_memory_gib(accelerator.device)))
            loss_sum.zero_()
            window_steps, window_start = 0, time.perf_counter()
        side_start = time.perf_counter()
        if done % config.checkpointing_steps == 0:
            path = _save_checkpoint(accelerator, run, config, done, say)
            checkpoints.append(str(path))
        if config.validation_prompt and config.validation_every and done % config.validation_every == 0 \
                and done != max_steps and main:
            validation_images += _validate(config, base, run, accelerator, encoders, done, say)
        spent = time.perf_counter() - side_start   # checkpoints and images are not training speed
        side_time += spent
        window_start += spent
    train_time = max(time.perf_counter() - loop_start - side_time, 1e-9)

    accelerator.wait_for_everyone()
    adapter = card = None
    if main:
        adapter, card, final_images = _finish(config, base, run, accelerator, encoders, steps_seen, final_loss,
                                              len(data), say, buckets=data.buckets)
        validation_images += final_images
    result = TrainResult(
        name=config.name, run_dir=str(run.root), adapter=adapter, card=card, steps=steps_seen,
        resumed_from=start if config.resume else None, world_size=accelerator.num_processes, final_loss=final_loss,
        elapsed_s=time.perf_counter() - started,
        samples_per_s=steps_done * samples_per_step / train_time if steps_done else None,
        steps_per_s=steps_done / train_time if steps_done else None, cache=plan.reason,
        mixed_precision=accelerator.mixed_precision, device=str(accelerator.device), checkpoints=checkpoints,
        validation_images=validation_images, config=config.to_dict(),
        buckets=data.buckets.counts() if data.buckets is not None else None)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    say(TrainEvent("done", step=steps_seen, total=steps_seen, loss=final_loss, path=adapter))
    return result


def _loss(batch, unet, text_encoders, base, config: TrainConfig, accelerator) -> Any:
    import torch

    from lorahub_cli.train.objective import combine, per_sample_loss, target

    scheduler = base.noise_scheduler
    d = batch.draws
    sdxl = base.family == "sdxl"
    if base.family == "flux":
        from lorahub_cli.train.flux import per_sample_loss as flow_loss

        with accelerator.autocast():
            losses = flow_loss(unet, base.unet.config, batch, base.vae_scale_factor, config)
        return combine(losses, prior_half=batch.prior_half, prior_loss_weight=config.prior_loss_weight)
    with accelerator.autocast():
        hidden, pooled = batch.encoder_hidden_states, batch.pooled
        if batch.input_ids is not None:
            grad = torch.enable_grad() if config.train_text_encoder else torch.no_grad()
            with grad:
                if sdxl:
                    from lorahub_cli.train.sdxl import encode

                    hidden, pooled = encode(text_encoders, batch.input_ids)
                else:
                    hidden = text_encoders[0](batch.input_ids, return_dict=False)[0]
        extra = {}
        if sdxl:
            from lorahub_cli.train.sdxl import unet_kwargs

            extra = unet_kwargs(pooled, batch.time_ids, hidden.dtype)
        noisy = scheduler.add_noise(batch.latents, d.noise, d.timesteps)
        if noisy.device.type == "cuda":
            noisy = noisy.contiguous(memory_format=torch.channels_last)
        pred = unet(noisy, d.timesteps, hidden, return_dict=False, **extra)[0]
    losses = per_sample_loss(pred, target(scheduler, batch.latents, d.noise, d.timesteps), d.timesteps, scheduler,
                             config.snr_gamma)
    return combine(losses, prior_half=batch.prior_half, prior_loss_weight=config.prior_loss_weight)


def _build_caches(config, base, data, plan, accelerator, say):
    from lorahub_cli.train.cache import build_embedding_cache, build_latent_cache
    from lorahub_cli.train.setup import weight_dtype

    examples = data.examples
    latents = embeddings = None
    if plan.latents:
        say(TrainEvent("phase", f"encoding {len(examples)} images to latents (once)"))
        latents = build_latent_cache(examples, targets=data.targets(config.resolution), center_crop=config.center_crop,
                                     both_flips=config.random_flip, vae=base.vae, accelerator=accelerator)
    if plan.embeddings and base.family == "flux":
        from lorahub_cli.train.cache import build_flux_embedding_cache

        say(TrainEvent("phase", "encoding the prompts with T5 and CLIP (once; the encoders are freed after)"))
        embeddings = build_flux_embedding_cache([e.caption for e in examples], base, accelerator,
                                                config.t5_max_length, dtype=weight_dtype(accelerator))
    elif plan.embeddings and base.family == "sdxl":
        from lorahub_cli.train.cache import build_sdxl_embedding_cache as build_sdxl

        say(TrainEvent("phase", "encoding the prompts with both text encoders (once)"))
        embeddings = build_sdxl([e.caption for e in examples], base, accelerator, dtype=weight_dtype(accelerator))
    elif plan.embeddings:
        say(TrainEvent("phase", "encoding the prompts (once)"))
        embeddings = build_embedding_cache([e.caption for e in examples], tokenizer=base.tokenizer,
                                           text_encoder=base.text_encoder, accelerator=accelerator,
                                           dtype=weight_dtype(accelerator))
    return latents, embeddings


class _Encoders:
    """Frozen encoders whose work is cached wait in host memory on a GPU run (less peak memory), and come
    back for validation images."""

    def __init__(self, base, accelerator, *, offload: bool, offload_text: bool):
        cuda = accelerator.device.type == "cuda"
        self.modules = ([base.vae] if offload and cuda else []) + (base.text_encoders if offload_text and cuda
                                                                   else [])
        self.device = accelerator.device

    def park(self) -> None:
        for m in self.modules:
            m.to("cpu")
        if self.modules:
            import torch

            torch.cuda.empty_cache()

    def fetch(self) -> None:
        for m in self.modules:
            m.to(self.device)


def _describe_data(data, config: TrainConfig, say) -> None:
    """What captioned the images (a mixed set says how many of each) and how many are enlarged."""
    from lorahub_cli.train.data import check_sizes, describe_captions

    say(TrainEvent("note", f"{len(data.instances)} training images, {describe_captions(data.caption_counts())}"))
    small = check_sizes(data, config.resolution, config.small_images)
    if small:
        say(TrainEvent("note", small))
    if data.buckets is not None:
        counts = ", ".join(f"{size} {n}" for size, n in data.buckets.counts().items())
        say(TrainEvent("note", f"aspect-ratio buckets (images): {counts}"))


def _family_settings(config: TrainConfig, base) -> TrainConfig:
    """What the base's family changes: the VAE factor --resolution must divide by (twice it for Flux, whose
    latents are packed 2x2), Flux's own LoRA layers when --targets is not given, and what Flux training
    does not do here (train its text encoders, make validation images: `lora generate` has no Flux
    pipeline)."""
    from lorahub_cli.errors import UsageError
    from lorahub_cli.train.config import UNET_TARGETS

    factor = base.vae_scale_factor * (2 if base.family == "flux" else 1)
    if config.resolution % factor:
        raise UsageError(f"--resolution {config.resolution} is not a multiple of {factor}, which this base's "
                         f"latents need", hint=f"Use a multiple of {factor}, e.g. "
                                                f"{max(factor, config.resolution // factor * factor)}.")
    if config.buckets and config.bucket_step % factor:
        raise UsageError(f"--bucket-step {config.bucket_step} is not a multiple of {factor}, which this base's "
                         "latents need", hint=f"Use a multiple of {factor}, e.g. 64.")
    if base.family != "flux":
        return config
    if config.train_text_encoder:
        raise UsageError("--train-text-encoder: Flux LoRA training here trains the transformer only (its text "
                         "encoders are cached and freed)")
    if config.snr_gamma is not None or config.noise_offset:
        raise UsageError("--snr-gamma and noise offset weigh DDPM noise levels; Flux's flow matching has "
                         "--weighting-scheme instead")
    if config.validation_prompt:
        raise UsageError("--validation-prompt: validation images of Flux runs are not made (lora generate has no "
                         "Flux pipeline yet); train without it")
    if config.targets == UNET_TARGETS[config.mode]:
        from lorahub_cli.train.flux import TARGETS

        config = config.replace(targets=list(TARGETS))
    return config


def _trained_encoders(base, config: TrainConfig) -> tuple:
    """(text_encoder, text_encoder_2) whose LoRA is trained (None where not) for the adapter file."""
    if not config.train_text_encoder:
        return None, None
    return base.text_encoder, base.text_encoder_2


def _register_state_hooks(accelerator, base, config: TrainConfig) -> None:
    """accelerate saves/loads the whole models by default; a LoRA checkpoint needs only the adapter."""
    from lorahub_cli.train.weights import WEIGHT_NAME, load_adapter_into, save_adapter

    encoders = _trained_encoders(base, config)

    def save_hook(models, weights, output_dir):
        if accelerator.is_main_process:
            save_adapter(Path(output_dir), base.unet, *encoders)
        weights.clear()

    def load_hook(models, input_dir):
        load_adapter_into(Path(input_dir) / WEIGHT_NAME, base.unet, *encoders)
        models.clear()

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


def _save_checkpoint(accelerator, run: RunFolder, config: TrainConfig, step: int, say) -> Path:
    final = run.checkpoint(step)
    tmp = run.checkpoints / f".tmp-checkpoint-{step}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json_atomic(tmp / STATE_FILE, {"step": step, "seed": config.seed,
                                             "world_size": accelerator.num_processes})
        # the name is fixed (every process saves into it); a resumed run may pass the same step again
        publish_folder(tmp, final, replace=True)
        prune_checkpoints(run, config.checkpoints_total_limit)
        say(TrainEvent("checkpoint", f"checkpoint saved at step {step}", step=step, path=str(final)))
    accelerator.wait_for_everyone()
    kill_after = os.environ.get(KILL_ENV)
    if kill_after and int(kill_after) == step:
        os.kill(os.getpid(), signal.SIGKILL)
    return final


def _validate(config, base, run, accelerator, encoders, step: int, say, adapter: Optional[Path] = None) -> list[str]:
    """Validation images at ``step``; ``adapter`` is the file of the weights as they are now (the run's
    adapter at the end). Without one (during training) the adapter at this step is saved beside the images,
    so their recipes name weights that still exist and can be re-run."""
    from lorahub_cli.train.validation import build_pipeline, generate
    from lorahub_cli.train.weights import save_adapter

    say(TrainEvent("phase", f"validation images at step {step}"))
    name = config.name
    if adapter is None:
        adapter = save_adapter(run.validation / f"step-{step:06d}", base.unet, *_trained_encoders(base, config))
        name = f"{config.name}-step-{step}"
    encoders.fetch()
    try:
        pipe = build_pipeline(base, base.unet, base.text_encoder)
        paths = generate(config, pipe, step=step, folder=run.validation, device=accelerator.device,
                         autocast=accelerator.autocast, adapter=Path(adapter), adapter_name=name,
                         mixed_precision=accelerator.mixed_precision)
    finally:
        encoders.park()
    say(TrainEvent("validation", f"{len(paths)} validation image(s) at step {step}", step=step,
                   path=str(run.validation)))
    return [str(p) for p in paths]


def _finish(config, base, run, accelerator, encoders, steps: int, final_loss, samples: int, say, buckets=None):
    from lorahub_cli import __version__
    from lorahub_cli.train.card import render_card, training_summary, write_card
    from lorahub_cli.train.weights import result_name, save_adapter

    summary = training_summary(config, steps=steps, world_size=accelerator.num_processes, final_loss=final_loss,
                               samples=samples, mixed_precision=accelerator.mixed_precision)
    recorded = {k: v for k, v in config.to_dict().items() if k not in ("resume",)}
    metadata = {METADATA_KEY: json.dumps({"config": recorded, "summary": summary, "lorahub": __version__},
                                         sort_keys=True)}
    metadata.update(_ecosystem_metadata(config, base))
    if buckets is not None:
        metadata.update(_bucket_metadata(config, buckets))
    adapter = save_adapter(run.root, base.unet, *_trained_encoders(base, config), extra_metadata=metadata,
                           file_name=result_name(config.name))
    images: list[str] = []
    if config.validation_prompt:
        images = _validate(config, base, run, accelerator, encoders, steps, say, adapter=adapter)
    card = write_card(run.root, render_card(config, summary, [Path(p) for p in images], run.root))
    return str(adapter), str(card), images


def _ecosystem_metadata(config, base) -> dict[str, str]:
    """kohya's ss_* and ModelSpec keys (``export.conventions``), so A1111 and metadata viewers know the file:
    the family from the U-Net's text context (training takes SD1/SD2 pipelines), v-prediction from the
    scheduler, the training resolution and date."""
    from datetime import datetime, timezone

    from lorahub_cli.export.conventions import ecosystem_metadata

    family = {768: "sd1", 1024: "sd2"}.get(getattr(base.unet.config, "cross_attention_dim", None), "unknown")
    if base.family in ("sdxl", "flux"):   # the pipeline class says so
        family = base.family
    alpha = config.alpha if config.alpha is not None else config.rank
    return ecosystem_metadata(family, title=config.name, rank=config.rank, alpha=alpha,
                              v_prediction=base.prediction_type == "v_prediction",
                              resolution=f"{config.resolution}x{config.resolution}",
                              date=datetime.now(timezone.utc))


def _bucket_metadata(config, plan) -> dict[str, str]:
    """kohya's bucket keys (``ss_enable_bucket``, ``ss_bucket_info``: each bucket's resolution and image
    count), which metadata viewers show."""
    from lorahub_cli.train.buckets import default_sides

    lo, hi = default_sides(config.resolution, config.bucket_step)
    counts = plan.counts()
    info = {"buckets": {str(i): {"resolution": list(size), "count": counts[f"{size[0]}x{size[1]}"]}
                        for i, size in enumerate(plan.sizes)}}
    return {"ss_enable_bucket": "True", "ss_bucket_no_upscale": str(config.small_images == "bucket"),
            "ss_min_bucket_reso": str(config.bucket_min_side or lo),
            "ss_max_bucket_reso": str(config.bucket_max_side or hi), "ss_bucket_info": json.dumps(info)}


def peak_memory_gib(device) -> Optional[float]:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    except (ImportError, OSError):
        return None
