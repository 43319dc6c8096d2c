"""``lora train --method ti``: textual inversion, as diffusers' ``textual_inversion.py`` does it.

A new placeholder token (``--token``, default ``<NAME>``; ``--vectors N`` adds ``<NAME>_1`` ...) joins the
tokenizer, its embedding rows start from ``--initializer`` (a word of the vocabulary; default the mean of the
vocabulary's rows), and only those rows learn: the whole input-embedding matrix gets gradients, and every
other row is put back to its original value after each optimizer step (the script's ``index_no_updates``).
The U-Net, VAE and the rest of the text encoder stay frozen. Each image is captioned with ``--instance-prompt``
(which should contain the token; the token is appended when it does not), default "a photo of TOKEN".

Output, in the run folder: ``NAME.safetensors`` = ``{token: [vectors, width]}`` (what diffusers'
``load_textual_inversion`` and A1111 both load; A1111 prompts it by the file's stem), beside a model card.

``--method pivotal`` (cloneofsimo's pivotal tuning, the advanced DreamBooth-LoRA script's ``--train_text_encoder_ti``):
the same new token rows and a U-Net LoRA (``--rank``, ``--targets``) train together, one optimizer. Output:
``NAME.safetensors``, the LoRA in diffusers' layout with the token's vectors under their ``<token>`` key (so
`lora generate -a NAME` loads both parts) and ``lorahub.pivotal_tokens`` naming the embedding file beside it,
``NAME_emb.safetensors`` (``{token: vectors}``, for A1111's embeddings folder or ``load_textual_inversion``),
and ``pytorch_lora_weights.safetensors``, the LoRA alone (diffusers' ``load_lora_weights`` refuses the tokens).
The library entry is the LoRA (``kind: lora``, component ``tokens``).
On an SDXL base (the advanced script's SDXL pivotal tuning) the token joins BOTH tokenizers and its rows
learn in BOTH text encoders (CLIP-L 768, OpenCLIP-bigG 1280); the conditioning is ``train/sdxl.py``'s
(penultimate states of both encoders, the pooled projection and the size/crop ids). The embedding file is
``{"clip_l": [n, 768], "clip_g": [n, 1280]}`` (the script's ``*_emb.safetensors``, which A1111, Forge and
ComfyUI load); a pivotal LoRA carries them as kohya's ``bundle_emb.TOKEN.clip_l``/``.clip_g``.
Flux is refused: its prompt goes through T5 (whose embeddings neither diffusers' ``load_textual_inversion``
nor A1111/ComfyUI load) as well as CLIP, so a trained embedding would have nowhere to be used.
Checkpoints (``checkpoints/checkpoint-N``: the learned rows, the optimizer state and the step) make
``--resume latest`` continue bit for bit; validation images carry a recipe naming the embedding, so
`lora generate --from IMAGE` makes them again. The library entry is ``kind: embedding``.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Optional

from lorahub_cli.errors import TrainingFailed, UsageError
from lorahub_cli.train.config import TrainConfig
from lorahub_cli.train.events import ProgressFn, TrainEvent, no_progress
from lorahub_cli.train.result import TrainResult
from lorahub_cli.train.rundir import STATE_FILE, RunFolder, checkpoint_step, prune_checkpoints, write_json_atomic

DEFAULT_TI_LR = 5e-4   # the textual_inversion README's learning rate
ROWS_FILE, OPTIMIZER_FILE = "learned_embeds.safetensors", "optimizer.pt"


def placeholder(config: TrainConfig) -> str:
    return config.token or f"<{config.name}>"


def prompt_of(config: TrainConfig) -> str:
    token = placeholder(config)
    text = (config.instance_prompt or "").strip() or f"a photo of {token}"
    return text if token in text else f"{text}, {token}"


def add_tokens(tokenizer: Any, text_encoder: Any, token: str, vectors: int, initializer: Optional[str]) -> list[int]:
    """The placeholder tokens added to the tokenizer and their embedding rows initialised; their ids."""
    import torch

    tokens = [token] + [f"{token}_{i}" for i in range(1, vectors)]
    if tokenizer.add_tokens(tokens) != len(tokens):
        raise UsageError(f"the token {token!r} is already in the base's vocabulary",
                         hint="Choose another --token, e.g. one in angle brackets: <my-style>.")
    text_encoder.resize_token_embeddings(len(tokenizer))
    weights = text_encoder.get_input_embeddings().weight
    ids = tokenizer.convert_tokens_to_ids(tokens)
    with torch.no_grad():
        if initializer:
            init_ids = tokenizer.encode(initializer, add_special_tokens=False)
            if len(init_ids) != 1:
                raise UsageError(f"--initializer must be one token of the base's vocabulary; {initializer!r} is "
                                 f"{len(init_ids)}")
            start = weights[init_ids[0]].clone()
        else:
            start = weights[: min(ids)].mean(dim=0)
        for i in ids:
            weights[i] = start
    return ids


SDXL_KEYS = ("clip_l", "clip_g")   # the advanced script's names for the two encoders' rows (A1111, ComfyUI)


class TokenSlot:
    """One text encoder's new token rows: its embedding matrix learns as a whole (the script's way), and after
    every optimizer step all other rows are put back to their original values."""

    def __init__(self, key: Optional[str], tokenizer: Any, text_encoder: Any, ids: list[int]):
        self.key, self.tokenizer, self.text_encoder, self.ids = key, tokenizer, text_encoder, ids

    @property
    def embeddings(self) -> Any:
        return self.text_encoder.get_input_embeddings()

    def start_training(self, device: Any) -> None:
        import torch

        self.text_encoder.requires_grad_(False)
        self.embeddings.weight.requires_grad_(True)
        self.original = self.embeddings.weight.detach().clone()
        self.keep = torch.ones(len(self.tokenizer), dtype=torch.bool, device=device)
        self.keep[self.ids] = False

    def restore_others(self) -> None:
        import torch

        with torch.no_grad():
            self.embeddings.weight[self.keep] = self.original[self.keep]

    def rows(self) -> Any:
        return self.embeddings.weight[self.ids]


def token_slots(base: Any, token: str, vectors: int, initializer: Optional[str]) -> list[TokenSlot]:
    """The placeholder token added to the base's tokenizer(s): SD's one encoder, or both of SDXL's."""
    if base.family == "sdxl":
        pairs = [(SDXL_KEYS[0], base.tokenizer, base.text_encoder), (SDXL_KEYS[1], base.tokenizer_2,
                                                                     base.text_encoder_2)]
    else:
        pairs = [(None, base.tokenizer, base.text_encoder)]
    return [TokenSlot(key, tok, te, add_tokens(tok, te, token, vectors, initializer)) for key, tok, te in pairs]


def learned_rows(slots: list[TokenSlot], token: str) -> dict[str, Any]:
    """What an embedding file holds: ``{token: rows}`` (SD), or ``{"clip_l": rows, "clip_g": rows}`` (SDXL)."""
    return {slot.key or token: slot.rows() for slot in slots}


class Conditioning:
    """The U-Net's text conditioning of the one training prompt, recomputed every step (the token rows learn):
    SD's last hidden state; SDXL's two encoders as ``train/sdxl.py`` builds them, with each image's size ids."""

    def __init__(self, base: Any, prompt: str, resolution: int, device: Any):
        self.base, self.resolution, self.device = base, resolution, device
        if base.family == "sdxl":
            from lorahub_cli.train.sdxl import tokenize

            self.ids = tokenize(base, [prompt]).to(device)
        else:
            self.ids = base.tokenizer(prompt, padding="max_length", max_length=base.tokenizer.model_max_length,
                                      truncation=True, return_tensors="pt").input_ids.to(device)

    def __call__(self, examples: list[Any]) -> tuple[Any, dict]:
        import torch

        n = len(examples)
        if self.base.family != "sdxl":
            return self.base.text_encoder(self.ids.expand(n, -1), return_dict=False)[0], {}
        from lorahub_cli.train.sdxl import encode, time_ids, unet_kwargs

        hidden, pooled = encode(self.base.text_encoders, self.ids.expand(n, -1, -1))
        sizes = torch.tensor([time_ids(e.size, self.resolution, center_crop=True, crop_u=0.5, crop_v=0.5)
                              for e in examples], device=self.device)
        return hidden, unet_kwargs(pooled, sizes, hidden.dtype)


def run_ti(config: TrainConfig, run: RunFolder, progress: Optional[ProgressFn] = None) -> TrainResult:
    """Train an embedding as ``config`` says (prepared by rundir.prepare_run) in this process."""
    import torch

    from lorahub_cli.train.data import load_train_data, pixels
    from lorahub_cli.train.models import load_base
    from lorahub_cli.train.objective import per_sample_loss, target
    from lorahub_cli.train.order import Schedule

    say = progress or no_progress
    started = time.perf_counter()
    device = torch.device("cuda" if config.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")
    data = load_train_data(config.replace(mode="dreambooth", instance_prompt=prompt_of(config)))
    say(TrainEvent("phase", f"loading the base model {config.base}"))
    base = load_base(config.base, text_encoder_2=config.text_encoder_2, vae=config.vae,
                     text_encoder=config.text_encoder, borrow=config.borrow)
    if base.family not in ("sd", "sdxl"):   # load_base also reads Flux bases (LoRA training)
        from lorahub_cli.errors import Incompatible

        raise Incompatible(f"--method {config.method}: --base {config.base} is a {base.family} base; textual "
                           "inversion trains on Stable Diffusion 1.x / 2.x and SDXL bases (Flux's T5 "
                           "embeddings load in neither diffusers' load_textual_inversion nor A1111/ComfyUI)")
    token = placeholder(config)
    slots = token_slots(base, token, config.vectors, config.initializer)
    pivotal = config.method == "pivotal"
    if pivotal:   # the U-Net LoRA, seeded by the run as `lora train` seeds it
        from lorahub_cli.train.setup import attach_adapters

        attach_adapters(config.replace(train_text_encoder=False), base)
    unet, vae = base.unet, base.vae
    for module in (*base.text_encoders, unet, vae):
        module.to(device)
    for slot in slots:
        slot.start_training(device)
    lora_params = [p for p in unet.parameters() if p.requires_grad] if pivotal else []
    groups = [{"params": [s.embeddings.weight for s in slots]}] + ([{"params": lora_params}] if lora_params else [])
    optimizer = torch.optim.AdamW(groups, lr=config.lr, betas=(config.adam_beta1, config.adam_beta2),
                                  weight_decay=config.adam_weight_decay, eps=config.adam_epsilon)

    start = 0
    if config.resume:
        say(TrainEvent("phase", f"resuming from {config.resume}"))
        start = _load_checkpoint(Path(config.resume), slots, optimizer, token, unet if pivotal else None)
    schedule = Schedule(len(data.instances), config.batch_size, 1, config.seed)
    max_steps = config.max_steps or max(1, math.ceil(config.epochs * schedule.micro_steps_per_epoch))
    condition = Conditioning(base, prompt_of(config), config.resolution, device)
    scale = getattr(vae.config, "scaling_factor", 0.18215)
    scheduler = base.noise_scheduler
    say(TrainEvent("start", f"{len(data.instances)} images, token {token} ({config.vectors} vector(s))",
                   step=start, total=max_steps))
    final_loss: Optional[float] = None
    checkpoints: list[str] = []
    loop_start = time.perf_counter()
    for step in range(start, max_steps):
        # every draw is a function of (seed, step): a resumed run makes the same ones
        gen = torch.Generator().manual_seed(int(config.seed or 0) * 1_000_003 + step)
        picks = torch.randint(len(data.instances), (config.batch_size,), generator=gen).tolist()
        batch = torch.stack([pixels(data.instances[i], config.resolution, center_crop=True) for i in picks])
        with torch.no_grad():
            posterior = vae.encode(batch.to(device)).latent_dist
            latents = (posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=gen)
                       .to(device)) * scale
        noise = torch.randn(latents.shape, generator=gen).to(device)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (len(picks),), generator=gen).to(device)
        hidden, extra = condition([data.instances[i] for i in picks])
        pred = unet(scheduler.add_noise(latents, noise, timesteps), timesteps, hidden, return_dict=False,
                    **extra)[0]
        loss = per_sample_loss(pred, target(scheduler, latents, noise, timesteps), timesteps, scheduler,
                               config.snr_gamma).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        for slot in slots:   # only the placeholder rows learn
            slot.restore_others()
        final_loss = float(loss.detach())
        if not math.isfinite(final_loss):
            raise TrainingFailed(f"the loss became {final_loss} at step {step + 1}", hint="Lower --lr.")
        done = step + 1
        say(TrainEvent("step", step=done, total=max_steps, loss=final_loss, lr=config.lr,
                       steps_per_s=(done - start) / max(time.perf_counter() - loop_start, 1e-9)))
        if done % config.checkpointing_steps == 0 and done != max_steps:
            checkpoints.append(str(_save_checkpoint(run, config, done, slots, optimizer, token,
                                                    unet if pivotal else None)))
            say(TrainEvent("checkpoint", f"checkpoint saved at step {done}", step=done, path=checkpoints[-1]))
    train_time = max(time.perf_counter() - loop_start, 1e-9)
    if pivotal:
        adapter = save_pivotal(run.root, unet, learned_rows(slots, token), token, config, max(start, max_steps),
                               final_loss)
    else:
        adapter = save_embedding(run.root / f"{config.name}.safetensors", learned_rows(slots, token), token,
                                 config, max(start, max_steps), final_loss)
    images: list[str] = []
    if config.validation_prompt:
        images = _validate(config, base, run, device, adapter, token)
    card = _write_card(run, config, token, max(start, max_steps), final_loss, images, base.family == "sdxl")
    steps_done = max(0, max_steps - start)
    return TrainResult(
        name=config.name, run_dir=str(run.root), adapter=str(adapter), card=str(card), steps=max(start, max_steps),
        resumed_from=start if config.resume else None, world_size=1, final_loss=final_loss,
        elapsed_s=time.perf_counter() - started,
        samples_per_s=steps_done * config.batch_size / train_time if steps_done else None,
        steps_per_s=steps_done / train_time if steps_done else None, cache="none (textual inversion)",
        mixed_precision="no", device=str(device), checkpoints=checkpoints, validation_images=images,
        config=config.to_dict())


def save_embedding(path: Path, rows: dict[str, Any], token: str, config: TrainConfig, steps: int,
                   final_loss: Optional[float]) -> Path:
    """``rows`` (``learned_rows``: ``{token: [vectors, width]}``, or SDXL's ``clip_l``/``clip_g``) with the
    training record in the header, verified and published."""
    from lorahub_cli.convert.safe_write import write_verified
    from lorahub_cli.train.loop import METADATA_KEY

    record = {"config": {k: v for k, v in config.to_dict().items() if k != "resume"},
              "summary": {"steps": steps, "final_loss": final_loss, "token": token}}
    metadata = {METADATA_KEY: json.dumps(record, sort_keys=True, default=str), "name": token, "step": str(steps)}
    write_verified(path, {k: v.detach().float().cpu().contiguous() for k, v in rows.items()}, metadata, force=True)
    return path


def save_pivotal(folder: Path, unet: Any, rows: dict[str, Any], token: str, config: TrainConfig, steps: int,
                 final_loss: Optional[float]) -> Path:
    """The LoRA (diffusers layout) with the token's vectors inside (``<token>``; SDXL: kohya's
    ``bundle_emb.<token>.clip_l``/``.clip_g``), and the embedding file beside it."""
    from safetensors import safe_open

    from lorahub_cli.convert.safe_write import write_verified
    from lorahub_cli.train.weights import result_name, save_adapter

    emb = save_embedding(folder / f"{config.name}_emb.safetensors", rows, token, config, steps, final_loss)
    # the LoRA alone under diffusers' name, as the advanced script leaves it: load_lora_weights refuses a file
    # with keys that are no LoRA's (the tokens), so diffusers users load this one and the _emb file
    save_adapter(folder, unet)
    lora = save_adapter(folder, unet, file_name=result_name(config.name))
    with safe_open(str(lora), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        metadata = dict(f.metadata() or {})
    for key, value in rows.items():
        tensors[key if key == token else f"bundle_emb.{token}.{key}"] = value.detach().float().cpu().contiguous()
    metadata["lorahub.pivotal_tokens"] = json.dumps({token: emb.name})
    from lorahub_cli.train.loop import METADATA_KEY

    metadata[METADATA_KEY] = json.dumps({"config": {k: v for k, v in config.to_dict().items() if k != "resume"},
                                         "summary": {"steps": steps, "final_loss": final_loss, "token": token}},
                                        sort_keys=True, default=str)
    write_verified(lora, tensors, metadata, force=True)
    return lora


def _save_checkpoint(run: RunFolder, config: TrainConfig, step: int, slots: list[TokenSlot], optimizer: Any,
                     token: str, unet: Any = None) -> Path:
    import torch

    from registry.publish import publish_folder

    tmp = run.checkpoints / f".tmp-checkpoint-{step}"
    tmp.mkdir(parents=True, exist_ok=True)
    save_embedding(tmp / ROWS_FILE, learned_rows(slots, token), token, config, step, None)
    if unet is not None:
        from lorahub_cli.train.weights import save_adapter

        save_adapter(tmp, unet)
    torch.save(optimizer.state_dict(), tmp / OPTIMIZER_FILE)
    write_json_atomic(tmp / STATE_FILE, {"step": step, "seed": config.seed, "world_size": 1, "method": "ti"})
    final = run.checkpoint(step)
    publish_folder(tmp, final, replace=True)
    prune_checkpoints(run, config.checkpoints_total_limit)
    return final


def _load_checkpoint(folder: Path, slots: list[TokenSlot], optimizer: Any, token: str, unet: Any = None) -> int:
    import torch
    from safetensors.torch import load_file

    step = checkpoint_step(folder)
    if unet is not None:
        from lorahub_cli.train.weights import WEIGHT_NAME, load_adapter_into

        load_adapter_into(folder / WEIGHT_NAME, unet)
    rows = load_file(str(folder / ROWS_FILE))
    with torch.no_grad():
        for slot in slots:
            slot.embeddings.weight[slot.ids] = rows[slot.key or token].to(slot.embeddings.weight)
    optimizer.load_state_dict(torch.load(folder / OPTIMIZER_FILE, map_location="cpu", weights_only=True))
    return step


def _validate(config: TrainConfig, base: Any, run: RunFolder, device: Any, adapter: Path, token: str) -> list[str]:
    """Validation images with the learned token, each with a recipe that names the embedding file."""
    from contextlib import nullcontext
    from dataclasses import replace

    import torch

    from lorahub_cli.inspect.hashing import sha256_file
    from lorahub_cli.train.validation import build_pipeline, make_recipe, save_png

    pipe = build_pipeline(base, base.unet, base.text_encoder)
    recipe = make_recipe(config, seed=int(config.seed or 0), scheduler=pipe._lorahub_scheduler, adapter=adapter,
                         adapter_name=config.name, device=str(device), mixed_precision="no")
    if config.method != "pivotal":   # a pivotal LoRA is the recipe's adapter (its tokens load with it)
        recipe = replace(recipe, adapters=[], embeddings=[{"name": config.name, "sha256": sha256_file(adapter),
                                                           "token": token, "path": str(adapter)}])
    out = []
    for i in range(config.validation_images):
        seed = int(config.seed or 0) + i
        with torch.no_grad(), nullcontext():
            image = pipe(config.validation_prompt, num_inference_steps=config.validation_inference_steps,
                         guidance_scale=config.validation_guidance, height=config.resolution,
                         width=config.resolution, generator=torch.Generator().manual_seed(seed)).images[0]
        out.append(str(save_png(image, run.validation / f"final-{i}.png", replace(recipe, seed=seed),
                                {"training": {"run": str(run.root)}})))
    return out


def _what(config: TrainConfig) -> str:
    if config.method != "pivotal":
        return f"Textual-inversion embedding of `{config.base}`, trained with `lora train --method ti`."
    return (f"Pivotal tuning of `{config.base}` (`lora train --method pivotal`): new token embeddings and a "
            f"U-Net LoRA trained together. `{config.name}.safetensors` holds both (`lora generate -a "
            f"{config.name}`); `pytorch_lora_weights.safetensors` is the LoRA alone and "
            f"`{config.name}_emb.safetensors` the tokens alone (A1111/ComfyUI: the LoRA folder and the "
            "embeddings folder).")


def _usage(config: TrainConfig, token: str, sdxl: bool) -> str:
    path = f"path/to/{config.name}" + ("_emb" if config.method == "pivotal" else "") + ".safetensors"
    lora = ("pipe.load_lora_weights(\"path/to/run\", weight_name=\"pytorch_lora_weights.safetensors\")\n"
            if config.method == "pivotal" else "")
    if not sdxl:
        return f"{lora}pipe.load_textual_inversion(\"{path}\", token=\"{token}\")\n"
    return (f"{lora}from safetensors.torch import load_file\n\nstate = load_file(\"{path}\")\n"
            f"pipe.load_textual_inversion(state[\"clip_l\"], token=\"{token}\", text_encoder=pipe.text_encoder, "
            "tokenizer=pipe.tokenizer)\n"
            f"pipe.load_textual_inversion(state[\"clip_g\"], token=\"{token}\", text_encoder=pipe.text_encoder_2, "
            "tokenizer=pipe.tokenizer_2)\n")


def _write_card(run: RunFolder, config: TrainConfig, token: str, steps: int, final_loss: Optional[float],
                images: list[str], sdxl: bool = False) -> Path:
    import yaml

    from lorahub_cli.train.card import write_card

    front = {"base_model": config.base, "library_name": "diffusers", "license": config.license,
             "instance_prompt": token, "tags": ["text-to-image", "diffusers", "textual-inversion",
                                                *(["lora"] if config.method == "pivotal" else []), *config.tags],
             "lorahub": {"training": {"method": config.method, "token": token, "vectors": config.vectors,
                                      "steps": steps,
                                      "lr": config.lr, "batch_size": config.batch_size,
                                      "resolution": config.resolution, "final_loss": final_loss}}}
    text = (f"---\n{yaml.safe_dump(front, sort_keys=False, allow_unicode=True, width=1000)}---\n\n# {config.name}\n\n"
            f"{_what(config)} Write `{token}` in the prompt.\n\n```python\n{_usage(config, token, sdxl)}```\n")
    text += "".join(f"\n![validation]({Path(p).relative_to(run.root).as_posix()})\n" for p in images)
    return write_card(run.root, text)


def train_ti(config: TrainConfig, progress: Optional[ProgressFn] = None) -> TrainResult:
    """``train`` for ``--method ti``: check the images, prepare the run folder, train (a failure before the
    first step leaves no run folder)."""
    from lorahub_cli.train import _FirstStep
    from lorahub_cli.train.data import load_train_data
    from lorahub_cli.train.rundir import discard_unstarted, prepare_run

    load_train_data(config.resolved().replace(mode="dreambooth", instance_prompt=prompt_of(config)))
    config, run = prepare_run(config)
    watch = _FirstStep(progress)
    try:
        return run_ti(config, run, watch)
    except BaseException:
        if not watch.started:   # nothing trained yet: leave no half-made run folder
            discard_unstarted(run)
        raise
