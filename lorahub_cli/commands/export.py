"""Live beside the UIs: `lora export`, `lora sync` and `lora target add / list / rm`.

Only typer is imported at start-up; the export engine and the registry load when a command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from lorahub_cli.options import JsonOpt, Run
from lorahub_cli.output import Result

LayoutOpt = Annotated[str, typer.Option("--layout", help="Path of each file inside the folder; fields {name}, "
                                        "{family}, {label}, {tag}, {format}, {network}, {sha8}.")]
LinkOpt = Annotated[str, typer.Option("--link", help="auto (hardlink, then symlink, then copy, saying which), "
                                      "hardlink, symlink or copy.")]
SidecarsOpt = Annotated[bool, typer.Option("--sidecars/--no-sidecars", help="Write beside each file A1111's "
                                           "<stem>.json (trigger words as activation text, sd version), "
                                           "<stem>.civitai.info where Civitai's answer is known and "
                                           "<stem>.preview.<ext> where the entry has a preview.")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Show the plan; change nothing.")]
FamilyOpt = Annotated[Optional[str], typer.Option("--family", "-f", help="Only this family (sd1, sdxl, ...).")]
TagOpt = Annotated[list[str], typer.Option("--tag", "-t", help="Only entries with this tag (repeatable).",
                                           show_default=False)]
SearchOpt = Annotated[Optional[str], typer.Option("--search", "-s", help="Only entries matching this text.")]
EmbeddingsToOpt = Annotated[Optional[Path], typer.Option(
    "--embeddings-to", help="Where embeddings go (default: the UI's embeddings folder beside --to: ComfyUI "
    "models/embeddings, A1111/Forge <webui>/embeddings, SwarmUI Models/Embeddings).", show_default=False)]
DEFAULT_LAYOUT = "{family}/{name}"


def export_command(
    run: Run,
    to: Annotated[Path, typer.Option("--to", help="The folder to export into (a UI's LoRA folder).",
                                     show_default=False)],
    refs: Annotated[Optional[list[str]], typer.Argument(help="Library names or sha256 prefixes (none: every "
                                                        "entry the filters match).", show_default=False)] = None,
    layout: LayoutOpt = DEFAULT_LAYOUT,
    link: LinkOpt = "auto",
    sidecars: SidecarsOpt = True,
    family: FamilyOpt = None,
    tag: TagOpt = [],
    search: SearchOpt = None,
    embeddings_to: EmbeddingsToOpt = None,
    dry_run: DryRunOpt = False,
    json: JsonOpt = False,
) -> Result:
    """Put library adapters into a folder under human names, with their sidecars; embeddings into the UI's
    embeddings folder.

    Files are hard links to the library's bytes where possible (no space used), else symlinks, else copies; a
    fallback is said aloud. A file lora did not make is never overwritten: it is reported as a collision and
    the command exits 1. What lora placed is recorded in the folder's .lorahub-sync.json.

    Examples:

      lora export style ink --to ~/ComfyUI/models/loras

      lora export --family sdxl --to ~/webui/models/Lora --layout "{label}/{name}"

      lora export style --to /mnt/share/loras --link copy --dry-run
    """
    from lorahub_cli.export.api import export
    from lorahub_cli.render.export import render_sync
    from registry.api import Registry

    with Registry(home=run.home) as registry:
        report = export(registry, refs or [], to, layout=layout, link=link, sidecars=sidecars, dry_run=dry_run,
                        family=family, tags=tag, search=search, embeddings_to=embeddings_to)
    return Result(report.to_dict(), lambda out: render_sync(out, report), 0 if report.ok else 1)


def sync_command(
    run: Run,
    names: Annotated[Optional[list[str]], typer.Argument(help="Targets to sync (none: every target; see "
                                                         "`lora target list`).", show_default=False)] = None,
    to: Annotated[Optional[Path], typer.Option("--to", help="Sync this folder instead of a named target "
                                               "(with the filters given here).")] = None,
    layout: LayoutOpt = DEFAULT_LAYOUT,
    link: LinkOpt = "auto",
    sidecars: SidecarsOpt = True,
    family: FamilyOpt = None,
    tag: TagOpt = [],
    search: SearchOpt = None,
    comfyui: Annotated[Optional[Path], typer.Option("--comfyui-config", help="Also write or update a 'lorahub' "
                                                    "stanza in this ComfyUI folder's extra_model_paths.yaml, so "
                                                    "ComfyUI reads the synced folder in place.")] = None,
    embeddings_to: EmbeddingsToOpt = None,
    dry_run: DryRunOpt = False,
    json: JsonOpt = False,
) -> Result:
    """Keep UI folders in step with the library: add what is new, update what changed, remove what lora put
    there that is no longer wanted.

    Idempotent: with nothing changed it writes nothing. It removes only files it placed (recorded in the
    folder's .lorahub-sync.json, and unchanged since); a file it did not make is never touched, and one in
    the way is reported as a collision (exit 1). A sync that was killed is completed by the next one.

    Examples:

      lora target add comfy ~/ComfyUI --kind comfyui && lora sync comfy

      lora sync --dry-run

      lora sync --to ~/lora-tree --family sdxl --comfyui-config ~/ComfyUI
    """
    from lorahub_cli.errors import UsageError
    from lorahub_cli.export import targets as saved
    from lorahub_cli.export.api import sync
    from lorahub_cli.render.export import render_syncs
    from registry.api import Registry

    if to is not None and names:
        raise UsageError("give target names or --to, not both")
    reports = []
    with Registry(home=run.home) as registry:
        if to is not None:
            jobs = [("--to", dict(to=to, layout=layout, link=link, sidecars=sidecars, family=family, tags=tag,
                                  search=search, embeddings_to=embeddings_to))]
        else:
            known = saved.load(registry.home)
            chosen = [saved.get(registry.home, n) for n in names] if names else list(known.values())
            if not chosen:
                raise UsageError("no sync targets yet", hint="Add one with `lora target add comfy ~/ComfyUI "
                                 "--kind comfyui`, or pass --to DIR.")
            jobs = [(t.name, dict(to=Path(t.folder), layout=t.layout, link=t.link, sidecars=t.sidecars,
                                  family=t.family, tags=t.tags, search=t.search, target=t.name,
                                  anchor=Path(t.root), kind=t.kind)) for t in chosen]
        for name, kwargs in jobs:
            report = sync(registry, dry_run=dry_run, **kwargs)
            reports.append((name, report))
    data = [{"target": name, **report.to_dict()} for name, report in reports]
    if comfyui is not None:
        from lorahub_cli.export.comfy import write_stanza

        last = reports[-1][1]
        yaml_path = write_stanza(comfyui, Path(last.root), dry_run=dry_run,
                                 embeddings=Path(last.embeddings.root) if last.embeddings is not None else None)
        for row in data:
            row["extra_model_paths"] = str(yaml_path)
    ok = all(r.ok for _, r in reports)
    return Result(data, lambda out: render_syncs(out, reports, comfyui), 0 if ok else 1)


def target_add_command(
    run: Run,
    name: Annotated[str, typer.Argument(help="A name for the target.", show_default=False)],
    folder: Annotated[Path, typer.Argument(help="The UI's folder (or its LoRA folder).", show_default=False)],
    kind: Annotated[str, typer.Option("--kind", help="comfyui, a1111, forge, invokeai, swarmui or plain.")] = "plain",
    layout: LayoutOpt = DEFAULT_LAYOUT,
    link: LinkOpt = "auto",
    sidecars: SidecarsOpt = True,
    family: FamilyOpt = None,
    tag: TagOpt = [],
    search: SearchOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a target of the same name.")] = False,
    json: JsonOpt = False,
) -> Result:
    """Name a UI folder once, with what goes there; `lora sync NAME` then keeps it in step.

    For a UI kind, its LoRA folder under FOLDER is used (ComfyUI models/loras, A1111/Forge models/Lora,
    SwarmUI Models/Lora) when FOLDER is that UI's folder; otherwise FOLDER itself.

    Examples:

      lora target add comfy ~/ComfyUI --kind comfyui

      lora target add forge-xl ~/forge --kind forge --family sdxl --layout "{label}/{name}"
    """
    from lorahub_cli.export import targets as saved
    from registry.home import home_dir

    home = run.home or home_dir()
    target = saved.add(home, saved.make_target(name, folder, kind=kind, layout=layout, link=link,
                                               sidecars=sidecars, family=family, tags=tag, search=search),
                       replace=force)
    return Result(target.to_dict(), lambda out: out.line(f"target {target.name} ({target.kind}): {target.folder}"))


def target_list_command(run: Run, json: JsonOpt = False) -> Result:
    """The sync targets, with their folders and filters."""
    from lorahub_cli.export import targets as saved
    from registry.home import home_dir

    rows = list(saved.load(run.home or home_dir()).values())
    return Result([t.to_dict() for t in rows], lambda out: out.table(
        ["name", "kind", "folder", "layout", "link", "filter"],
        [[t.name, t.kind, t.folder, t.layout, t.link, _filter_text(t)] for t in rows]))


def target_rm_command(
    run: Run,
    name: Annotated[str, typer.Argument(help="The target to forget.", show_default=False)],
    json: JsonOpt = False,
) -> Result:
    """Forget a sync target. Its folder keeps every file, and its manifest (a later sync there knows them)."""
    from lorahub_cli.export import targets as saved
    from registry.home import home_dir

    gone = saved.remove(run.home or home_dir(), name)
    return Result(gone.to_dict(), lambda out: out.line(f"forgot target {gone.name}; {gone.folder} is unchanged"))


def _filter_text(t) -> str:
    parts = [f"family={t.family}"] if t.family else []
    parts += [f"tag={x}" for x in t.tags] + ([f"search={t.search}"] if t.search else [])
    return " ".join(parts) or "(all)"


def register(app: typer.Typer) -> None:
    app.command("export")(export_command)
    app.command("sync")(sync_command)
    target = typer.Typer(name="target", help="Name UI folders for `lora sync`.", no_args_is_help=True)
    target.command("add")(target_add_command)
    target.command("list")(target_list_command)
    target.command("rm")(target_rm_command)
    app.add_typer(target)
