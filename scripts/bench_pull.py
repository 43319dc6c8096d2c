"""`lora pull` of a large adapter from a local Hub against `huggingface_hub.hf_hub_download` of the same file.

Side by side, in one run, several repetitions, each with fresh, empty caches:
  hf_hub_download      the client alone (what a user would do by hand; checks only the size)
  lora fetch           model_info + hf_hub_download + verification (sha256 against the Hub's LFS hash, in the
                       same pass that inspects the file); "model_info" is the one API call on its own
  verify + inspect     that verification alone, on the page-cached file: one read feeding the whole-file
                       sha256, inspection's data-section sha256 and its all-zero check
  lora pull (library)  lora fetch + copy into the library's blob store (hashed again while copying, fsynced)
  URL stream           the same bytes as a plain URL: streamed to the staging area + inspection
  re-read only         reading the downloaded (page-cached) file once more without hashing: all that hashing
                       during the download could save
  sha256 only          one sha256 pass over the downloaded (page-cached) file: the floor of any verification

The fake Hub runs in its own process (python -m tests.hubserver) so it does not share the GIL with the client.
Run:  .venv/bin/python scripts/bench_pull.py [--mb 150] [--reps 5] [--write docs/benchmarks/hub.md]
"""

from __future__ import annotations

import argparse
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
REPO, FILE = "bench/lora", "pytorch_lora_weights.safetensors"


def start_server(mb: float) -> tuple[subprocess.Popen, str, int]:
    proc = subprocess.Popen([sys.executable, "-m", "tests.hubserver", "--repo", REPO, "--lora-mb", str(mb)],
                            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().split()
    fields = dict(item.split("=", 1) for item in line)
    return proc, fields["HF_ENDPOINT"], int(fields["SIZE"])


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def read_only(path: Path) -> int:
    """What a second read costs without hashing: the part hashing during the download would save."""
    buf = bytearray(1 << 20)
    total = 0
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            total += n
    return total


def one_round(endpoint: str, work: Path) -> dict[str, float]:
    from huggingface_hub import hf_hub_download

    from lorahub_cli.sources import HubSettings, download_hub, fetch_url, parse_source, resolve_hub
    from lorahub_cli.sources.verify import sha256_file, verify_and_inspect

    times: dict[str, float] = {}
    # 1. the client alone
    cache = work / "hf-only"
    times["hf_hub_download"], path = timed(lambda: hf_hub_download(REPO, FILE, cache_dir=cache, endpoint=endpoint))
    times["re-read only (page cache)"], _ = timed(lambda: read_only(Path(path)))
    times["sha256 only"], _ = timed(lambda: sha256_file(Path(path)))
    shutil.rmtree(cache)
    # 2. lora fetch: resolve + download + verify/inspect
    os.environ["HF_HOME"] = str(work / "hf-lora")
    settings = HubSettings.current()

    t_resolve, plan = timed(lambda: resolve_hub(parse_source(REPO), settings))
    t_download, fetched = timed(lambda: download_hub(plan, settings=settings))
    times["lora fetch"] = t_resolve + t_download
    times["lora fetch: model_info"] = t_resolve
    times["verify + inspect only"], _ = timed(lambda: verify_and_inspect(
        fetched.path, what="bench", expected_sha256=fetched.provenance.expected_sha256))
    # 3. and into the library (copy + hash + fsync), as `lora pull` does
    try:
        from lorahub_cli.ingest import ingest
        from registry.api import Registry
    except ImportError:
        Registry = None
    if Registry is not None:
        with Registry(home=work / "library") as registry:
            t, _ = timed(lambda: ingest(fetched.path, registry, report=fetched.report, name="bench"))
        times["lora pull (library)"] = times["lora fetch"] + t
    shutil.rmtree(work / "hf-lora")
    # 4. the same bytes as a plain URL, streamed to staging
    times["URL stream"], got = timed(lambda: fetch_url(f"{endpoint}/static/{FILE}", work / "staging"))
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=float, default=150.0)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--write", type=Path, help="write the markdown table to this file")
    args = parser.parse_args()
    for key, value in (("HF_HUB_DISABLE_TELEMETRY", "1"), ("HF_HUB_DISABLE_XET", "1"),
                       ("HF_HUB_DISABLE_PROGRESS_BARS", "1"), ("NO_PROXY", "127.0.0.1,localhost")):
        os.environ[key] = value
    os.environ.pop("HF_TOKEN", None)
    proc, endpoint, size = start_server(args.mb)
    os.environ["HF_ENDPOINT"] = endpoint
    os.environ["LORAHUB_HOME"] = tempfile.mkdtemp(prefix="bench-home-")
    rows: dict[str, list[float]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-pull-") as tmp:
            one_round(endpoint, Path(tmp) / "w")  # warm-up: imports, first connection
            for _ in range(args.reps):
                for name, seconds in one_round(endpoint, Path(tmp) / "w").items():
                    rows.setdefault(name, []).append(seconds)
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)
        shutil.rmtree(os.environ["LORAHUB_HOME"], ignore_errors=True)
    text = render(rows, size, args.reps)
    print(text)
    if args.write:
        write_block(args.write, text)


BEGIN, END = "<!-- bench_pull:begin -->", "<!-- bench_pull:end -->"


def write_block(doc: Path, text: str) -> None:
    """Replace the measured block of ``doc`` (between the markers), keeping the prose around it."""
    block = f"{BEGIN}\n{text}{END}"
    old = doc.read_text() if doc.exists() else f"# `lora pull` benchmark\n\n{BEGIN}\n{END}\n"
    if BEGIN not in old or END not in old:
        old += f"\n{BEGIN}\n{END}\n"
    head, rest = old.split(BEGIN, 1)
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(head + block + rest.split(END, 1)[1])


def render(rows: dict[str, list[float]], size: int, reps: int) -> str:
    import huggingface_hub

    base = statistics.median(rows["hf_hub_download"])
    lines = [f"file: {size / 1e6:.1f} MB safetensors (SD1 LoRA), {reps} repetitions after a warm-up, fresh caches "
             f"each; huggingface_hub {huggingface_hub.__version__}, Python {platform.python_version()}, "
             f"{os.cpu_count()} CPUs, loopback to a stdlib server in another process", "",
             "| step | median s | min s | max s | MB/s (median) | vs hf_hub_download |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, values in rows.items():
        med = statistics.median(values)
        rate = "" if ":" in name else f"{size / 1e6 / med:.0f}"  # a part of a step moves no bytes of its own
        lines.append(f"| {name} | {med:.3f} | {min(values):.3f} | {max(values):.3f} | {rate} | {med / base:.2f}x |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
