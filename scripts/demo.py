"""The main job, as a guided tour: make a few adapters (real layer names and shapes, random numbers) and
traps, then inspect, add, list, show, check, convert and merge them with the real `lora` command, in a
throw-away library. Needs no network and no GPU.

Usage: python scripts/demo.py [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.fixtures.adapters import write_adapter  # noqa: E402  (the same generators the tests use)


def lora(*args: str, env: dict) -> int:
    shown = " ".join(shlex.quote(str(a)) for a in args)
    print(f"\n$ lora {shown}", flush=True)
    return subprocess.run([sys.executable, "-m", "lorahub_cli", *map(str, args)], env=env).returncode


def make_inputs(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "style": write_adapter(folder / "style_sd15_kohya.safetensors", "sd15", "kohya", rank=8, alpha=4.0),
        "subject": write_adapter(folder / "subject_sd15_diffusers.safetensors", "sd15", "diffusers", rank=4),
        "legacy": write_adapter(folder / "legacy_attn_procs.bin", "sd15", "attn-procs-bin", rank=4),
        "xl": write_adapter(folder / "xl_kohya.safetensors", "sdxl", "kohya", rank=4),
    }
    trap = folder / "downloaded_page.safetensors"
    trap.write_text("<!DOCTYPE html><html><body>Sign in to download</body></html>")
    files["trap"] = trap
    return files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", type=Path, help="use this folder (kept afterwards) instead of a temporary one")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="lora-demo-"))
    env = {**os.environ, "LORAHUB_HOME": str(work / "library"), "HF_HUB_OFFLINE": "1"}
    print(f"demo folder: {work}")
    files = make_inputs(work / "downloads")

    steps = [
        ("inspect", str(work / "downloads")),
        ("add", str(work / "downloads"), "--tag", "demo"),
        ("convert", str(files["legacy"]), "-o", str(work / "legacy_fixed.safetensors")),
        ("add", str(work / "legacy_fixed.safetensors"), "--name", "legacy-fixed"),
        ("list",),
        ("show", "style_sd15_kohya"),
        ("check", "style_sd15_kohya", "xl_kohya", "--base", "sd15"),
        ("merge", "style_sd15_kohya:0.7", "subject_sd15_diffusers:0.5", "-o", str(work / "style_and_subject.safetensors")),
        ("inspect", str(work / "style_and_subject.safetensors")),
        ("doctor",),
    ]
    available = subprocess.run([sys.executable, "-m", "lorahub_cli", "--help"], capture_output=True, text=True,
                               env={**env, "COLUMNS": "200"}).stdout
    for step in steps:
        if f" {step[0]} " not in available:
            print(f"\n(skipping `lora {step[0]}`: not in this version)")
            continue
        lora(*step, env=env)  # some steps exit 1 on purpose: the trap, the SDXL adapter checked against SD1.5
    print(f"\nDone. The library is in {work / 'library'}; try `LORAHUB_HOME={work / 'library'} lora list`.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
