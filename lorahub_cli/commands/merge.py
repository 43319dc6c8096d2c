"""`lora merge`: one adapter from several, exactly (stack) or compressed to a rank (svd, ties)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from lorahub_cli.options import JsonOpt, Run
from lorahub_cli.output import Output, Result


def merge_command(
    run: Run,
    inputs: Annotated[list[str], typer.Argument(help="Adapters as FILE[:WEIGHT] or NAME[:WEIGHT] (library name or "
                                                "sha256 prefix); the weight defaults to 1 and may be negative.",
                                                show_default=False)],
    output: Annotated[str, typer.Option("--output", "-o", help="A path ending in .safetensors writes a file; "
                                        "anything else is the name of a new library entry.", show_default=False)],
    method: Annotated[str, typer.Option("--method", "-m", help="stack (exact, rank = sum of ranks), svd (best "
                                        "rank-R approximation) or ties (TIES merging, then rank R).")] = "stack",
    rank: Annotated[Optional[int], typer.Option("--rank", "-r", help="Target rank for svd / ties (default: the "
                                                "largest input rank).", show_default=False)] = None,
    density: Annotated[Optional[float], typer.Option("--density", help="ties: fraction of each update's entries "
                                                     "kept (default 0.2).", show_default=False)] = None,
    dtype: Annotated[str, typer.Option("--dtype", help="Output dtype: auto (the inputs'), fp16, bf16 or "
                                       "fp32.")] = "auto",
    base: Annotated[Optional[str], typer.Option("--base", "-b", help="The base the inputs were made for (an alias, "
                                                "a saved base, a diffusers folder or a Hub id): needed for "
                                                "adapters of a custom model, whose layers no known family "
                                                "names.", show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing output file (only a "
                                        "regular file or a symlink).")] = False,
    json: JsonOpt = False,
) -> Result:
    """Merge adapters of one base family into a new adapter.

    stack (default) is exact: every layer's update is the weighted sum of the inputs' updates, each with its
    own alpha / rank folded in, so loading the result equals loading the inputs together with those weights
    (diffusers set_adapters); its rank is the sum of the input ranks. svd gives the best rank-R approximation
    of that sum per layer (Eckart-Young optimal), computed from the factors without building the dense
    update; the relative error it left is reported. ties applies TIES merging (trim each update to its largest
    --density entries, elect a sign per entry, average the agreeing ones) and then cuts to rank R. Layers in
    only some inputs are kept; text encoders are merged like the U-Net.

    Inputs may be in any supported layout (kohya, diffusers, peft, ...), and LyCORIS LoHa, LoKr, LoCon and
    full-difference files, read as their exact per-layer update. DoRA and (IA)^3 inputs need --base (without
    it they are refused with needs-base): each of their layers becomes its update at the input's weight
    against the base's weight, as generate applies it, held as a dense pair. The output is in the diffusers
    layout (loadable by diffusers, ComfyUI and A1111), with the inputs, their sha256 and weights, the method
    and rank recorded in its metadata. Mixing base families is refused (incompatible). Adapters made for a
    custom model (family unknown) are named on that model's own layers: give it with --base.

    Examples:

      lora merge style.safetensors:0.8 subject.safetensors -o combo.safetensors

      lora merge my-style:0.7 my-face:1.0 -o style-face --method svd --rank 32

      lora merge a.safetensors b.safetensors:0.5 --base ./my-custom-model -o ab.safetensors
    """
    from lorahub_cli.merge.job import is_file_output, merge_files
    from lorahub_cli.targets import check_file_output

    if is_file_output(output):   # before any work: only a regular file or a link is replaced, with --force
        check_file_output(output, force=force)
    from registry.api import Registry

    # opening the library is free: a merge of files into a file never touches it
    with Registry(home=run.home) as registry, run.out.progress("merging", total=None, unit="modules") as advance:
        outcome = merge_files(inputs, output, method=method, rank=rank, density=density, dtype=dtype,
                              force=force, progress=lambda n: advance(n), base=base, registry=registry)
    return Result(outcome, lambda out: _render(out, outcome))


def _render(out: Output, outcome) -> None:
    for warning in outcome.warnings:
        out.warn(warning)
    where = f"library entry {outcome.output}" if outcome.in_library else outcome.output
    ranks = "-".join(map(str, (outcome.ranks[0], outcome.ranks[-1]))) if len(outcome.ranks) > 1 else \
        (str(outcome.ranks[0]) if outcome.ranks else "-")
    out.line(f"merged {len(outcome.inputs)} {outcome.family} adapter(s) into {where} "
             f"({outcome.method}, {outcome.n_modules} modules, rank {ranks})")
    rows = [(i.name, f"{i.weight:g}", (i.sha256 or "")[:12], "library" if i.in_library else str(i.path))
            for i in outcome.inputs]
    out.table(["INPUT", "WEIGHT", "SHA256", "FROM"], rows)
    if outcome.truncation:
        t = outcome.truncation
        out.line(f"rank cut: {t['relative_error']:.2%} of the update's norm lost overall, worst layer "
                 f"{t['worst_module']} ({t['worst_relative_error']:.2%})")
    if outcome.sha256:
        out.line(f"sha256 {outcome.sha256}")


def register(app: typer.Typer) -> None:
    app.command("merge")(merge_command)
