"""``lora push NAME --repo OWNER/NAME``: publish a library entry to the Hugging Face Hub in one commit.

    result = push("my-style", "me/my-style", registry=reg)     # PushResult(status="pushed", commit=...)

What is uploaded, through huggingface_hub's ``create_repo`` and ``create_commit`` (never raw HTTP):

* the entry's stored bytes, unchanged (a ``lora pull`` elsewhere gets the same sha256): a diffusers/PEFT
  LoRA as ``pytorch_lora_weights.safetensors`` (what ``load_lora_weights(repo)`` looks for), a diffusers
  embedding as ``learned_embeds.safetensors``, anything else as ``<name>.safetensors`` (an A1111 embedding
  is prompted by its file's stem: its token);
* ``README.md``: YAML front matter with ``base_model``, ``instance_prompt`` (the first trigger word) and
  ``trigger_words``, ``tags: [lora, diffusers, text-to-image, ...]``, ``license`` and a ``widget`` per
  preview, then how to use it with diffusers and with A1111/ComfyUI. The card is built from the entry alone
  (no dates), so pushing the same entry again gives the same bytes;
* the previews (``images/``) and, for a trained entry, its training settings (``training_settings.json``).

The same bytes again are a no-op: huggingface_hub drops files whose remote oid matches and makes no empty
commit (``status: unchanged``). One commit carries everything, so a failure (no token, someone else's repo,
the network) leaves the repository as it was: LFS objects uploaded before a refused commit are referenced by
nothing. ``HF_TOKEN`` (or the stored login) is read by huggingface_hub and never printed or stored.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from lorahub_cli.errors import AuthRequired, LoraError, NetworkError, Offline, UsageError

TAGS = ["lora", "diffusers", "text-to-image"]
_DIFFUSERS_FORMATS = ("diffusers", "peft", "diffusers-old", "attn-procs")
_REPO_ID_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


@dataclass
class PushResult:
    name: str
    repo: str
    revision: str
    status: str                     # pushed | unchanged
    commit: str
    url: str
    files: list[str] = field(default_factory=list)
    private: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_repo_id(repo: str) -> str:
    """OWNER/NAME as the Hub spells repository ids; anything else is a usage error (nothing is sent)."""
    owner, sep, name = repo.partition("/")
    if (not sep or not owner or not name or "/" in name or not set(owner + name) <= _REPO_ID_CHARS
            or name.startswith(("-", ".")) or name.endswith(".git") or ".." in repo or len(name) > 96):
        raise UsageError(f"--repo must be OWNER/NAME (letters, digits, - _ .), not {repo!r}",
                         hint="For example: lora push my-style --repo my-user/my-style")
    return repo


def weights_name(entry: Any) -> str:
    """The file name the adapter gets in the repo (see the module docstring)."""
    if getattr(entry, "kind", "lora") == "embedding":
        if entry.format == "diffusers-ti":
            return "learned_embeds.safetensors"
        return f"{(entry.tokens or [entry.name])[0]}.safetensors"
    if entry.format in _DIFFUSERS_FORMATS:
        return "pytorch_lora_weights.safetensors"
    return f"{entry.name}.safetensors"


def repo_files(entry: Any, home: Path) -> dict[str, Any]:
    """path in repo -> a local Path or bytes: the weights, the card, the previews, the training settings."""
    files: dict[str, Any] = {weights_name(entry): Path(entry.path)}
    images = []
    for preview in getattr(entry, "previews", None) or []:
        local = Path(home) / preview["path"]
        if local.is_file():
            name = f"images/{preview['sha256'][:16]}{local.suffix}"
            files[name] = local
            images.append(name)
    training = training_settings(entry)
    if training is not None:
        files["training_settings.json"] = json.dumps(training, indent=2, sort_keys=True).encode() + b"\n"
    files["README.md"] = render_card(entry, weights_name(entry), images, training).encode("utf-8")
    return files


def training_settings(entry: Any) -> Optional[dict]:
    """A trained entry's settings: the ``lorahub.training`` block of its run folder's card, when it is there."""
    from lorahub_cli.inspect.card import parse_front_matter

    for source in getattr(entry, "sources", None) or []:
        if source.kind == "trained" and source.path:
            card = Path(source.path) / "README.md"
            if card.is_file():
                front = parse_front_matter(card.read_text(encoding="utf-8", errors="replace")) or {}
                training = (front.get("lorahub") or {}).get("training")
                if isinstance(training, dict):
                    return training
    return None


def render_card(entry: Any, weights: str, images: list[str], training: Optional[dict]) -> str:
    import yaml

    embedding = getattr(entry, "kind", "lora") == "embedding"
    tags = [*TAGS, *(["textual-inversion"] if embedding else []), *([entry.family] if entry.family != "unknown"
                                                                   else [])]
    tags += [t for t in entry.tags if t not in tags]
    front: dict[str, Any] = {}
    if entry.base_model:
        front["base_model"] = entry.base_model
    if entry.trigger_words:
        front["instance_prompt"] = entry.trigger_words[0]
        front["trigger_words"] = list(entry.trigger_words)
    front["tags"] = tags
    front["license"] = entry.license or "other"
    front["library_name"] = "diffusers"
    if images:
        # a widget's text is read as a trigger word by card readers: only a trigger word goes there
        text = entry.trigger_words[0] if entry.trigger_words else None
        front["widget"] = [{**({"text": text} if text else {}), "output": {"url": image}} for image in images]
    if training:
        front["lorahub"] = {"training": training}
    yaml_text = yaml.safe_dump(front, sort_keys=False, allow_unicode=True, width=1000)
    what = (f"Textual-inversion embedding ({entry.vectors} vector(s), {entry.family})" if embedding
            else f"{entry.network.upper() if entry.network != 'lora' else 'LoRA'} for {entry.family}")
    lines = [f"---\n{yaml_text}---", "", f"# {entry.name}", "", f"{what}, published with `lora push`.", ""]
    if entry.trigger_words:
        lines += ["Trigger words: " + ", ".join(f"`{w}`" for w in entry.trigger_words) + ".", ""]
    lines += _usage(entry, weights, embedding)
    if images:
        lines += ["## Previews", ""] + [f"![preview]({image})" for image in images] + [""]
    lines += ["## Files", "", f"- `{weights}`: sha256 `{entry.sha256}`", ""]
    return "\n".join(lines)


def _usage(entry: Any, weights: str, embedding: bool) -> list[str]:
    base = entry.base_model or "<base model>"
    pipeline = "StableDiffusionXLPipeline" if entry.family == "sdxl" else "StableDiffusionPipeline"
    token = (entry.tokens or [entry.name])[0]
    code = ["```python", f"from diffusers import {pipeline}", "", f'pipe = {pipeline}.from_pretrained("{base}")']
    if embedding and entry.format == "sdxl-ti":
        code += ["from huggingface_hub import hf_hub_download", "from safetensors.torch import load_file", "",
                 f'state = load_file(hf_hub_download("REPO", "{weights}"))',
                 f'pipe.load_textual_inversion(state["clip_l"], token="{token}", text_encoder=pipe.text_encoder, '
                 "tokenizer=pipe.tokenizer)",
                 f'pipe.load_textual_inversion(state["clip_g"], token="{token}", text_encoder=pipe.text_encoder_2, '
                 "tokenizer=pipe.tokenizer_2)"]
    elif embedding:
        code += [f'pipe.load_textual_inversion("REPO", weight_name="{weights}", token="{token}")']
    else:
        code += [f'pipe.load_lora_weights("REPO", weight_name="{weights}")']
    code += ["```", ""]
    if embedding:
        ui = [f"A1111 / Forge: put `{weights}` in `embeddings/` and write `{token}` in the prompt. ComfyUI: put it "
              f"in `models/embeddings/` and write `embedding:{Path(weights).stem}`.", ""]
    else:
        ui = [f"A1111 / Forge: put `{weights}` in `models/Lora/` and add `<lora:{Path(weights).stem}:1>` to the "
              "prompt. ComfyUI: put it in `models/loras/` and use a LoraLoader node.", ""]
    return ["## Use with diffusers", "", *code, "## Use with A1111 / ComfyUI", "", *ui]


def push(ref: str, repo: str, *, private: bool = False, revision: Optional[str] = None, registry: Any = None,
         message: Optional[str] = None) -> PushResult:
    """Publish the entry ``ref`` names to ``repo`` (created when missing) in one commit on ``revision``
    (default main; a missing branch is created from main). Raises AuthRequired, Offline, NetworkError."""
    from lorahub_cli.hubclient import HubSettings
    from lorahub_cli.resolve import resolve

    check_repo_id(repo)
    handle = resolve(ref, registry)
    if handle.entry is None:
        raise UsageError(f"{ref} is a file, not a library entry: add it first (`lora add {ref}`), then push it")
    entry = handle.entry
    settings = HubSettings.current()
    if settings.offline:
        raise Offline("HF_HUB_OFFLINE is set: nothing can be pushed", hint="Unset HF_HUB_OFFLINE and try again.")
    files = repo_files(entry, Path(registry.home))
    branch = revision or "main"
    try:
        return _push(entry, repo, files, private=private, branch=branch, endpoint=settings.endpoint,
                     message=message or f"lora push {entry.name} ({entry.sha256[:12]})")
    except LoraError:
        raise
    except Exception as exc:   # noqa: BLE001 - every client failure is mapped, none escapes raw
        raise push_error(exc, repo, settings.endpoint) from None


def _push(entry: Any, repo: str, files: dict[str, Any], *, private: bool, branch: str, endpoint: str,
          message: str) -> PushResult:
    from huggingface_hub import CommitOperationAdd, HfApi, get_token

    token = get_token()   # HF_TOKEN first, then the stored login; never printed
    if not token:
        raise AuthRequired(f"pushing to {repo} needs a Hugging Face token with write access; none is set")
    api = HfApi(endpoint=endpoint, token=token)
    if not _exists(api, repo):   # created only when missing (someone else's repo is then refused at the commit)
        api.create_repo(repo, private=private, exist_ok=True)
    head = _head(api, repo, branch)
    if head is None and branch != "main":
        api.create_branch(repo, branch=branch, exist_ok=True)
    operations = [CommitOperationAdd(path_in_repo=path, path_or_fileobj=str(src) if isinstance(src, Path) else src)
                  for path, src in files.items()]
    info = api.create_commit(repo, operations, commit_message=message, revision=branch)
    status = "unchanged" if head is not None and info.oid == head else "pushed"
    return PushResult(name=entry.name, repo=repo, revision=branch, status=status, commit=info.oid,
                      url=f"{endpoint}/{repo}", files=sorted(files), private=private)


def _exists(api: Any, repo: str) -> bool:
    from huggingface_hub import errors as hf

    try:
        api.repo_info(repo)
    except hf.RepositoryNotFoundError:
        return False
    return True


def _head(api: Any, repo: str, branch: str) -> Optional[str]:
    from huggingface_hub import errors as hf

    try:
        return api.repo_info(repo, revision=branch).sha
    except (hf.RevisionNotFoundError, hf.RepositoryNotFoundError):
        return None


def push_error(exc: BaseException, repo: str, endpoint: str) -> LoraError:
    """The LoraError for a client failure while pushing: 401/403 (or a repo hidden from this token) is auth."""
    from huggingface_hub import errors as hf

    from lorahub_cli.hubclient import is_network_error

    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(exc, hf.RepositoryNotFoundError) or status in (401, 403):
        return AuthRequired(f"the Hub refused to let this token write to {repo} (HTTP {status or 404}): the "
                            "token is invalid or read-only, or the repository belongs to someone else; "
                            "nothing was uploaded")
    if isinstance(exc, hf.HfHubHTTPError):
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return NetworkError(f"the Hub refused the push to {repo} ({first}); nothing was committed")
    if is_network_error(exc):
        return NetworkError(f"could not reach the Hub at {endpoint} to push {repo}; nothing was committed")
    return NetworkError(f"the push to {repo} failed ({type(exc).__name__}: {str(exc)[:200]}); nothing was "
                        "committed")
