"""`lora extract`'s peak memory beside a dense reference, on SD1.5-shaped random model pairs.

Two diffusers folders are written with SD1.5's real configs and a U-Net + text encoder whose layers have the
real SD1.5 shapes (all of them, or an even sample with --layers; fp16 on disk), the tuned one differing by a
low-rank update in every layer. Each method then runs in its own child process and its peak RSS is read from
``wait4``:
* ours: ``lycoris.extract.extract`` + the command's writer, layer by layer from the memory-mapped files;
* dense reference: both models loaded whole (``safetensors.torch.load_file``), then the same per-layer SVD.

    .venv/bin/python scripts/bench_extract.py --layers 0        # every layer of SD1.5's U-Net and CLIP
    .venv/bin/python scripts/bench_extract.py --layers 0 --keep /tmp/x    # keep (or reuse) the two folders

Peak RSS counts the file pages a process has mapped: ours maps one layer per read and unmaps it, so what it
reports is its own memory, not the page cache.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

OURS = """
import sys, json
from pathlib import Path
sys.path.insert(0, {root!r})
from lorahub_cli.bases import resolve_base
from lorahub_cli.lycoris.extract import extract
from lorahub_cli.lycoris.lowrank import Criterion
from lorahub_cli.commands.extract import _write
a, b = resolve_base({base!r}), resolve_base({tuned!r})
r = extract(a, b, Criterion("rank", {rank}, {rank}), threshold=0)
_write(r, a, Path({out!r}), force=True, criterion="rank {rank}")
print(json.dumps({{"layers": len(r.layers)}}))
"""

DENSE = """
import sys, json, glob
sys.path.insert(0, {root!r})
import torch
from safetensors.torch import load_file
from lorahub_cli.lycoris.extract import _lowrank
from lorahub_cli.lycoris.lowrank import Criterion
n = 0
a, b = {{}}, {{}}
for comp in ("unet", "text_encoder"):
    for f in glob.glob({base!r} + "/" + comp + "/*.safetensors"):
        a.update({{comp + "." + k: v for k, v in load_file(f).items()}})
    for f in glob.glob({tuned!r} + "/" + comp + "/*.safetensors"):
        b.update({{comp + "." + k: v for k, v in load_file(f).items()}})
pairs = {{}}
for k in a:
    if a[k].dim() in (2, 4):
        pairs[k] = _lowrank(k, b[k].float() - a[k].float(), Criterion("rank", {rank}, {rank}))[0]
        n += 1
print(json.dumps({{"layers": n}}))
"""


def make_models(root: Path, layers: int, seed: int = 0) -> tuple[Path, Path]:
    import torch
    from safetensors.torch import save_file

    from lorahub_cli.archs import config_dir, module_table

    g = torch.Generator().manual_seed(seed)
    folders = []
    for which in ("base", "tuned"):
        folder = root / which
        shutil.copytree(config_dir("sd15"), folder)
        folders.append(folder)
    for component, file in (("unet", "diffusion_pytorch_model.safetensors"), ("text_encoder", "model.safetensors")):
        table = list(module_table("sd15", component).items())
        if layers:
            step = max(1, len(table) // max(1, layers // 2))
            table = table[::step]
        base, tuned = {}, {}
        for name, layer in table:
            shape = (layer.out_features, layer.in_features, *(layer.kernel or ()))
            w = torch.randn(*shape, generator=g, dtype=torch.float16) * 0.02
            delta = (torch.randn(shape[0], 4, generator=g) @ torch.randn(4, w[0].numel(), generator=g)) * 1e-3
            base[f"{name}.weight"] = w
            tuned[f"{name}.weight"] = (w.float() + delta.reshape(shape)).half()
        for folder, state in zip(folders, (base, tuned)):
            (folder / component).mkdir(exist_ok=True)
            save_file(state, str(folder / component / file))
        del base, tuned
    return folders[0], folders[1]


def peak(code: str) -> tuple[float, float, str]:
    """(peak RSS in MB, wall seconds, stdout) of ``code`` in a child process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = proc.stdout.read().decode()
    err = proc.stderr.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        sys.exit(f"child failed:\n{err[-2000:]}")
    return usage.ru_maxrss / 1024, time.perf_counter() - t0, out.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, default=40, help="an even sample of the layers (0: all)")
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--keep", type=Path, help="write the two folders here and keep them; reused when present")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.keep and (args.keep / "tuned" / "unet").is_dir():
            base, tuned = args.keep / "base", args.keep / "tuned"
        else:
            base, tuned = make_models(args.keep or Path(tmp), args.layers)
        size = sum(f.stat().st_size for f in base.rglob("*.safetensors")) / 2 ** 20
        fmt = dict(root=str(ROOT), base=str(base), tuned=str(tuned), rank=args.rank,
                   out=str(Path(tmp) / "x.safetensors"))
        ours = peak(OURS.format(**fmt))
        dense = peak(DENSE.format(**fmt))
    layers = json.loads(ours[2])["layers"]
    print(f"SD1.5-shaped pair, {layers} layers, {size:.0f} MB per model (fp16), rank {args.rank}")
    print(f"  ours (layer by layer, one mapping per read): peak RSS {ours[0]:7.0f} MB, {ours[1]:6.1f} s")
    print(f"  dense reference (both models loaded): peak RSS {dense[0]:7.0f} MB, {dense[1]:6.1f} s")


if __name__ == "__main__":
    main()
