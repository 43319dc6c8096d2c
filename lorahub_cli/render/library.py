"""Human output of the library commands, drawn on the invocation's ``Output``; user text is cleaned of
control and bidi characters there (or here, for the fast list table)."""

from __future__ import annotations

from typing import Any, Sequence

from lorahub_cli.output import UNSAFE, Output, clean, human_size

LIST_COLUMNS = ("NAME", "FAMILY", "FORMAT", "RANK", "SIZE", "BASE MODEL", "TAGS", "ADDED")
# a long base-model id or tag list should not push every other column off the screen
LIST_MAX_WIDTH = {"NAME": 48, "BASE MODEL": 40, "TAGS": 32}
RIGHT = {"RANK", "SIZE"}
MANY = 50  # above this many files, `add` lists only what did not simply go in


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def plain_table(columns: Sequence[str], rows: Sequence[Sequence[str]],
                max_width: dict[str, int] | None = None, right: set[str] | frozenset = frozenset()) -> str:
    """Aligned plain-text columns. rich's Table measures every cell and takes seconds for 10,000 rows;
    this works column by column in C-speed string operations and takes milliseconds."""
    if not rows:
        return ""
    cols = [list(c) for c in zip(*rows)]
    for i, name in enumerate(columns):
        if UNSAFE.search("".join(cols[i])):  # one scan per column; escaping is rare
            cols[i] = [clean(v) for v in cols[i]]
        width = (max_width or {}).get(name)
        if width:
            cols[i] = [v if len(v) <= width else _cut(v, width) for v in cols[i]]
    spec = "  ".join(f"{{:{'>' if c in right else '<'}{max(map(len, col))}}}" for c, col in zip(columns, cols))
    return "\n".join(spec.format(*row).rstrip() for row in zip(*cols))


def render_list(out: Output, rows: Sequence[Any]) -> None:
    if not rows:
        out.info("the library is empty (or nothing matches): add adapters with `lora add PATH`")
        return
    # Civitai's base-model label beside the family: "sdxl (Pony)"
    body = [(r.name, f"{r.family} ({r.label})" if getattr(r, "label", None) else r.family, r.format,
             "TI" if getattr(r, "kind", "lora") == "embedding" else "" if r.rank is None else str(r.rank),
             human_size(r.size),
             r.base_model or "", ", ".join(r.tags), r.added_at.isoformat()[:10] if r.added_at else "")
            for r in rows]
    # one pre-formatted write: rich takes seconds to lay out 10,000 rows that need no layout
    out.write_text(plain_table(LIST_COLUMNS, [LIST_COLUMNS, *body], LIST_MAX_WIDTH, RIGHT) + "\n")


def render_add(out: Output, results: Sequence[Any], failures: Sequence[Any]) -> None:
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    rows = [(r.status, r.name or "", r.path, _add_detail(r)) for r in results
            if len(results) + len(failures) <= MANY or r.status not in ("added", "unchanged") or r.warnings]
    rows += [("failed", "", f.path, f"[{f.error.code}] {f.error.message}") for f in failures]
    if rows:
        out.table(["STATUS", "NAME", "FILE", "DETAIL"], rows)
    summary = ", ".join(f"{n} {status}" for status, n in counts.items())
    if failures:
        summary = (summary + ", " if summary else "") + f"{len(failures)} failed"
    out.info(summary or "nothing to add")


def _add_detail(r: Any) -> str:
    parts = [f"same bytes as {r.duplicate_of}"] if r.duplicate_of else []
    if getattr(r, "restored", False):
        parts.append("its missing or damaged stored copy was restored from this file")
    warnings = getattr(r, "warnings", [])
    if warnings:
        more = f" (+{len(warnings) - 1} more: lora show / --json)" if len(warnings) > 1 else ""
        parts.append(f"warning: {warnings[0]}{more}")
    return "; ".join(parts)


def render_entry(out: Output, e: Any) -> None:
    def mark(field: str, value: Any, source: str | None = None) -> str:
        if field in e.overrides:
            detected = e.detected.get(field)
            return f"{value}  (set by you; detected: {detected or 'nothing'})"
        return f"{value}  ({source})" if source and value else str(value or "")

    where = "in place" if e.in_place else "in the store"
    rows = [
        ("name", e.name),
        ("family", mark("family", e.family, e.family_evidence)),
        ("label", f"{e.label} ({e.label_source})" if getattr(e, "label", None) else ""),
        ("format", f"{e.format} ({e.network}, {e.container})"),
        ("rank / alpha", f"{e.rank if e.rank is not None else '?'} / {e.alpha if e.alpha is not None else '-'}"
                         + (f"  (ranks {', '.join(map(str, e.ranks))})" if len(e.ranks) > 1 else ""))
        if getattr(e, "kind", "lora") != "embedding" else   # an embedding has vectors, not a rank
        ("embedding", f"{e.vectors} vector(s), width {' + '.join(map(str, e.widths))}"),
        ("components", ", ".join(e.components)),
        ("tensors", f"{e.n_tensors} tensors, {e.n_modules} modules, {e.dtype or '?'}"),
        ("base model", mark("base_model", e.base_model, e.base_model_source)),
        ("trigger words", mark("trigger_words", ", ".join(e.trigger_words)) if "trigger_words" in e.overrides
         else ", ".join(f"{w} ({s})" for w, s in e.trigger_word_sources.items())),
        ("tags", ", ".join(f"{t} ({s})" if s != "user" else t for t, s in e.tag_sources.items())),
        ("license", f"{e.license} ({e.license_source})" if e.license else ""),
        *_civitai_rows(e),
        ("size", f"{human_size(e.size)} ({e.size} bytes)"),
        ("sha256", e.sha256),
        ("AutoV2", e.autov2.upper()),  # as Civitai shows it
        ("tensor sha256", e.tensor_sha256 or ""),
        ("file", f"{e.path or '(missing)'}  ({where})"),
    ]
    rows += [("also at", f.path) for f in e.files if f.path != e.path]
    rows += [("source", _source(s)) for s in e.sources]
    rows += [("preview", p["path"]) for p in getattr(e, "previews", None) or []]
    if getattr(e, "previous_version", None):
        rows.append(("previous version", e.previous_version))
    rows += [("added", e.added_at.isoformat(timespec="seconds") if e.added_at else ""),
             ("updated", e.updated_at.isoformat(timespec="seconds") if e.updated_at else "")]
    if e.tokens:
        rows.append(("tokens", ", ".join(e.tokens)))
    if e.metadata:
        rows.append(("metadata", f"{len(e.metadata)} keys (all of them with --json)"))
        rows += [(f"  {k}", _cut(str(v).replace("\n", " "), 100)) for k, v in sorted(e.metadata.items())[:20]]
    rows += [("warning", w) for w in e.warnings]
    out.table(["FIELD", "VALUE"], [r for r in rows if r[1] != ""])


def _civitai_rows(e: Any) -> list[tuple[str, str]]:
    """What Civitai said about the entry (`lora pull civitai:...`, `lora identify`)."""
    c = getattr(e, "civitai", None)
    if not c:
        return []
    nsfw = c.get("nsfw_level")
    rows = [("civitai", f"{c.get('model_name') or '?'} / {c.get('version_name') or '?'}  "
                        f"(civitai:{c.get('model_id')}@{c.get('version_id')})"),
            ("nsfw level", "" if nsfw is None else str(nsfw)),
            ("description", _cut((c.get("description") or "").replace("\n", " "), 200))]
    return rows


def _source(s: Any) -> str:
    when = f" on {s.added_at.strftime('%Y-%m-%d')}" if s.added_at else ""
    converted = (f"; converted from a pickle (original sha256 {s.original_sha256[:12]}) to safetensors"
                 if getattr(s, "original_sha256", None) and s.kind != "converted" else "")
    if s.kind == "hub":
        at = f"@{s.revision[:12]}" if s.revision else ""
        return f"hub {s.repo}{at} {s.filename or ''}{when}{converted}"
    if s.kind == "civitai":
        return f"civitai:{s.repo}@{s.revision} {s.filename or ''}{when}{converted}"
    if s.kind == "url":
        etag = f" (ETag {s.etag})" if getattr(s, "etag", None) else ""
        return f"url {s.url}{etag}{when}{converted}"
    return f"{s.kind} {s.path}{when}{converted}"


def render_removed(out: Output, removed: Sequence[Any]) -> None:
    for r in removed:
        kept = f"; kept the in-place file(s) {', '.join(r.in_place_paths)}" if r.in_place_paths else ""
        out.line(f"removed {r.name} ({r.sha256[:12]}){kept}")


def render_findings(out: Output, findings: Sequence[Any], *, fix: bool) -> None:
    if not findings:
        out.info("the library is consistent: no problems found")
        return
    rows = [(f.problem, f.name or "", f.path or f.sha256 or "", f.detail,
             ("fixed: " if f.fixed else "") + (f.action or "")) for f in findings]
    out.table(["PROBLEM", "ADAPTER", "WHERE", "DETAIL", "ACTION"], rows)
    left = sum(1 for f in findings if not f.fixed)
    fixed = len(findings) - left
    hint = "" if fix or not left else "; `lora doctor --fix` repairs what is safe"
    out.info(f"{len(findings)} problem(s): {fixed} fixed, {left} left{hint}")


def render_emptied(out: Output, deleted: Sequence[Any]) -> None:
    """`lora doctor --empty-quarantine`: what was deleted."""
    for f in deleted:
        out.line(f"deleted {f.path}")
    total = sum(int(f.detail.split()[0]) for f in deleted)
    out.info(f"the quarantine is empty ({len(deleted)} file(s), {human_size(total)} freed)" if deleted
             else "the quarantine is empty")


def render_rebuild(out: Output, report: Any) -> None:
    """`lora doctor --rebuild`: where the old database went, and what became of each stored blob."""
    if report.backup:
        out.info(f"the old database was moved to {report.backup}")
    rows = [(e.status, e.name or "", e.sha256[:12], (e.error or {}).get("message", "")) for e in report.entries]
    if rows:
        out.table(["STATUS", "NAME", "SHA256", "DETAIL"], rows)
    recorded = sum(1 for e in report.entries if e.status == "recorded")
    out.info(f"{recorded} of {len(report.entries)} stored adapter(s) recorded again; tags, your own values and "
             "sources were only in the old database")
