"""`lora resize` (SVD from the factors) against kohya's method (dense update, then a full SVD per layer).

Both run in this process on the same file, one after the other, end to end (read, resize, write):
* ours: ``convert_file(..., to="lora", resize=criterion)``, which also reads the result back and verifies it;
* kohya's method, as ``networks/resize_lora.py`` defines it (written out again here): ``up @ down`` in fp32,
  ``torch.linalg.svd`` of the dense update, ``rank_resize``'s criteria, ``U[:, :k] * S[:k]`` and ``Vh[:k]``,
  alpha = scale * k, saved with safetensors.
The adapters are kohya files on the real SD1.5 / SDXL module tables (every Linear and 1x1 conv the usual
kohya LoRA targets, or an even sample of them with --layers) with a decaying spectrum, so the dynamic criteria
choose different ranks per layer. Reported: wall time of each, the speed-up, whether every layer got the same
rank, and the largest difference of the relative errors left (each measured against the float64 update).

    .venv/bin/python scripts/bench_resize.py --family sd15 --rank 64 --layers 48
    .venv/bin/python scripts/bench_resize.py --family sdxl --rank 128 --layers 48 --criterion sv_fro:0.9
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lorahub_cli.archs import module_table  # noqa: E402
from lorahub_cli.archs.naming import kohya_name, kohya_prefix  # noqa: E402
from lorahub_cli.convert import convert_file  # noqa: E402
from lorahub_cli.lycoris.lowrank import Criterion  # noqa: E402

TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2", "q_proj",
           "k_proj", "v_proj", "out_proj", "fc1", "fc2")


def make_file(path: Path, family: str, rank: int, layers: int, seed: int = 0) -> dict[str, str]:
    """Write the adapter; returns kohya stem -> canonical "<component>.<path>"."""
    g = torch.Generator().manual_seed(seed)
    components = ("unet", "text_encoder") + (("text_encoder_2",) if family == "sdxl" else ())
    chosen = []
    for c in components:
        table = module_table(family, c)
        chosen += [(c, n, l) for n, l in table.items() if n.endswith(TARGETS) and (l.kernel in (None, (1, 1)))]
    if layers and layers < len(chosen):
        step = len(chosen) / layers
        chosen = [chosen[int(i * step)] for i in range(layers)]
    tensors, names = {}, {}
    decay = torch.logspace(0, -3, rank)
    for c, name, layer in chosen:
        r = min(rank, layer.in_features, layer.out_features)
        path_name = name.removeprefix("text_model.") if c.startswith("text_encoder") else name
        stem = kohya_name(kohya_prefix(family_word(family), c), path_name)
        names[stem] = f"{c}.{name}"
        shape = (1, 1) if layer.kernel else ()
        tensors[f"{stem}.lora_down.weight"] = torch.randn(r, layer.in_features, *shape, generator=g) * 0.05
        tensors[f"{stem}.lora_up.weight"] = (torch.randn(layer.out_features, r, generator=g) * decay[:r]
                                             ).reshape(layer.out_features, r, *shape) * 0.05
        tensors[f"{stem}.alpha"] = torch.tensor(float(r) / 2)
    save_file(tensors, str(path), metadata={"ss_base_model_version": "sd_v1" if family == "sd15" else
                                            "sdxl_base_v1-0", "ss_network_module": "networks.lora"})
    return names


def family_word(family: str) -> str:
    return "sd1" if family == "sd15" else family


def kohya_rank(s: torch.Tensor, c: Criterion) -> int:
    if c.method == "sv_ratio":
        k = int(torch.sum(s > s[0] / c.value)) - 1
    elif c.method == "sv_cumulative":
        k = int(torch.searchsorted(torch.cumsum(s, 0) / s.sum(), c.value))
    elif c.method == "sv_fro":
        k = int(torch.searchsorted(torch.cumsum(s ** 2, 0) / (s ** 2).sum(), c.value ** 2))
    else:
        return int(c.value) if s[0] > 1e-6 else 1
    k = max(0, min(k, len(s) - 1)) + 1
    if s[0] <= 1e-6:
        return 1
    return min(k, c.max_rank) if c.max_rank else k


def kohya_resize(src: Path, dst: Path, c: Criterion) -> dict[str, tuple[int, float]]:
    """kohya's method: dense update, full SVD, truncate; returns stem -> (rank, relative error left)."""
    sd = load_file(str(src))
    out, report = dict(sd), {}
    for key in [k for k in sd if k.endswith(".lora_down.weight")]:
        stem = key[: -len(".lora_down.weight")]
        down, up = sd[key].float(), sd[f"{stem}.lora_up.weight"].float()
        rank = down.shape[0]
        scale = float(sd[f"{stem}.alpha"]) / rank
        w = up.reshape(up.shape[0], -1) @ down.reshape(rank, -1)
        u, s, vh = torch.linalg.svd(w)
        k = kohya_rank(s, c)
        new_up, new_down = u[:, :k] @ torch.diag(s[:k]), vh[:k]
        w64 = up.double().reshape(up.shape[0], -1) @ down.double().reshape(rank, -1)   # what it approximates
        err = float((w64 - (new_up @ new_down).double()).norm() / w64.norm())
        out[key] = new_down.reshape(k, *down.shape[1:]).contiguous()
        out[f"{stem}.lora_up.weight"] = new_up.reshape(up.shape[0], k, *up.shape[2:]).contiguous()
        out[f"{stem}.alpha"] = torch.tensor(scale * k)
        report[stem] = (k, err)
    save_file(out, str(dst))
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--family", choices=("sd15", "sdxl"), default="sd15")
    ap.add_argument("--rank", type=int, default=64)
    ap.add_argument("--layers", type=int, default=48, help="an even sample of the targeted layers (0: all)")
    ap.add_argument("--criterion", default="sv_fro:0.9", help="METHOD:VALUE (rank, sv_fro, sv_ratio, sv_cumulative)")
    args = ap.parse_args()
    method, _, value = args.criterion.partition(":")
    c = Criterion(method, float(value), args.rank)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src.safetensors"
        names = make_file(src, args.family, args.rank, args.layers)
        n = len(names)
        t0 = time.perf_counter()
        ours = convert_file(src, Path(tmp) / "ours.safetensors", to="lora", resize=c)
        t_ours = time.perf_counter() - t0
        t0 = time.perf_counter()
        theirs = kohya_resize(src, Path(tmp) / "kohya.safetensors", c)
        t_kohya = time.perf_counter() - t0
    mine = {r["module"]: r for r in ours.resize["layers"]}
    ranks_same, worst = 0, 0.0
    for stem, (k, err) in theirs.items():
        row = mine[names[stem]]
        ranks_same += row["rank_after"] == k
        worst = max(worst, abs(row["rel_error"] - err))
    same = [r["rank_after"] for r in ours.resize["layers"]]
    print(f"{args.family} rank {args.rank}, {n} layers, {c.describe()}: ranks {min(same)}-{max(same)}")
    print(f"  ours  {t_ours:8.2f} s   (read, SVD from factors, write, read back and verify)")
    print(f"  kohya {t_kohya:8.2f} s   (dense update, full SVD, write)")
    print(f"  speed-up {t_kohya / t_ours:.1f}x; same rank in {ranks_same}/{n} layers; "
          f"max |rel. error difference| {worst:.2e}")
    if not math.isfinite(worst):
        sys.exit(1)


if __name__ == "__main__":
    main()
