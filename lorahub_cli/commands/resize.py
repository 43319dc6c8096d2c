"""`lora resize`: a smaller LoRA with a rank per layer, chosen as kohya's resize_lora.py chooses it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from lorahub_cli.options import JsonOpt, OutputOpt, Run
from lorahub_cli.output import Output, Result


def resize_command(
    run: Run,
    source: Annotated[str, typer.Argument(help="A library entry (name or sha256 prefix) or an adapter file: "
                                          "LoRA, LoCon, LoHa or LoKr.", show_default=False)],
    rank: Annotated[Optional[int], typer.Option("--rank", "-r", help="Rank of every layer; with --sv-* the "
                                                "largest rank a layer may keep.", show_default=False)] = None,
    sv_fro: Annotated[Optional[float], typer.Option("--sv-fro", help="Per layer, the smallest rank that keeps "
                                                    "this fraction (0, 1] of the update's Frobenius norm.",
                                                    show_default=False)] = None,
    sv_ratio: Annotated[Optional[float], typer.Option("--sv-ratio", help="Per layer, keep the singular values "
                                                      "larger than S[0] / X (X >= 1).", show_default=False)] = None,
    sv_cumulative: Annotated[Optional[float], typer.Option("--sv-cumulative", help="Per layer, the smallest "
                                                           "rank whose singular values sum to this fraction (0, 1] "
                                                           "of their total.", show_default=False)] = None,
    output: OutputOpt = None,
    name: Annotated[Optional[str], typer.Option("--name", "-n", help="For a library entry: the new entry's name "
                                                "(default: <name>-<criterion>).", show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace OUT if it is a file (a symlink is replaced "
                                        "itself, never what it points to).")] = False,
    json: JsonOpt = False,
) -> Result:
    """Resize an adapter: each layer gets the rank a criterion chooses, as kohya's resize_lora.py defines it.

    --rank R gives every layer rank R. --sv-fro F, --sv-ratio X and --sv-cumulative C choose a rank per layer
    from its singular values (kohya's sv_fro, sv_ratio, sv_cumulative); --rank then caps them. Each layer's
    SVD is taken from its factors (a QR of each, then the small core), never from the dense update, so the
    result is the best LoRA of that rank (Eckart-Young) and the error it leaves is exact. LoHa and LoKr
    layers are resized through their exact update. Every layer keeps its scale (alpha = scale x new rank).

    A library entry becomes a new entry linked to its source (-o also writes the file there); a file is
    written to -o, or beside it as <stem>.<criterion>.safetensors. Prints the rank chosen and the error left
    per layer, and the size before and after.

    Examples:

      lora resize my-style --rank 16

      lora resize my-style --sv-fro 0.95 --rank 64 --name my-style-small

      lora resize big_lora.safetensors --sv-ratio 8 -o small_lora.safetensors --json
    """
    from lorahub_cli.lycoris.lowrank import criterion
    from lorahub_cli.errors import UsageError

    chosen = criterion(rank=rank, sv_fro=sv_fro, sv_ratio=sv_ratio, sv_cumulative=sv_cumulative)
    if chosen is None:
        raise UsageError("say how to resize: --rank R, --sv-fro F, --sv-ratio X or --sv-cumulative C",
                         hint="e.g. lora resize NAME --rank 16")
    from lorahub_cli.commands.convert import resolve_source
    from lorahub_cli.convert import default_output

    path, entry = resolve_source(source, home=run.home)
    tag = _tag(chosen)
    if output is not None or entry is None:   # before any work: what -o (or the default beside SOURCE) names
        from lorahub_cli.targets import check_file_output

        check_file_output(output or default_output(path, tag), force=force)
    before = path.stat().st_size
    if entry is None:
        result = _resize(run.out, path, output or default_output(path, tag), chosen, force=force)
        added = None
    else:
        result, added = _resize_entry(run, entry, path, chosen, tag, output=output, force=force, name=name)
    after = result.dst.stat().st_size if result.dst.exists() else None
    data = {"source": str(source), "source_sha256": result.source_sha256, "output": str(result.dst),
            "family": result.family, "layout": result.target, "criterion": result.resize["criterion"],
            "size_before": before, "size_after": after, "layers": result.resize["layers"],
            "warnings": result.warnings, **({"entry": added.to_dict()} if added else {})}

    def show(out: Output) -> None:
        from lorahub_cli.render.resize import render_layers

        for warning in result.warnings:
            out.warn(warning)
        render_layers(out, result.resize, before=before, after=after)
        out.line(f"wrote {result.dst}")
        if added is not None:
            state = "added to the library as" if added.status == "added" else "already in the library as"
            out.line(f"{state} {added.name} ({added.sha256[:12]}), resized from {entry.name}")

    return Result(data, show)


def _tag(c) -> str:
    if c.method == "rank":
        return f"r{int(c.value)}"
    return f"{c.method.replace('_', '')}{c.value:g}"


def _resize(out: Output, path: Path, dst: Path, chosen, *, force: bool, source_name: Optional[str] = None,
            expected_sha256: Optional[str] = None):
    from lorahub_cli.convert import convert_file

    with out.progress(f"resizing {path.name}", total=4, unit="steps") as advance:
        return convert_file(path, dst, to="lora", force=force, source_name=source_name, resize=chosen,
                            expected_sha256=expected_sha256,
                            progress=lambda stage: advance(1, description=f"{stage} {path.name}"))


def _resize_entry(run: Run, entry, blob: Path, chosen, tag: str, *, output: Optional[Path], force: bool,
                  name: Optional[str]):
    """A library entry: resize its stored bytes (verified while read), then ingest the result linked to it."""
    import shutil

    from lorahub_cli.ingest import ingest
    from registry.api import Registry
    from registry.records import SourceRecord
    from registry.store import work_folder

    title = f"{entry.name}.safetensors"
    with Registry(home=run.home) as registry, work_folder(registry.staging_dir) as workdir:
        dst = workdir / f"{entry.name}-{tag}.safetensors"
        if output is None:
            result = _resize(run.out, blob, dst, chosen, force=True, source_name=title, expected_sha256=entry.sha256)
        else:   # resize once, into the user's file; the library ingests a private copy
            result = _resize(run.out, blob, output, chosen, force=force, source_name=title,
                             expected_sha256=entry.sha256)
            shutil.copyfile(output, dst)
        source = SourceRecord(kind="converted", path=f"{entry.name} ({entry.sha256[:12]}) resized, "
                              f"{result.resize['criterion']}", original_sha256=entry.sha256)
        added = ingest(dst, registry, name=name or f"{entry.name}-{tag}", source=source)
        stored = added.entry.path if added.entry is not None else None
        added.path = stored or added.path
        if output is None and stored:
            result.dst = Path(stored)
    return result, added


def register(app: typer.Typer) -> None:
    app.command("resize")(resize_command)
