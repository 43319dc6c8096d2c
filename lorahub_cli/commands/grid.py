"""`lora grid`: a comparison grid on one loaded base (adapters x weights x seeds x prompts, two at a time)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from lorahub_cli.commands.generate import AdapterOpt, BaseOpt, GenDtypeOpt
from lorahub_cli.options import DeviceOpt, JsonOpt, Run
from lorahub_cli.output import Result

AXIS_HELP = "adapters, weights, seeds or prompts"


def grid_command(
    run: Run,
    base: BaseOpt = None,
    adapter: AdapterOpt = [],  # noqa: B006 - typer needs a literal default
    weights: Annotated[Optional[str], typer.Option("--weights", "-w", help="Comma-separated weights, e.g. "
                                                   "0,0.5,1 (0 is the bare base).", show_default=False)] = None,
    seeds: Annotated[str, typer.Option("--seeds", help="Comma-separated seeds.")] = "1",
    prompt: Annotated[list[str], typer.Option("--prompt", "-p", help="The prompt; repeat for a prompts axis.",
                                              show_default=False)] = [],  # noqa: B006
    rows: Annotated[Optional[str], typer.Option("--rows", help=f"Row axis: {AXIS_HELP} [default: the first "
                                                "that varies].", show_default=False)] = None,
    cols: Annotated[Optional[str], typer.Option("--cols", help=f"Column axis: {AXIS_HELP} [default: the next "
                                                "that varies].", show_default=False)] = None,
    negative: Annotated[Optional[str], typer.Option("--negative", "-n", help="Negative prompt.",
                                                    show_default=False)] = None,
    steps: Annotated[Optional[int], typer.Option("--steps", help="Denoising steps [default: 25].",
                                                 show_default=False)] = None,
    guidance: Annotated[Optional[float], typer.Option("--guidance", "-g", help="CFG scale [default: 7.5].",
                                                      show_default=False)] = None,
    size: Annotated[Optional[str], typer.Option("--size", help="WIDTHxHEIGHT of each cell [default: the "
                                                "base's size].", show_default=False)] = None,
    scheduler: Annotated[Optional[str], typer.Option("--scheduler", help="As for `lora generate` [default: dpm, flow-euler on Flux/SD3].",
                                                     show_default=False)] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="The grid PNG; GRID.json, GRID.html and "
                                         "GRID-cells/ are written beside it.")] = Path("grid.png"),
    force: Annotated[bool, typer.Option("--force", help="Replace an existing grid and its files.")] = False,
    device: DeviceOpt = "auto",
    dtype: GenDtypeOpt = None,
    json: JsonOpt = False,
) -> Result:
    """Generate a labelled grid of images along two axes among adapters, weights, seeds and prompts.

    The base is loaded once; each cell switches the adapter set by the exact undo (cells that share a set are
    made together). On the adapters axis each cell has one adapter (at the cell's weight, else its own
    NAME:W); when --rows and --cols name two other axes, all adapters are stacked in every cell. Every cell is also saved as a PNG with its recipe in
    GRID-cells/ (`lora generate --from` makes any cell again); GRID.json lists each cell's file and recipe,
    and GRID.html is a contact sheet where clicking a cell shows its recipe.

    Examples:

      lora grid --base sd15 -a style -a face --weights 0,0.5,1 --prompt "a portrait" -o grid.png

      lora grid --base sdxl -a style --seeds 1,2,3 -p "a cat" -p "a dog" --rows prompts --cols seeds
    """
    from lorahub_cli.errors import UsageError
    from lorahub_cli.pipeline.grid import GridSpec, plan
    from lorahub_cli.pipeline.schedulers import scheduler_spec
    from lorahub_cli.targets import check_file_output, check_folder_output
    from lorahub_cli.values import check_guidance, check_seed, check_steps, finite_weight, parse_size

    if not base:
        raise UsageError("give --base")
    if scheduler is not None:
        scheduler_spec(scheduler)
    if steps is not None:
        check_steps(steps)
    if guidance is not None:
        check_guidance(guidance)
    spec = GridSpec(base=base, adapters=list(adapter), weights=[finite_weight("--weights", _number(w, float))
                                                                 for w in _split(weights)],
                    seeds=[check_seed(_number(s, int)) for s in _split(seeds)], prompts=list(prompt), rows=rows,
                    cols=cols, negative_prompt=negative or "", steps=steps, guidance=guidance,
                    size=parse_size(size) if size else (None, None), scheduler=scheduler, device=device,
                    dtype=dtype or "auto")
    _rows, _cols, cells = plan(spec)       # every usage error before the model loads
    if output.suffix.lower() != ".png":
        raise UsageError(f"-o {output}: the grid is a .png file")
    out = check_file_output(output, force=force)
    for sibling in (out.with_suffix(".json"), out.with_suffix(".html")):
        check_file_output(sibling, force=force)
    cells_dir = out.with_name(out.stem + "-cells")
    check_folder_output(cells_dir)
    if cells_dir.exists() and any(cells_dir.iterdir()) and not force:
        from lorahub_cli.errors import AlreadyExists

        raise AlreadyExists(f"{cells_dir} already holds cells of another grid", hint="Pass --force to replace "
                            "them, or pick another -o.")
    from lorahub_cli.pipeline import Library
    from lorahub_cli.pipeline.grid import make_grid
    from lorahub_cli.render.generate import quiet_libraries

    quiet_libraries()
    with Library(home=run.home) as lib, run.out.progress("grid", total=len(cells), unit="cells") as advance:
        result = make_grid(lib, spec, out, force=force, advance=advance)
    for warning in result.warnings:
        run.out.warn(warning)
    return Result(result, lambda o: o.line(f"wrote {result.image} ({len(result.rows['labels'])} x "
                                            f"{len(result.cols['labels'])} cells in {result.seconds:.1f} s); "
                                            f"recipes: {result.sidecar}, contact sheet: {result.sheet}"))


def _split(text: Optional[str]) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def _number(text: str, kind: type):
    from lorahub_cli.errors import UsageError

    try:
        return kind(text)
    except ValueError:
        raise UsageError(f"{text!r} is not a {'whole ' if kind is int else ''}number") from None


def register(app: typer.Typer) -> None:
    app.command("grid")(grid_command)
