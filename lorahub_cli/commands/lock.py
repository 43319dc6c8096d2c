"""`lora lock`, `lora install`, `lora export-bundle`: reproducible sets of adapters, named by sha256.

The commands only check flags and call ``lorahub_cli.lock``; reading a recipe (``--from``) happens here, so
that the lock package stays below the pipeline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from lorahub_cli.options import JsonOpt, Run
from lorahub_cli.output import Output, Result, clean

ForceOpt = Annotated[bool, typer.Option("--force", help="Replace an existing output file.")]


def lock_command(
    run: Run,
    names: Annotated[list[str], typer.Argument(help="Library names (or sha256 prefixes) to lock.",
                                               show_default=False)] = [],
    tag: Annotated[list[str], typer.Option("--tag", "-t", help="Lock every adapter with this tag (repeatable: "
                                           "all of them).", show_default=False)] = [],
    from_: Annotated[Optional[Path], typer.Option("--from", help="Lock the adapters, weights and base of a "
                                                  "recipe: a PNG from `lora generate`, or the JSON of "
                                                  "`lora recipe IMAGE --json`.", show_default=False)] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write the lock here (default: "
                                                   "print it).", show_default=False)] = None,
    force: ForceOpt = False,
    json: JsonOpt = False,
) -> Result:
    """Write a lockfile: each adapter's name, sha256 and kind, and where to fetch it again.

    Sources are listed most precise first: a Hub repo, file and commit; a Civitai version id; a URL with its
    ETag; the local path it was added from, only as a last hint. Each entry also records the base model it
    was checked against, and, locked from a recipe, the weight it was used at. The file is TOML with a
    format version: review it, keep it with your project, and run `lora install` on another machine.

    Examples:

      lora lock detail-tweaker anime-style -o lora.lock

      lora lock --tag project-x -o lora.lock

      lora lock --from outputs/00001-1.png -o lora.lock
    """
    from lorahub_cli.errors import UsageError
    from lorahub_cli.lock.build import lock_entries, lock_recipe
    from lorahub_cli.lock.toml import dumps
    from lorahub_cli.targets import check_file_output
    from registry.api import Registry

    if from_ is not None and (names or tag):
        raise UsageError("--from locks a recipe's adapters; give it alone, without names or --tag")
    out_path = check_file_output(output, force=force) if output is not None else None
    with Registry(home=run.home) as registry:
        if from_ is not None:
            recipe = _read_recipe(from_)
            lock = lock_recipe(recipe.adapters, registry, base=recipe.base, base_id=recipe.base_id)
        else:
            lock = lock_entries(registry, names, tag)
    text = dumps(lock)
    if out_path is not None:
        from registry.publish import publish_file

        publish_file(out_path, text)
    data = {**lock.to_dict(), "path": str(out_path) if out_path else None}
    return Result(data, lambda out: _render_lock(out, lock, out_path, text))


def _read_recipe(path: Path):
    """A recipe from a PNG (its lorahub chunk) or from JSON text (`lora recipe --json`), checked the same way."""
    from lorahub_cli.errors import BadRecipe, NotAFile
    from lorahub_cli.pipeline.recipe import Recipe, bounded_json, read_recipe

    if not path.is_file():
        raise NotAFile(f"{path} is not a file")
    with open(path, "rb") as fh:
        head = fh.read(8)
    if head.startswith(b"\x89PNG"):
        return read_recipe(path)
    with open(path, "rb") as fh:
        raw = fh.read((1 << 20) + 1)
    if len(raw) > 1 << 20:
        raise BadRecipe(f"{path} is larger than 1 MiB; a recipe is a small JSON object")
    return Recipe.from_dict(bounded_json(raw.decode("utf-8", errors="replace"), f"the recipe in {path}"))


def _render_lock(out: Output, lock, path: Optional[Path], text: str) -> None:
    if path is None:   # the file itself, unwrapped (a person may redirect it), each line made safe to show
        out.write_text("".join(clean(line) + "\n" for line in text.splitlines()))
        return
    sourceless = [e.name for e in lock.entries if not e.sources]
    out.line(f"locked {len(lock.entries)} adapter(s) in {path}")
    if sourceless:
        out.warn(f"no source recorded for {', '.join(sourceless)}: install finds them only in a library "
                 "that already holds their bytes")


def install_command(
    run: Run,
    lockfile: Annotated[Path, typer.Argument(help="The lockfile (from `lora lock`).", show_default=False)],
    offline: Annotated[bool, typer.Option("--offline", help="Fetch nothing: only check what the library "
                                          "already holds.")] = False,
    verify: Annotated[bool, typer.Option("--verify", help="Re-hash adapters already present (default: a stat "
                                         "and the recorded hashes).")] = False,
    json: JsonOpt = False,
) -> Result:
    """Bring every adapter a lockfile names into the library, fetching what is missing.

    Entries whose sha256 the library holds (under any name) are present; nothing is renamed. The others are
    fetched from their sources in the lock's order, through the same code as `lora pull` (a Hub file by its
    recorded commit: read from your HF cache when it is there, else one download straight into the library),
    checked against the lock's sha256 before anything is stored, and
    named after the lock (made unique if that name is taken). Each entry is reported as present, fetched,
    missing (--offline) or failed with its code; the command exits 1 when any is not there. Running it again
    does nothing more.

    Examples:

      lora install lora.lock

      lora install lora.lock --offline --json

      lora install lora.lock --verify
    """
    from lorahub_cli.lock.install import FAILED, MISSING, install
    from lorahub_cli.lock.toml import read_lock
    from registry.api import Registry

    lock = read_lock(lockfile)
    with Registry(home=run.home) as registry, run.out.progress("installing", total=len(lock.entries)) as advance:
        outcomes = install(lock, registry, offline=offline, verify=verify,
                           on_entry=lambda o: advance(1, description=o.lock_name))
    bad = any(o.status in (FAILED, MISSING) for o in outcomes)
    return Result([o.to_dict() for o in outcomes], lambda out: _render_install(out, outcomes), 1 if bad else 0)


def _render_install(out: Output, outcomes) -> None:
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.status] = counts.get(o.status, 0) + 1
        if o.status == "present":
            if out.verbose:
                out.line(f"present  {o.lock_name}" + (f" (as {o.name})" if o.name != o.lock_name else ""))
            continue
        if o.status == "fetched":
            line = f"fetched  {o.lock_name}" + (f" as {o.name}" if o.name != o.lock_name else "") + f" from {o.source}"
        elif o.status == "missing":
            line = f"missing  {o.lock_name} ({o.sha256[:12]})"
        else:
            line = f"failed   {o.lock_name}: {o.error['code']}: {o.error['message']}"
        out.line(line)
        for w in o.warnings:
            out.warn(f"{o.lock_name}: {w}")
    out.line(", ".join(f"{n} {s}" for s, n in counts.items()) or "the lock names no adapters")


def export_bundle_command(
    run: Run,
    names: Annotated[list[str], typer.Argument(help="Library names (or sha256 prefixes) to pack.",
                                               show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="The tar to write.", show_default=False)],
    force: ForceOpt = False,
    json: JsonOpt = False,
) -> Result:
    """Pack adapters, their sidecars and a lockfile into one tar, for a machine without network.

    The tar holds lora.lock (the entries with their sizes and sources) and, named by sha256, each adapter's
    stored bytes and its A1111 sidecar (trigger words). Read it with `lora add set.tar`, which checks every
    member before storing anything; its lock also works with `lora install` where there is network.

    Examples:

      lora export-bundle detail-tweaker anime-style -o set.tar

      lora add set.tar
    """
    from lorahub_cli.lock.bundle import bundle_entries, write_bundle
    from lorahub_cli.targets import check_file_output
    from registry.api import Registry

    out_path = check_file_output(output, force=force)
    with Registry(home=run.home) as registry:
        entries, lock = bundle_entries(registry, names)
        write_bundle(out_path, entries, lock)
    size = out_path.stat().st_size
    data = {"path": str(out_path), "size": size, "adapters": [e.to_dict() for e in lock.entries]}
    return Result(data, lambda out: out.line(f"wrote {out_path} ({len(entries)} adapter(s), {size} bytes)"))


def register(app: typer.Typer) -> None:
    app.command("lock")(lock_command)
    app.command("install")(install_command)
    app.command("export-bundle")(export_bundle_command)
