"""The adapter library: `lora add / list / show / rm / tag / rename / set / doctor`.

Only typer is imported at start-up; each command imports the registry (and, for `add`, the inspection
engine) when it runs, so `lora list` stays fast and never imports torch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from lorahub_cli.options import AdapterRef, JsonOpt, Run
from lorahub_cli.output import Result

TagOpt = Annotated[list[str], typer.Option("--tag", "-t", help="Tag (repeatable).", show_default=False)]
SORT_HELP = "Sort by name, added, size, rank, family or format."


def add_command(
    run: Run,
    paths: Annotated[list[Path], typer.Argument(help="Adapter files, or folders to add recursively.",
                                                show_default=False)],
    name: Annotated[Optional[str], typer.Option("--name", "-n", help="Name (one file only; default: from the "
                                                "file or folder name, made unique).")] = None,
    tag: TagOpt = [],
    in_place: Annotated[bool, typer.Option("--in-place", help="Register the files where they are (an "
                                           "A1111/ComfyUI models/Lora folder) instead of copying them; a "
                                           "rescan re-hashes only files whose size or mtime changed.")] = False,
    json: JsonOpt = False,
) -> Result:
    """Add adapter files to the library.

    Each file is inspected and stored once by its sha256 (content already in the library is reported as a
    duplicate). Files that cannot be added are listed with their error code, the others still go in, and
    the command exits 1. Pickle checkpoints (.bin/.pt/.ckpt) are read with torch's weights-only loader (never executed),
    stored as bit-verified safetensors, and keep the original file's sha256 as provenance. A set.tar from
    `lora export-bundle` adds the adapters its lock names, with their sidecars; the whole bundle is checked
    (no paths out of it, no links, sizes and sha256 as declared) before the first one is stored.

    Examples:

      lora add my_style.safetensors --name style --tag anime

      lora add ~/ComfyUI/models/loras --in-place

      lora add set.tar
    """
    from lorahub_cli.errors import LoraError, NotFound, UsageError
    from lorahub_cli.inspect import InspectFailure, iter_adapter_files
    from lorahub_cli.render.library import render_add
    from registry.api import Registry
    from registry.names import validate_name, validate_tag

    if name is not None:
        validate_name(name)  # a bad option is one error, not one per file
    for t in tag:
        validate_tag(t)
    from lorahub_cli.lock.bundle import is_bundle

    bundles = [p for p in paths if is_bundle(p)]   # set.tar from `lora export-bundle`: its lock says what
    files = list(iter_adapter_files([p for p in paths if not is_bundle(p)])) if len(bundles) < len(paths) else []
    if name is not None and (len(files) > 1 or bundles):
        raise UsageError(f"--name names one adapter, but {len(files)} files were given",
                         hint="Add them without --name, then `lora rename` them.")
    results, failures = [], []
    with Registry(home=run.home) as registry, run.out.progress("adding", total=len(files)) as advance:
        known = registry.known_files(converted=True) if in_place else {}
        for bundle in bundles:
            try:
                results += _add_bundle(registry, bundle)
            except LoraError as err:
                failures.append(InspectFailure(str(bundle), err))
        for path in files:
            try:
                results.append(_add_one(registry, path, name=name, tags=tag, in_place=in_place, known=known))
            except LoraError as err:
                failures.append(InspectFailure(str(path), err))
            advance(1, description=path.name)
    if not files and not bundles:
        failures.append(InspectFailure(", ".join(map(str, paths)), NotFound("no adapter files found there")))
    data = [r.to_dict() for r in results] + [{"path": f.path, "status": "failed", **f.to_dict()} for f in failures]
    return Result(data, lambda out: render_add(out, results, failures), 1 if failures else 0)


def _add_bundle(registry, bundle: Path) -> list:
    """A bundle's entries as add results: added (named after its lock) or duplicate (already here)."""
    from lorahub_cli.lock.bundle import install_bundle
    from registry.records import AddResult

    return [AddResult(status="added" if o.status == "fetched" else "duplicate", path=f"{bundle}:{o.lock_name}",
                      name=o.name, sha256=o.sha256, warnings=o.warnings) for o in install_bundle(bundle, registry)]


def _add_one(registry, path: Path, *, name, tags, in_place: bool, known):
    from lorahub_cli.errors import NotFound
    from lorahub_cli.export.sidecars import read_sidecar_facts
    from lorahub_cli.ingest import Fact, ingest

    try:
        stat = os.stat(path)  # taken before reading: a change while we read shows on the next scan
    except OSError:
        raise NotFound(f"no such file: {path}") from None
    if in_place:
        skipped = registry.unchanged(path, stat, known)
        if skipped is not None:
            return skipped
    # a UI's sidecars beside the file (A1111 .json, .civitai.info, .cm-info.json, .metadata.json) are facts
    # with their source, ranked below the file's own metadata
    facts, warnings = read_sidecar_facts(path)
    result = ingest(path, registry, name=name, tags=tags, in_place=in_place, stat=stat, with_entry=False,
                    facts=[Fact(*f) for f in facts])
    result.warnings = [*result.warnings, *warnings]
    return result


def list_command(
    run: Run,
    family: Annotated[Optional[str], typer.Option("--family", "-f", help="sd1, sd2, sdxl, sd3, flux, unknown.")] = None,
    format: Annotated[Optional[str], typer.Option("--format", help="kohya, diffusers, peft, lycoris, ...")] = None,
    tag: TagOpt = [],
    base: Annotated[Optional[str], typer.Option("--base", help="Base model id (as shown by `lora show`).")] = None,
    search: Annotated[Optional[str], typer.Option("--search", "-s", help="Text in the name, tags, trigger "
                                                  "words or base model, or a sha256 prefix.")] = None,
    sort: Annotated[str, typer.Option("--sort", help=SORT_HELP)] = "name",
    reverse: Annotated[bool, typer.Option("--reverse", "-r", help="Reverse the order.")] = False,
    base_label: Annotated[Optional[str], typer.Option("--base-label", help="Civitai's base model label (Pony, "
                                                      "Illustrious, SDXL 1.0, ...; any case).")] = None,
    kind: Annotated[Optional[str], typer.Option("--kind", help="lora or embedding (textual inversion).")] = None,
    compatible_with: Annotated[Optional[str], typer.Option(
        "--compatible-with", help="Only adapters that fit this base (alias, local folder, Hub id or a saved "
        "base), judged exactly as `lora check` does.")] = None,
    include_partial: Annotated[bool, typer.Option(
        "--include-partial", help="With --compatible-with: keep partial fits too.")] = False,
    json: JsonOpt = False,
) -> Result:
    """List the adapters in the library (every filter must match; --tag may be repeated).

    Examples:

      lora list --family sdxl --tag style

      lora list --compatible-with sdxl

      lora list --base-label Pony

      lora list --kind embedding

      lora list --sort added -r --json
    """
    from registry.api import Registry

    with Registry(home=run.home) as registry:
        rows = registry.list(family=family, format=format, tags=tag, base=base, search=search, sort=sort,
                             reverse=reverse, label=base_label, kind=kind)
        if compatible_with:
            from lorahub_cli.bases import resolve_base
            from lorahub_cli.compat.filter import compatible_filter  # only this filter reads adapter headers

            rows = compatible_filter(rows, resolve_base(compatible_with, home=run.home),
                                     include_partial=include_partial, registry=registry)
    if json:   # the human view's module is not even imported for JSON
        return Result([r.to_dict() for r in rows])
    from lorahub_cli.render.library import render_list

    return Result(None, lambda out: render_list(out, rows))


def show_command(run: Run, ref: AdapterRef, json: JsonOpt = False) -> Result:
    """Everything known about one adapter: what it is, where its bytes are, where it came from, hashes,
    tags, trigger words, base model, metadata, and which values the user set.

    Examples:

      lora show my-style

      lora show 3f2a9c01 --json
    """
    from lorahub_cli.render.library import render_entry
    from registry.api import Registry

    with Registry(home=run.home) as registry:
        entry = registry.get(ref)
    return Result(entry, lambda out: render_entry(out, entry))


def rm_command(
    run: Run,
    refs: Annotated[list[str], typer.Argument(help="Names or sha256 prefixes.", show_default=False)],
    json: JsonOpt = False,
) -> Result:
    """Remove adapters from the library (all or none). Their stored bytes go when nothing else refers to
    them; files registered in place are never deleted."""
    from lorahub_cli.render.library import render_removed
    from registry.api import Registry

    with Registry(home=run.home) as registry:
        removed = registry.remove(refs)
    return Result([r.to_dict() for r in removed], lambda out: render_removed(out, removed))


def tag_command(
    run: Run,
    ref: AdapterRef,
    changes: Annotated[list[str], typer.Argument(help="+TAG adds, -TAG removes (a bare TAG adds).",
                                                 show_default=False)],
    json: JsonOpt = False,
) -> Result:
    """Add or remove tags: `lora tag NAME +anime -wip`.

    Any -TAG removes that tag, even one starting with h: here help is `--help` only (no `-h`).
    """
    from registry.api import Registry

    add = [c[1:] if c.startswith("+") else c for c in changes if not c.startswith("-")]
    remove = [c[1:] for c in changes if c.startswith("-")]
    with Registry(home=run.home) as registry:
        entry = registry.tag(ref, add=add, remove=remove)
    return _changed(entry, f"{entry.name}: tags {', '.join(entry.tags) or '(none)'}")


def rename_command(
    run: Run,
    ref: AdapterRef,
    new_name: Annotated[str, typer.Argument(help="The new name.", show_default=False)],
    json: JsonOpt = False,
) -> Result:
    """Rename an adapter."""
    from registry.api import Registry

    with Registry(home=run.home) as registry:
        entry = registry.rename(ref, new_name)
    return _changed(entry, f"renamed {ref} -> {entry.name}")


def set_command(
    run: Run,
    ref: AdapterRef,
    base: Annotated[Optional[str], typer.Option("--base", help="Base model id (overrides detection).")] = None,
    family: Annotated[Optional[str], typer.Option("--family", help="Family (overrides detection).")] = None,
    trigger: Annotated[list[str], typer.Option("--trigger", help="Trigger word (repeatable; replaces the "
                                               "detected ones).", show_default=False)] = [],
    label: Annotated[Optional[str], typer.Option("--label", help="Base model label (Pony, Illustrious, ...; "
                                                 "`lora identify` never replaces it).")] = None,
    weight: Annotated[Optional[float], typer.Option("--weight", help="Preferred weight, -10 to 10 (used in "
                                                    "<lora:name:w> and A1111 sidecars).")] = None,
    reset: Annotated[list[str], typer.Option("--reset", help="Drop an override: base, family, trigger, label, "
                                             "weight or all.", show_default=False)] = [],
    json: JsonOpt = False,
) -> Result:
    """Set what detection got wrong or missed; your values win and are shown as set by you.

    Examples:

      lora set my-style --base stabilityai/stable-diffusion-xl-base-1.0 --trigger "mystyle"

      lora set my-style --reset family

      lora set my-style --label Illustrious

      lora set my-style --weight 0.8
    """
    from lorahub_cli.errors import UsageError
    from registry.api import Registry

    aliases = {"base": "base_model", "trigger": "trigger_words", "triggers": "trigger_words",
               "weight": "preferred_weight"}
    resets = [aliases.get(r, r) for r in reset]
    if base is None and family is None and not trigger and label is None and weight is None and not resets:
        raise UsageError("nothing to set", hint="Give --base, --family, --trigger, --label, --weight or --reset.")
    with Registry(home=run.home) as registry:
        entry = registry.set(ref, base_model=base, family=family, trigger_words=trigger or None, reset=resets,
                             label=label, preferred_weight=weight)
    overrides = ", ".join(f"{k}={v}" for k, v in entry.overrides.items()) or "none (detected values)"
    return _changed(entry, f"{entry.name}: user values: {overrides}")


def _changed(entry, message: str) -> Result:
    """The entry as JSON; one line for a person."""
    return Result(entry, lambda out: out.line(message))


def doctor_command(
    run: Run,
    fix: Annotated[bool, typer.Option("--fix", help="Repair what is safe, and say what was done.")] = False,
    no_hash: Annotated[bool, typer.Option("--no-hash", help="Skip re-hashing stored bytes and in-place files "
                                          "(sizes only; fast, but misses bit rot).")] = False,
    empty_quarantine: Annotated[bool, typer.Option("--empty-quarantine", help="Delete the orphan blobs an "
                                                   "earlier --fix moved to the quarantine folder.")] = False,
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Record the stored blobs again in a new database "
                                          "(after the old one was lost or damaged; it is kept beside it).")] = False,
    json: JsonOpt = False,
) -> Result:
    """Check the library: re-verify stored bytes and in-place files against their sha256 (even when their
    size and mtime did not change), find missing in-place files, orphan blobs, stale temp files, leftover
    downloads and records without files. Exits 1 while problems remain. --fix never deletes stored bytes:
    orphans go to $LORAHUB_HOME/quarantine/<date>/ until --empty-quarantine."""
    from lorahub_cli.render.library import render_findings
    from registry.api import Registry

    if fix + empty_quarantine + rebuild > 1:
        from lorahub_cli.errors import UsageError

        raise UsageError("--fix, --empty-quarantine and --rebuild are separate steps: give one")
    if rebuild:
        from lorahub_cli.rebuild import rebuild as rebuild_library
        from lorahub_cli.render.library import render_rebuild

        report = rebuild_library(run.home)
        return Result(report.to_dict(), lambda out: render_rebuild(out, report),
                      1 if any(e.status != "recorded" for e in report.entries) else 0)
    with Registry(home=run.home) as registry:
        if empty_quarantine:
            from lorahub_cli.render.library import render_emptied

            emptied = registry.empty_quarantine()
            return Result([f.to_dict() for f in emptied], lambda out: render_emptied(out, emptied))
        findings = registry.doctor(fix=fix, verify_hashes=not no_hash)
    return Result([f.to_dict() for f in findings], lambda out: render_findings(out, findings, fix=fix),
                  1 if any(not f.fixed for f in findings) else 0)


def register(app: typer.Typer) -> None:
    app.command("add")(add_command)
    app.command("list")(list_command)
    app.command("ls", hidden=True)(list_command)
    app.command("show")(show_command)
    app.command("rm")(rm_command)
    # `-TAG` must reach the command as an argument, not be taken for an unknown option; without `-h`,
    # `-hot` is not read as -h -o -t (help) either
    app.command("tag", context_settings={"ignore_unknown_options": True,
                                         "help_option_names": ["--help"]})(tag_command)
    app.command("rename")(rename_command)
    app.command("set")(set_command)
    app.command("doctor")(doctor_command)
