"""`lora generate`, `lora fuse`, `lora recipe`: library adapters on a base pipeline (clients of
``lorahub_cli.pipeline.Library``; torch and diffusers are imported only inside the commands that run them)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from lorahub_cli.commands.base import (BorrowOpt, TextEncoder2Opt, TextEncoder3Opt, TextEncoderOpt, VaeOpt,
                                       base_with_parts)
from lorahub_cli.options import DeviceOpt, JsonOpt, Run
from lorahub_cli.output import Result

AdapterOpt = Annotated[list[str], typer.Option(
    "--adapter", "-a", show_default=False,
    help="NAME[:WEIGHT]: a library name, a unique sha256 prefix or a file; repeat to stack (weight 1 if left out).")]
EmbeddingOpt = Annotated[list[str], typer.Option(
    "--embedding", "-e", show_default=False,
    help="NAME[:TOKEN]: a textual-inversion embedding (library name, sha256 prefix or file) to load; write its "
         "token (the entry's, or TOKEN) in the prompt. Repeat for several.")]
BaseOpt = Annotated[Optional[str], typer.Option(
    "--base", "-b", show_default=False,
    help="Base model: an alias (sd15, sdxl, ...), a saved base, a diffusers folder, a single-file checkpoint "
         "(.safetensors/.ckpt) or a Hub id.")]
GenDtypeOpt = Annotated[Optional[str], typer.Option(
    "--dtype", show_default=False, help="auto (fp16 on a GPU, fp32 on the CPU), fp16, bf16 or fp32.")]


def generate_command(
    run: Run,
    prompt: Annotated[Optional[str], typer.Argument(help="The prompt (or use --batch-file / --from).",
                                                    show_default=False)] = None,
    base: BaseOpt = None,
    adapter: AdapterOpt = [],  # noqa: B006 - typer needs a literal default
    embedding: EmbeddingOpt = [],  # noqa: B006 - typer needs a literal default
    negative: Annotated[Optional[str], typer.Option("--negative", "-n", help="Negative prompt.",
                                                    show_default=False)] = None,
    steps: Annotated[Optional[int], typer.Option("--steps", help="Denoising steps [default: 25].",
                                                 show_default=False)] = None,
    guidance: Annotated[Optional[float], typer.Option("--guidance", "-g", help="CFG scale [default: 7.5].",
                                                      show_default=False)] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Noise seed [default: random, recorded].",
                                                show_default=False)] = None,
    size: Annotated[Optional[str], typer.Option("--size", help="WIDTHxHEIGHT [default: the base's size].",
                                                show_default=False)] = None,
    scheduler: Annotated[Optional[str], typer.Option(
        "--scheduler", help="dpm (DPM++ 2M), dpm-karras, dpm-sde, euler, euler-a, ddim, pndm, heun, unipc; "
                            "flow-euler for Flux/SD3 [default: dpm, flow-euler on Flux/SD3].",
        show_default=False)] = None,
    fuse: Annotated[bool, typer.Option("--fuse", help="Merge the adapters into the weights without keeping the "
                                       "originals (less memory; same speed as the default merge).")] = False,
    stack: Annotated[str, typer.Option("--stack", help="merge: fp32 merge into the weights, base speed (default); "
                                       "peft: diffusers set_adapters layers (slower steps).")] = "merge",
    batch_file: Annotated[Optional[Path], typer.Option("--batch-file", help="A text file with one prompt per "
                                                       "line; one image each, same seed.", show_default=False)] = None,
    from_image: Annotated[Optional[Path], typer.Option("--from", help="Re-run the recipe embedded in this PNG "
                                                       "(options given here override it).", show_default=False)] = None,
    install: Annotated[bool, typer.Option("--install", help="With --from: first fetch the adapters the recipe "
                                          "names that the library lacks, from the sources it records (as "
                                          "`lora install` does).")] = False,
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the PNGs (named NNNNN-SEED.png, "
                                         "never overwritten).")] = Path("outputs"),
    device: DeviceOpt = "auto",
    dtype: GenDtypeOpt = None,
    borrow: BorrowOpt = None,
    vae: VaeOpt = None,
    text_encoder: TextEncoderOpt = None,
    text_encoder_2: TextEncoder2Opt = None,
    text_encoder_3: TextEncoder3Opt = None,
    json: JsonOpt = False,
) -> Result:
    """Generate images with library adapters stacked on a base pipeline.

    Each adapter is checked against the base first (as `lora check` does): an incompatible one stops the run
    with the reason; a partial one is applied where it fits, with a warning. Any layout works (kohya, peft,
    legacy attn-procs, ...): adapters are read in their converted diffusers form. By default the weighted
    adapters are merged into the weights in fp32 (the originals kept for an exact undo), so a step costs what
    the base costs; --stack peft uses diffusers' set_adapters layers instead.

    Each PNG carries its recipe (prompt, seed, steps, scheduler, size, base, each adapter's name, sha256 and
    weight) as JSON and as A1111 "parameters" text: read it with `lora recipe IMAGE`, re-run it with
    `lora generate --from IMAGE`.

    Embeddings (-e) load through diffusers' load_textual_inversion (both SDXL text encoders for an SDXL file);
    the recipe and the A1111 text ("TI hashes") name them. A pivotal-tuning LoRA's own tokens load with it.

    Examples:

      lora generate "a pikachu, watercolor" --base sd15 -a pokemon:0.8 -a watercolor:0.5 --seed 1

      lora generate "a castle, masterpiece" -n "easynegative" --base sd15 -e easynegative

      lora generate --batch-file prompts.txt --base sdxl -a my-style --steps 30 -o shots

      lora generate --from outputs/00001-1.png --seed 2

      lora generate --from shared/00001-1.png --install
    """
    from lorahub_cli.errors import UsageError
    from lorahub_cli.pipeline.api import STACKS
    from lorahub_cli.pipeline.generate import read_batch_file
    from lorahub_cli.pipeline.schedulers import scheduler_spec
    from lorahub_cli.values import check_guidance, check_seed, check_steps, parse_size

    # cheap checks first: a typo should not wait for a model to load
    if scheduler is not None:
        scheduler_spec(scheduler)
    parsed_size = parse_size(size) if size is not None else None
    if guidance is not None:
        check_guidance(guidance)
    if steps is not None:
        check_steps(steps)
    if seed is not None:
        check_seed(seed)
    if stack not in STACKS:
        raise UsageError(f"unknown --stack {stack!r}; use {' or '.join(STACKS)}")
    if from_image is not None and (base or adapter or embedding):
        raise UsageError("--from takes the base, adapters and embeddings from the image; leave out --base, -a "
                         "and -e")
    if install and from_image is None:
        raise UsageError("--install fetches what a recipe names; give it with --from IMAGE")
    if from_image is None and not base:
        raise UsageError("give --base (or --from IMAGE)")
    if batch_file is not None and prompt is not None:
        raise UsageError("give a PROMPT or a --batch-file, not both")
    prompts = read_batch_file(batch_file) if batch_file is not None else ([prompt] if prompt is not None else [])
    if not prompts and from_image is None:
        raise UsageError("give a PROMPT (or --batch-file / --from)")
    from lorahub_cli.targets import check_folder_output

    check_folder_output(output)   # a folder (new or not), outside the library: an existing file is a usage error
    if base:
        base = base_with_parts(run, base, borrow, vae, text_encoder, text_encoder_2, text_encoder_3)

    from lorahub_cli.pipeline import Library
    from lorahub_cli.render.generate import quiet_libraries, render_generated

    quiet_libraries()
    settings = {"negative_prompt": negative, "steps": steps, "guidance": guidance, "seed": seed,
                "size": parsed_size, "scheduler": scheduler}
    results = []
    with Library(home=run.home) as lib:
        if from_image is not None:
            if install:
                _install_recipe(run, lib, from_image)
            job = lib.rerun_job(from_image, device=device, dtype=dtype, prompt=prompts[0] if prompts else None,
                                **settings)
            pipe = lib.pipeline(job.base, job.adapters, fuse=job.fuse, stack=job.stack, device=job.device,
                                dtype=job.dtype, embeddings=job.embeddings)
            settings = dict(job.settings)
            recipe_prompt = settings.pop("prompt")
            prompts = prompts or [recipe_prompt]
        else:
            pipe = lib.pipeline(base, adapter, fuse=fuse, stack=stack, device=device, dtype=dtype or "auto",
                                embeddings=embedding)
            settings = {k: v for k, v in settings.items() if v is not None}
        for warning in pipe.lorahub.warnings:
            run.out.warn(warning)
        if settings.get("seed") is None:   # one seed for the batch, drawn once and recorded
            import secrets

            settings["seed"] = secrets.randbelow(2**32)
        for text in prompts:
            shot = lib.generate(text, pipe=pipe, output_dir=output, **settings)[0]
            results.append(shot)
            if not json:   # each image is reported as it is made: a batch takes minutes
                render_generated(run.out, shot)
    return Result([r.to_dict() for r in results])


def _install_recipe(run: Run, lib, image: Path) -> None:
    """Fetch the recipe's missing adapters into the library (reported on stderr), before the pipeline loads."""
    from lorahub_cli.lock.install import FETCHED, install_recipe
    from lorahub_cli.pipeline.recipe import read_recipe

    for outcome in install_recipe(read_recipe(image).adapters, lib.registry):
        if outcome.status == FETCHED:
            run.out.warn(f"fetched {outcome.lock_name} as {outcome.name} from {outcome.source}")


def fuse_command(
    run: Run,
    base: BaseOpt = None,
    adapter: AdapterOpt = [],  # noqa: B006
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="The folder to write (a diffusers "
                                                   "model folder).", show_default=False)] = None,
    device: DeviceOpt = "auto",
    dtype: GenDtypeOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a folder that an earlier `lora fuse` wrote "
                                        "(never another folder).")] = False,
    single_file: Annotated[Optional[Path], typer.Option(
        "--single-file", help="Write one .safetensors in the original layout (A1111 / ComfyUI) instead of a folder; "
        "--dtype fp16|bf16|fp32 (default: the base file's own, else fp16).", show_default=False)] = None,
    borrow: BorrowOpt = None,
    vae: VaeOpt = None,
    text_encoder: TextEncoderOpt = None,
    text_encoder_2: TextEncoder2Opt = None,
    text_encoder_3: TextEncoder3Opt = None,
    json: JsonOpt = False,
) -> Result:
    """Save a base with adapters fused into its weights, as a plain diffusers model folder (safetensors).

    The weighted updates are summed in fp32 and rounded once to the weights' dtype (PEFT's fuse adds each update
    in that dtype, which in bf16 loses about a sixth of a small update). The folder loads with
    DiffusionPipeline.from_pretrained alone; lorahub_fuse.json in it names the base and each adapter's sha256
    and weight. --force replaces only a folder that carries that file, never one that holds or lies inside the
    base, an adapter, the library or the Hugging Face cache; the old folder is deleted once the new one is in
    place.

    Examples:

      lora fuse --base sd15 -a pokemon:0.8 -a watercolor:0.5 -o sd15-pokemon-watercolor

      lora fuse --base ./my-model -a my-style -o fused --dtype fp16

      lora fuse --base realisticVision_v60.safetensors -a my-style --single-file rv-style.safetensors
    """
    from lorahub_cli.errors import UsageError

    if not base:
        raise UsageError("give --base")
    if not adapter:
        raise UsageError("give at least one adapter (-a NAME[:WEIGHT])")
    if output is not None and single_file is not None:
        raise UsageError("give either -o DIR (a diffusers folder) or --single-file FILE, not both")
    if output is None and single_file is None:
        raise UsageError("give the output folder (-o DIR) or --single-file FILE")
    base = base_with_parts(run, base, borrow, vae, text_encoder, text_encoder_2, text_encoder_3)
    from lorahub_cli.pipeline import Library
    from lorahub_cli.render.generate import quiet_libraries, render_fused

    quiet_libraries()
    if single_file is not None:
        with Library(home=run.home) as lib:
            written = lib.fuse_single_file(base, adapter, single_file, dtype=dtype, force=force)
        return Result(written, lambda out: render_fused(out, written))
    with Library(home=run.home) as lib:
        result = lib.fuse(base, adapter, output, device=device, dtype=dtype or "auto", force=force)
    return Result(result, lambda out: render_fused(out, result))


def recipe_command(
    run: Run,
    image: Annotated[Path, typer.Argument(help="A PNG written by `lora generate` (A1111 images: their "
                                                "parameters are shown).", show_default=False)],
    json: JsonOpt = False,
) -> Result:
    """Show the recipe embedded in an image: prompt, seed, steps, scheduler, size, base and adapters.

    PNGs from `lora generate` carry a full recipe (re-run it with `lora generate --from IMAGE`); for other
    images the A1111 "parameters" text is parsed and shown. Exit 1 when the image has neither.

    Examples:

      lora recipe outputs/00001-1.png

      lora recipe outputs/00001-1.png --json
    """
    from lorahub_cli.errors import NoRecipe
    from lorahub_cli.pipeline.recipe import PARAMETERS_KEY, RECIPE_KEY, parse_parameters, png_text, recipe_from_text
    from lorahub_cli.render.generate import render_parameters, render_recipe

    text = png_text(image)   # read once (bounded, no pixels decoded); both readers below use its text
    if RECIPE_KEY in text:
        recipe = recipe_from_text(text, image)
        return Result({"source": "lorahub", **recipe.to_dict()}, lambda out: render_recipe(out, recipe, image))
    parameters = parse_parameters(text[PARAMETERS_KEY]) if PARAMETERS_KEY in text else None
    if parameters is None:
        raise NoRecipe(f"{image} carries no generation settings (no lorahub recipe, no A1111 parameters)")
    return Result({"source": "a1111", **parameters}, lambda out: render_parameters(out, parameters, image))


def register(app: typer.Typer) -> None:
    app.command("generate")(generate_command)
    app.command("fuse")(fuse_command)
    app.command("recipe")(recipe_command)
