"""Human rendering of `lora inspect` results: one compact panel per adapter, one line per failure."""

from __future__ import annotations

from typing import Iterable, Union

from lorahub_cli.inspect import InspectFailure
from lorahub_cli.inspect.model import AdapterReport
from lorahub_cli.output import Output, clean, human_size


def render_reports(out: Output, results: Iterable[Union[AdapterReport, InspectFailure]]) -> None:
    results = list(results)
    for result in results:
        if isinstance(result, InspectFailure):
            _render_failure(out, result)
        elif getattr(result, "kind", None) == "checkpoint":
            _render_report(out, result, _checkpoint_rows(result))
        else:
            _render_report(out, result)
    failures = sum(isinstance(r, InspectFailure) for r in results)
    if len(results) > 1:
        checkpoints = sum(getattr(r, "kind", None) == "checkpoint" for r in results)
        out.info(f"{len(results)} files: {len(results) - failures - checkpoints} adapters"
                 + (f", {checkpoints} base checkpoints" if checkpoints else "") + f", {failures} rejected")
    elif not results:
        out.warn("no adapter files found (looked for .safetensors, .bin, .pt, .pth, .ckpt)")


def _rows(r: AdapterReport) -> list[tuple[str, str]]:
    ranks = ", ".join(map(str, r.ranks)) if len(r.ranks) > 1 else (str(r.rank) if r.rank is not None else "?")
    rows = [
        ("format", f"{r.format} ({r.network}), {r.container}"),
        ("family", f"{r.family}: {r.family_evidence}"),
        ("components", ", ".join(r.components) or "-"),
        ("rank", ranks + (f"   alpha {r.alpha:g}" if r.alpha is not None else "")) if r.kind != "embedding"
        else ("embedding", f"{r.vectors} vector(s), width {' + '.join(map(str, r.widths))}"),   # no rank
        ("tensors", f"{r.n_tensors} in {r.n_modules} modules, {r.dtype or '?'}, {human_size(r.size)}"),
    ]
    if r.tokens:
        rows.append(("tokens", ", ".join(r.tokens)))
    if r.base_model:
        rows.append(("base model", f"{r.base_model}  [{r.base_model_source}]"))
    if r.trigger_words:
        rows.append(("triggers", ", ".join(r.trigger_words)))
    if r.license:
        rows.append(("license", r.license))
    if r.sha256:
        rows.append(("sha256", f"{r.sha256}  (AutoV2 {r.autov2.upper()})"))
    if r.tensor_sha256:
        rows.append(("tensor sha256", r.tensor_sha256))
    if r.metadata:
        keys = sorted(r.metadata)
        shown = ", ".join(keys[:6]) + (f", ... (+{len(keys) - 6})" if len(keys) > 6 else "")
        rows.append(("metadata", shown))
    return rows


def _checkpoint_rows(r) -> list[tuple[str, str]]:
    """A base checkpoint (``kind: checkpoint``): what it is, its variants and which components it holds."""
    rows = [
        ("kind", f"base checkpoint ({r.architecture}), {r.container}"),
        ("family", f"{r.family}: {r.family_evidence}"),
        ("variants", ", ".join(r.variants) or "-"),
        ("components", ", ".join(r.components)),
        ("tensors", f"{r.n_tensors}, {r.dtype or '?'}, {human_size(r.size)}"),
    ]
    if r.sha256:
        rows.append(("sha256", f"{r.sha256}  (AutoV2 {r.autov2.upper()})"))
    return rows


def _render_report(out: Output, r: AdapterReport, rows: list[tuple[str, str]] | None = None) -> None:
    from rich.table import Table
    from rich.text import Text

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold cyan", no_wrap=True)
    grid.add_column(overflow="fold")
    for label, value in rows if rows is not None else _rows(r):
        grid.add_row(label, Text(clean(value)))
    for warning in r.warnings:
        grid.add_row(Text("warning", style="yellow bold"), Text(clean(warning), style="yellow"))
    out.print(Text(clean(r.path), style="bold"))
    out.print(grid)
    out.print("")


def _render_failure(out: Output, f: InspectFailure) -> None:
    from rich.text import Text

    line = Text(clean(f.path), style="bold") + Text(f"  {f.error.code}: ", style="red bold") + Text(clean(f.error.message))
    out.print(line)
    if f.error.hint:
        out.print(Text("  hint: ", style="dim") + Text(clean(f.error.hint), style="dim"))
    out.print("")
