"""Human rendering of a rank reduction (`lora resize`, `lora convert --rank/--sv-*`): one row per layer."""

from __future__ import annotations

from typing import Any, Optional

from lorahub_cli.output import Output, human_size


def render_layers(out: Output, resize: dict[str, Any], *, before: Optional[int] = None,
                  after: Optional[int] = None) -> None:
    """The criterion, a table of rank before -> after and the error left per layer, and the sizes."""
    layers = resize["layers"]
    out.table(("module", "rank", "kept", "error left", "rel. error"),
              [(r["module"], f"{r['rank_before']} -> {r['rank_after']}", f"{r['fro_retained']:.1%}",
                f"{r['error']:.3g}", f"{r['rel_error']:.2%}") for r in layers],
              title=f"{len(layers)} layers, {resize['criterion']}")
    if layers:
        worst = max(layers, key=lambda r: r["rel_error"])
        out.line(f"  largest relative error left: {worst['rel_error']:.2%} ({worst['module']})")
    if before is not None and after is not None:
        out.line(f"  size: {human_size(before)} -> {human_size(after)}")
