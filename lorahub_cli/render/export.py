"""Human views of `lora export` and `lora sync`: one summary line per target, then what needs a look
(collisions, errors, fallbacks, files someone else changed), then, with -v or --dry-run, every path."""

from __future__ import annotations


def render_sync(out, report, title: str = "") -> None:
    verb = "would " if report.dry_run else ""
    head = f"{title}: " if title else ""
    methods = ", ".join(f"{n} {how}" for how, n in sorted(report.methods.items()))
    out.line(f"{head}{report.root}: {verb}add {len(report.added)}, {verb}update {len(report.updated)}, "
             f"{verb}remove {len(report.removed)}, {report.unchanged} unchanged"
             + (f" ({methods})" if methods else ""))
    for line in report.fallbacks:
        out.warn(line)
    for path in report.adopted:
        out.info(f"kept {path}: an interrupted sync had placed it")
    for path in report.released:
        out.warn(f"{path} was changed by someone else: left as it is, and no longer lora's")
    for c in report.collisions:
        out.warn(f"collision: {c['path']} ({c['name']}): {c['reason']}; not overwritten")
    for e in report.errors:
        out.warn(f"{e['path']}: [{e['code']}] {e['message']}")
    if out.verbose or report.dry_run:   # a dry run is there to show the plan
        for label, paths in (("+", report.added), ("~", report.updated), ("-", report.removed)):
            for path in paths:
                out.line(f"  {label} {path}")
    if getattr(report, "embeddings", None) is not None:   # the UI's embeddings folder, its own summary
        render_sync(out, report.embeddings, f"{title} embeddings" if title else "embeddings")
    for s in getattr(report, "skipped", []):
        out.info(f"embedding {s['name']} not placed: {s['reason']}")


def render_syncs(out, reports, comfyui=None) -> None:
    for name, report in reports:
        render_sync(out, report, name)
    if comfyui is not None:
        out.line(f"extra_model_paths.yaml in {comfyui}: stanza 'lorahub' points at {reports[-1][1].root}")
