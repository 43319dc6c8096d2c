"""Guess what SOURCE names, the way other model tools do.

Rules, in order:
1. ``hf://[models/]owner/name[@rev][/path]`` (also ``hf://owner/name/path@rev``) -> Hub.
2. ``http(s)://`` on a Hub host (huggingface.co, hf.co, or HF_ENDPOINT): ``/owner/name``,
   ``/owner/name/tree/rev``, ``/owner/name/resolve|blob/rev/path`` -> Hub; any other http(s) URL -> URL.
3. An existing local file or folder -> path (a local path wins over a repo id of the same spelling).
4. Something written as a path (``/``, ``./``, ``../``, ``~``, a backslash) -> path, which must exist.
5. ``owner/name[@rev]`` or ``owner/name/path/to/file[@rev]`` -> Hub.

Before all of these: ``civitai:MODEL[@VERSION]``, an AIR URN, or an http(s) URL on a Civitai host (or
CIVITAI_ENDPOINT's) -> Civitai (``sources.civitai_ref``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional
from urllib.parse import unquote, urlsplit

from lorahub_cli.errors import NotFound, UsageError
from lorahub_cli.sources.civitai_ref import is_civitai_text, is_civitai_url, parse_civitai
from lorahub_cli.sources.model import CIVITAI, HUB, PATH, URL, Source, hosts_with_endpoint
from lorahub_cli.sources.repo_path import check_repo_path

HUB_HOSTS = {"huggingface.co", "www.huggingface.co", "hf.co"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_FORMS = "owner/name[@revision], hf://owner/name[/file], an https:// URL or a local path"


def parse_source(text: str, *, revision: Optional[str] = None, file: Optional[str] = None) -> Source:
    """Turn the user's SOURCE (plus --revision/--file) into a Source; raises UsageError or NotFound."""
    text = text.strip()
    if not text:
        raise UsageError("SOURCE is empty", hint=f"Give {_FORMS}.")
    source = _guess(text)
    return _with_options(source, revision, file)


def _guess(text: str) -> Source:
    if is_civitai_text(text) or is_civitai_url(text):
        return parse_civitai(text)
    if text.startswith("hf://"):
        return _hub_body(text[len("hf://"):], text)
    if "://" in text:
        return _url(text)
    local = Path(text).expanduser()
    if local.exists():
        return Source(PATH, local_path=local.absolute())
    if text.startswith(("/", "./", "../", "~", ".\\")) or "\\" in text or re.match(r"^[A-Za-z]:[\\/]", text):
        raise NotFound(f"no such file or folder: {text}")
    if "/" in text:
        return _hub_body(text, text)
    raise NotFound(f"no such file or folder: {text}",
                   hint=f"A Hub repository is written owner/name. SOURCE may be {_FORMS}.")


def _hub_body(body: str, raw: str) -> Source:
    """``[models/]owner/name[@rev][/path]`` or ``owner/name/path@rev``."""
    parts = [p for p in body.split("/")]
    if parts and parts[0] == "models":
        parts = parts[1:]
    if parts and parts[0] in ("datasets", "spaces", "buckets"):
        raise UsageError(f"{raw} is a {parts[0][:-1]}, not a model repository")
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise UsageError(f"not a Hub repository: {raw}", hint=f"Give {_FORMS}.")
    owner, name = parts[0], parts[1]
    rest = parts[2:]
    revision = None
    if "@" in name:
        name, first = name.split("@", 1)
        # refs/pr/N is the one revision form that contains slashes
        if first == "refs" and len(rest) >= 2 and rest[0] in ("pr", "convert"):
            revision, rest = "/".join([first, *rest[:2]]), rest[2:]
        else:
            revision = first
    elif rest and "@" in rest[-1]:
        last, revision = rest[-1].rsplit("@", 1)
        rest = [*rest[:-1], last]
    check_repo_id(owner, name, raw)
    if revision is not None and not revision:
        raise UsageError(f"empty revision after @ in {raw}")
    path = "/".join(rest).strip("/") or None
    return Source(HUB, repo_id=f"{owner}/{name}", revision=revision, path_in_repo=path)


def check_repo_id(owner: str, name: str, raw: str) -> None:
    """UsageError unless owner/name is a repository id the Hub accepts."""
    for part in (owner, name):
        if not _NAME.match(part) or "--" in part or ".." in part or part.endswith((".", "-")):
            raise UsageError(f"not a valid Hub repository id: {raw}",
                             hint="Repository ids are owner/name: letters, digits, '-', '_' and '.', "
                                  "no '--' or '..', at most 96 characters each.")


def _hub_netlocs() -> set[str]:
    return hosts_with_endpoint(HUB_HOSTS, "HF_ENDPOINT")


def _url(text: str) -> Source:
    split = urlsplit(text)
    if split.scheme not in ("http", "https") or not split.netloc:
        raise UsageError(f"unsupported URL: {text}", hint="Only http:// and https:// URLs can be pulled.")
    if split.netloc.lower() not in _hub_netlocs():
        return Source(URL, url=text)
    # split on "/" before unquoting: a revision like refs/pr/1 is sent as refs%2Fpr%2F1
    parts = [unquote(p) for p in split.path.strip("/").split("/") if p]
    if parts and parts[0] in ("datasets", "spaces", "buckets"):
        raise UsageError(f"{text} is a {parts[0][:-1]}, not a model repository")
    if len(parts) == 2:
        return _hub_body("/".join(parts), text)
    if len(parts) >= 4 and parts[2] == "tree":
        check_repo_id(parts[0], parts[1], text)
        return Source(HUB, repo_id=f"{parts[0]}/{parts[1]}", revision="/".join(parts[3:]) or None)
    if len(parts) >= 5 and parts[2] in ("resolve", "blob"):
        check_repo_id(parts[0], parts[1], text)
        return Source(HUB, repo_id=f"{parts[0]}/{parts[1]}", revision=parts[3], path_in_repo="/".join(parts[4:]))
    raise UsageError(f"not a model file URL on the Hub: {text}",
                     hint="Use https://huggingface.co/owner/name/resolve/<revision>/<file>, or owner/name.")


def _with_options(source: Source, revision: Optional[str], file: Optional[str]) -> Source:
    if source.kind == CIVITAI:
        if revision:
            raise UsageError("--revision only applies to Hub repositories; name a Civitai version as "
                             "civitai:MODEL@VERSION")
        return Source(CIVITAI, civitai_model=source.civitai_model, civitai_version=source.civitai_version,
                      path_in_repo=file.strip() if file else None)
    if source.kind != HUB:
        if revision or file:
            flag = "--revision" if revision else "--file"
            raise UsageError(f"{flag} only applies to Hub repositories, not to {source.kind} sources")
        return source
    if revision and source.revision and revision != source.revision:
        raise UsageError(f"two revisions given: @{source.revision} in SOURCE and --revision {revision}")
    if file and source.path_in_repo and file.strip("/") != source.path_in_repo:
        raise UsageError(f"two files given: {source.path_in_repo} in SOURCE and --file {file}")
    path = source.path_in_repo or (file.strip("/") if file else None)
    if path is not None:
        check_repo_path(path, where=source.repo_id or "the repository")  # before anything is asked of the Hub
    return Source(HUB, repo_id=source.repo_id, revision=source.revision or revision or None, path_in_repo=path)
