"""Hub sources: resolve a repo to one commit and one file, download it through the user's Hugging Face cache.

``resolve_hub`` makes one API call (``model_info(files_metadata=True)``): the commit sha, the file list with
LFS sha256 and the card data. With HF_HUB_OFFLINE it reads the same facts from the local cache instead.
``download_hub`` uses ``hf_hub_download`` (so the bytes live once, in the HF cache), then verifies and
inspects them. ``download_hub_pinned`` (`lora install`: the lock knows commit and sha256) makes one GET
into a staging file, hashed as it arrives, unless the HF cache has the file already. huggingface_hub is
imported inside functions so that ``lora --help`` stays fast.
"""

from __future__ import annotations

import http.client
import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

from lorahub_cli.errors import Gated, HashMismatch, LoraError, NetworkError, NotFound, Offline
from lorahub_cli.hubclient import OFFLINE_HINT, HubSettings, hub_error
from lorahub_cli.sources.card import card_facts, flag_disagreement, parse_front_matter
from lorahub_cli.sources.choose import choose_weight_file, weight_files
from lorahub_cli.sources.model import HUB, CardFacts, FetchedFile, HubPlan, ProgressFn, Source
from lorahub_cli.sources.repo_path import check_repo_path
from lorahub_cli.sources.verify import verify_and_inspect

_SHA1 = re.compile(r"^[0-9a-f]{40}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
MAX_CARD_BYTES = 1 << 20   # a model card is text: more is not read


def resolve_hub(source: Source, settings: Optional[HubSettings] = None) -> HubPlan:
    """Commit, chosen file, expected sha256 and card facts for a Hub source, before downloading anything."""
    settings = settings or HubSettings.current()
    if settings.offline:
        return _resolve_from_cache(source, settings)
    from huggingface_hub import HfApi

    try:
        info = HfApi(endpoint=settings.endpoint).model_info(source.repo_id, revision=source.revision,
                                                            files_metadata=True)
    except Exception as exc:
        raise _mapped(exc, source, settings) from exc
    siblings = {s.rfilename: s for s in info.siblings or []}
    path = choose_weight_file(list(siblings), repo_id=source.repo_id, wanted=source.path_in_repo)
    sibling = siblings[path]
    card_data = info.card_data.to_dict() if info.card_data is not None else None
    return HubPlan(repo_id=source.repo_id, revision=source.revision, commit=info.sha, path_in_repo=path,
                   size=sibling.size, sha256=sibling.lfs.sha256 if sibling.lfs else None,
                   blob_id=sibling.blob_id, card=card_facts(card_data, source.repo_id), files=sorted(siblings))


def download_hub(plan: HubPlan, *, settings: Optional[HubSettings] = None,
                 progress: Optional[ProgressFn] = None) -> FetchedFile:
    """Download (or find in the HF cache) the planned file, verify its sha256, inspect it.

    On a hash mismatch the bad copy is removed from the cache, so running the command again downloads it anew.
    """
    settings = settings or HubSettings.current()
    check_repo_path(plan.path_in_repo, where=plan.repo_id)  # a plan built by hand is checked like a parsed one
    local = _hf_download(plan, plan.path_in_repo, settings, progress)
    commit = _commit_of(local)
    if commit and commit != plan.commit and not settings.offline:
        # the branch moved between model_info and the download: describe the commit we actually got
        asked = plan.revision
        plan = replace(resolve_hub(Source(HUB, repo_id=plan.repo_id, revision=commit,
                                          path_in_repo=plan.path_in_repo), settings), revision=asked)
    if not settings.offline and "README.md" in plan.files:
        _cache_readme(plan, settings)  # so that an offline pull later still knows the card
    blob = Path(os.path.realpath(local))
    try:
        report, container = verify_and_inspect(blob, what=f"{plan.repo_id}/{plan.path_in_repo}",
                                               expected_sha256=plan.sha256,
                                               expected_blob_id=None if plan.sha256 else plan.blob_id,
                                               name=plan.path_in_repo.rsplit("/", 1)[-1])
    except HashMismatch:
        remove_cached_file(Path(local))
        raise
    disagreement = flag_disagreement(plan.card, report)
    if disagreement:
        report.warnings.append(disagreement)  # recorded with the entry, not only shown once
    # the card's facts stay on ``card``: ingest merges them with the file's own, once, by source precedence
    return FetchedFile(path=blob, sha256=report.sha256, size=blob.stat().st_size, container=container,
                       provenance=plan.provenance(), report=report, card=plan.card, owned=False,
                       warnings=list(report.warnings))


def download_hub_pinned(plan: HubPlan, staging_dir: Path, *, settings: Optional[HubSettings] = None,
                        progress: Optional[ProgressFn] = None) -> FetchedFile:
    """``download_hub`` for a plan pinned to a commit whose file's sha256 the caller knows (a lock entry):
    one GET of the file at that commit, hashed as it arrives, into a staging file of our own (``owned``: the
    caller moves it into the store, or removes it). Where the HF cache holds the file at that commit, or
    HF_HUB_OFFLINE is set, ``download_hub`` reads it from there instead (not ``owned``). The sha256 is
    computed, not compared: the caller compares it with its own promise and says whose it was.

    ``hf_hub_download`` asks for the file's metadata first (a second request), and then writes, locks and
    links inside the HF cache; with the commit and the hash known there is nothing to ask, and the bytes
    are hashed on the way in (the same download as URL and Civitai pulls: ``sources.url.download_url``,
    resuming a partial copy, the token sent to the Hub's own host only)."""
    from lorahub_cli.sources.url import download_url

    settings = settings or HubSettings.current()
    check_repo_path(plan.path_in_repo, where=plan.repo_id)
    if settings.offline or _cached(plan.repo_id, plan.path_in_repo, plan.commit, settings) is not None:
        return download_hub(replace(plan, revision=plan.commit, sha256=None, blob_id=None), settings=settings,
                            progress=progress)
    where = f"{plan.repo_id}@{plan.commit}"
    got = download_url(_resolve_url(plan.repo_id, plan.path_in_repo, plan.commit, settings), staging_dir,
                       progress=progress, headers=_hub_headers(),
                       http_error=lambda exc: _hub_http_error(exc, plan, settings))
    try:
        report, container = verify_and_inspect(got.path, what=f"{where}/{plan.path_in_repo}", streamed=got.hashed,
                                               name=plan.path_in_repo.rsplit("/", 1)[-1])
    except BaseException:   # refused, or interrupted: the staged copy is ours to remove
        got.path.unlink(missing_ok=True)
        raise
    return FetchedFile(path=got.path, sha256=report.sha256, size=got.hashed.size, container=container,
                       provenance=plan.provenance(), report=report, owned=True, warnings=list(report.warnings))


def _cached(repo_id: str, filename: str, commit: str, settings: HubSettings) -> Optional[Path]:
    """The file at ``commit`` in the HF cache (its documented layout: snapshots/<commit>/<path>), or None."""
    path = repo_cache_dir(repo_id, settings.cache_dir) / "snapshots" / commit / filename
    return path if _SHA1.match(commit or "") and path.is_file() else None


def _resolve_url(repo_id: str, filename: str, commit: str, settings: HubSettings) -> str:
    from huggingface_hub import hf_hub_url

    return hf_hub_url(repo_id, filename, revision=commit, endpoint=settings.endpoint)


def _hub_headers() -> dict[str, str]:
    """The client's own headers (its user agent and, when the user has one, ``Authorization`` with their
    token: HF_TOKEN or `hf auth login`); ``download_url`` sends them to the Hub's host only."""
    from huggingface_hub.utils import build_hf_headers

    return {**build_hf_headers(library_name="lorahub-cli"), "Accept-Encoding": "identity"}


def _hub_http_error(exc: Any, plan: HubPlan, settings: HubSettings) -> LoraError:
    """An HTTP refusal of the file's GET, said as ``hub_error`` says the client's exceptions: the Hub's typed
    refusals (``X-Error-Code``), a bare 401 as the client reads it (a repository that is not there for this
    token), and a refusal by the storage host the Hub redirected to (its signed link: never shown)."""
    from urllib.parse import urlsplit

    code = (exc.headers.get("X-Error-Code") if exc.headers is not None else None) or ""
    where = f"{plan.repo_id}@{plan.commit}"
    failed_host = urlsplit(getattr(exc, "url", None) or "").netloc.lower()
    if failed_host and failed_host != urlsplit(settings.endpoint).netloc.lower():
        return NetworkError(f"the storage host {failed_host} refused the download of {plan.path_in_repo} from "
                            f"{where} (HTTP {exc.code})",
                            hint="Run the command again: the Hub gives a fresh download link each time.")
    if code == "GatedRepo":
        page = f"{settings.endpoint.rstrip('/')}/{plan.repo_id}"
        return Gated(f"{plan.repo_id} is a gated repository: downloading its files needs an account with access",
                     hint=f"Accept the conditions at {page}, then log in with `hf auth login` or set HF_TOKEN.")
    if code == "RepoNotFound" or (exc.code == 401 and not code):
        return NotFound(f"repository not found on the Hub: {plan.repo_id}",
                        hint="Check the spelling (owner/name). A private repository also needs "
                             "`hf auth login` or HF_TOKEN.")
    if code == "RevisionNotFound":
        return NotFound(f"revision not found: {plan.commit} in {plan.repo_id}")
    if code == "DisabledRepo":
        return NotFound(f"{plan.repo_id} has been disabled on the Hub")
    if code == "EntryNotFound" or exc.code == 404:
        return NotFound(f"file not found: {plan.path_in_repo} in {where}")
    return NetworkError(f"the Hub refused the request for {where} (HTTP {exc.code}{', ' + code if code else ''})",
                        hint="Try again later." if exc.code >= 500 or exc.code == 429 else
                             "Check the repository, the revision and your token (HF_TOKEN).")


def remove_cached_file(snapshot_path: Path) -> None:
    """Remove a file from the HF cache: the snapshot entry and the blob it points to."""
    blob = Path(os.path.realpath(snapshot_path))
    for p in (snapshot_path, blob):
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass


# --- download ---------------------------------------------------------------------------------------
def _hf_download(plan: HubPlan, filename: str, settings: HubSettings, progress: Optional[ProgressFn]) -> str:
    from huggingface_hub import hf_hub_download

    # by the name asked (not the sha) so the cache records refs/<name> for later offline pulls
    revision = plan.commit if settings.offline else (plan.revision or "main")
    try:
        return hf_hub_download(plan.repo_id, filename, revision=revision, cache_dir=settings.cache_dir,
                               endpoint=settings.endpoint, local_files_only=settings.offline,
                               tqdm_class=_progress_bridge(progress))  # type: ignore[arg-type]
    except Exception as exc:
        source = Source(HUB, repo_id=plan.repo_id, revision=plan.revision, path_in_repo=filename)
        raise _mapped(exc, source, settings) from exc


def card_previews(plan: HubPlan, settings: HubSettings, registry: Any, name: str) -> list[str]:
    """The card's sample images (its widget outputs that the repo holds) stored as previews of the entry
    ``name``; warnings for the ones that could not be (a failed image never fails the pull)."""
    from lorahub_cli.previews import MAX_PREVIEW_BYTES, save_preview

    warnings = []
    for path in [p for p in (plan.card.images if plan.card else []) if p in plan.files]:   # only repo files
        try:
            local = Path(_hf_download(plan, path, settings, None))
            if local.stat().st_size > MAX_PREVIEW_BYTES:
                raise LoraError(f"larger than {MAX_PREVIEW_BYTES >> 20} MiB")
            url = f"{settings.endpoint or 'https://huggingface.co'}/{plan.repo_id}/resolve/{plan.commit}/{path}"
            save_preview(registry, name, local.read_bytes(), source=plan.card.source, url=url)
        except (LoraError, OSError) as exc:
            warnings.append(f"the card's image {path} was not kept as a preview: {getattr(exc, 'message', exc)}")
    return warnings


def card_at_commit(repo_id: str, commit: str, settings: HubSettings) -> Optional[CardFacts]:
    """The card facts of ``repo_id``'s README.md at ``commit`` (one GET, no API call: `lora install` knows
    the commit from the lock), or None when the repo has no card or it cannot be read (a card is a source
    of facts, never a reason to fail). Read from the HF cache when it is there."""
    from urllib.request import Request

    from lorahub_cli.sources.url import urlopen

    cached = _cached(repo_id, "README.md", commit, settings)
    if cached is None and settings.offline:
        return None
    try:
        if cached is not None:
            with open(cached, "rb") as f:
                data = f.read(MAX_CARD_BYTES)
        else:
            request = Request(_resolve_url(repo_id, "README.md", commit, settings), headers=_hub_headers())
            with urlopen(request, timeout=30.0) as response:
                data = response.read(MAX_CARD_BYTES)
    except (OSError, ValueError, http.client.HTTPException):   # 404 (no card), a network error: no facts
        return None
    return card_facts(parse_front_matter(data.decode("utf-8", errors="replace")), repo_id)


def _cache_readme(plan: HubPlan, settings: HubSettings) -> None:
    try:
        _hf_download(plan, "README.md", settings, None)
    except LoraError:
        pass  # the card's facts are already known from model_info; caching it is a convenience


def _commit_of(local: str) -> Optional[str]:
    parts = Path(local).parts
    if "snapshots" in parts:
        i = len(parts) - 1 - parts[::-1].index("snapshots")
        if i + 1 < len(parts) and _SHA1.match(parts[i + 1]):
            return parts[i + 1]
    return None


def _progress_bridge(progress: Optional[ProgressFn]) -> type:
    """A tqdm stand-in for ``hf_hub_download``: forwards byte counts to ``progress``, never prints."""

    class _Bridge:
        def __init__(self, *args, total: Optional[int] = None, initial: int = 0, **kwargs):
            self.n, self.total = initial, total
            if progress:
                progress(self.n, total)

        def update(self, n: int = 1) -> None:
            self.n += n
            if progress:
                progress(self.n, self.total)

        def close(self) -> None:
            pass

        def __enter__(self) -> "_Bridge":
            return self

        def __exit__(self, *exc) -> None:
            self.close()

    return _Bridge


def _mapped(exc: BaseException, source: Source, settings: HubSettings) -> BaseException:
    err = hub_error(exc, repo_id=source.repo_id or "", revision=source.revision, path=source.path_in_repo,
                    endpoint=settings.endpoint, offline=settings.offline)
    return err if err is not None else exc


# --- offline: the same facts from the local cache ------------------------------------------------------
def repo_cache_dir(repo_id: str, cache_dir: Path) -> Path:
    """The HF cache folder of a model repo (documented layout: models--owner--name)."""
    return cache_dir / ("models--" + repo_id.replace("/", "--"))


def _resolve_from_cache(source: Source, settings: HubSettings) -> HubPlan:
    repo_id = source.repo_id or ""
    revision = source.revision or "main"
    where = f"{repo_id}@{revision}"
    repo_dir = repo_cache_dir(repo_id, settings.cache_dir)
    commit = revision if _SHA1.match(revision) and (repo_dir / "snapshots" / revision).is_dir() else None
    ref = repo_dir / "refs" / revision
    if commit is None and ref.is_file():
        commit = ref.read_text().strip()
    snapshot = repo_dir / "snapshots" / (commit or "")
    if not commit or not snapshot.is_dir():
        raise Offline(f"{where} is not in the Hugging Face cache and HF_HUB_OFFLINE is set", hint=OFFLINE_HINT)
    files = sorted(p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file())
    if not weight_files(files) or (source.path_in_repo and source.path_in_repo not in files):
        missing = source.path_in_repo or "no adapter weights"
        raise Offline(f"{where} is cached but {missing} is not, and HF_HUB_OFFLINE is set", hint=OFFLINE_HINT)
    path = choose_weight_file(files, repo_id=repo_id, wanted=source.path_in_repo)
    blob_name = Path(os.path.realpath(snapshot / path)).name
    readme = snapshot / "README.md"
    card_data = parse_front_matter(readme.read_text(encoding="utf-8", errors="replace")) if readme.is_file() else None
    return HubPlan(repo_id=repo_id, revision=source.revision, commit=commit, path_in_repo=path,
                   size=(snapshot / path).stat().st_size,
                   sha256=blob_name if _SHA256.match(blob_name) else None,
                   blob_id=blob_name if _SHA1.match(blob_name) else None,
                   card=card_facts(card_data, repo_id), files=files, offline=True)


