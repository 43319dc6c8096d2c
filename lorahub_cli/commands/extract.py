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
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Also write the LoRA to this file "
                                                   "(.safetensors); required with --no-add.",
                                                   show_default=False)] = None,
    name: Annotated[Optional[str], typer.Option("--name", "-n", help="The new library entry's name (default: "
                                                "OUT's stem, else <tuned>-extract).", show_default=False)] = None,
    no_add: Annotated[bool, typer.Option("--no-add", help="Only write -o; add no library entry.")] = False,
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
    families are refused (incompatible). The LoRA is written in the kohya layout for SD1/SD2/SDXL, the
    diffusers layout otherwise, with the per-layer rank and error left, the base and the tuned model in its
    metadata, and added to the library as a new entry whose base model is the base and whose source names
    both models (--no-add: only the file -o).

    Examples:

      lora extract --base ./sd15 --tuned ./my-finetune --rank 32 --name my-finetune-lora

      lora extract --base ./sd15 --tuned ./my-finetune -o my-finetune-lora.safetensors --no-add

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
    if output is None and no_add:
        raise UsageError("--no-add writes only the file -o: give -o OUT", hint="Or leave out --no-add.")
    if output is not None:
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
    added = None
    if no_add:
        layout = _write(result, a, output, force=force, criterion=chosen.describe(), tuned=b)
        written = output
    else:
        layout, added, written = _write_entry(run, result, a, b, output, force=force, criterion=chosen.describe(),
                                              name=name or _default_name(output, tuned))
    data = {"base": base, "tuned": tuned, "output": str(written), "family": a.family, "layout": layout,
            "device": where, "criterion": chosen.describe(), "size_after": written.stat().st_size,
            "layers": [r.to_dict() for r in result.layers], "skipped": result.skipped,
            **({"entry": added.to_dict()} if added else {})}

    def show(out: Output) -> None:
        from lorahub_cli.render.resize import render_layers

        render_layers(out, {"criterion": chosen.describe(), "layers": data["layers"]})
        if result.skipped:
            out.line(f"  skipped {len(result.skipped)} layer(s), e.g. {result.skipped[0]['module']}: "
                     f"{result.skipped[0]['reason']}")
        out.line(f"wrote {written} ({layout} layout, {len(result.layers)} layers)")
        if added is not None:
            state = "added to the library as" if added.status == "added" else "already in the library as"
            out.line(f"{state} {added.name} ({added.sha256[:12]}), extracted from {tuned} against {base}")

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


def _default_name(output: Optional[Path], tuned: str) -> str:
    if output is not None:
        return output.name.removesuffix(".safetensors")
    return f"{Path(tuned.rstrip('/')).name.removesuffix('.safetensors')}-extract"


def _write_entry(run: Run, result, base, tuned, output: Optional[Path], *, force: bool, criterion: str, name: str):
    """Write the LoRA (to -o when given), then add a private copy to the library: (layout, added, path)."""
    import shutil

    from lorahub_cli.ingest import Fact, ingest
    from registry.api import Registry
    from registry.records import SourceRecord
    from registry.store import work_folder

    with Registry(home=run.home) as registry, work_folder(registry.staging_dir) as workdir:
        staged = workdir / f"{name}.safetensors"
        layout = _write(result, base, output or staged, force=force, criterion=criterion, tuned=tuned)
        if output is not None:   # written once, into the user's file; the library ingests a private copy
            shutil.copyfile(output, staged)
        source = SourceRecord(kind="converted", path=f"extracted: {tuned.id} minus base {base.id} ({criterion})")
        added = ingest(staged, registry, name=name, source=source,
                       facts=[Fact("base_model", base.id, "metadata:lorahub.extract")])
        stored = added.entry.path if added.entry is not None else None
        added.path = stored or added.path   # the staged copy is about to go: name the stored bytes
        written = output if output is not None else Path(stored or staged)
    return layout, added, written


def _write(result, base, output: Path, *, force: bool, criterion: str, tuned=None) -> str:
    from lorahub_cli.compat.on_base import base_tables
    from lorahub_cli.convert.keymap import canonical_tables
    from lorahub_cli.convert.safe_write import write_verified
    from lorahub_cli.convert.write import KOHYA_FAMILIES, diffusers_layout, kohya_layout

    kohya = base.family in KOHYA_FAMILIES
    tables = canonical_tables(base.family) if base.family != "unknown" else base_tables(base)
    tensors, entries = (kohya_layout if kohya else diffusers_layout)(result.adapter, tables)
    record = {"base": base.ref, "criterion": criterion, "skipped": len(result.skipped),
              **({"tuned": tuned.ref} if tuned is not None else {}),
              "max_rel_error": max((r.rel_error for r in result.layers), default=0.0)}
    metadata = {**entries, "lorahub.extract": _json.dumps(record, sort_keys=True)}
    write_verified(output, tensors, metadata, force=force, data_hash=True)
    return "kohya" if kohya else "diffusers"


def register(app: typer.Typer) -> None:
    app.command("extract")(extract_command)
