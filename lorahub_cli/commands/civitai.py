"""`lora identify`, `lora outdated` and `lora update`: library entries looked up on Civitai (and the Hub)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from lorahub_cli.options import JsonOpt, Run
from lorahub_cli.output import Output, Result, human_size


def identify_command(
    run: Run,
    names: Annotated[Optional[list[str]], typer.Argument(help="Library names or sha256 prefixes (or --all).",
                                                        show_default=False)] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every entry in the library.")] = False,
    refresh: Annotated[bool, typer.Option("--refresh", help="Ask Civitai again, even where a cached answer "
                                          "is still fresh.")] = False,
    offline: Annotated[bool, typer.Option("--offline", help="Ask nothing: use cached answers only.")] = False,
    previews: Annotated[bool, typer.Option("--previews/--no-previews", help="Save a preview image of each "
                                           "identified entry that has none.")] = True,
    details: Annotated[bool, typer.Option("--details", help="Also fetch each found model (one request per "
                                          "model, cached) for its permissions (as the license), description "
                                          "and tags.")] = False,
    json: JsonOpt = False,
) -> Result:
    """Look entries up on Civitai by hash and record what it knows.

    Tries AutoV3 (the tensor data's hash, as A1111 and Civitai compute it), then AutoV2, then the full sha256,
    then the sha256 of the original pickle that `add` converted, in batches of 100 hashes per request. Found:
    the model and version ids and names, the base model label (Pony, Illustrious, ...), trained words as
    trigger words and a preview; a value you set yourself is never replaced. Answers, "not found" included,
    are cached in the library (found for 7 days, not found for 1) so a second run asks nothing. The token in
    CIVITAI_API_TOKEN is sent to CIVITAI_ENDPOINT (default https://civitai.com) only. Exits 1 when no entry
    was identified.

    Examples:

      lora identify my-style

      lora identify --all

      lora identify --all --offline --json

      lora identify my-style --details
    """
    from lorahub_cli.errors import UsageError
    from lorahub_cli.sources.civitai_identify import identify
    from registry.api import Registry

    if bool(names) == all_:
        raise UsageError("give entry names, or --all (not both)", hint="e.g. `lora identify --all`")
    if refresh and offline:
        raise UsageError("--refresh asks Civitai again; --offline asks nothing: choose one")
    with Registry(home=run.home) as registry:
        refs = names if names else [r.name for r in registry.list()]
        entries = [registry.get(ref) for ref in refs]
        api = _api(run, registry)
        results = identify(registry, entries, api=api, refresh=refresh, offline=offline, previews=previews,
                           details=details)
    ok = any(r.status == "identified" for r in results) or not results
    return Result([r.to_dict() for r in results], lambda out: _render_identified(out, results), 0 if ok else 1)


def _api(run: Run, registry):
    """The Civitai client (token from CIVITAI_API_TOKEN or the home's config.toml); a warning about that file
    is said at once, on stderr."""
    from lorahub_cli.sources.civitai_api import CivitaiApi

    api = CivitaiApi.current(registry.home)
    for warning in api.warnings:
        run.out.warn(warning)
    return api


def _render_identified(out: Output, results) -> None:
    if not results:
        out.info("the library is empty: nothing to identify")
        return
    rows = [(r.name, r.status, r.matched_by or "", f"{r.model_name or ''} / {r.version_name or ''}"
             if r.status == "identified" else "", r.label or "",
             f"civitai:{r.model_id}@{r.version_id}" if r.model_id else "") for r in results]
    out.table(["NAME", "STATUS", "BY", "CIVITAI MODEL / VERSION", "LABEL", "REF"], rows)
    found = sum(r.status == "identified" for r in results)
    cached = sum(r.cached for r in results)
    out.info(f"{found} of {len(results)} identified" + (f" ({cached} from the cache)" if cached else ""))


def outdated_command(
    run: Run,
    names: Annotated[Optional[list[str]], typer.Argument(help="Only these entries (default: all).",
                                                        show_default=False)] = None,
    hub: Annotated[bool, typer.Option("--hub/--no-hub", help="Check entries pulled from the Hub too.")] = True,
    json: JsonOpt = False,
) -> Result:
    """List entries with a newer Civitai version or a newer Hub revision.

    One request per Civitai model (entries pulled from Civitai or identified with `lora identify`) and one
    per Hub repo file. A version already in the library does not count. Exits 1 when something is
    outdated, 3 when something could not be checked.

    Examples:

      lora outdated

      lora outdated my-style --json
    """
    from lorahub_cli.sources.civitai_updates import outdated
    from registry.api import Registry

    with Registry(home=run.home) as registry:
        wanted = {registry.get(n).name for n in names} if names else None
        found, failed = outdated(registry, api=_api(run, registry), hub=hub, names=wanted)
    data = [f.to_dict() for f in found] + [{"status": "unchecked", **u.to_dict()} for u in failed]
    code = 3 if failed else (1 if found else 0)
    return Result(data, lambda out: _render_outdated(out, found, failed), code)


def _render_outdated(out: Output, found, failed) -> None:
    if found:
        out.table(["NAME", "SOURCE", "HAVE", "NEWEST", "UPDATE WITH"],
                  [(f.name, f.source, f.current[:12], (f.newest_name + " " if f.newest_name else "") + f.newest[:12],
                    f"lora update {f.name}") for f in found])
    for u in failed:
        out.warn(f"{u.name}: could not check ({u.error.code}): {u.error.message}")
    if not found and not failed:
        out.info("everything is up to date")


def update_command(
    run: Run,
    name: Annotated[str, typer.Argument(help="The library entry to update.", show_default=False)],
    move_tags: Annotated[bool, typer.Option("--move-tags", help="Move your tags from the old entry to the "
                                            "new one.")] = False,
    move_overrides: Annotated[bool, typer.Option("--move-overrides", help="Move what you set with `lora set` "
                                                 "(base model, family, trigger words) to the new entry.")] = False,
    json: JsonOpt = False,
) -> Result:
    """Pull the newest Civitai version (or Hub revision) of an entry as a new entry.

    The new entry's previous_version is the old one, which stays in the library untouched unless
    --move-tags / --move-overrides move your own tags and settings over.

    Examples:

      lora update my-style

      lora update my-style --move-tags --move-overrides --json
    """
    from lorahub_cli.sources.civitai_updates import update
    from registry.api import Registry

    with Registry(home=run.home) as registry, \
            run.out.progress(f"updating {name}", total=None, unit="bytes") as advance:
        seen = [0]

        def progress(done: int, total: Optional[int]) -> None:
            advance(done - seen[0], description=f"downloading {human_size(done)} / {human_size(total) or '?'}")
            seen[0] = done

        result = update(registry, name, move_tags=move_tags, move_overrides=move_overrides, progress=progress)
    return Result(result, lambda out: _render_update(out, name, result))


def _render_update(out: Output, name: str, result) -> None:
    if result.status == "unchanged":
        out.line(f"{name} is up to date (the newest is in the library as {result.name})")
        return
    for warning in result.warnings:
        out.warn(warning)
    out.line(f"pulled {result.name} ({human_size(result.size)}, sha256 {(result.sha256 or '')[:12]}), "
             f"a newer version of {result.previous_version or name}; {name} is kept")


def register(app: typer.Typer) -> None:
    app.command("identify")(identify_command)
    app.command("outdated")(outdated_command)
    app.command("update")(update_command)
