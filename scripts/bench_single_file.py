"""Benchmarks for single-file checkpoints (issue 15), each side by side with what it is compared to.

1. identify: header-only identification (``read_container`` + ``inspect.checkpoint.identify``) of real-shaped
   sparse files (SD1.5, SDXL, Flux; GBs long, only a header on disk) and of a real file with its data: the cost
   does not grow with the file.
2. load: ``pipeline.build.load_pipeline`` of a single-file base (our path: header identification, then diffusers'
   ``from_single_file`` with the borrowed configs) against diffusers' own ``from_single_file`` with the same
   configs, each in a fresh process (alternating, --repeat times): load seconds (after imports) and peak RSS.
3. fuse: ``lora fuse --single-file`` of a LoRA into that file: peak RSS against the file's size (the target is
   about one copy of the model plus one layer's update).
4. --flux: loading a BFL Flux transformer file (lora converts BFL -> diffusers itself, ``checkpoints.dit``) against
   diffusers' own ``FluxPipeline.from_single_file`` with the same configs and the same VAE / text encoders (read
   from the folder on both sides). diffusers' converter only takes the published width, so this model has it
   (3072, MLP 12288; one double and one single block; CLIP 768 and T5 4096 wide, one layer each), about 1 GB
   in fp16.

The model is an SD-shaped pipeline with random weights built once into --work (U-Net block widths set by
--width; 320 is SD1.5's own; text width 512, so it is no published family and its own tables are used), so
nothing is downloaded. Run:

    .venv/bin/python scripts/bench_single_file.py --work /tmp/bench-single-file [--width 128] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

_CHILD = r"""
import json, resource, sys, time
mode, path, folder, home = sys.argv[1:5]
import torch, diffusers  # imports are not part of the load time: both sides import the same modules first
diffusers.StableDiffusionPipeline, diffusers.UNet2DConditionModel, diffusers.AutoencoderKL  # lazy: ~9 s here
import transformers
transformers.CLIPTextModel
if mode.startswith("flux"):
    diffusers.FluxPipeline, diffusers.FluxTransformer2DModel, transformers.T5EncoderModel
    from diffusers.loaders import single_file_utils  # noqa: F401
from lorahub_cli.pipeline.build import load_pipeline
from lorahub_cli.checkpoints import load as _load  # noqa: F401
from lorahub_cli.inspect import containers as _containers  # noqa: F401
from lorahub_cli import bases as _bases  # noqa: F401
def rss():
    # VmHWM: this process image's peak (ru_maxrss would carry over the parent's peak across exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
before = rss()
start = time.perf_counter()
if mode in ("ours", "flux-ours"):
    import os
    os.environ["LORAHUB_HOME"] = home
    pipe, _ = load_pipeline("bench" if mode == "ours" else "bench-flux", device="cpu", dtype="fp16")
elif mode == "flux-diffusers":
    lent = {c: getattr(cls_lib, cls).from_pretrained(folder, subfolder=c, local_files_only=True,
                                                     torch_dtype=torch.float16)
            for c, cls_lib, cls in (("vae", diffusers, "AutoencoderKL"), ("text_encoder", transformers,
                                    "CLIPTextModel"), ("text_encoder_2", transformers, "T5EncoderModel"))}
    pipe = diffusers.FluxPipeline.from_single_file(path, config=folder, local_files_only=True,
                                                   torch_dtype=torch.float16, **lent)
elif mode == "diffusers":
    pipe = diffusers.StableDiffusionPipeline.from_single_file(path, config=folder, local_files_only=True,
                                                             torch_dtype=torch.float16)
else:  # fuse
    import os
    os.environ["LORAHUB_HOME"] = home
    from lorahub_cli.pipeline import Library
    with Library() as lib:
        lib.fuse_single_file("bench", [sys.argv[5] + ":0.8"], sys.argv[6], dtype="fp16", force=True)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "peak_rss": rss(), "rss_after_imports": before}))
"""


def build(work: Path, width: int) -> dict[str, Path]:
    """The SD-shaped folder, its single file (fp16, original layout), a saved base and a LoRA; built once."""
    folder, file = work / "pipe", work / "model.safetensors"
    lora, home = work / "lora.safetensors", work / "home"
    if not file.exists():
        import torch
        from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
        from transformers import CLIPTextConfig, CLIPTextModel

        from lorahub_cli.checkpoints.original import to_original
        from safetensors.torch import save_file
        from tests.fixtures.pipelines import _write_tokenizer_files, make_tokenizer

        torch.manual_seed(0)
        widths = (width, 2 * width, 4 * width, 4 * width)
        unet = UNet2DConditionModel(block_out_channels=widths, layers_per_block=2, cross_attention_dim=512,
                                    sample_size=64, attention_head_dim=8)
        vae = AutoencoderKL(block_out_channels=[128, 256, 512, 512], down_block_types=["DownEncoderBlock2D"] * 4,
                            up_block_types=["UpDecoderBlock2D"] * 4, latent_channels=4, layers_per_block=2)
        text = CLIPTextModel(CLIPTextConfig(hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                                            num_attention_heads=8, vocab_size=1000, max_position_embeddings=77))
        pipe = StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=text, tokenizer=make_tokenizer(),
                                       scheduler=DDIMScheduler(), safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
        pipe.save_pretrained(folder)
        _write_tokenizer_files(folder / "tokenizer")
        tensors = to_original({c: getattr(pipe, c).state_dict() for c in ("unet", "vae", "text_encoder")}, "unknown")
        save_file({k: v.half().contiguous() for k, v in tensors.items()}, file)
        _write_lora(unet, lora)
    if not (home / "bases.json").exists():
        os.environ["LORAHUB_HOME"] = str(home)
        from lorahub_cli.bases import add_base

        add_base(str(file), name="bench", borrow=folder, home=home)
    return {"folder": folder, "file": file, "lora": lora, "home": home}


def build_flux(work: Path) -> dict[str, Path]:
    """A Flux pipeline at the published width (random weights), its transformer as a BFL file (fp16), and a saved
    base borrowing the folder; built once."""
    folder, file, home = work / "flux-pipe", work / "flux-transformer.safetensors", work / "home"
    if not file.exists():
        import torch
        from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
        from safetensors.torch import save_file
        from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

        from lorahub_cli.checkpoints.original import to_original
        from tests.fixtures.pipelines import _write_tokenizer_files, make_t5_tokenizer, make_tokenizer

        torch.manual_seed(0)
        transformer = FluxTransformer2DModel(num_layers=1, num_single_layers=1, guidance_embeds=True)
        vae = AutoencoderKL(block_out_channels=[32, 64], down_block_types=["DownEncoderBlock2D"] * 2,
                            up_block_types=["UpDecoderBlock2D"] * 2, latent_channels=16, norm_num_groups=32)
        clip = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=1024, num_hidden_layers=1,
                                            num_attention_heads=8, vocab_size=1000))
        t5 = T5EncoderModel(T5Config(vocab_size=32, d_model=4096, d_kv=64, d_ff=1024, num_layers=1, num_heads=8))
        pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=clip,
                            tokenizer=make_tokenizer(), text_encoder_2=t5, tokenizer_2=make_t5_tokenizer(),
                            transformer=transformer)
        pipe.save_pretrained(folder)
        _write_tokenizer_files(folder / "tokenizer")
        tensors = to_original({"transformer": transformer.state_dict()}, "flux")
        save_file({k: v.half().contiguous() for k, v in tensors.items()}, file)
    os.environ["LORAHUB_HOME"] = str(home)
    from lorahub_cli.bases import add_base

    add_base(str(file), name="bench-flux", borrow=folder, home=home)
    return {"folder": folder, "file": file, "home": home}


def _write_lora(unet, path: Path) -> None:
    """A rank-16 PEFT-style LoRA on every attention projection of the U-Net."""
    import torch
    from safetensors.torch import save_file

    tensors = {}
    for name, module in unet.named_modules():
        if name.endswith(("to_q", "to_k", "to_v", "to_out.0")):
            out_f, in_f = module.weight.shape
            tensors[f"unet.{name}.lora_A.weight"] = torch.randn(16, in_f) * 0.01
            tensors[f"unet.{name}.lora_B.weight"] = torch.randn(out_f, 16) * 0.01
    save_file(tensors, path)


def bench_identify(work: Path, runs: int = 20) -> list[dict]:
    from lorahub_cli.archs import base_components, module_table
    from lorahub_cli.inspect.checkpoint import identify
    from lorahub_cli.inspect.containers import read_container
    from tests.checkpoints.headers import checkpoint_keys, write_sparse

    rows = []
    families = {"sd15": "sd1", "sdxl": "sdxl", "flux": "flux"}
    files = {}
    for alias, family in families.items():
        tables = {c: module_table(alias, c) for c in base_components(alias)}
        files[f"{alias} (sparse)"] = write_sparse(work / f"{alias}-sparse.safetensors",
                                                  checkpoint_keys(tables, family, vae=family != "flux",
                                                                  components=("transformer",) if family == "flux"
                                                                  else None))
    files["bench model (real data)"] = work / "model.safetensors"
    for label, path in files.items():
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            report = identify(read_container(path))
            times.append(time.perf_counter() - start)
        rows.append({"file": label, "bytes": path.stat().st_size, "on_disk": path.stat().st_blocks * 512,
                     "family": report.family, "median_ms": statistics.median(times) * 1000,
                     "max_ms": max(times) * 1000})
    return rows


def _child(mode: str, paths: dict[str, Path], *extra: str) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO), OMP_NUM_THREADS="2")
    out = subprocess.run([sys.executable, "-c", _CHILD, mode, str(paths["file"]), str(paths["folder"]),
                          str(paths["home"]), *extra], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_load(paths: dict[str, Path], repeat: int, modes: tuple[str, str] = ("diffusers", "ours")) -> dict:
    runs: dict[str, list[dict]] = {"ours": [], "diffusers": []}
    for _ in range(repeat):
        for mode in modes:
            runs[mode.removeprefix("flux-")].append(_child(mode, paths))
    out = {mode: {"seconds": statistics.median(r["seconds"] for r in rs),
                  "peak_rss": statistics.median(r["peak_rss"] for r in rs)} for mode, rs in runs.items()}
    out["ratio_seconds"] = out["ours"]["seconds"] / out["diffusers"]["seconds"]
    out["ratio_rss"] = out["ours"]["peak_rss"] / out["diffusers"]["peak_rss"]
    return out


def bench_fuse(paths: dict[str, Path], work: Path) -> dict:
    row = _child("fuse", paths, str(paths["lora"]), str(work / "fused.safetensors"))
    row["model_bytes"] = paths["file"].stat().st_size
    row["rss_growth"] = row["peak_rss"] - row["rss_after_imports"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-single-file"))
    parser.add_argument("--width", type=int, default=128, help="U-Net base width (SD1.5: 320)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--flux", action="store_true", help="only the Flux load comparison (4.)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("LORAHUB_CACHE_DIR", str(args.work / "cache"))
    if args.flux:
        paths = build_flux(args.work)
        result = {"flux_load": bench_load(paths, args.repeat, ("flux-diffusers", "flux-ours")),
                  "transformer_bytes": paths["file"].stat().st_size}
        print(json.dumps(result, indent=2))
        return
    paths = build(args.work, args.width)
    result = {"identify": bench_identify(args.work), "load": bench_load(paths, args.repeat),
              "fuse": bench_fuse(paths, args.work)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
