"""Putting a run together: the accelerator, the models' devices and dtypes, the optimizer and LR schedule.

Speed defaults (perf.md §1.3): bf16 autocast where the GPU has it; frozen weights in the compute dtype and
LoRA weights in fp32 (the scripts' ``cast_training_params``, which also avoids "Attempting to unscale FP16
gradients"); channels_last UNet and fused AdamW on CUDA; SDPA attention (diffusers' default on torch 2);
TF32 matmuls on; optional torch.compile.
"""

from __future__ import annotations

from typing import Any

from lorahub_cli.errors import UsageError
from lorahub_cli.train.config import TrainConfig
from lorahub_cli.train.order import INIT_STREAM, mix


def use_cpu(config: TrainConfig) -> bool:
    import torch

    if config.device == "cuda" and not torch.cuda.is_available():
        from lorahub_cli.errors import Unreachable

        raise Unreachable("--device cuda: no CUDA GPU is visible to torch", code="no-gpu")
    return config.device == "cpu" or not torch.cuda.is_available()


def mixed_precision(config: TrainConfig, cpu: bool) -> str:
    """``auto``: bf16 on a GPU that supports it, else no mixed precision (fp32)."""
    import torch

    if config.mixed_precision == "auto":
        return "bf16" if not cpu and torch.cuda.is_bf16_supported() else "no"
    if config.mixed_precision == "fp16" and cpu:
        raise UsageError("--mixed-precision fp16 needs a CUDA GPU; use bf16 or no on a CPU")
    return config.mixed_precision


def check_device(config: TrainConfig) -> None:
    """Refuse a device / precision / optimizer that cannot work (fp16 on a CPU, --device cuda without a GPU,
    an 8-bit optimizer without bitsandbytes and CUDA) up front."""
    cpu = use_cpu(config)
    mixed_precision(config, cpu)
    if config.optimizer == "adamw8bit":
        _bitsandbytes(cpu)


def _bitsandbytes(cpu: bool) -> Any:
    """bitsandbytes, when it can run here (its 8-bit optimizers are CUDA kernels)."""
    from lorahub_cli.errors import MissingDependency

    hint = "Use --optimizer adamw, or train on a CUDA GPU with bitsandbytes installed (pip install bitsandbytes)."
    if cpu:
        raise MissingDependency("--optimizer adamw8bit needs bitsandbytes on a CUDA GPU; this run is on the CPU",
                                hint=hint)
    try:
        import bitsandbytes
    except ImportError:
        raise MissingDependency("--optimizer adamw8bit needs the bitsandbytes package", hint=hint)
    return bitsandbytes


def make_accelerator(config: TrainConfig, run_root: Any):
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, ProjectConfiguration

    cpu = use_cpu(config)
    # a trained SDXL text encoder has a layer that feeds nothing (the UNet reads the penultimate hidden
    # states), which DDP refuses unless told to look for unused parameters (as diffusers' SDXL scripts do)
    ddp = DistributedDataParallelKwargs(find_unused_parameters=config.train_text_encoder)
    return Accelerator(cpu=cpu, mixed_precision=mixed_precision(config, cpu),
                       gradient_accumulation_steps=config.grad_accum, kwargs_handlers=[ddp],
                       project_config=ProjectConfiguration(project_dir=str(run_root)))


def weight_dtype(accelerator: Any):
    import torch

    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)


def attach_adapters(config: TrainConfig, base: Any) -> list:
    """Add the LoRA adapters (on the CPU, seeded by the run); return the models being trained."""
    import torch

    from lorahub_cli.train.weights import add_lora

    trained = [base.unet]
    # the adapters' random init comes from the run's seed, not from whatever the global RNG holds
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(mix(config.seed or 0, INIT_STREAM))
        add_lora(base.unet, rank=config.rank, alpha=config.alpha, targets=config.targets,
                 dropout=config.lora_dropout)
        if config.train_text_encoder:
            for encoder in base.text_encoders:     # SDXL trains both, as its scripts
                add_lora(encoder, rank=config.rank, alpha=config.alpha, targets=config.text_encoder_targets,
                         dropout=config.lora_dropout)
                trained.append(encoder)
    return trained


def place_encoders(config: TrainConfig, base: Any, accelerator: Any) -> None:
    """VAE and text encoder onto the device (before the UNet: caching runs while it is still on the host)."""
    import torch

    device, dtype = accelerator.device, weight_dtype(accelerator)
    if device.type == "cuda" and config.allow_tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    for encoder in base.text_encoders:
        _place(encoder, device, dtype)
    # fp16 VAEs overflow (SDXL's notoriously); the VAE runs once per image when latents are cached
    _place(base.vae, device, torch.float32 if dtype == torch.float16 else dtype)
    if config.train_text_encoder:
        for encoder in base.text_encoders:
            if config.gradient_checkpointing:
                encoder.gradient_checkpointing_enable()
            encoder.train()


def place_unet(config: TrainConfig, base: Any, accelerator: Any, trained: list) -> list:
    """The UNet onto the device; the trainable (LoRA) weights in fp32; return them."""
    import torch
    from diffusers.training_utils import cast_training_params

    _place(base.unet, accelerator.device, weight_dtype(accelerator))
    if config.fp8_base:
        fp8_storage(base.unet, weight_dtype(accelerator), accelerator.device)
    if accelerator.device.type == "cuda":
        base.unet.to(memory_format=torch.channels_last)
    if config.gradient_checkpointing:
        base.unet.enable_gradient_checkpointing()
    cast_training_params(trained, dtype=torch.float32)
    base.unet.train()
    return [p for m in trained for p in m.parameters() if p.requires_grad]


def fp8_storage(model: Any, compute_dtype: Any, device: Any) -> None:
    """--fp8-base: the frozen weights of the UNet / transformer kept in float8 (e4m3) and upcast layer by
    layer to ``compute_dtype`` for each forward (diffusers' layerwise casting; the LoRA layers, norms and
    embeddings are left as they are). Refused where torch cannot hold float8 tensors on ``device``."""
    import torch

    from lorahub_cli.errors import Incompatible

    fp8 = getattr(torch, "float8_e4m3fn", None)
    try:
        if fp8 is None:
            raise TypeError("no float8_e4m3fn dtype")
        torch.ones(2, device=device).to(fp8).to(compute_dtype)
    except (TypeError, RuntimeError) as err:
        raise Incompatible(f"--fp8-base: torch {torch.__version__} cannot store float8 weights on {device} ({err})",
                           hint="Train without --fp8-base (or with --gradient-checkpointing to save memory).")
    model.enable_layerwise_casting(storage_dtype=fp8, compute_dtype=compute_dtype)


def _place(module: Any, device: Any, dtype: Any) -> None:
    """Cast on the host first (a fp32 copy never reaches the GPU), then move."""
    if module.dtype != dtype:   # diffusers warns on every dtype cast, even a no-op one
        module.to(dtype=dtype)
    module.to(device)


def make_optimizer(config: TrainConfig, params: list, device: Any):
    import torch

    if config.optimizer == "adamw8bit":   # optimizer state in 8 bits: ~6 bytes less per trained weight
        bnb = _bitsandbytes(device.type != "cuda")
        return bnb.optim.AdamW8bit(params, lr=config.lr, betas=(config.adam_beta1, config.adam_beta2),
                                   weight_decay=config.adam_weight_decay, eps=config.adam_epsilon)
    fused = device.type == "cuda"
    return torch.optim.AdamW(params, lr=config.lr, betas=(config.adam_beta1, config.adam_beta2),
                             weight_decay=config.adam_weight_decay, eps=config.adam_epsilon, fused=fused)


def make_lr_scheduler(config: TrainConfig, optimizer: Any, max_steps: int, num_processes: int):
    """The scripts' schedule; accelerate steps a prepared scheduler once per process, hence the scaling."""
    from diffusers.optimization import get_scheduler

    return get_scheduler(config.lr_scheduler, optimizer=optimizer, num_warmup_steps=config.warmup * num_processes,
                         num_training_steps=max_steps * num_processes)


def compile_unet(unet: Any) -> Any:
    import torch

    return torch.compile(unet)
