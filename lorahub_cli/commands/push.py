"""`lora push`: a library entry to the Hugging Face Hub (weights, model card, previews) in one commit."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from lorahub_cli.options import JsonOpt, Run
from lorahub_cli.output import Result


def push_command(
    run: Run,
    ref: Annotated[str, typer.Argument(help="Library name or sha256 prefix.", show_default=False)],
    repo: Annotated[str, typer.Option("--repo", help="OWNER/NAME on the Hub (created when missing).",
                                      show_default=False)],
    private: Annotated[bool, typer.Option("--private", help="Create the repository private.")] = False,
    revision: Annotated[Optional[str], typer.Option("--revision", help="Branch to commit to (default: main; a "
                                                    "missing branch is created from main).")] = None,
    json: JsonOpt = False,
) -> Result:
    """Publish an adapter or embedding to the Hugging Face Hub.

    One commit carries the weights exactly as stored (a `lora pull` elsewhere gets the same sha256), a model
    card (base_model, instance_prompt / trigger words, tags, license, a widget per preview, then usage for
    diffusers and for A1111/ComfyUI), the previews and, for a trained entry, its training settings. Pushing
    the same entry again changes nothing (status "unchanged"). The token is HF_TOKEN (or `hf auth login`);
    it is never printed. HF_ENDPOINT is honoured.

    Errors: auth (no token, a read-only one, or someone else's repository: nothing is uploaded), offline
    (HF_HUB_OFFLINE), network, not-found (no such entry), usage (a malformed --repo).

    Examples:

      lora push my-style --repo my-user/my-style

      lora push easynegative --repo my-org/easynegative --private --revision v2 --json
    """
    from lorahub_cli.push import push
    from registry.api import Registry

    with Registry(home=run.home) as registry:
        result = push(ref, repo, private=private, revision=revision, registry=registry)
    verb = "already up to date" if result.status == "unchanged" else "pushed"
    return Result(result.to_dict(), lambda out: out.line(
        f"{result.name}: {verb} at {result.url} ({result.revision} @ {result.commit[:12]}; "
        f"{len(result.files)} files)"))


def register(app: typer.Typer) -> None:
    app.command("push")(push_command)
