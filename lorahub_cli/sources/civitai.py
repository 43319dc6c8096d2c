"""Civitai sources: resolve a reference to one version and one file, download it, and say what Civitai knows.

    plan = resolve_civitai(source, api)          # 1-2 API calls; type and file checked before any download
    fetched = download_civitai(plan, api, staging_dir)   # resumable, redirect to storage, sha256 verified
    facts, remote = civitai_facts(plan.version, plan.model)

Which file: ``--file NAME``, else the primary file when it is a safetensors, else the version's one
safetensors model file, else the primary, else the first model file. What is recorded (source
``api:civitai``): trained words as trigger words, the base-model label (``Pony``, ``SDXL 1.0``, ...), the
license and commercial-use fields, and beside the entry the ids, names, NSFW level and the description as
plain text (``remote``).
"""

from __future__ import annotations

import html.parser
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from lorahub_cli.errors import BadApiAnswer, Gated, LoginPage, LoraError, NoDownloadableFile, WrongModelType
from lorahub_cli.sources.civitai_api import CivitaiApi, token_headers
from lorahub_cli.sources.model import CIVITAI, FetchedFile, ProgressFn, Provenance, Source
from lorahub_cli.sources.url import download_url
from lorahub_cli.sources.verify import verify_and_inspect

SERVICE = "civitai"
MAX_WORDS, MAX_WORD = 100, 200     # trained words kept from one answer, and the longest one
API_SOURCE = "api:civitai"
# what the library holds: LoRA-like networks, and textual-inversion embeddings (a kind of their own, issue 19)
ADAPTER_TYPES = {"lora", "locon", "dora", "lycoris", "textualinversion"}


@dataclass
class CivitaiPlan:
    """One version and one of its files, chosen before anything is downloaded."""

    model_id: int
    version_id: int
    version: dict
    model: dict
    file: dict

    @property
    def filename(self) -> str:
        return str(self.file.get("name") or f"civitai-{self.version_id}.safetensors")

    @property
    def sha256(self) -> Optional[str]:
        digest = (self.file.get("hashes") or {}).get("SHA256")
        return digest.lower() if isinstance(digest, str) and len(digest) == 64 else None

    @property
    def url(self) -> str:
        return str(self.file.get("downloadUrl") or "")

    def provenance(self) -> Provenance:
        return Provenance(kind=CIVITAI, repo_id=str(self.model_id), revision=str(self.version_id), url=self.url,
                          expected_sha256=self.sha256, filename=self.filename)


def resolve_civitai(source: Source, api: CivitaiApi) -> CivitaiPlan:
    """The version ``source`` names (the model's newest when none is) and the file to fetch."""
    if source.civitai_version is not None:
        version = _object(api.version(source.civitai_version), "model version")
        model_id = source.civitai_model or version.get("modelId")
        if not isinstance(model_id, int):
            raise BadApiAnswer(f"Civitai's version {source.civitai_version} names no model id")
        if source.civitai_model is not None and version.get("modelId") not in (None, source.civitai_model):
            raise NoDownloadableFile(f"version {source.civitai_version} belongs to model {version.get('modelId')}, "
                                     f"not {source.civitai_model}")
        model = _object(api.model(model_id), "model")
    else:
        model = _object(api.model(source.civitai_model or 0), "model")
        versions = [v for v in model.get("modelVersions") or [] if isinstance(v, dict)]
        if not versions:
            raise NoDownloadableFile(f"Civitai model {source.civitai_model} has no published version")
        version = versions[0]   # Civitai lists the newest first
        model_id = source.civitai_model or 0
    _check_type(model, version, model_id)
    version_id = version.get("id")
    if not isinstance(version_id, int):
        raise BadApiAnswer(f"Civitai's answer for model {model_id} has a version without an id")
    return CivitaiPlan(model_id, version_id, version, model, choose_file(version, source.path_in_repo))


def _object(answer: Any, what: str) -> dict:
    if not isinstance(answer, dict):
        raise BadApiAnswer(f"Civitai answered a {type(answer).__name__} where a {what} was expected")
    return answer


def _check_type(model: dict, version: dict, model_id: int) -> None:
    kind = str(model.get("type") or (version.get("model") or {}).get("type") or "")
    if kind.lower() not in ADAPTER_TYPES:
        name = model.get("name") or (version.get("model") or {}).get("name") or model_id
        raise WrongModelType(f"Civitai model {model_id} ({name}) is a {kind or 'model of unknown type'}, "
                             "not a LoRA or an embedding")


def _web(url: Any) -> bool:
    return isinstance(url, str) and url.lower().startswith(("https://", "http://"))


def _is_safetensors(f: dict) -> bool:
    fmt = str((f.get("metadata") or {}).get("format") or "")
    return fmt.lower() == "safetensor" or str(f.get("name") or "").lower().endswith(".safetensors")


def choose_file(version: dict, wanted: Optional[str] = None) -> dict:
    """The file to fetch (see the module docstring); NoDownloadableFile when there is none."""
    # only http(s) downloads: an answer naming file:// or another scheme is not followed
    files = [f for f in version.get("files") or [] if isinstance(f, dict) and _web(f.get("downloadUrl"))]
    models = [f for f in files if str(f.get("type") or "Model") == "Model"]
    names = ", ".join(str(f.get("name")) for f in files) or "none"
    if wanted:
        for f in files:
            if f.get("name") == wanted:
                return f
        raise NoDownloadableFile(f"version {version.get('id')} has no file {wanted!r} (files: {names})",
                                 hint="Nothing was downloaded. Give one of its files with --file.")
    if not models:
        raise NoDownloadableFile(f"version {version.get('id')} ({version.get('name')}) has no downloadable "
                                 f"model file (files: {names})")
    primary = next((f for f in models if f.get("primary")), None)
    if primary is not None and _is_safetensors(primary):
        return primary
    safe = [f for f in models if _is_safetensors(f)]
    if len(safe) == 1:
        return safe[0]
    return primary or (safe or models)[0]


def download_civitai(plan: CivitaiPlan, api: CivitaiApi, staging_dir: Path, *,
                     progress: Optional[ProgressFn] = None) -> FetchedFile:
    """Fetch the plan's file (resuming; the token goes to the API's host only), refuse an HTML page as
    ``login-page``, verify the bytes against Civitai's SHA256 and inspect them."""
    from urllib.parse import urlsplit

    url = plan.url
    headers = {"User-Agent": api.headers()["User-Agent"]}
    if urlsplit(url).netloc.lower() == api.host:
        headers.update(token_headers(api.token))
    try:
        got = download_url(url, staging_dir, progress=progress, headers=headers)
    except Gated as refused:   # the file needs an account (login-only or early access): say how to give one
        hint = ("Set CIVITAI_API_TOKEN to an API key of an account that may download it." if not api.token else
                "Your CIVITAI_API_TOKEN may not download it (early access, or the key was revoked).")
        raise Gated(f"Civitai refused the file of civitai:{plan.model_id}@{plan.version_id}: {refused.message}",
                    hint=hint) from None
    path = got.path
    try:
        with open(path, "rb") as f:
            head = f.read(512).lstrip().lower()
        if head.startswith((b"<!doctype html", b"<html")) or b"<html" in head:
            raise LoginPage(f"Civitai sent a web page ({got.hashed.size:,} bytes) instead of "
                            f"{plan.filename}: a login or early-access page")
        # checked against Civitai's SHA256 from the digest made while downloading: the data is not read again
        report, container = verify_and_inspect(path, what=f"civitai:{plan.model_id}@{plan.version_id}",
                                               expected_sha256=plan.sha256, said_by="Civitai", streamed=got.hashed)
    except (LoraError, OSError):
        path.unlink(missing_ok=True)
        raise
    return FetchedFile(path=path, sha256=report.sha256, size=got.hashed.size, container=container,
                       provenance=plan.provenance(), report=report, owned=True, warnings=list(report.warnings))


# --- what Civitai says ---------------------------------------------------------------------------------
@dataclass
class CivitaiFacts:
    """Civitai's answer as the library keeps it: facts for ingest, the label, and the rest beside the entry."""

    model_id: Optional[int]
    version_id: Optional[int]
    label: Optional[str]
    trigger_words: list[str] = field(default_factory=list)
    license: Optional[str] = None
    data: dict = field(default_factory=dict)
    images: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"model_id": self.model_id, "version_id": self.version_id, "label": self.label,
                "trigger_words": list(self.trigger_words), "license": self.license, **self.data}


def civitai_facts(version: dict, model: Optional[dict] = None) -> CivitaiFacts:
    """What a version (and its model, when fetched) says, in the library's terms."""
    model = model or {}
    inner = version.get("model") if isinstance(version.get("model"), dict) else {}
    words: list[str] = []
    for item in (version.get("trainedWords") or [])[:MAX_WORDS]:
        word = item.strip() if isinstance(item, str) else ""
        # a word is what a prompt can hold: printable, bounded (an answer is not trusted to be sane)
        if word and len(word) <= MAX_WORD and word.isprintable() and word not in words:
            words.append(word)
    commercial = model.get("allowCommercialUse")
    if isinstance(commercial, str):
        commercial = [commercial]
    data = {
        "model_name": model.get("name") or inner.get("name"),
        "version_name": version.get("name"),
        "type": model.get("type") or inner.get("type"),
        "base_model": version.get("baseModel"),
        "nsfw": bool(model.get("nsfw") if "nsfw" in model else inner.get("nsfw", False)),
        "nsfw_level": version.get("nsfwLevel", model.get("nsfwLevel")),
        "allow_commercial_use": list(commercial) if isinstance(commercial, list) else None,
        "allow_derivatives": model.get("allowDerivatives"),
        "allow_no_credit": model.get("allowNoCredit"),
        "allow_different_license": model.get("allowDifferentLicense"),
        "description": plain_text(model.get("description") or ""),
        "version_description": plain_text(version.get("description") or ""),
        "air": version.get("air"),
        "creator": (model.get("creator") or {}).get("username") if isinstance(model.get("creator"), dict) else None,
        "tags": [t for t in model.get("tags") or [] if isinstance(t, str)],
        "published_at": version.get("publishedAt") or version.get("createdAt"),
    }
    data = {k: v for k, v in data.items() if v not in (None, "", [])}
    images = [i for i in version.get("images") or [] if isinstance(i, dict) and _web(i.get("url"))]
    label = version.get("baseModel") if isinstance(version.get("baseModel"), str) else None
    if label is not None and not label.isprintable():
        label = None
    return CivitaiFacts(model_id=version.get("modelId") if isinstance(version.get("modelId"), int) else None,
                        version_id=version.get("id") if isinstance(version.get("id"), int) else None,
                        label=(label or "").strip()[:64] or None, trigger_words=words,
                        license=_license(model) if model else None, data=data, images=images)


def _license(model: dict) -> Optional[str]:
    """Civitai's permission fields in one line (Civitai has no license name of its own)."""
    commercial = model.get("allowCommercialUse")
    if isinstance(commercial, str):
        commercial = [commercial] if commercial != "None" else []
    if commercial is None and "allowDerivatives" not in model:
        return None
    parts = [f"commercial use: {', '.join(commercial) if commercial else 'none'}"]
    if "allowDerivatives" in model:
        parts.append("derivatives " + ("allowed" if model.get("allowDerivatives") else "not allowed"))
    if "allowNoCredit" in model:
        parts.append("credit " + ("not required" if model.get("allowNoCredit") else "required"))
    return "civitai (" + "; ".join(parts) + ")"


class _Text(html.parser.HTMLParser):
    BREAKS = {"p", "br", "li", "div", "h1", "h2", "h3", "h4", "tr"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag in self.BREAKS:
            self.out.append("\n")

    def handle_data(self, data):
        self.out.append(data)


def plain_text(markup: str, limit: int = 20000) -> str:
    """Civitai's HTML description as plain text: tags dropped, entities decoded, blank runs collapsed."""
    if not markup:
        return ""
    parser = _Text()
    parser.feed(markup)
    parser.close()
    lines = [" ".join(line.split()) for line in "".join(parser.out).splitlines()]
    text = "\n".join(line for line in lines if line)
    return "".join(c for c in text if c == "\n" or c.isprintable())[:limit]
