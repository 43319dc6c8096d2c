"""A small client for Civitai's public REST API (stdlib ``urllib``; loopback servers in tests).

    api = CivitaiApi.current(home)       # CIVITAI_ENDPOINT (default https://civitai.com); the token from
                                         # CIVITAI_API_TOKEN, else <home>/config.toml's civitai.token
    version = api.version(5678)          # GET /api/v1/model-versions/{id}
    model = api.model(1234)              # GET /api/v1/models/{id}
    found = api.by_hashes(["22D8CB95B807", ...])   # POST /api/v1/model-versions/by-hash, 100 at a time

The token is sent as ``Authorization: Bearer`` to the endpoint's own host only (a redirect elsewhere drops
it) and never appears in messages, logs or results. A ``429`` is waited out as long as ``Retry-After`` says
(capped), a few times, then is ``rate-limited``. Answers that are not JSON are ``bad-api-answer``.
``requests`` counts every HTTP request made, for the benchmark and the tests.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit
from urllib.request import Request

from lorahub_cli import __version__
from lorahub_cli.errors import BadApiAnswer, Gated, NetworkError, NotFound, RateLimited
from lorahub_cli.sources.url import urlopen

DEFAULT_ENDPOINT = "https://civitai.com"
BATCH = 100            # hashes per by-hash POST: the public reference names no limit; 100 keeps each body small
MAX_WAIT = 60.0        # the longest Retry-After we honour before giving up
RETRIES_429 = 4


def token_headers(token: Optional[str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


@dataclass
class CivitaiApi:
    """One endpoint and (optional) token; ``sleep`` is injectable so tests of Retry-After need no real wait."""

    endpoint: str = DEFAULT_ENDPOINT
    token: Optional[str] = field(default=None, repr=False)
    timeout: float = 30.0
    sleep: Callable[[float], None] = time.sleep
    requests: int = 0
    warnings: list[str] = field(default_factory=list)   # about where the token came from (a readable config)

    @classmethod
    def current(cls, home: Path) -> "CivitaiApi":
        """From the environment: CIVITAI_ENDPOINT, and CIVITAI_API_TOKEN or else the settings file's
        ``civitai.token`` in the library's ``home`` (``lorahub_cli.config``, which checks either token)."""
        endpoint = (os.environ.get("CIVITAI_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
        from lorahub_cli.config import civitai_token

        token, warnings = civitai_token(home)
        return cls(endpoint=endpoint, token=token, warnings=warnings)

    @property
    def host(self) -> str:
        return urlsplit(self.endpoint).netloc.lower()

    def headers(self) -> dict[str, str]:
        return {"User-Agent": f"lorahub-cli/{__version__}", **token_headers(self.token)}

    # --- the endpoints ---------------------------------------------------------------------------------
    def version(self, version_id: int) -> dict:
        return self._json("GET", f"/api/v1/model-versions/{int(version_id)}", what=f"model version {version_id}")

    def model(self, model_id: int) -> dict:
        return self._json("GET", f"/api/v1/models/{int(model_id)}", what=f"model {model_id}")

    def by_hash(self, digest: str) -> Optional[dict]:
        """The version holding a file with this hash, or None when Civitai knows none."""
        try:
            return self._json("GET", f"/api/v1/model-versions/by-hash/{_hex(digest)}", what=f"hash {digest}")
        except NotFound:
            return None

    def by_hashes(self, digests: Iterable[str]) -> list[dict]:
        """Every version holding a file with one of these hashes (several POSTs of ``BATCH``); the caller
        matches answers to hashes through each version's ``files[].hashes``."""
        digests = list(dict.fromkeys(_hex(d) for d in digests))
        out: list[dict] = []
        for i in range(0, len(digests), BATCH):
            answer = self._json("POST", "/api/v1/model-versions/by-hash", body=digests[i:i + BATCH],
                                what="a batch of hashes")
            if not isinstance(answer, list):
                raise BadApiAnswer(f"{self.host} answered the hash lookup with a {type(answer).__name__}, "
                                   "not a list of versions")
            out += [v for v in answer if isinstance(v, dict)]
        return out

    def download_url(self, version_id: int) -> str:
        return f"{self.endpoint}/api/download/models/{int(version_id)}"

    # --- plumbing --------------------------------------------------------------------------------------
    def _json(self, method: str, path: str, *, what: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        headers = self.headers()
        headers["Accept"] = "application/json"
        if data is not None:
            headers["Content-Type"] = "application/json"
        url = self.endpoint + path
        for attempt in range(RETRIES_429 + 1):
            self.requests += 1
            try:
                with urlopen(Request(url, data=data, method=method, headers=headers),   # the token stays
                             timeout=self.timeout) as response:                              # with the API host
                    raw = response.read()
                break
            except HTTPError as exc:
                if exc.code == 429 and attempt < RETRIES_429:
                    self.sleep(_retry_after(exc.headers.get("Retry-After"), attempt))
                    continue
                raise self._http_error(exc, what) from None
            except (URLError, http.client.HTTPException, socket.timeout, ConnectionError) as exc:
                reason = getattr(exc, "reason", exc)
                raise NetworkError(f"could not reach {self.host}: {reason}",
                                   hint="Check the network or CIVITAI_ENDPOINT, then try again.") from None
        try:
            return json.loads(raw)
        except ValueError:
            start = raw[:60].decode("utf-8", "replace").strip()
            raise BadApiAnswer(f"{self.host} answered {method} {path} with something that is not JSON "
                               f"({len(raw):,} bytes, starting {start!r})") from None

    def _http_error(self, exc: HTTPError, what: str):
        if exc.code == 404:
            return NotFound(f"Civitai has no {what} ({self.host}, HTTP 404)",
                            hint="Check the id on the model's page: civitai.com/models/ID?modelVersionId=V.")
        if exc.code in (401, 403):
            hint = ("Set CIVITAI_API_TOKEN to an API key of an account that may download it (early access "
                    "or a login-only model)." if not self.token else
                    "Your CIVITAI_API_TOKEN is not allowed this (early access, or the key was revoked).")
            return Gated(f"Civitai refused {what} (HTTP {exc.code})", hint=hint)
        if exc.code == 429:
            return RateLimited(f"{self.host} kept answering 429 (too many requests) for {what}")
        return NetworkError(f"{self.host} answered HTTP {exc.code} for {what}", hint="Try again later.")


def _hex(digest: str) -> str:
    digest = digest.strip()
    if not digest or any(c not in "0123456789abcdefABCDEF" for c in digest):
        raise ValueError(f"not a hex hash: {digest!r}")
    return digest.upper()   # Civitai shows and stores hashes in upper case


def _retry_after(value: Optional[str], attempt: int) -> float:
    """Seconds to wait: the server's Retry-After (seconds; an HTTP date counts as a short wait), capped."""
    try:
        wait = float(value) if value is not None else 2.0 ** attempt
    except ValueError:
        wait = 2.0 ** attempt
    return min(max(wait, 0.0), MAX_WAIT)
