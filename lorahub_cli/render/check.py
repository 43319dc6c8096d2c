"""Human output of `lora check` and `lora base`: one block per adapter, one line per failure."""

from __future__ import annotations

from typing import Sequence, Union

from lorahub_cli.compat.model import COMPATIBLE, PARTIAL, CheckFailure, CheckResult
from lorahub_cli.output import Output, clean

SHOWN_UNMATCHED = 5
_STYLE = {COMPATIBLE: "green bold", PARTIAL: "yellow bold"}


def render_checks(out: Output, results: Sequence[Union[CheckResult, CheckFailure]], base_label: str) -> None:
    for result in results:
        if isinstance(result, CheckFailure):
            _render_failure(out, result)
        else:
            _render_result(out, result)
    if len(results) > 1:
        counts: dict[str, int] = {}
        for r in results:
            key = r.verdict if isinstance(r, CheckResult) else "not checked"
            counts[key] = counts.get(key, 0) + 1
        out.info(f"{len(results)} adapters against {base_label}: "
                + ", ".join(f"{n} {verdict}" for verdict, n in counts.items()))


def _render_result(out: Output, r: CheckResult) -> None:
    from rich.table import Table
    from rich.text import Text

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold cyan", no_wrap=True)
    grid.add_column(overflow="fold")
    grid.add_row("verdict", Text(r.verdict, style=_STYLE.get(r.verdict, "red bold")) + Text(f"  {clean(r.summary)}"))
    fam = r.family
    relation = {True: "same family", False: "different families", None: "cannot compare"}[fam.match]
    evidence = f" ({fam.adapter_evidence})" if fam.adapter_evidence else ""
    grid.add_row("family", Text(clean(f"adapter {fam.adapter}{evidence}; base {fam.base}: {relation}")))
    coverage = ", ".join(f"{c} {v.matched}/{v.total}" for c, v in r.per_component.items()) or "-"
    grid.add_row("coverage", Text(f"{r.matched}/{r.total} modules apply: {coverage}"))
    for u in _examples(r.unmatched):
        grid.add_row("unmatched", Text(clean(f"{u.key}: {u.reason}, {u.detail}")))
    if len(r.unmatched) > SHOWN_UNMATCHED:
        counts = ", ".join(f"{n} {reason}" for reason, n in r.reason_counts().items())
        grid.add_row("", Text(f"... {len(r.unmatched) - SHOWN_UNMATCHED} more (in all: {counts}); "
                              "--json counts them by reason"))
    for note in r.notes:
        grid.add_row("note", Text(clean(note)))
    out.print(Text(clean(r.adapter), style="bold") + Text(clean(f"  on {r.base}")))
    out.print(grid)
    out.print("")


def _examples(unmatched: Sequence) -> list:
    """The first unmatched module of each reason, then the next ones, up to SHOWN_UNMATCHED."""
    firsts: dict[str, object] = {}
    for u in unmatched:
        firsts.setdefault(u.reason, u)
    shown = list(firsts.values())[:SHOWN_UNMATCHED]
    shown += [u for u in unmatched if u not in shown][:SHOWN_UNMATCHED - len(shown)]
    return shown


def _render_failure(out: Output, f: CheckFailure) -> None:
    from rich.text import Text

    out.print(Text(clean(f.adapter), style="bold") + Text(f"  {f.error.code}: ", style="red bold")
              + Text(clean(f.error.message)))
    if f.error.hint:
        out.print(Text("  hint: ", style="dim") + Text(clean(f.error.hint), style="dim"))
    out.print("")


def render_bases(out: Output, rows: Sequence) -> None:
    if not rows:
        out.info("no saved bases: add one with `lora base add BASE` (aliases sd15, sd21, sdxl, sd3, flux need none)")
        return
    out.table(("NAME", "FAMILY", "KIND", "ID", "TABLE HASH", "ADDED"),
              [(b.name, b.family + (f" ({', '.join(b.variants)})" if getattr(b, "variants", None) else ""), b.kind,
                b.id + (f"@{b.revision[:12]}" if b.revision else ""), b.table_hash, b.added_at[:10]) for b in rows])
