"""Civitai benchmarks against the local Civitai-compatible server (tests/civitai), in one run:

1. identify: a library of N entries (default 1,000; bulk-inserted records with real-looking hashes) looked up
   with `lora identify --all`'s engine. The catalogue knows 90% of them by AutoV3, 5% only by AutoV2 (files
   hashed before Civitai had AutoV3), and 5% not at all. Counts HTTP requests and time, cold and then again
   from the cache. The issue's target: at most 20 requests for 1,000 entries.
2. pull overhead: a plain HTTP download of the same file (urllib, following the redirect to the storage host,
   streamed to disk in 1 MiB chunks: what `curl -L -o` does), the same followed by one sha256 of the file
   (`sha256sum`: the least a verified download costs), `lora pull` of the storage URL as a plain URL
   (download, inspection, record), and `lora pull civitai:1@10` (two API calls, the download hashed as it is
   written, the sha256 check against Civitai's hash from that digest, inspection of the header, and the
   record; the stored blob is a hard link to the verified download, fsynced before the commit). The server
   runs in its own process; repetitions interleave the four ways. ``--mbps`` paces the storage host (0: as
   fast as loopback; 100: a fast real connection), one comparison per value. Wall time and this process's
   CPU time (all threads) are shown. Target: 1.1x.

Run:  .venv/bin/python scripts/bench_civitai.py [--n 1000] [--mb 150] [--reps 5] [--mbps 0 100]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.request import urlopen

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def fill(home: Path, n: int) -> list[tuple[str, str]]:
    """N entries: (sha256, tensor_sha256) each, recorded straight through the registry's tables."""
    from registry.api import Registry
    from registry.models import Adapter, AdapterMetadata, Blob, Source
    from sqlalchemy.orm import Session

    reg = Registry(home=home)
    hashes = []
    with Session(reg.db.engine) as s:
        for i in range(n):
            sha = hashlib.sha256(f"file-{i}".encode()).hexdigest()
            tensors = hashlib.sha256(f"tensors-{i}".encode()).hexdigest()
            hashes.append((sha, tensors))
            blob = Blob(sha256=sha, tensor_sha256=tensors, size=1000, stored=True)
            s.add(blob)
            s.flush()
            a = Adapter(name=f"lora-{i:05d}", blob_id=blob.id, container="safetensors", format="kohya",
                        network="lora", family="sdxl", components=["unet"], ranks=[4], tokens=[], warnings=[])
            s.add(a)
            s.flush()
            s.add(AdapterMetadata(adapter_id=a.id, data={}))
            s.add(Source(adapter_id=a.id, kind="local", path=f"/loras/{i}.safetensors"))
        s.commit()
    reg.close()
    return hashes


def bench_identify(n: int) -> dict:
    from lorahub_cli.sources.civitai_api import CivitaiApi
    from lorahub_cli.sources.civitai_identify import identify
    from registry.api import Registry
    from tests.civitai.server import CFile, CivitaiServer, CModel, CVersion

    work = Path(tempfile.mkdtemp(prefix="bench-civitai-"))
    server = CivitaiServer()
    try:
        hashes = fill(work / "home", n)
        for i, (sha, tensors) in enumerate(hashes):
            if i % 20 == 19:
                continue                                  # 5%: Civitai has never seen it
            fixed = {"AutoV2": sha[:10].upper(), "SHA256": sha.upper()}
            if i % 20 != 18:
                fixed["AutoV3"] = tensors[:12].upper()    # 90% by AutoV3; 5% only by AutoV2
            f = CFile(i + 1, f"lora-{i}.safetensors", b"", fixed=fixed)
            server.add_model(CModel(i + 1, f"Model {i}", versions=[CVersion(100000 + i, i + 1, "v1", [f],
                                                                                base_model="Pony")]))
        out = {}
        with Registry(home=work / "home") as reg:
            for label in ("cold", "cached"):
                api = CivitaiApi(endpoint=server.url)
                start = time.perf_counter()
                entries = [reg.get(r.name) for r in reg.list()]   # as `lora identify --all` reads them
                results = identify(reg, entries, api=api, previews=False)
                seconds = time.perf_counter() - start
                by = {}
                for r in results:
                    by[r.matched_by or r.status] = by.get(r.matched_by or r.status, 0) + 1
                out[label] = {"requests": api.requests, "seconds": seconds, "by": by}
        return out
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


def start_server(mb: float, mbps: float = 0) -> tuple[subprocess.Popen, str, int]:
    proc = subprocess.Popen([sys.executable, "-m", "tests.civitai", "--lora-mb", str(mb), "--mbps", str(mbps)],
                            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    fields = dict(item.split("=", 1) for item in proc.stdout.readline().split())
    return proc, fields["CIVITAI_ENDPOINT"], int(fields["SIZE"])


def plain_download(endpoint: str, target: Path) -> int:
    total = 0
    with urlopen(f"{endpoint}/api/download/models/10") as response, open(target, "wb") as out:
        while chunk := response.read(1 << 20):
            out.write(chunk)
            total += len(chunk)
    return total


def sha256_of(path: Path) -> str:
    """What `sha256sum` adds to a download: the least any verified pull must do."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def lora_pull(endpoint: str, home: Path) -> str:
    from lorahub_cli.sources.civitai_api import CivitaiApi
    from lorahub_cli.sources.civitai_pull import pull_civitai
    from lorahub_cli.sources.parse import parse_source
    from registry.api import Registry

    with Registry(home=home) as reg:
        out = pull_civitai(parse_source("civitai:1@10"), reg, api=CivitaiApi(endpoint=endpoint), previews=False)
    return out["status"]


def storage_url(endpoint: str) -> str:
    """Where the download URL redirects: the same bytes as a plain URL on the storage host."""
    import http.client
    from urllib.parse import urlsplit

    conn = http.client.HTTPConnection(urlsplit(endpoint).netloc)
    conn.request("HEAD", "/api/download/models/10")
    location = conn.getresponse().getheader("Location")
    conn.close()
    return location


def url_pull(url: str, home: Path) -> str:
    from lorahub_cli.sources.pull import pull
    from registry.api import Registry

    with Registry(home=home) as reg:
        return pull(url, registry=reg).status


def bench_pull(mb: float, reps: int, mbps: float = 0) -> dict:
    proc, endpoint, size = start_server(mb, mbps)
    os.environ["CIVITAI_ENDPOINT"] = endpoint
    names = ["plain HTTP download", "download + sha256", "lora pull URL", "lora pull"]
    times: dict[str, list[float]] = {k: [] for k in names}
    cpu: dict[str, list[float]] = {k: [] for k in names}

    def measure(label: str, fn) -> None:
        wall, used = time.perf_counter(), time.process_time()
        fn()
        times[label].append(time.perf_counter() - wall)
        cpu[label].append(time.process_time() - used)

    try:
        lora_pull(endpoint, Path(tempfile.mkdtemp(prefix="bench-warm-")))   # imports and first connections
        for rep in range(reps):
            work = Path(tempfile.mkdtemp(prefix="bench-pull-"))
            from registry.api import Registry

            for home in ("home", "url-home"):
                with Registry(home=work / home) as reg:
                    reg.list()   # an existing library, as a user has: its creation is not part of a pull
                    reg.db.engine
            steps = [("plain HTTP download", lambda: plain_download(endpoint, work / "plain.safetensors") == size
                      or sys.exit("short download")),
                     ("download + sha256", lambda: (plain_download(endpoint, work / "checked.safetensors"),
                                                    sha256_of(work / "checked.safetensors"))),
                     ("lora pull URL", lambda: url_pull(storage_url(endpoint), work / "url-home") == "added"
                      or sys.exit("URL pull not added")),
                     ("lora pull", lambda: lora_pull(endpoint, work / "home") == "added" or sys.exit("not added"))]
            try:
                for label, fn in (steps if rep % 2 == 0 else steps[::-1]):   # interleaved, alternating order
                    measure(label, fn)
            finally:
                shutil.rmtree(work, ignore_errors=True)
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
    return {"size": size, "times": times, "cpu": cpu}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--mb", type=float, default=150)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--mbps", type=float, nargs="*", default=[0.0],
                        help="the storage host's bandwidth in MB/s for the pull comparison, one run each (0: unpaced)")
    args = parser.parse_args()
    print("load before:", os.getloadavg())
    if args.n:
        ident = bench_identify(args.n)
        print(f"identify {args.n} entries")
        for label, r in ident.items():
            print(f"  {label:7s} {r['requests']:3d} HTTP requests  {r['seconds']:.2f} s  {r['by']}")
    for mbps in args.mbps:
        pulled = bench_pull(args.mb, args.reps, mbps)
        pace = f"storage host paced at {mbps:g} MB/s" if mbps else "unpaced loopback"
        print(f"pull of a {pulled['size'] / 1e6:.0f} MB file, {pace}, {args.reps} interleaved runs")
        print(f"  {'':20s} {'wall min / median s':>22s}  {'vs plain':>8s}  {'CPU median s':>12s}")
        base = statistics.median(pulled["times"]["plain HTTP download"])
        for label, values in pulled["times"].items():
            med = statistics.median(values)
            print(f"  {label:20s} {min(values):10.3f} / {med:.3f}   {med / base:7.2f}x  "
                  f"{statistics.median(pulled['cpu'][label]):12.3f}")
    print("load after:", os.getloadavg())


if __name__ == "__main__":
    main()
