"""Benchmark the one-pass safetensors hashing (whole-file sha256 + data-section sha256 + zero check).

    .venv/bin/python scripts/bench_hash.py [--size-mb 500] [FILE ...]

Builds a page-cached synthetic safetensors file of --size-mb (half its tensors zero) unless FILEs are given,
then times each variant: plain hashlib over the file (the floor), one thread vs two threads, several chunk
sizes, and the shipped ``hash_file``. Prints MB/s (best of --repeat). Nothing here is imported by the product.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import queue
import threading
import struct
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lorahub_cli.inspect.containers import read_container  # noqa: E402
from lorahub_cli.inspect.hashing import _TensorScan, hash_file  # noqa: E402


def make_file(path: Path, size_mb: int) -> None:
    """Tensors of 64 KiB to 4 MiB (LoRA-like sizes), every other one all zero."""
    sizes = [64 << 10, 256 << 10, 1 << 20, 4 << 20]
    header, offset, i = {}, 0, 0
    while offset < size_mb << 20:
        n = sizes[i % len(sizes)]
        header[f"t{i:05d}.lora_up.weight"] = {"dtype": "F32", "shape": [n // 4], "data_offsets": [offset, offset + n]}
        offset += n
        i += 1
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    random = os.urandom(max(sizes))
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        for k, entry in enumerate(header.values()):
            n = entry["data_offsets"][1] - entry["data_offsets"][0]
            f.write(bytes(n) if k % 2 else random[:n])


def one_thread(raw, keys, chunk):
    whole, data, scan = hashlib.sha256(), hashlib.sha256(), _TensorScan(raw)
    buf = bytearray(chunk)
    view, at = memoryview(buf), 0
    with open(raw.path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            part = view[:n]
            whole.update(part)
            if at + n > raw.data_start:
                data.update(part[max(raw.data_start - at, 0):])
                scan.feed(part, at)
            at += n
    return whole.hexdigest(), data.hexdigest()


def two_threads(raw, keys, chunk):
    whole, data, scan = hashlib.sha256(), hashlib.sha256(), _TensorScan(raw)
    buf = bytearray(chunk)
    view, at = memoryview(buf), 0
    with open(raw.path, "rb", buffering=0) as f, ThreadPoolExecutor(1) as pool:
        while n := f.readinto(buf):
            part = view[:n]
            job = pool.submit(whole.update, part)
            if at + n > raw.data_start:
                data.update(part[max(raw.data_start - at, 0):])
                scan.feed(part, at)
            job.result()
            at += n
    return whole.hexdigest(), data.hexdigest()


def pipelined(raw, keys, chunk, nbuf=4):
    """Main thread: read, data hash, zero scan; worker: whole-file hash of the previous chunks (a buffer ring)."""
    whole, data, scan = hashlib.sha256(), hashlib.sha256(), _TensorScan(raw)
    free, full = queue.Queue(), queue.Queue()
    for _ in range(nbuf):
        free.put(bytearray(chunk))

    def worker():
        while (item := full.get()) is not None:
            buf, n = item
            whole.update(memoryview(buf)[:n])
            free.put(buf)

    thread = threading.Thread(target=worker)
    thread.start()
    at = 0
    with open(raw.path, "rb", buffering=0) as f:
        while True:
            buf = free.get()
            n = f.readinto(buf)
            if not n:
                break
            part = memoryview(buf)[:n]
            if at + n > raw.data_start:
                data.update(part[max(raw.data_start - at, 0):])
                scan.feed(part, at)
            full.put((buf, n))
            at += n
    full.put(None)
    thread.join()
    return whole.hexdigest(), data.hexdigest()


def plain_sha256(raw, keys, chunk):
    h, buf = hashlib.sha256(), bytearray(chunk)
    view = memoryview(buf)
    with open(raw.path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def timed(fn, repeat):
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def bench(path: Path, repeat: int, chunks_kib: list[int]) -> None:
    raw = read_container(path)
    keys = [k for k in raw.tensors if "up" in k]
    mb = raw.size / 1e6
    with open(path, "rb") as f:  # warm the page cache
        while f.read(1 << 24):
            pass
    print(f"{path.name}: {mb:,.1f} MB, {len(raw.tensors)} tensors, {len(keys)} zero-checked")
    for chunk_kib in chunks_kib:
        chunk = chunk_kib << 10
        for name, fn in (("sha256 only", plain_sha256), ("1 thread", one_thread), ("2 threads", two_threads),
                         ("pipelined", pipelined)):
            s = timed(lambda: fn(raw, keys, chunk), repeat)
            print(f"  {name:12s} chunk {chunk_kib:6d} KiB: {mb / s:8.0f} MB/s")
    for label, threaded in (("auto", None), ("threaded", True), ("one thread", False)):
        s = timed(lambda: hash_file(raw, keys, threaded=threaded), repeat)
        print(f"  hash_file ({label}): {mb / s:8.0f} MB/s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("files", nargs="*", type=Path)
    ap.add_argument("--size-mb", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--chunks-kib", type=int, nargs="+", default=[64, 256, 1024, 4096, 16384])
    args = ap.parse_args()
    if args.files:
        for p in args.files:
            bench(p, args.repeat, args.chunks_kib)
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.safetensors"
        make_file(path, args.size_mb)
        bench(path, args.repeat, args.chunks_kib)


if __name__ == "__main__":
    main()
