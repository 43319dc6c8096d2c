"""`lora pull`: an adapter from the Hugging Face Hub, a URL or a path, into the library with its card."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from lorahub_cli.options import JsonOpt, Run
from lorahub_cli.output import Output, Result, human_size


def pull_command(
    run: Run,
    source: Annotated[str, typer.Argument(help="owner/repo or owner/repo@REV, hf://owner/repo/FILE, civitai:MODEL[@VERSION], "
                                          "an AIR (urn:air:sdxl:lora:civitai:MODEL@VERSION), a Civitai page or download URL, "
                                          "an https:// URL, or a local path.", show_default=False)],
    name: Annotated[Optional[str], typer.Option("--name", "-n", help="Name in the library (default: the "
                                                "repo's or file's name, made unique).")] = None,
    file: Annotated[Optional[str], typer.Option("--file", help="Which file of the repo (when it has "
                                                "several weight files).")] = None,
    revision: Annotated[Optional[str], typer.Option("--revision", "-r", help="Branch, tag or commit sha "
                                                    "(default: main).")] = None,
    tag: Annotated[list[str], typer.Option("--tag", "-t", help="Tag (repeatable).", show_default=False)] = [],
    json: JsonOpt = False,
) -> Result:
    """Download an adapter, verify it, and add it to the library with its model card's facts.

    From the Hub the file is pytorch_lora_weights.safetensors, else its .bin, else the repo's one
    .safetensors (--file picks another). The bytes go through your Hugging Face cache (HF_HOME, HF_TOKEN,
    HF_ENDPOINT and HF_HUB_OFFLINE are honoured) and are checked against the Hub's sha256. The card's
    base_model, instance_prompt and widget prompts (as trigger words), tags and license are recorded with
    their source. Pulling the same commit again does nothing; a new commit makes a new entry.

    From Civitai (CIVITAI_ENDPOINT, default https://civitai.com; CIVITAI_API_TOKEN for login-only and
    early-access files, sent to that host only) the file is the version's primary one with a safetensors
    preferred (--file picks another); it is checked against Civitai's SHA256, and the model and version ids
    and names, the base model label, trained words, permissions, NSFW level, description and preview images
    are recorded with the source api:civitai.

    Examples:

      lora pull sayakpaul/sd-model-finetuned-lora-t4

      lora pull owner/repo@v1.0 --file style.safetensors --name my-style --tag anime

      lora pull https://example.com/lora.safetensors

      lora pull civitai:1234@5678

      lora pull https://civitai.com/models/1234?modelVersionId=5678 --file style.safetensors
    """
    from lorahub_cli.sources.pull import pull
    from registry.api import Registry

    with Registry(home=run.home) as registry, \
            run.out.progress(f"pulling {source}", total=None, unit="bytes") as advance:
        seen = [0]

        def progress(done: int, total: Optional[int]) -> None:
            advance(done - seen[0], description=f"pulling {human_size(done)} / {human_size(total) or '?'}")
            seen[0] = done

        result = pull(source, name=name, file=file, revision=revision, tags=tag, progress=progress,
                      registry=registry)
    return Result(result, lambda out: _render(out, result))


def _render(out: Output, result) -> None:
    prov = result.provenance
    if prov.kind == "hub":
        where = f"{prov.repo_id}@{(prov.commit or '')[:12]} {prov.path_in_repo}"
    elif prov.kind == "civitai":
        where = f"civitai:{prov.repo_id}@{prov.revision} {prov.filename}"
    else:
        where = prov.url or prov.local_path or ""
    if result.status == "unchanged":
        out.line(f"already in the library as {result.name} ({where}): nothing to do")
        return
    for warning in result.warnings:
        out.warn(warning)
    if result.status == "duplicate":
        out.line(f"already in the library as {result.name} (same bytes); remembered this source too: {where}")
        return
    out.line(f"pulled {result.name} ({where}, {human_size(result.size)}, sha256 {(result.sha256 or '')[:12]})")
    card = result.card
    if card and card.base_model:
        out.line(f"  base model: {', '.join(card.base_model)} ({card.source})")
    if card and card.trigger_words:
        out.line(f"  trigger words: {', '.join(card.trigger_words)}")
    civitai = getattr(result, "remote", None)
    if civitai:
        out.line(f"  civitai: {civitai.get('model_name')} / {civitai.get('version_name')}"
                 + (f", base model label {civitai['label']}" if civitai.get("label") else ""))
        if civitai.get("trigger_words"):
            out.line(f"  trigger words: {', '.join(civitai['trigger_words'])} (api:civitai)")
    if result.previous_version:
        out.line(f"  a new version of {result.previous_version} (another commit of the same file)")


def register(app: typer.Typer) -> None:
    app.command("pull")(pull_command)
