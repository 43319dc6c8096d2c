"""`lora convert`: a pickle or a legacy-layout adapter -> a new, verified safetensors file that today's tools load."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from lorahub_cli.options import JsonOpt, OutputOpt, Run
from lorahub_cli.output import Output, Result

STAGES = ("reading", "mapping", "writing", "verifying")


def convert_command(
    run: Run,
    source: Annotated[str, typer.Argument(help="An adapter file (.safetensors, .bin, .pt, .pth, .ckpt), or a "
                                          "library entry (name or sha256 prefix).", show_default=False)],
    to: Annotated[str, typer.Option("--to", help="Target layout: diffusers (what load_lora_weights loads), kohya "
                                    "(A1111 / ComfyUI, SD1/SD2/SDXL), lora (kohya for SD families, else "
                                    "diffusers), or safetensors (same keys, only the container changes).")
                  ] = "diffusers",
    rank: Annotated[Optional[int], typer.Option("--rank", help="Best rank-R LoRA of every layer (LoHa and LoKr "
                                                "too), from the factors; with --sv-* the largest rank.",
                                                show_default=False)] = None,
    sv_fro: Annotated[Optional[float], typer.Option("--sv-fro", help="Per layer, the smallest rank keeping this "
                                                    "fraction (0, 1] of the Frobenius norm (kohya's sv_fro).",
                                                    show_default=False)] = None,
    sv_ratio: Annotated[Optional[float], typer.Option("--sv-ratio", help="Per layer, keep singular values above "
                                                      "S[0] / X (kohya's sv_ratio).", show_default=False)] = None,
    base: Annotated[Optional[str], typer.Option("--base", "-b", help="The base model (a diffusers folder, a "
                                                "single-file checkpoint or a saved base): layers are named on it, "
                                                "and DoRA / (IA)^3 layers become their update against its weights "
                                                "(with --rank or --sv-*).", show_default=False)] = None,
    output: OutputOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Replace OUT if it is a file (a symlink is "
                                        "replaced itself, never what it points to).")] = False,
    name: Annotated[Optional[str], typer.Option("--name", "-n", help="For a library entry: the new entry's name "
                                                "(default: <name>-<target>).")] = None,
    json: JsonOpt = False,
) -> Result:
    """Convert an adapter into a new safetensors file: pickles safely, legacy layouts to ones that load.

    Pickles are read with torch's weights-only loader and nothing else (a pickle that asks to import code is
    refused with unsafe-pickle). Module names are mapped onto the real architecture of the adapter's base
    (attn-procs, diffusers-old, peft, unprefixed diffusers, kohya and cloneofsimo positional files); each
    module keeps its rank and alpha. The output is written to a temporary file, read back and compared bit
    for bit with what was read, then renamed into place; the source's sha256, format, family and ModelSpec
    keys are added to its header. A cloneofsimo X.pt is merged with the X.text_encoder.pt beside it.

    LyCORIS LoHa, LoKr (incl. Tucker) and LoCon files convert to plain low-rank pairs that compute exactly
    the same update. --rank R (or --sv-fro F / --sv-ratio X, with --rank as the cap) makes each layer the
    best LoRA of that rank, computed from the factors, and reports the error left per layer. DoRA and (IA)^3
    updates depend on the base weight: without --base they are refused (needs-base); with --base B and a
    rank, each layer's update at weight 1 is computed against B's weight, read one layer at a time, and cut
    to its best rank (error left reported per layer). OFT and GLoRA are named in a not-supported error.

    Default OUT: beside the source, <stem>.diffusers.safetensors (or .kohya.safetensors; .safetensors for
    --to safetensors). A library entry as SOURCE becomes a new entry (named <name>-<target> unless --name
    says otherwise) whose provenance records what it was converted from; -o also writes the file there.

    Examples:

      lora convert pytorch_lora_weights.bin

      lora convert my_lora.safetensors --to kohya -o my_lora_a1111.safetensors

      lora convert lora_weight.pt --json

      lora convert my-old-lora --to diffusers --name my-lora-fixed

      lora convert my_loha.safetensors --to lora --rank 16

      lora convert my_lokr.safetensors --to lora --sv-fro 0.95 --rank 64 --json

      lora convert my_dora.safetensors --to lora --base ./sd15-folder --rank 32
    """
    from lorahub_cli.convert import TARGETS, default_output
    from lorahub_cli.errors import UsageError
    from lorahub_cli.render.convert import render_result

    from lorahub_cli.lycoris.lowrank import criterion

    if to not in TARGETS:
        raise UsageError(f"--to {to!r} is not a target layout; use one of: {', '.join(TARGETS)}")
    resize = criterion(rank=rank, sv_fro=sv_fro, sv_ratio=sv_ratio)   # usage errors before any work
    path, entry = resolve_source(source, home=run.home)
    on_base = None
    if base is not None:
        from lorahub_cli.bases import resolve_base

        on_base = resolve_base(base, home=run.home)
    if output is not None or entry is None:   # before any work: what -o (or the default beside SOURCE) names
        from lorahub_cli.targets import check_file_output

        check_file_output(output or default_output(path, to), force=force)
    if entry is None:
        dst = output or default_output(path, to)
        result = _convert(run.out, path, dst, to=to, force=force, resize=resize, base=on_base)
        added = None
    else:
        result, added = _convert_entry(run, entry, path, to=to, output=output, force=force, name=name,
                                       resize=resize, base=on_base)

    def show(out: Output) -> None:
        render_result(out, result)
        if added is not None:
            out.line(_entry_line(added, entry.name, name))

    return Result({**result.to_dict(), **({"entry": added.to_dict()} if added else {})}, show)


def _entry_line(added, source_name: str, asked_name: Optional[str]) -> str:
    if added.status == "added":
        return f"added to the library as {added.name} ({added.sha256[:12]}), converted from {source_name}"
    unused = f"; --name {asked_name} was not used" if asked_name and asked_name != added.name else ""
    return f"already in the library as {added.name} ({added.sha256[:12]}): the same bytes{unused}"


def _convert(out: Output, path: Path, dst: Path, *, to: str, force: bool, source_name: Optional[str] = None,
             expected_sha256: Optional[str] = None, resize=None, base=None):
    from lorahub_cli.convert import convert_file

    with out.progress(f"converting {path.name}", total=len(STAGES), unit="steps") as advance:
        return convert_file(path, dst, to=to, force=force, source_name=source_name, expected_sha256=expected_sha256,
                            resize=resize, base=base,
                            progress=lambda stage: advance(1, description=f"{stage} {path.name}"))


def _convert_entry(run: Run, entry, blob: Path, *, to: str, output: Optional[Path], force: bool,
                   name: Optional[str], resize=None, base=None):
    """A library entry: convert its stored bytes, then record the result as a new entry linked to it."""
    import shutil

    from lorahub_cli.ingest import ingest
    from registry.api import Registry
    from registry.records import SourceRecord
    from registry.store import work_folder

    title = f"{entry.name}.safetensors"   # the stored blob is named by its hash: title the output after the entry
    with Registry(home=run.home) as registry, work_folder(registry.staging_dir) as workdir:
        dst = workdir / f"{entry.name}-{to}.safetensors"
        if output is None:
            result = _convert(run.out, blob, dst, to=to, force=True, source_name=title, expected_sha256=entry.sha256,
                              resize=resize, base=base)
        else:   # convert once, into the user's file; the library inspects a private copy (no sidecars)
            result = _convert(run.out, blob, output, to=to, force=force, source_name=title,
                              expected_sha256=entry.sha256, resize=resize, base=base)
            shutil.copyfile(output, dst)
        source = SourceRecord(kind="converted", path=f"{entry.name} ({entry.sha256[:12]}) to {to}",
                              original_sha256=entry.sha256)
        added = ingest(dst, registry, name=name or f"{entry.name}-{to}", source=source)
        stored = added.entry.path if added.entry is not None else None
        added.path = stored or added.path   # the staged copy is about to go: name the stored bytes
        if output is None and stored:
            result.dst = Path(stored)
    return result, added


def resolve_source(source: str, *, home: Optional[Path] = None):
    """SOURCE as (file to read, library entry or None), by the one precedence (``lorahub_cli.resolve``): a
    library name, then a sha256 prefix, then a file."""
    from lorahub_cli.resolve import resolve
    from registry.api import Registry

    with Registry(home=home) as registry:
        handle = resolve(source, registry)
    return handle.path, handle.entry


def register(app: typer.Typer) -> None:
    app.command("convert")(convert_command)
