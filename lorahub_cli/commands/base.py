"""`lora base add / list / rm`: the base models you work with, remembered with their family and table hash."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from lorahub_cli.options import JsonOpt, Run
from lorahub_cli.output import Result

_PART = "For a single-file checkpoint: the {what} as a weights file (.safetensors, any layout diffusers reads) or a " \
        "diffusers folder (the component's, or a pipeline's), when the file lacks it or to replace its own."
VaeOpt = Annotated[Optional[Path], typer.Option("--vae", help=_PART.format(what="VAE"), show_default=False)]
TextEncoderOpt = Annotated[Optional[Path], typer.Option(
    "--text-encoder", help=_PART.format(what="first text encoder (CLIP-L)"), show_default=False)]
TextEncoder2Opt = Annotated[Optional[Path], typer.Option(
    "--text-encoder-2", help=_PART.format(what="second text encoder (SDXL/SD3: CLIP-G; Flux: T5-XXL)"),
    show_default=False)]
TextEncoder3Opt = Annotated[Optional[Path], typer.Option(
    "--text-encoder-3", help=_PART.format(what="third text encoder (SD3: T5-XXL)"), show_default=False)]


BorrowOpt = Annotated[Optional[Path], typer.Option(
    "--borrow", help="For a single-file checkpoint: a diffusers folder to take configs, tokenizers and missing "
                     "components (VAE, text encoders) from.", show_default=False)]


def base_with_parts(run: Run, base: str, borrow: Optional[Path], vae: Optional[Path], text_encoder: Optional[Path],
                    text_encoder_2: Optional[Path], text_encoder_3: Optional[Path]):
    """``base`` as given, or, with --borrow / --vae / --text-encoder*, the resolved checkpoint base with them."""
    parts = part_options(vae, text_encoder, text_encoder_2, text_encoder_3)
    if borrow is None and not parts:
        return base
    from lorahub_cli.bases import resolve_base, with_parts

    return with_parts(resolve_base(base, home=run.home), borrow=borrow, parts=parts)


def part_options(vae: Optional[Path], text_encoder: Optional[Path], text_encoder_2: Optional[Path],
                 text_encoder_3: Optional[Path]) -> dict[str, Path]:
    """The components given apart, by diffusers' names (``bases.with_parts``)."""
    given = {"vae": vae, "text_encoder": text_encoder, "text_encoder_2": text_encoder_2,
             "text_encoder_3": text_encoder_3}
    return {k: v for k, v in given.items() if v is not None}

base_app = typer.Typer(name="base", help="Remember the base models you work with (id, family, module table hash).",
                       no_args_is_help=True)


@base_app.command("add")
def add_command(
    run: Run,
    base: Annotated[str, typer.Argument(help="A Hub model id (owner/name[@revision]), a local diffusers folder, a "
                                        "single-file checkpoint (.safetensors/.ckpt) or an alias.", show_default=False)],
    name: Annotated[Optional[str], typer.Option("--name", "-n", help="Name to use with --base (default: from the "
                                                "id).")] = None,
    borrow: Annotated[Optional[Path], typer.Option("--borrow", help="For a single-file checkpoint: a diffusers "
                                                   "folder to take configs, tokenizers and missing components "
                                                   "(VAE, text encoders) from.")] = None,
    vae: VaeOpt = None,
    text_encoder: TextEncoderOpt = None,
    text_encoder_2: TextEncoder2Opt = None,
    text_encoder_3: TextEncoder3Opt = None,
    json: JsonOpt = False,
) -> Result:
    """Resolve BASE (a Hub id's configs are fetched anew), hash its module tables and save it under a name.

    Saving an existing name again replaces it. Saved bases live in $LORAHUB_HOME/bases.json.

    Examples:

      lora base add stabilityai/stable-diffusion-xl-base-1.0 --name xl

      lora base add ~/models/my-sd15-finetune

      lora base add ~/ComfyUI/models/checkpoints/realisticVision_v60.safetensors --name rv --borrow ~/sd15-diffusers

      lora base add flux1-dev.safetensors --name fd --borrow ~/flux-configs --vae ae.safetensors
      --text-encoder clip_l.safetensors --text-encoder-2 t5xxl_fp16.safetensors
    """
    from lorahub_cli.bases import add_base

    record = add_base(base, name=name, home=run.home, borrow=borrow,
                      parts=part_options(vae, text_encoder, text_encoder_2, text_encoder_3))
    lent = "".join(f"; {c} from {p}" for c, p in sorted(record.parts.items()))
    return Result(record, lambda out: out.line(f"saved {record.name}: {record.id} ({record.family}, "
                                               f"{', '.join(record.components)}; table hash {record.table_hash}"
                                               f"{lent})"))


@base_app.command("list")
def list_command(run: Run, json: JsonOpt = False) -> Result:
    """The saved bases."""
    from lorahub_cli.bases import list_bases
    from lorahub_cli.render.check import render_bases

    rows = list_bases(home=run.home)
    return Result([r.to_dict() for r in rows], lambda out: render_bases(out, rows))


@base_app.command("rm")
def rm_command(
    run: Run,
    name: Annotated[str, typer.Argument(help="A saved base's name.", show_default=False)],
    json: JsonOpt = False,
) -> Result:
    """Forget a saved base (the Hugging Face cache and module tables are left alone)."""
    from lorahub_cli.bases import remove_base

    record = remove_base(name, home=run.home)
    return Result(record, lambda out: out.line(f"removed {record.name} ({record.id})"))


def register(app: typer.Typer) -> None:
    app.add_typer(base_app)
