"""URL sources: stream to a staging file, resume with HTTP Range, then verify and inspect.

Files in the staging folder, for a URL whose ``<key>`` is the first 24 hex digits of sha256(url):

- ``url-<key>.lock``: held (``flock``, exclusive) by the one download of that URL running now, and removed
  by it when it ends. Two pulls of one URL never write one partial: the second waits for the first, then
  resumes what it left, or downloads anew when the first finished (its complete file is its own).
  A lock file that can be locked without waiting is a leftover of a killed process.
- ``url-<key>.part`` and ``url-<key>.part.json``: the partial download and its state (the URL, the server's
  ETag, the total size, the file name). Written only under the lock. They survive an interrupted run on
  purpose: the next run of the same URL asks for the rest with ``Range`` + ``If-Range`` (a changed file
  comes back whole). A partial nobody holds the lock for is resumable, not in use. The state is written
  through ``registry.publish``, so a kill at the wrong moment can leave a hidden ``.url-<key>.part.json.*.tmp``.
- ``url-<key>.<pid>-<random>.download``: a complete download, unique to the pull that made it (process
  ``<pid>``), on its way into the store; that pull removes it once recorded, and at once when inspection
  refuses it (an HTML page, an LFS pointer, a truncated file). One whose process is gone is a leftover.

Without ``fcntl`` (not POSIX) there is no lock; concurrent pulls of one URL are then not supported.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import socket
import ssl
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, NamedTuple, Optional
from urllib.error import HTTPError, URLError
from urllib.parse import unquote, urlsplit
from urllib.request import HTTPRedirectHandler, Request, build_opener

from lorahub_cli import __version__
from lorahub_cli.errors import DiskFull, Gated, LoraError, NetworkError, NotFound
from lorahub_cli.hubclient import is_disk_full
from lorahub_cli.sources.model import URL, FetchedFile, ProgressFn, Provenance
from lorahub_cli.sources.verify import verify_and_inspect
from registry.failures import disk_full, from_os_error
from registry.publish import TempFile, publish_file

if TYPE_CHECKING:
    from lorahub_cli.inspect.hashing import StreamHasher

try:
    import fcntl
except ImportError:  # not POSIX
    fcntl = None

CHUNK = 1 << 20
_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_FILENAME = re.compile(r'filename\*?=(?:UTF-8\'\')?"?([^";]+)"?', re.I)


class _Interrupted(Exception):
    def __init__(self, done: int, total: Optional[int]):
        super().__init__(f"{done} of {total if total is not None else '?'} bytes")
        self.done, self.total = done, total


class StagingPaths(NamedTuple):
    """The stable names of one URL's download (see the module docstring): a later run finds the partial."""

    part: Path
    state: Path
    lock: Path


def staging_paths(url: str, staging_dir: Path) -> StagingPaths:
    key = url_key(url)
    return StagingPaths(staging_dir / f"url-{key}.part", staging_dir / f"url-{key}.part.json",
                        staging_dir / f"url-{key}.lock")


def url_key(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:24]


def complete_path(url: str, staging_dir: Path) -> Path:
    """A name no other download uses: the complete file belongs to the one pull that made it."""
    return staging_dir / f"url-{url_key(url)}.{os.getpid()}-{os.urandom(6).hex()}.download"


class SameHostAuth(HTTPRedirectHandler):
    """Follow redirects, but send an Authorization header only to the host it was meant for: a storage host
    behind a presigned URL must never see the user's token."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urlsplit(newurl).netloc.lower() != urlsplit(req.full_url).netloc.lower():
            for key in [k for k in new.headers if k.lower() == "authorization"]:
                del new.headers[key]
        return new


_OPENERS: list = []   # built on first use: loading certificates is not free, and most commands never need it


def opener():
    """The opener every download of ours uses: redirects followed with ``SameHostAuth``, and TLS that trusts
    the system's certificates plus certifi's bundle (the one huggingface_hub's client uses), so that a
    Python without system certificates (a python.org build on macOS) reaches what the Hub client reaches."""
    if not _OPENERS:
        from urllib.request import HTTPSHandler

        _OPENERS.append(build_opener(SameHostAuth, HTTPSHandler(context=tls_context())))
    return _OPENERS[0]


def tls_context() -> ssl.SSLContext:
    context = ssl.create_default_context()   # the system's store (and SSL_CERT_FILE / SSL_CERT_DIR)
    try:
        import certifi
    except ImportError:
        return context
    try:
        context.load_verify_locations(cafile=certifi.where())
    except (OSError, ssl.SSLError):
        pass
    return context


def urlopen(request: Request, timeout: float):
    return opener().open(request, timeout=timeout)


class Downloaded(NamedTuple):
    """A complete download of our own, not yet inspected. ``hashed``: its bytes hashed as they were written
    (``StreamHasher``: the whole file and, for safetensors, what inspection would hash), so that verifying
    and inspecting it never reads the data again."""

    path: Path
    etag: Optional[str]
    filename: str
    hashed: "StreamHasher"


def fetch_url(url: str, staging_dir: Path, *, progress: Optional[ProgressFn] = None, retries: int = 2,
              timeout: float = 30.0) -> FetchedFile:
    """Download ``url`` into ``staging_dir`` (resuming a partial copy), verify and inspect it.

    Raises NotFound / Gated / NetworkError (the partial copy is kept for a resume) / DiskFull (the partial
    is removed) / ReadOnly, or the inspection's error (the download is removed).
    """
    got = download_url(url, staging_dir, progress=progress, retries=retries, timeout=timeout)
    try:
        report, container = verify_and_inspect(got.path, what=url, streamed=got.hashed)
    except LoraError:
        _remove(got.path)
        raise
    provenance = Provenance(kind=URL, url=url, etag=got.etag, filename=got.filename)
    return FetchedFile(path=got.path, sha256=report.sha256, size=got.hashed.size, container=container,
                       provenance=provenance, report=report, owned=True, warnings=list(report.warnings))


HttpErrorFn = Callable[[HTTPError], Optional[LoraError]]


def download_url(url: str, staging_dir: Path, *, progress: Optional[ProgressFn] = None, retries: int = 2,
                 timeout: float = 30.0, headers: Optional[dict[str, str]] = None,
                 http_error: Optional[HttpErrorFn] = None) -> Downloaded:
    """Download ``url`` (resuming a partial copy) to a complete file of its own in ``staging_dir``, hashed on
    the way but not yet inspected. ``headers`` go with every request (an Authorization header only to
    ``url``'s own host, never to a host it redirects to). ``http_error``: the server's own reading of an
    HTTP error (the Hub's ``X-Error-Code``), or None for the generic one. Raises as ``fetch_url`` does,
    before inspection."""
    staging_dir = Path(staging_dir)
    try:
        staging_dir.mkdir(parents=True, exist_ok=True)
        return _download_locked(url, staging_dir, progress, retries, timeout, headers or {}, http_error)
    except OSError as exc:  # the staging folder or the lock: a full disk, a read-only home
        mapped = from_os_error(exc, f"downloading {url}", staging_dir)
        if mapped is None:
            raise
        raise mapped from None


def _download_locked(url: str, staging_dir: Path, progress: Optional[ProgressFn], retries: int,
                     timeout: float, extra: dict[str, str], http_error: Optional[HttpErrorFn]) -> Downloaded:
    """Our own complete, hashed file: the download, retried, under the URL's lock."""
    part, state_file, lock = staging_paths(url, staging_dir)
    with _exclusive(lock):  # the partial is ours alone until it is renamed to our own complete file
        try:
            for attempt in range(retries + 1):
                try:
                    etag, filename, hashed = _download(url, part, state_file, progress, timeout, extra,
                                                       http_error)
                    break
                except _Interrupted as cut:
                    if attempt == retries:
                        raise NetworkError(f"the download of {url} was interrupted at {cut}",
                                           hint="Run the same command again: it resumes where it stopped.") from None
                    time.sleep(0.2 * (attempt + 1))
            final = complete_path(url, staging_dir)
            # renamed, not yet fsynced: a staging file need not survive a crash, and the store fsyncs these
            # very bytes (it links this file) before any record names them
            TempFile(part).publish(final, durable=False)
            _remove(state_file)
        except (OSError, DiskFull) as exc:
            if isinstance(exc, DiskFull) or is_disk_full(exc):
                # a full disk is no place to keep half a file for later; removed while still ours
                _remove(part, state_file)
                raise disk_full(f"downloading {url}") from None
            raise
    if final.stat().st_size != hashed.size:   # the file is the bytes hashed, or nothing is trusted
        _remove(final)
        raise NetworkError(f"the download of {url} changed on disk while it was written; run it again")
    return Downloaded(final, etag, filename, hashed)


def _download(url: str, part: Path, state_file: Path, progress: Optional[ProgressFn], timeout: float,
              extra: dict[str, str], http_error: Optional[HttpErrorFn] = None,
              ) -> tuple[Optional[str], str, "StreamHasher"]:
    """One attempt; returns (etag, filename, the file's bytes hashed) when ``part`` holds the whole file,
    raises _Interrupted if cut. Every byte written to ``part`` is hashed as it is written (a kept prefix is
    read back and hashed first): in a second thread for a download of ``PIPELINE_MIN_SIZE`` or more (or of an
    unknown size), so that hashing overlaps the network and the disk, in this thread for a smaller one."""
    have = part.stat().st_size if part.is_file() else 0
    state = _read_state(state_file) if have else {}
    headers = {"User-Agent": f"lorahub-cli/{__version__}", "Accept-Encoding": "identity", **extra}
    if have and state.get("etag") and state.get("url") == url:
        headers.update({"Range": f"bytes={have}-", "If-Range": state["etag"]})
    else:
        have = 0  # nothing to check a partial copy against: start again
    try:
        response = urlopen(Request(url, headers=headers), timeout=timeout)
    except HTTPError as exc:
        if exc.code == 416 and have and state.get("total") == have:   # a previous run got it all
            hashed = _hash_prefix(part, have)
            return state.get("etag"), state.get("filename") or _filename(url, None), hashed
        if exc.code == 416:
            _remove(part, state_file)
            raise _Interrupted(0, None) from None
        raise ((http_error(exc) if http_error is not None else None) or _http_error(exc, url)) from None
    except (URLError, http.client.HTTPException, socket.timeout, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        raise NetworkError(f"could not reach {urlsplit(url).netloc}: {reason}") from None
    with response:
        total = _total(response, have)
        if response.status != 206:
            have = 0  # the server sent the whole file (no Range support, or it changed)
        etag = response.headers.get("ETag")
        filename = _filename(url, response.headers.get("Content-Disposition"))
        _write_state(state_file, {"url": url, "etag": etag, "total": total, "filename": filename})
        from lorahub_cli.inspect.hashing import PIPELINE_MIN_SIZE   # (loaded by the hasher just below anyway)

        hashing_class = _Hashing if total is None or total - have >= PIPELINE_MIN_SIZE else _InlineHashing
        with hashing_class(_hash_prefix(part, have) if have else _stream_hasher()) as hashing, \
                open(part, "ab" if have else "wb") as out:
            if progress:
                progress(have, total)
            try:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    hashing.update(chunk)
                    have += len(chunk)
                    if progress:
                        progress(have, total)
            except (http.client.IncompleteRead, ConnectionError, socket.timeout, ssl.SSLError) as exc:
                # (a TLS record cut short is an OSError but no ConnectionError: it is a cut all the same)
                out.flush()
                raise _Interrupted(have, total) from exc
    if total is not None and have < total:
        raise _Interrupted(have, total)
    return etag, filename, hashing.hasher


def _stream_hasher() -> "StreamHasher":
    from lorahub_cli.inspect.hashing import StreamHasher   # numpy: only once a download starts

    return StreamHasher()


def _hash_prefix(part: Path, have: int) -> "StreamHasher":
    """A hasher fed the first ``have`` bytes of the partial file (what a resumed download appends to)."""
    hasher = _stream_hasher()
    with open(part, "rb") as f:
        while have > hasher.size and (chunk := f.read(min(CHUNK, have - hasher.size))):
            hasher.update(chunk)
    if hasher.size != have:
        raise _Interrupted(0, None)   # the partial shrank under us: start again
    return hasher


class _InlineHashing:
    """Feeds a ``StreamHasher`` in the downloading thread: for a small download a second thread costs more
    (its start, and GIL hand-offs with the other downloads of a `lora install`) than it overlaps."""

    def __init__(self, hasher: "StreamHasher"):
        self.hasher = hasher
        self.update = hasher.update   # the same calls as ``_Hashing``'s, made at once

    def __enter__(self) -> "_InlineHashing":
        return self

    def __exit__(self, *exc_info) -> None:
        pass


class _Hashing:
    """Feeds a ``StreamHasher`` from a worker thread (hashlib and numpy release the GIL on large buffers), so
    hashing runs beside the socket reads and file writes; ``update`` blocks only when ``DEPTH`` chunks wait.
    Leaving the block waits until every chunk given is hashed (also when the download failed)."""

    DEPTH = 8

    def __init__(self, hasher: "StreamHasher"):
        import queue
        import threading

        self.hasher = hasher
        self._queue: "queue.Queue[Optional[bytes]]" = queue.Queue(self.DEPTH)
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, name="lora-download-hash", daemon=True)

    def __enter__(self) -> "_Hashing":
        self._thread.start()
        return self

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self.hasher.update(chunk)
                except BaseException as exc:   # reported by __exit__ in the downloading thread
                    self._error = exc

    def update(self, chunk: bytes) -> None:
        self._queue.put(chunk)

    def __exit__(self, *exc_info) -> None:
        self._queue.put(None)
        self._thread.join()
        if self._error is not None and exc_info[0] is None:
            raise self._error


def current_etag(url: str, *, timeout: float = 15.0) -> Optional[str]:
    """The ETag the server gives ``url`` now (one HEAD request), or None when it gives none or cannot be
    asked: the caller then simply downloads, and that download reports any error properly."""
    request = Request(url, method="HEAD", headers={"User-Agent": f"lorahub-cli/{__version__}"})
    try:
        with urlopen(request, timeout=timeout) as response:
            return response.headers.get("ETag")
    except (HTTPError, URLError, http.client.HTTPException, socket.timeout, ConnectionError, ValueError):
        return None


def _total(response, have: int) -> Optional[int]:
    if response.status == 206:
        match = _RANGE.match(response.headers.get("Content-Range", ""))
        if not match or int(match.group(1)) != have:
            raise _Interrupted(0, None)  # not the part we asked for: start again
        return int(match.group(3)) if match.group(3) != "*" else None
    length = response.headers.get("Content-Length")
    return int(length) if length and length.isdigit() else None


def _filename(url: str, disposition: Optional[str]) -> str:
    if disposition:
        match = _FILENAME.search(disposition)
        if match:
            return os.path.basename(unquote(match.group(1)))
    return os.path.basename(unquote(urlsplit(url).path)) or "download"


def _http_error(exc: HTTPError, url: str) -> LoraError:
    if exc.code in (404, 410):
        return NotFound(f"not found (HTTP {exc.code}): {url}")
    if exc.code in (401, 403):
        return Gated(f"access denied (HTTP {exc.code}): {url}",
                     hint="The server wants a login or a token: download the file in a browser, then "
                          "`lora pull` the local file.")
    return NetworkError(f"the server answered HTTP {exc.code} for {url}",
                        hint="Try again later." if exc.code >= 500 or exc.code == 429 else None)


def _read_state(state_file: Path) -> dict:
    try:
        return json.loads(state_file.read_text())
    except (OSError, ValueError):
        return {}


def _write_state(state_file: Path, state: dict) -> None:
    # atomic but not fsynced: a state lost in a crash only means the next run downloads from the start,
    # and two fsyncs per download would cost more than the download of a small file
    publish_file(state_file, json.dumps(state), durable=False)


@contextmanager
def _exclusive(lock: Path) -> Iterator[None]:
    """Hold ``lock`` (flock, exclusive; waits for another holder), and remove it on the way out.

    The holder removes the file before unlocking, so a waiter that then gets the lock may hold a removed
    file: it checks that its descriptor is still the file at ``lock``, and otherwise tries again."""
    if fcntl is None:  # not POSIX: no lock (see the module docstring)
        yield
        return
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.path.samestat(os.fstat(fd), os.stat(lock)):
                break
        except FileNotFoundError:
            pass
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    try:
        yield
    finally:
        _remove(lock)
        os.close(fd)  # closing releases the lock


def _remove(*paths: Path) -> None:
    for p in paths:
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass
