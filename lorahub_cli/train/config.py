"""``TrainConfig``: everything a training run depends on, with the diffusers scripts' defaults.

A config is plain data (JSON round trip with ``to_dict``/``from_dict``): it is written to the run folder,
handed to relaunched worker processes, stored in the adapter's header and recorded in the library.
``resolved()`` fills the mode-dependent defaults (learning rate, batch size, targets, steps) so a saved config
says exactly what ran.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

from lorahub_cli.errors import UsageError
from lorahub_cli.values import MAX_SEED, check_seed, check_side, check_steps

MODES = ("finetune", "dreambooth")
METHODS = ("lora", "ti", "pivotal")   # ti: textual inversion; pivotal: new tokens + a U-Net LoRA (train/ti.py)
MIXED_PRECISIONS = ("auto", "no", "fp16", "bf16")
CACHE_MODES = ("auto", "on", "off")
WEIGHTING_SCHEMES = ("none", "sigma_sqrt", "logit_normal", "mode", "cosmap")   # Flux timestep sampling
SMALL_IMAGES = ("upscale", "refuse", "bucket")   # bucket: a smaller aspect-ratio bucket (train/buckets.py)
OPTIMIZERS = ("adamw", "adamw8bit")   # adamw8bit: bitsandbytes on CUDA
LR_SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")

# train_text_to_image_lora.py / train_dreambooth_lora.py
UNET_TARGETS = {"finetune": ["to_k", "to_q", "to_v", "to_out.0"],
                "dreambooth": ["to_k", "to_q", "to_v", "to_out.0", "add_k_proj", "add_v_proj"]}
TEXT_ENCODER_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]
DEFAULT_LR = {"finetune": 1e-4, "dreambooth": 5e-4}
DEFAULT_BATCH = {"finetune": 16, "dreambooth": 4}
DEFAULT_EPOCHS_FINETUNE = 100        # --num_train_epochs of the text-to-image script
DEFAULT_STEPS_DREAMBOOTH = 500       # the DreamBooth README's --max_train_steps (its 1 epoch default is a few steps)

# Fields a resumed run may change without changing what the finished weights mean.
RESUMABLE_CHANGES = frozenset({
    "resume", "max_steps", "epochs", "checkpointing_steps", "checkpoints_total_limit", "validation_prompt",
    "validation_every", "validation_images", "validation_inference_steps", "validation_guidance",
    "num_processes", "accelerate_config", "dataloader_workers", "tags", "license", "register", "run_dir",
})


@dataclass
class TrainConfig:
    base: str                                   # local diffusers folder or Hub id
    data: str                                   # image folder (or a Hub dataset id, with `datasets`)
    name: str                                   # library name of the result; also the run folder's name
    mode: str = "finetune"
    method: str = "lora"                        # lora | ti (a new token's embedding: train/ti.py)
    token: Optional[str] = None                 # ti: the placeholder token (default <NAME>)
    initializer: Optional[str] = None           # ti: a vocabulary word its vectors start from (default: the mean)
    vectors: int = 1                            # ti: vectors of the token
    run_dir: Optional[str] = None               # default: $LORAHUB_HOME/runs/<name>
    # data
    instance_prompt: Optional[str] = None       # DreamBooth prompt; in finetune mode, the caption of uncaptioned images
    class_data: Optional[str] = None            # DreamBooth prior-preservation images
    class_prompt: Optional[str] = None
    prior_loss_weight: float = 1.0
    caption_column: str = "text"
    resolution: int = 512
    center_crop: bool = False
    small_images: str = "upscale"               # images below --resolution: upscale (the scripts) | refuse | bucket
    buckets: bool = False                       # aspect-ratio buckets (train/buckets.py); small_images=bucket sets it
    bucket_step: int = 64                       # bucket sides are multiples of it (kohya's bucket_reso_steps)
    bucket_min_side: Optional[int] = None       # None: resolution / 2 (kohya: 256 at 512)
    bucket_max_side: Optional[int] = None       # None: resolution * 2
    random_flip: bool = False
    # adapter
    rank: int = 4
    alpha: Optional[float] = None               # None: = rank, as the diffusers scripts
    targets: Optional[list[str]] = None         # None: the mode's UNET_TARGETS
    text_encoder_targets: list[str] = field(default_factory=lambda: list(TEXT_ENCODER_TARGETS))
    lora_dropout: float = 0.0
    train_text_encoder: bool = False
    # optimisation
    batch_size: Optional[int] = None            # per process; None: DEFAULT_BATCH of the mode
    grad_accum: int = 1
    lr: Optional[float] = None
    lr_scheduler: str = "constant"
    warmup: int = 0                             # optimizer steps (the scripts' 500 only acts with a warmup schedule)
    max_steps: Optional[int] = None             # optimizer steps; wins over epochs
    epochs: Optional[int] = None
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 1e-2
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    snr_gamma: Optional[float] = None           # Min-SNR weighting (the scripts' --snr_gamma)
    noise_offset: float = 0.0
    # Flux (train/flux.py): the T5 encoder when the base lacks it, its prompt length, the guidance input
    # of dev bases, and the flow-matching timestep sampling of train_dreambooth_lora_flux.py
    text_encoder_2: Optional[str] = None
    # a single-file base's parts given apart (bases.with_parts): a VAE, the first text encoder, a folder to borrow
    vae: Optional[str] = None
    text_encoder: Optional[str] = None
    borrow: Optional[str] = None
    t5_max_length: int = 512
    guidance: float = 3.5
    weighting_scheme: str = "none"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    mode_scale: float = 1.29
    seed: Optional[int] = None                  # None: drawn once and saved in the run folder
    # speed and memory
    mixed_precision: str = "auto"               # auto: bf16 on a GPU that has it, else no
    gradient_checkpointing: bool = False
    optimizer: str = "adamw"                    # adamw8bit: bitsandbytes' 8-bit AdamW (CUDA only)
    fp8_base: bool = False                      # frozen UNet/transformer weights stored in float8
    cache: str = "auto"                         # latents / prompt embeddings computed once (see cache.py)
    compile: bool = False                       # torch.compile the UNet
    allow_tf32: bool = True
    dataloader_workers: Optional[int] = None    # only for the uncached path; None: chosen by device
    device: str = "auto"                        # auto | cpu | cuda
    # run management
    checkpointing_steps: int = 500
    checkpoints_total_limit: Optional[int] = None
    resume: Optional[str] = None                # "latest" or a checkpoint folder
    validation_prompt: Optional[str] = None
    validation_every: Optional[int] = None      # optimizer steps; None: only at the end
    validation_images: int = 4
    validation_inference_steps: int = 30
    validation_guidance: float = 7.5
    num_processes: int = 1
    accelerate_config: Optional[str] = None
    # card and library
    license: str = "creativeml-openrail-m"
    tags: list[str] = field(default_factory=list)
    register: bool = True

    # --- serialisation ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise UsageError(f"unknown training settings: {', '.join(sorted(unknown))}")
        return cls(**data)

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    # --- defaults and checks ----------------------------------------------------------------------
    def resolved(self) -> "TrainConfig":
        """A copy with every mode-dependent default filled in, after checking the values."""
        self.validate()
        mode = self.mode
        max_steps, epochs = self.max_steps, self.epochs
        if max_steps is None and epochs is None:
            if mode == "dreambooth":
                max_steps = DEFAULT_STEPS_DREAMBOOTH
            else:
                epochs = DEFAULT_EPOCHS_FINETUNE
        default_lr = 5e-4 if self.method != "lora" else DEFAULT_LR[mode]   # the textual_inversion README's
        return self.replace(
            lr=self.lr if self.lr is not None else default_lr,
            batch_size=self.batch_size if self.batch_size is not None else DEFAULT_BATCH[mode],
            alpha=float(self.alpha) if self.alpha is not None else float(self.rank),
            targets=list(self.targets) if self.targets else list(UNET_TARGETS[mode]),
            max_steps=max_steps, epochs=epochs, buckets=self.buckets or self.small_images == "bucket",
        )

    @property
    def prior_preservation(self) -> bool:
        return self.mode == "dreambooth" and self.class_data is not None

    def validate(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise UsageError(message)

        self._check_numbers()
        need(self.mode in MODES, f"--mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        need(self.method in METHODS, f"--method must be one of {', '.join(METHODS)}, not {self.method!r}")
        need(1 <= self.vectors <= 75, "--vectors must be between 1 and 75 (a prompt holds 75 tokens)")
        need(self.method != "lora" or (self.token is None and self.initializer is None),
             "--token and --initializer are for --method ti or pivotal")
        need(self.method == "lora" or self.num_processes == 1, f"--method {self.method} trains in one process")
        need(self.mixed_precision in MIXED_PRECISIONS,
             f"--mixed-precision must be one of {', '.join(MIXED_PRECISIONS)}, not {self.mixed_precision!r}")
        need(self.cache in CACHE_MODES, f"--cache must be one of {', '.join(CACHE_MODES)}")
        need(self.lr_scheduler in LR_SCHEDULERS,
             f"--lr-scheduler must be one of {', '.join(LR_SCHEDULERS)}, not {self.lr_scheduler!r}")
        need(self.rank >= 1, "--rank must be at least 1")
        need(self.weighting_scheme in WEIGHTING_SCHEMES,
             f"--weighting-scheme must be one of {', '.join(WEIGHTING_SCHEMES)}, not {self.weighting_scheme!r}")
        need(self.optimizer in OPTIMIZERS, f"--optimizer must be one of {', '.join(OPTIMIZERS)}, not {self.optimizer!r}")
        need(self.t5_max_length >= 1, "--t5-max-length must be at least 1")
        need(self.small_images in SMALL_IMAGES,
             f"--small-images must be one of {', '.join(SMALL_IMAGES)}, not {self.small_images!r}")
        need(self.resolution >= 8 and self.resolution % 8 == 0, "--resolution must be a multiple of 8")
        self._check_buckets(need)
        need(self.batch_size is None or self.batch_size >= 1, "--batch-size must be at least 1")
        need(self.grad_accum >= 1, "--grad-accum must be at least 1")
        need(self.max_steps is None or self.max_steps >= 1, "--max-steps must be at least 1")
        need(self.epochs is None or self.epochs >= 1, "--epochs must be at least 1")
        need(self.lr is None or self.lr > 0, "--lr must be positive")
        need(self.warmup >= 0, "--warmup cannot be negative")
        need(self.checkpointing_steps >= 1, "--checkpointing-steps must be at least 1")
        need(self.checkpoints_total_limit is None or self.checkpoints_total_limit >= 1,
             "--checkpoints-limit must be at least 1")
        need(self.validation_images >= 1, "--validation-images must be at least 1")
        # bounded as `lora generate` bounds them, so the recipes of validation images re-run with --from
        check_steps(self.validation_inference_steps, "--validation-steps")
        check_side(self.resolution, "--resolution")
        if self.seed is not None:
            check_seed(self.seed, "--seed")
            need(not self.validation_prompt or self.seed + self.validation_images - 1 <= MAX_SEED,
                 "--seed leaves no room for the validation images' seeds (seed + i must stay within 2**64-1)")
        need(self.num_processes >= 1, "--num-processes must be at least 1")
        need(self.validation_every is None or self.validation_every >= 1, "--validation-every must be at least 1")
        need(self.validation_every is None or bool(self.validation_prompt),
             "--validation-every needs --validation-prompt (the prompt the validation images are made from)")
        need(self.device in ("auto", "cpu", "cuda"),
             "--device must be auto, cpu or cuda (pick GPUs with CUDA_VISIBLE_DEVICES)")
        if self.mode == "dreambooth":
            need(bool(self.instance_prompt and self.instance_prompt.strip()),
                 "DreamBooth needs --instance-prompt (e.g. \"a photo of sks dog\")")
        need(self.class_data is None or self.mode == "dreambooth",
             "--class-data (prior preservation) is for --mode dreambooth")
        need(self.resume is None or bool(self.resume.strip()), "--resume needs 'latest' or a checkpoint folder")

    def _check_buckets(self, need) -> None:
        step, lo, hi = self.bucket_step, self.bucket_min_side, self.bucket_max_side
        need(step >= 8 and step % 8 == 0, "--bucket-step must be a multiple of 8 (the VAE factor)")
        for value, option in ((lo, "--bucket-min-side"), (hi, "--bucket-max-side")):
            need(value is None or (value >= step and value % step == 0),
                 f"{option} must be a multiple of --bucket-step ({step})")
        need(lo is None or lo <= self.resolution, "--bucket-min-side cannot be above --resolution")
        need(hi is None or hi >= self.resolution, "--bucket-max-side cannot be below --resolution")
        if self.buckets or self.small_images == "bucket":
            need(self.method == "lora", f"aspect-ratio buckets are for --method lora, not {self.method}")
            need(self.class_data is None, "aspect-ratio buckets do not work with prior preservation (--class-data): "
                                          "each batch pairs an instance image with a class image, which may lie "
                                          "in different buckets")

    def _check_numbers(self) -> None:
        """Every float setting finite and in range: NaN slips through comparisons like ``lr > 0``, and inf
        trains a run that is lost from its first step."""
        import math

        for name, option in _FLOAT_OPTIONS.items():
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise UsageError(f"{option} must be a finite number (got {value!r})")
        ranges = [(self.alpha is None or self.alpha > 0, "--alpha must be positive"),
                  (self.snr_gamma is None or self.snr_gamma > 0, "--snr-gamma must be positive"),
                  (self.prior_loss_weight >= 0, "--prior-loss-weight cannot be negative"),
                  (self.guidance >= 0, "--guidance cannot be negative"),
                  (self.logit_std > 0, "--logit-std must be positive"),
                  (0 <= self.lora_dropout < 1, "lora_dropout must be in [0, 1)"),
                  (self.validation_guidance >= 0, "validation_guidance cannot be negative")]
        for ok, message in ranges:
            if not ok:
                raise UsageError(message)


# float settings -> how the user spells them (settings without a CLI option come from a saved config)
_FLOAT_OPTIONS = {"prior_loss_weight": "--prior-loss-weight", "alpha": "--alpha", "lr": "--lr",
                  "snr_gamma": "--snr-gamma", "lora_dropout": "lora_dropout", "adam_beta1": "adam_beta1",
                  "adam_beta2": "adam_beta2", "adam_weight_decay": "adam_weight_decay",
                  "adam_epsilon": "adam_epsilon", "max_grad_norm": "max_grad_norm", "noise_offset": "noise_offset",
                  "validation_guidance": "validation_guidance", "guidance": "--guidance",
                  "logit_mean": "--logit-mean", "logit_std": "--logit-std", "mode_scale": "--mode-scale"}
