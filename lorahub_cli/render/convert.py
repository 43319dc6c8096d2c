"""Human rendering of a `lora convert` result."""

from __future__ import annotations

from lorahub_cli.convert import ConversionResult
from lorahub_cli.output import Output, human_size

_TARGET_WORDS = {"diffusers": "diffusers layout (load_lora_weights)", "kohya": "kohya layout (A1111 / ComfyUI)",
                 "safetensors": "same key layout", "lora": "low-rank pairs"}


def render_result(out: Output, r: ConversionResult) -> None:
    for warning in r.warnings:
        out.warn(warning)
    size = r.dst.stat().st_size if r.dst.exists() else None
    out.line(f"converted {r.source} ({r.source_format}, {r.source_container}, {r.family})")
    out.line(f"       -> {r.dst} ({_TARGET_WORDS.get(r.target, r.target)}, {r.n_modules} modules, "
            f"{r.n_tensors} tensors, {human_size(size)})")
    if r.companion:
        out.line(f"  merged the text encoder from {r.companion}")
    if r.resize:
        from lorahub_cli.render.resize import render_layers

        render_layers(out, r.resize)
    out.line(f"  verified: every tensor read back bit for bit; source sha256 {r.source_sha256[:12]} kept in the header")
