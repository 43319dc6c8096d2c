"""`lora extract`: a LoRA from the difference between a base model and a fine-tune of it."""

from __future__ import annotations

import json as _json
from pathlib import Path
from typing import Annotated, Optional

import typer

from lorahub_cli.options import JsonOpt, Run
from lorahub_cli.output import Output, Result


def extract_command(
    run: Run,
    base: Annotated[str, typer.Option("--base", help="The original model: a diffusers folder, a single-file "
                                      ".safetensors checkpoint or a saved base.", show_default=False)],
    tuned: Annotated[str, typer.Option("--tuned", help="The fine-tuned model, in either form.",
                                       show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="The LoRA file to write (.safetensors).",
                                         show_default=False)],
    rank: Annotated[int, typer.Option("--rank", "-r", help="Rank of every layer; with --sv-fro the largest "
                                      "rank a layer may keep.")] = 32,
    sv_fro: Annotated[Optional[float], typer.Option("--sv-fro", help="Per layer, the smallest rank keeping this "
                                                    "fraction (0, 1] of the difference's Frobenius norm.",
                                                    show_default=False)] = None,
    components: Annotated[Optional[str], typer.Option("--components", help="Comma-separated: unet, "
                                                      "text_encoder, text_encoder_2, transformer (default: all "
                                                      "the base has).", show_default=False)] = None,
    conv: Annotated[str, typer.Option("--conv", help="3x3 conv layers: locon (extract them as LoCon pairs) or "
                                      "skip.")] = "locon",
    threshold: Annotated[float, typer.Option("--threshold", help="Skip a layer whose difference is at most "
                                             "this everywhere (reported).")] = 1e-4,
    device: Annotated[str, typer.Option("--device", help="auto (cuda when present), cpu or cuda.")] = "auto",
    force: Annotated[bool, typer.Option("--force", help="Replace OUT if it is a file.")] = False,
    json: JsonOpt = False,
) -> Result:
    """Extract a LoRA from two models: the best low-rank approximation of each layer's difference.

    Works layer by layer from memory-mapped safetensors (diffusers folders or single-file checkpoints), so
    memory stays near one layer, not two models. Layers whose difference is below --threshold are skipped and
    listed. 3x3 convs become LoCon pairs (--conv locon) or are skipped (--conv skip). Two models of different
    families are refused (incompatible). The file is written in the kohya layout for SD1/SD2/SDXL, the
    diffusers layout otherwise, with the per-layer rank and error left in its metadata.

    Examples:

      lora extract --base ./sd15 --tuned ./my-finetune -o my-finetune-lora.safetensors --rank 32

      lora extract --base base.safetensors --tuned tuned.safetensors --sv-fro 0.9 --rank 128 -o x.safetensors

      lora extract --base ./sdxl --tuned ./sdxl-ft --components unet --conv skip -o unet-only.safetensors --json
    """
    from lorahub_cli.bases import resolve_base
    from lorahub_cli.errors import UsageError
    from lorahub_cli.lycoris.lowrank import criterion
    from lorahub_cli.targets import check_file_output

    chosen = criterion(rank=rank, sv_fro=sv_fro)
    if not (threshold >= 0):
        raise UsageError(f"--threshold must be zero or more, got {threshold:g}")
    parts = [c.strip() for c in components.split(",") if c.strip()] if components else None
    check_file_output(output, force=force)   # before any work
    a = resolve_base(base, home=run.home)
    b = resolve_base(tuned, home=run.home)
    where = _device(device)
    from lorahub_cli.lycoris.extract import extract

    with run.out.progress("extracting", total=None, unit="layers") as advance:
        result = extract(a, b, chosen, components=parts, conv=conv, threshold=threshold, device=where,
                         progress=lambda n: advance(n))
    if not result.adapter.modules:
        from lorahub_cli.errors import InputRejected

        raise InputRejected(f"no layer of {tuned} differs from {base} by more than {threshold:g}: nothing to "
                            "extract, nothing written", hint="Lower --threshold, or check the two paths.")
    layout = _write(result, a, output, force=force, criterion=chosen.describe())
    data = {"base": base, "tuned": tuned, "output": str(output), "family": a.family, "layout": layout,
            "device": where, "criterion": chosen.describe(), "size_after": output.stat().st_size,
            "layers": [r.to_dict() for r in result.layers], "skipped": result.skipped}

    def show(out: Output) -> None:
        from lorahub_cli.render.resize import render_layers

        render_layers(out, {"criterion": chosen.describe(), "layers": data["layers"]})
        if result.skipped:
            out.line(f"  skipped {len(result.skipped)} layer(s), e.g. {result.skipped[0]['module']}: "
                     f"{result.skipped[0]['reason']}")
        out.line(f"wrote {output} ({layout} layout, {len(result.layers)} layers)")

    return Result(data, show)


def _device(asked: str) -> str:
    from lorahub_cli.errors import UsageError

    if asked not in ("auto", "cpu", "cuda"):
        raise UsageError(f"--device is auto, cpu or cuda, not {asked!r}")
    if asked == "cpu":
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if asked == "cuda":
        raise UsageError("--device cuda: no CUDA device is available here", hint="Use --device cpu.")
    return "cpu"


def _write(result, base, output: Path, *, force: bool, criterion: str) -> str:
    from lorahub_cli.compat.on_base import base_tables
    from lorahub_cli.convert.keymap import canonical_tables
    from lorahub_cli.convert.safe_write import write_verified
    from lorahub_cli.convert.write import diffusers_layout, kohya_layout

    kohya = base.family in ("sd1", "sd2", "sdxl")
    tables = canonical_tables(base.family) if base.family != "unknown" else base_tables(base)
    tensors, entries = (kohya_layout if kohya else diffusers_layout)(result.adapter, tables)
    record = {"base": base.ref, "criterion": criterion, "skipped": len(result.skipped),
              "max_rel_error": max((r.rel_error for r in result.layers), default=0.0)}
    metadata = {**entries, "lorahub.extract": _json.dumps(record, sort_keys=True)}
    write_verified(output, tensors, metadata, force=force, data_hash=True)
    return "kohya" if kohya else "diffusers"


def register(app: typer.Typer) -> None:
    app.command("extract")(extract_command)
