"""The Hugging Face Hub client as every layer uses it: its settings, read per call, and its errors mapped.

Below the engine (``sources`` pulls adapters, ``bases`` fetches a base's configs, ``pipeline`` loads weights),
so each of them reads the environment and maps failures the same way. huggingface_hub itself is imported
inside the functions: importing this module stays cheap.

The client raises typed errors from the Hub's ``X-Error-Code`` header; everything else that can go wrong on
the way (connection refused, timeouts, a full disk, a short download) is mapped here too, so a user never
sees a raw traceback. Subclasses are tested before their parents (GatedRepo is a RepositoryNotFound, and
LocalEntryNotFound is an EntryNotFound).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from lorahub_cli.errors import Gated, LoraError, NetworkError, NotFound, Offline
from registry.failures import disk_full
from registry.publish import is_disk_full  # one rule for a full disk: no space, quota, file-size limit

_NETWORK_MODULES = ("httpx", "httpx2", "httpcore", "httpcore2", "requests", "urllib3", "h11", "ssl")
OFFLINE_HINT = ("Run the command once online (unset HF_HUB_OFFLINE) so the file is cached, or pull a "
                "revision that was downloaded before.")


@dataclass(frozen=True)
class HubSettings:
    """Endpoint, cache and offline mode, read from the environment when a pull starts.

    huggingface_hub reads these once, at import; reading them per call keeps a long-lived Python process
    (a script, a notebook, the tests) in step with its environment, and is the same thing for the CLI.
    """

    endpoint: str
    cache_dir: Path
    offline: bool

    @classmethod
    def current(cls) -> "HubSettings":
        from huggingface_hub import constants

        env = os.environ
        endpoint = (env.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")
        cache = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE")
        if not cache and env.get("HF_HOME"):
            cache = str(Path(env["HF_HOME"]).expanduser() / "hub")
        offline_env = env.get("HF_HUB_OFFLINE")
        offline = (offline_env.strip().upper() in ("1", "ON", "YES", "TRUE") if offline_env is not None
                   else bool(constants.HF_HUB_OFFLINE))
        return cls(endpoint, Path(cache).expanduser() if cache else Path(constants.HF_HUB_CACHE), offline)


def is_network_error(exc: BaseException) -> bool:
    """Connection refused/reset, DNS, TLS, timeouts: from any HTTP stack the client may use."""
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    return any(type(c).__module__.split(".")[0] in _NETWORK_MODULES for c in _chain(exc))


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def hub_error(exc: BaseException, *, repo_id: str, revision: Optional[str] = None,
              path: Optional[str] = None, endpoint: Optional[str] = None,
              offline: bool = False) -> Optional[LoraError]:
    """The LoraError for a client exception, or None when it is not one we understand (let it propagate)."""
    from huggingface_hub import errors as hf

    rev = revision or "main"
    where = f"{repo_id}@{rev}"
    if isinstance(exc, LoraError):
        return exc
    if isinstance(exc, hf.GatedRepoError):
        page = f"{(endpoint or 'https://huggingface.co').rstrip('/')}/{repo_id}"
        return Gated(f"{repo_id} is a gated repository: downloading its files needs an account with access",
                     hint=f"Accept the conditions at {page}, then log in with `hf auth login` or set HF_TOKEN.")
    if isinstance(exc, hf.RepositoryNotFoundError):
        return NotFound(f"repository not found on the Hub: {repo_id}",
                        hint="Check the spelling (owner/name). A private repository also needs "
                             "`hf auth login` or HF_TOKEN.")
    if isinstance(exc, hf.RevisionNotFoundError):
        return NotFound(f"revision not found: {rev} in {repo_id}",
                        hint="Give a branch, a tag or a full 40-character commit sha.")
    if isinstance(exc, hf.DisabledRepoError):
        return NotFound(f"{repo_id} has been disabled on the Hub")
    if isinstance(exc, hf.OfflineModeIsEnabled):
        return Offline(f"{where} is not in the Hugging Face cache and HF_HUB_OFFLINE is set", hint=OFFLINE_HINT)
    if isinstance(exc, hf.LocalEntryNotFoundError):
        if offline:
            return Offline(f"{path or 'the file'} of {where} is not in the Hugging Face cache", hint=OFFLINE_HINT)
        return NetworkError(f"could not reach the Hub for {where}, and {path or 'the file'} is not cached",
                            hint="Check the connection (or HF_ENDPOINT) and try again.")
    if isinstance(exc, hf.EntryNotFoundError):
        return NotFound(f"file not found: {path} in {where}")
    if is_disk_full(exc):
        return disk_full(f"downloading {path or repo_id} from {where}")  # ENOSPC, EDQUOT or EFBIG (ulimit -f)
    if isinstance(exc, hf.HfHubHTTPError):
        status = exc.response.status_code if getattr(exc, "response", None) is not None else None
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return NetworkError(f"the Hub refused the request for {where} ({first_line})",
                            hint="Try again later." if status and status >= 500 else
                                 "Check the repository, the revision and your token (HF_TOKEN).")
    if isinstance(exc, OSError) and "Consistency check failed" in str(exc):
        return NetworkError(f"the download of {path} from {where} stopped early",
                            hint="Check the connection and run the command again.")
    if is_network_error(exc):
        return NetworkError(f"could not reach the Hub at {endpoint or 'huggingface.co'} for {where}: {exc}",
                            hint="Check the connection and try again; with HF_HUB_OFFLINE=1 files already "
                                 "in the Hugging Face cache are used without the network.")
    return None
