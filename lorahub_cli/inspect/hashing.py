"""Hashes in one streaming pass: whole-file sha256 (Civitai SHA256 / AutoV2), the safetensors data-section sha256
(kohya addnet = Civitai AutoV3 = modelspec.hash_sha256, unchanged by metadata edits; formats.md §3.4), and which
up/B tensors are all zero (an untrained adapter changes nothing).

Speed: the file is read with ``readinto`` into reused buffers. For safetensors files of 32 MiB and more the
whole-file hasher runs in a second thread (hashlib releases the GIL on large buffers) while this thread reads and
feeds the data hasher and the tensor scan, so two sha256 streams cost about the wall time of one; smaller files
are faster in one thread. scripts/bench_hash.py measures the variants (1 thread, 2 threads in lockstep, this
pipeline; chunk sizes).
"""

from __future__ import annotations

import hashlib
import queue
import struct
import threading
from pathlib import Path
from typing import Callable, Iterable, Optional, Union

import numpy as np

from lorahub_cli.errors import LoraError, Truncated
from lorahub_cli.inspect.model import Hashes, RawFile
from lorahub_cli.inspect.regular import open_regular

CHUNK_SIZE = 1 << 20  # 1 MiB (x 4 buffers when threaded): best or tied-best in scripts/bench_hash.py
# Below this a second thread costs more than it saves: start-up, and GIL hand-offs while the zero scan runs.
PIPELINE_MIN_SIZE = 32 << 20


def hash_file(raw: RawFile, zero_check_keys: list[str], *, chunk_size: int = CHUNK_SIZE,
              threaded: Optional[bool] = None) -> Hashes:
    """Whole-file sha256, data-only sha256 (safetensors) and the zero_check_keys whose values are all zero.

    ``threaded`` (safetensors only): run the whole-file hasher in a second thread; None decides by file size.
    """
    if raw.container == "safetensors" and raw.data_start is not None:
        return _hash_safetensors(raw, zero_check_keys, chunk_size, threaded)
    digest = sha256_file(raw.path, chunk_size)
    return Hashes(sha256=digest, tensor_sha256=None, zero_up_keys=_zero_keys_from_values(raw, zero_check_keys),
                  nonfinite_keys=_nonfinite_from_values(raw))


def sha256_file(path: Path, chunk_size: int = CHUNK_SIZE) -> str:
    h = hashlib.sha256()
    buf = bytearray(chunk_size)
    view = memoryview(buf)
    with open_regular(path, buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def _nonfinite_from_values(raw: RawFile) -> Optional[list[str]]:
    """Float tensors holding NaN or infinities, for a container whose values are in memory (pickles)."""
    if raw.read_values is None:
        return None
    floats = [k for k, spec in raw.tensors.items() if spec.dtype in _EXPONENT_MASKS]
    return [k for k in floats if not np.isfinite(raw.read_values(k)).all()]


def _zero_keys_from_values(raw: RawFile, keys: Iterable[str]) -> Optional[list[str]]:
    if raw.read_values is None:
        return None
    return [k for k in keys if k in raw.tensors and not np.any(raw.read_values(k))]  # -0.0 == 0 here


# --- safetensors: one pass, two hashers, the tensor scan -----------------------------------------------
# little-endian float types: (element width, the exponent bits of an element read as an unsigned integer; all
# of them set means infinity or NaN). The sign is the top bit: -0.0 counts as zero.
_EXPONENT_MASKS = {"F16": (2, 0x7C00), "BF16": (2, 0x7F80), "F32": (4, 0x7F800000), "F64": (8, 0x7FF0000000000000)}
_UINTS = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


class _Run:
    """Tensors of one dtype lying back to back in the data section: scanned with a few numpy calls per chunk
    whatever their number (safetensors writers group tensors by dtype, so a LoRA is one to three runs)."""

    def __init__(self, spans: list[tuple[int, int, str]], dtype: str):
        self.begin, self.end = spans[0][0], spans[-1][1]
        self.keys = [key for _b, _e, key in spans]
        self.starts = np.array([b for b, _e, _k in spans], dtype=np.int64)   # file offsets, increasing
        floats = _EXPONENT_MASKS.get(dtype)
        self.width, self.exponent = floats if floats else (1, 0)   # other dtypes: zero means every byte zero
        self.uint = _UINTS[self.width]
        self.magnitude = self.uint((1 << (8 * self.width - 1)) - 1) if floats else None


class _TensorScan:
    """Tracks, chunk by chunk, which tensors are all zero (-0.0 counts as zero) and which float tensors hold
    a NaN or an infinity (their exponent bits tested in place, no conversion). Each chunk is cut into the
    runs it touches; an element cut by a chunk's end is joined from a small carry."""

    def __init__(self, raw: RawFile):
        assert raw.data_start is not None
        start = raw.data_start
        spans = sorted((start + s.offsets[0], start + s.offsets[1], k, s.dtype)
                       for k, s in raw.tensors.items() if s.offsets is not None)
        self.scanned = {k for _b, _e, k, _d in spans}   # an empty tensor among them is all zero, trivially
        self.runs: list[_Run] = []
        group: list[tuple[int, int, str]] = []
        group_dtype = ""
        for begin, end, key, dtype in (span for span in spans if span[1] > span[0]):
            if group and (dtype != group_dtype or begin != group[-1][1]):
                self.runs.append(_Run(group, group_dtype))
                group = []
            group.append((begin, end, key))
            group_dtype = dtype
        if group:
            self.runs.append(_Run(group, group_dtype))
        self.first = 0
        self.carry: Optional[tuple[int, bytes]] = None   # (run index, the bytes of its element cut by the chunk end)
        self.nonzero: set[str] = set()
        self.bad: list[str] = []          # non-finite tensors, in file order

    def feed(self, view: memoryview, at: int) -> None:
        """``view`` holds file bytes [at, at + len(view))."""
        stop = at + len(view)
        i = self.first
        while i < len(self.runs) and self.runs[i].begin < stop:
            run = self.runs[i]
            if run.end > at:
                lo, hi = max(run.begin, at), min(run.end, stop)
                part: Union[memoryview, bytes] = view[lo - at:hi - at]
                if self.carry is not None and self.carry[0] == i:
                    part, lo = self.carry[1] + part, lo - len(self.carry[1])
                whole = len(part) - len(part) % run.width
                if whole:
                    self._scan(run, part[:whole], lo)
                self.carry = (i, bytes(part[whole:])) if hi < run.end and whole < len(part) else None
            i += 1
        while self.first < len(self.runs) and self.runs[self.first].end <= stop:
            self.first += 1

    def _scan(self, run: _Run, part: Union[memoryview, bytes], at: int) -> None:
        """Whole elements of ``run`` starting at file offset ``at``."""
        values = np.frombuffer(part, dtype=run.uint)
        first = int(np.searchsorted(run.starts, at, side="right")) - 1
        last = int(np.searchsorted(run.starts, at + len(part), side="left"))
        # where each tensor touched begins, as an element index into ``values`` (the first may begin before)
        begins = np.maximum(run.starts[first:last] - at, 0) // run.width
        if run.magnitude is not None:
            non_finite = (values & run.uint(run.exponent)) == run.exponent
            if non_finite.any():
                hit = np.unique(np.searchsorted(begins, np.flatnonzero(non_finite), side="right") - 1)
                for j in hit:
                    key = run.keys[first + int(j)]
                    if key not in self.bad:
                        self.bad.append(key)
            nonzero = (values & run.magnitude) != 0
        else:
            nonzero = values != 0
        for j in np.flatnonzero(np.logical_or.reduceat(nonzero, begins)):
            self.nonzero.add(run.keys[first + int(j)])

    def zero_keys(self, keys: Iterable[str]) -> list[str]:
        """Those of ``keys`` that are tensors of the file with all-zero values, once each, in the order given."""
        return [k for k in dict.fromkeys(keys) if k in self.scanned and k not in self.nonzero]


def _hash_safetensors(raw: RawFile, zero_check_keys: list[str], chunk_size: int,
                      threaded: Optional[bool]) -> Hashes:
    data_start = raw.data_start
    assert data_start is not None
    whole, data = hashlib.sha256(), hashlib.sha256()
    scan = _TensorScan(raw)

    def feed_data(view: memoryview, at: int) -> None:
        if at + len(view) > data_start:
            data.update(view[max(data_start - at, 0):])  # header bytes feed only the whole-file hasher
            scan.feed(view, at)

    if threaded is None:
        threaded = raw.size >= PIPELINE_MIN_SIZE
    read = _read_pipelined if threaded else _read_sequential
    total = read(raw.path, min(chunk_size, raw.size + 1), whole.update, feed_data)
    if total < raw.size:
        raise Truncated(f"the file shrank while hashing: {total:,} of {raw.size:,} bytes read")
    return Hashes(sha256=whole.hexdigest(), tensor_sha256=data.hexdigest(),
                  zero_up_keys=scan.zero_keys(zero_check_keys), nonfinite_keys=scan.bad)


def _read_sequential(path: Path, chunk_size: int, hash_whole: Callable[[memoryview], None],
                     feed_data: Callable[[memoryview, int], None]) -> int:
    buf = bytearray(chunk_size)
    view = memoryview(buf)
    at = 0
    with open_regular(path, buffering=0) as f:
        while n := f.readinto(buf):
            hash_whole(view[:n])
            feed_data(view[:n], at)
            at += n
    return at


def _read_pipelined(path: Path, chunk_size: int, hash_whole: Callable[[memoryview], None],
                    feed_data: Callable[[memoryview, int], None], buffers: int = 4) -> int:
    """A ring of buffers: this thread reads and feeds the data side; a worker feeds the whole-file hasher with
    the chunks already done, so the two sha256 streams overlap on two cores."""
    free: queue.Queue[bytearray] = queue.Queue()
    full: queue.Queue[Optional[tuple[bytearray, int]]] = queue.Queue()
    for _ in range(buffers):
        free.put(bytearray(chunk_size))

    def worker() -> None:
        while (item := full.get()) is not None:
            buf, n = item
            hash_whole(memoryview(buf)[:n])
            free.put(buf)

    thread = threading.Thread(target=worker, name="lora-sha256", daemon=True)
    thread.start()
    at = 0
    try:
        with open_regular(path, buffering=0) as f:
            while n := f.readinto(buf := free.get()):
                feed_data(memoryview(buf)[:n], at)
                full.put((buf, n))
                at += n
    finally:
        full.put(None)  # stop the worker even when reading failed
        thread.join()
    return at


# --- hashing while the bytes arrive (a download) ----------------------------------------------------------
class StreamHasher:
    """``hash_file``'s answers computed from the bytes as they are written (a download), so that the file is
    never read again: the whole-file sha256 always; for a safetensors file whose header arrives and parses,
    also the data section's sha256 and the zero and non-finite scans (of every tensor: which ones are up/B
    weights is decided later, from the layout).

    The contract that makes the digest trustworthy: ``update`` is fed exactly the bytes written to the file,
    in order, from its first byte (a resumed download feeds the partial file's bytes first). ``hashes`` then
    answers only for a file of exactly the size fed (and, for safetensors, the same data offset); for any
    other it answers None and the caller hashes the file itself."""

    HEAD_LIMIT = 16 << 20   # a larger header (legal up to 100 MB) is not buffered: the file is hashed after

    def __init__(self) -> None:
        self.whole = hashlib.sha256()
        self.size = 0
        self._head: Optional[bytearray] = bytearray()   # bytes before the data section; None once decided
        self._raw: Optional[RawFile] = None
        self._data = hashlib.sha256()
        self._scan: Optional[_TensorScan] = None

    def update(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        at = self.size
        self.whole.update(view)
        self.size += len(view)
        if self._raw is not None:
            self._feed(view, at)
        elif self._head is not None:
            self._head += view
            self._read_header()

    def _read_header(self) -> None:
        from lorahub_cli.inspect.safetensors_header import parse_header

        head = self._head
        assert head is not None
        if len(head) < 8:
            return
        (n,) = struct.unpack("<Q", head[:8])
        if n > self.HEAD_LIMIT or head[8:9] not in (b"{", b""):
            self._head = None   # not a safetensors header we buffer: no data-side hashes
            return
        if len(head) < 8 + n:
            return
        self._head = None
        try:
            parsed = parse_header(bytes(head[8:8 + n]))
        except (LoraError, ValueError):
            return   # inspection will say what is wrong with it
        self._raw = RawFile(path=Path(), size=8 + n + parsed.data_len, container="safetensors",
                            tensors=parsed.tensors, metadata=parsed.metadata, data_start=8 + n)
        self._scan = _TensorScan(self._raw)
        self._feed(memoryview(head), 0)

    def _feed(self, view: memoryview, at: int) -> None:
        assert self._raw is not None and self._raw.data_start is not None
        start = self._raw.data_start
        if at + len(view) > start:
            self._data.update(view[max(start - at, 0):])
            self._scan.feed(view, at)      # type: ignore[union-attr]

    def raw_for(self, path: Path) -> Optional[RawFile]:
        """The container view of the file these bytes were written to, from the header parsed on the way in
        (so inspection neither reads nor parses it again), when the bytes fed are exactly one well-formed
        safetensors file: header plus the data its offsets cover. Otherwise None: ``read_container`` looks
        at the file and says what is wrong with it."""
        from lorahub_cli.inspect.safetensors_header import make_value_reader

        raw = self._raw
        if raw is None or raw.data_start is None or raw.size != self.size:
            return None
        return RawFile(path=path, size=raw.size, container="safetensors", tensors=raw.tensors, metadata=raw.metadata,
                       data_start=raw.data_start, read_values=make_value_reader(path, raw.data_start, raw.tensors))

    def sha256_if_size(self, size: int) -> Optional[str]:
        """The whole-file sha256, when ``size`` is the size fed."""
        return self.whole.hexdigest() if size == self.size else None

    def hashes(self, raw: RawFile, zero_check_keys: list[str]) -> Optional[Hashes]:
        """``hash_file(raw, zero_check_keys)``'s answer from what was fed, or None when it does not describe
        ``raw`` (another size or data offset, not a safetensors file, or a header that was not parsed)."""
        if raw.size != self.size or self._raw is None or raw.container != "safetensors":
            return None
        if raw.data_start != self._raw.data_start or self._scan is None:
            return None
        return Hashes(sha256=self.whole.hexdigest(), tensor_sha256=self._data.hexdigest(),
                      zero_up_keys=self._scan.zero_keys(zero_check_keys), nonfinite_keys=list(self._scan.bad))
