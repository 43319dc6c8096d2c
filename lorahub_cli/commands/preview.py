"""`lora preview`: one preview image per adapter, made on one loaded base and stored with the entry."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from lorahub_cli.commands.generate import BaseOpt, GenDtypeOpt
from lorahub_cli.options import DeviceOpt, JsonOpt, Run
from lorahub_cli.output import Result


def preview_command(
    run: Run,
    names: Annotated[list[str], typer.Argument(help="Library names or sha256 prefixes.", show_default=False)],
    base: BaseOpt = None,
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="Prompt template: {triggers} becomes the "
                                        "adapter's trigger words (else its name), {name} its name.")]
    = "{triggers}, a detailed picture",
    seed: Annotated[int, typer.Option("--seed", help="The fixed seed of every preview.")] = 1234,
    weight: Annotated[float, typer.Option("--weight", "-w", help="The adapter's weight.")] = 1.0,
    steps: Annotated[Optional[int], typer.Option("--steps", help="Denoising steps [default: 25].",
                                                 show_default=False)] = None,
    size: Annotated[Optional[int], typer.Option("--size", help="Square side in pixels [default: the base's].",
                                                show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="Make a preview even for entries that have one.")] = False,
    device: DeviceOpt = "auto",
    dtype: GenDtypeOpt = None,
    json: JsonOpt = False,
) -> Result:
    """Make a preview image for each adapter: its trigger words in the prompt, a fixed seed, the recipe
    embedded (`lora generate --from` makes it again).

    The base is loaded once for all names; each adapter is merged in and undone exactly before the next.
    Images are stored by content with the entry (`lora show` lists them, `lora serve` shows them). Entries
    that already have a preview (made here, or from Civitai) are skipped unless --force. Exit 1 if any failed.

    Examples:

      lora preview my-style other-style --base sd15

      lora preview my-style --base sdxl --prompt "{triggers}, portrait photo" --seed 7 --force
    """
    from lorahub_cli.errors import UsageError
    from lorahub_cli.values import check_seed, check_side, check_steps, finite_weight

    if not base:
        raise UsageError("give --base")
    check_seed(seed)
    finite_weight("--weight", weight)
    if steps is not None:
        check_steps(steps)
    if size is not None:
        check_side(size)
    from lorahub_cli.pipeline import Library
    from lorahub_cli.pipeline.preview import make_previews
    from lorahub_cli.render.generate import quiet_libraries

    quiet_libraries()
    from lorahub_cli.errors import NotFound
    from lorahub_cli.resolve import resolve

    with Library(home=run.home) as lib:
        entries = []
        for name in names:   # every name resolved before the base loads
            handle = resolve(name, lib.registry, need_bytes=False)
            if handle.entry is None:
                raise NotFound(f"{name} is a file outside the library: a preview is stored with a library entry",
                               hint=f"Add it first: `lora add {name}`.")
            entries.append(handle.entry.name)
        with run.out.progress("previews", total=len(entries), unit="adapters") as advance:
            outcomes = make_previews(lib, entries, base, force=force, prompt=prompt, seed=seed, steps=steps,
                                     size=size, weight=weight, device=device, dtype=dtype or "auto",
                                     advance=advance)
    failed = [o for o in outcomes if o.status == "failed"]
    return Result([o.to_dict() for o in outcomes], lambda out: _render(out, outcomes), 1 if failed else 0)


def _render(out, outcomes) -> None:
    rows = [(o.status, o.name, o.path or (f"[{o.error['code']}] {o.error['message']}" if o.error else ""))
            for o in outcomes]
    out.table(["STATUS", "ADAPTER", "PREVIEW"], rows)
    for o in outcomes:
        for w in o.warnings:
            out.warn(f"{o.name}: {w}")


def register(app: typer.Typer) -> None:
    app.command("preview")(preview_command)
