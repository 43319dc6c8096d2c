"""`lora install` of a 200-adapter lock against 200 plain `hf_hub_download` calls, side by side.

One local Hub (tests.hubserver, in its own process so it does not share our GIL) serves N repos, each with one
real SD1 LoRA safetensors file. Each repetition, with fresh, empty caches and library, runs in alternating order:

  hf_hub_download x N     the client alone, by the same commit and file (what a script would do by hand)
  lora install (missing)  the same N files from a lock: one hf_hub_download each (no API call: the lock knows
                          commit, file and sha256), sha256 checked against the lock in the inspection pass, and
                          each stored in the library (a hard link to the HF cache blob plus its record)
then, on the library just filled:
  lora install (present)  every entry present: one query for the library's hashes plus a stat per entry
  lora install --verify   the same, re-hashing every stored file
  `lora install` CLI      the present case as a user runs it: a fresh process (start-up included), and
  `lora --version`        that start-up alone, for reference

``--rtt-ms`` makes the server wait before each answer, as a real network's round trip does (huggingface_hub
makes two requests per file: the metadata HEAD and the GET). Wall and CPU time (this process, all threads).

Run:  .venv/bin/python scripts/bench_install.py [--n 200] [--reps 3] [--rtt-ms 0] [--write docs/benchmarks/lock.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
FILE = "pytorch_lora_weights.safetensors"

_SERVER = """
import hashlib, json, sys, time
from tests.hubserver import HubServer, lora_safetensors
from tests.hubserver import server as hubserver
n, rtt = int(sys.argv[1]), float(sys.argv[2]) / 1000
if rtt:   # a network's round trip before each answer (the local Hub answers at once otherwise)
    dispatch = hubserver._Handler._dispatch
    hubserver._Handler._dispatch = lambda self, method: (time.sleep(rtt), dispatch(self, method))[1]
with HubServer() as server:
    repos = []
    for i in range(n):
        data = lora_safetensors(seed=i)
        server.hub.create_repo(f"bench/lora-{i:03d}", {%r: data})
        repos.append([f"bench/lora-{i:03d}", None, hashlib.sha256(data).hexdigest(), len(data)])
    print(json.dumps({"endpoint": server.url, "repos": repos}), flush=True)
    sys.stdin.read()
""" % FILE


def start_server(n: int, rtt_ms: float = 0) -> tuple[subprocess.Popen, dict]:
    proc = subprocess.Popen([sys.executable, "-c", _SERVER, str(n), str(rtt_ms)], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    return proc, json.loads(proc.stdout.readline())


def commits(endpoint: str, repos: list) -> list:
    """Each repo's commit, asked once from the Hub (the lock records it; nothing timed)."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint)
    return [[repo, api.model_info(repo).sha, sha, size] for repo, _, sha, size in repos]


def make_lock(repos: list, path: Path) -> None:
    from lorahub_cli.lock.model import LockEntry, LockFile, LockSource
    from lorahub_cli.lock.toml import dumps

    entries = [LockEntry(name=repo.split("/")[1], sha256=sha, size=size,
                         sources=[LockSource("hub", repo=repo, file=FILE, commit=commit)])
               for repo, commit, sha, size in repos]
    path.write_text(dumps(LockFile(entries=entries)))


CPU: dict[str, list[float]] = {}   # this process's CPU time (all threads) per step, beside the wall time


def timed(fn, label: str = "") -> tuple[float, object]:
    start, used = time.perf_counter(), time.process_time()
    result = fn()
    if label:
        CPU.setdefault(label, []).append(time.process_time() - used)
    return time.perf_counter() - start, result


def plain(endpoint: str, repos: list, cache: Path) -> float:
    from huggingface_hub import hf_hub_download

    def run() -> None:
        for repo, commit, _, _ in repos:
            hf_hub_download(repo, FILE, revision=commit, cache_dir=cache, endpoint=endpoint)

    return timed(run, "plain")[0]


def ours(lock_path: Path, home: Path, hf_home: Path) -> dict[str, float]:
    from lorahub_cli.lock.install import install
    from lorahub_cli.lock.toml import read_lock
    from registry.api import Registry

    os.environ["HF_HOME"] = str(hf_home)
    out: dict[str, float] = {}
    with Registry(home=home) as registry:
        registry.db   # the library exists already (its one-time creation is not part of an install)
        out["lora install (missing)"], got = timed(lambda: install(read_lock(lock_path), registry), "install")
        assert {o.status for o in got} == {"fetched"}, {o.status: o.error for o in got}
        out["lora install (present)"], got = timed(lambda: install(read_lock(lock_path), registry))
        assert {o.status for o in got} == {"present"}
        out["lora install --verify (present)"], got = timed(lambda: install(read_lock(lock_path), registry,
                                                                              verify=True))
        assert {o.status for o in got} == {"present"}
    env = {**os.environ, "LORAHUB_HOME": str(home)}
    cli = [sys.executable, "-m", "lorahub_cli"]
    out["`lora install` CLI (present, fresh process)"], proc = timed(
        lambda: subprocess.run([*cli, "install", str(lock_path), "--json"], env=env, capture_output=True))
    assert proc.returncode == 0, proc.stderr
    out["`lora --version` (start-up alone)"], _ = timed(lambda: subprocess.run([*cli, "--version"], env=env,
                                                                               capture_output=True))
    return out


def warm_up_install(lock_path: Path, home: Path, hf_home: Path) -> None:
    """One small install before timing, as the plain side gets its warm-up calls: the imports (the database
    layer, inspection) are paid once per process, not per adapter."""
    from lorahub_cli.lock.install import install
    from lorahub_cli.lock.toml import read_lock
    from registry.api import Registry

    os.environ["HF_HOME"] = str(hf_home)
    with Registry(home=home) as registry:
        assert {o.status for o in install(read_lock(lock_path), registry)} == {"fetched"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--write", type=Path, help="write the markdown table into this file (between markers)")
    parser.add_argument("--rtt-ms", type=float, default=0,
                        help="the server waits this long before each answer (a network's round trip; 0: none)")
    args = parser.parse_args()
    load_before = os.getloadavg()
    for key, value in (("HF_HUB_DISABLE_TELEMETRY", "1"), ("HF_HUB_DISABLE_XET", "1"),
                       ("HF_HUB_DISABLE_PROGRESS_BARS", "1"), ("NO_PROXY", "127.0.0.1,localhost"),
                       ("HF_HUB_OFFLINE", "0"), ("LORAHUB_NO_PROGRESS", "1")):
        os.environ[key] = value
    os.environ.pop("HF_TOKEN", None)
    proc, served = start_server(args.n, args.rtt_ms)
    endpoint = served["endpoint"]
    os.environ["HF_ENDPOINT"] = endpoint
    rows: dict[str, list[float]] = {}
    try:
        repos = commits(endpoint, served["repos"])
        with tempfile.TemporaryDirectory(prefix="bench-install-") as tmp:
            work = Path(tmp)
            lock = work / "lora.lock"
            make_lock(repos, lock)
            plain(endpoint, repos[:5], work / "warm")   # imports and the first connection, for both sides
            warm_lock = work / "warm.lock"
            make_lock(repos[:5], warm_lock)
            warm_up_install(warm_lock, work / "warm-home", work / "warm-hf")
            CPU.clear()
            for rep in range(args.reps):
                runs = [("plain", None), ("ours", None)]
                for which, _ in (runs if rep % 2 == 0 else runs[::-1]):
                    if which == "plain":
                        rows.setdefault(f"hf_hub_download x {args.n}", []).append(
                            plain(endpoint, repos, work / f"plain-{rep}"))
                    else:
                        for k, v in ours(lock, work / f"home-{rep}", work / f"hf-{rep}").items():
                            rows.setdefault(k, []).append(v)
                for p in work.iterdir():
                    if p.is_dir():
                        shutil.rmtree(p)
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
    text = render(rows, args.n, args.reps, served["repos"][0][3], args.rtt_ms, load_before, os.getloadavg())
    print(text)
    if args.write:
        write_block(args.write, text)


BEGIN, END = "<!-- bench_install:begin -->", "<!-- bench_install:end -->"


def write_block(doc: Path, text: str) -> None:
    """Replace the measured block of ``doc`` (between the markers), keeping the prose around it."""
    old = doc.read_text() if doc.exists() else f"# `lora install` benchmark\n\n{BEGIN}\n{END}\n"
    if BEGIN not in old or END not in old:
        old += f"\n{BEGIN}\n{END}\n"
    head, rest = old.split(BEGIN, 1)
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(head + f"{BEGIN}\n{text}{END}" + rest.split(END, 1)[1])


def render(rows: dict[str, list[float]], n: int, reps: int, size: int, rtt_ms: float = 0,
           load_before: tuple = (), load_after: tuple = ()) -> str:
    import huggingface_hub

    base = statistics.median(rows[f"hf_hub_download x {n}"])
    net = f"{rtt_ms:g} ms before each answer" if rtt_ms else "no added latency"
    load = " -> ".join(f"{a[0]:.1f}" for a in (load_before, load_after) if a)
    lines = [f"{n} repos, one {size / 1e6:.2f} MB SD1 LoRA each; {reps} repetitions in alternating order, fresh "
             f"caches and library each; huggingface_hub {huggingface_hub.__version__}, Python "
             f"{platform.python_version()}, {os.cpu_count()} CPUs, loopback to a stdlib server in another process "
             f"({net}); load average {load}",
             "", "| step | median s | min s | max s | vs hf_hub_download (median) | CPU median s |",
             "|---|---:|---:|---:|---:|---:|"]
    cpu = {f"hf_hub_download x {n}": CPU.get("plain"), "lora install (missing)": CPU.get("install")}
    for name, values in rows.items():
        med = statistics.median(values)
        used = f"{statistics.median(cpu[name]):.3f}" if cpu.get(name) else ""
        lines.append(f"| {name} | {med:.3f} | {min(values):.3f} | {max(values):.3f} | {med / base:.2f}x | {used} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
