"""Read a Civitai reference into a ``Source`` (no network): the forms `lora pull` accepts.

- ``civitai:MODEL`` (the newest version) and ``civitai:MODEL@VERSION``;
- AIR URNs: ``urn:air:ECOSYSTEM:TYPE:civitai:MODEL[@VERSION][:LAYER][.FORMAT]``; a TYPE the library does not
  hold (``checkpoint``, ``vae``, ...) is ``wrong-model-type`` before anything is asked;
- model pages ``https://civitai.com/models/MODEL[/slug][?modelVersionId=VERSION]``, version pages
  ``/model-versions/VERSION``, API addresses ``/api/v1/models/MODEL`` and ``/api/v1/model-versions/VERSION``;
- download URLs ``/api/download/models/VERSION[?type=Model&format=SafeTensor]``.

Hosts: civitai.com (www., and the .green mirror) and the host of CIVITAI_ENDPOINT. Anything else that
starts like one of these is ``bad-civitai-ref``.
"""

from __future__ import annotations

import re
from typing import Optional
from urllib.parse import parse_qs, urlsplit

from lorahub_cli.errors import BadCivitaiRef, WrongModelType
from lorahub_cli.sources.model import CIVITAI, Source, hosts_with_endpoint

CIVITAI_HOSTS = {"civitai.com", "www.civitai.com", "civitai.green", "www.civitai.green"}
ADAPTER_AIR_TYPES = {"lora", "lycoris", "locon", "dora", "embedding"}
_ID = re.compile(r"^[1-9][0-9]{0,11}$")
_AIR = re.compile(r"^urn:air:(?P<eco>[a-z0-9_.-]+):(?P<type>[a-z0-9_-]+):(?P<source>[a-z0-9_-]+):"
                  r"(?P<id>[^:@.]+)(?:@(?P<version>[^:.]+))?(?::(?P<layer>[^.]+))?(?:\.(?P<format>[a-z0-9]+))?$")


_TOKEN = re.compile(r"(?i)([?&]token=)[^&#]*")


def shown(text: str) -> str:
    """``text`` as messages may show it: a ``?token=`` (Civitai accepts the API key there) is masked."""
    return _TOKEN.sub(r"\1***", text)


def is_civitai_text(text: str) -> bool:
    """``civitai:...`` or an AIR URN (which one is checked by ``parse_civitai``)."""
    lowered = text.lower()
    return lowered.startswith("civitai:") or lowered.startswith("urn:air:")


def civitai_hosts() -> set[str]:
    return hosts_with_endpoint(CIVITAI_HOSTS, "CIVITAI_ENDPOINT")


def is_civitai_url(text: str) -> bool:
    split = urlsplit(text)
    return split.scheme in ("http", "https") and split.netloc.lower() in civitai_hosts()


def parse_civitai(text: str) -> Source:
    """A ``civitai:`` reference, an AIR or a Civitai URL as a Source; raises BadCivitaiRef/WrongModelType."""
    text = text.strip()
    lowered = text.lower()
    if lowered.startswith("civitai:"):
        body = text[len("civitai:"):]
        model, sep, version = body.partition("@")
        return _source(text, model, version if sep else None)
    if lowered.startswith("urn:air:"):
        return _air(text)
    return _url(text)


def _source(raw: str, model: Optional[str], version: Optional[str]) -> Source:
    """Both ids checked: digits only, no leading zero (a page slug or a typo is refused, not guessed at)."""
    raw = shown(raw)
    if model is not None and not _ID.match(model):
        raise BadCivitaiRef(f"not a Civitai model id in {raw!r}: {model!r}")
    if version is not None and not _ID.match(version):
        raise BadCivitaiRef(f"not a Civitai version id in {raw!r}: {version!r}")
    return Source(CIVITAI, civitai_model=int(model) if model else None,
                  civitai_version=int(version) if version else None)


def _air(text: str) -> Source:
    match = _AIR.match(text.lower())
    if match is None:
        raise BadCivitaiRef(f"not an AIR: {text!r}",
                            hint="An AIR reads urn:air:ECOSYSTEM:TYPE:civitai:MODEL@VERSION, e.g. "
                                 "urn:air:sdxl:lora:civitai:328553@368189.")
    if match["source"] != "civitai":
        raise BadCivitaiRef(f"{text!r} names a resource on {match['source']!r}; lora reads AIRs of civitai only",
                            hint="For the Hugging Face Hub give owner/name instead.")
    if match["type"] not in ADAPTER_AIR_TYPES:
        raise WrongModelType(f"{text!r} is a {match['type']}, not an adapter (lora, lycoris) or an embedding")
    return _source(text, match["id"], match["version"])


def _url(text: str) -> Source:
    split = urlsplit(text)
    parts = [p for p in split.path.split("/") if p]
    query = parse_qs(split.query)
    version = (query.get("modelVersionId") or [None])[-1]
    if len(parts) >= 2 and parts[0] == "models":                     # /models/ID[/slug]
        return _source(text, parts[1], version)
    if len(parts) == 2 and parts[0] == "model-versions":             # /model-versions/V
        return _source(text, None, parts[1])
    if parts[:3] == ["api", "download", "models"] and len(parts) == 4:
        return _source(text, None, parts[3])
    if parts[:3] == ["api", "v1", "models"] and len(parts) == 4:
        return _source(text, parts[3], version)
    if parts[:3] == ["api", "v1", "model-versions"] and len(parts) == 4:
        return _source(text, None, parts[3])
    raise BadCivitaiRef(f"not a Civitai model, version or download address: {shown(text)}")
