#!/usr/bin/env bash
# GPU checks, for a session that is lent a CUDA machine (CI never has one). One prepared run, one timeout:
#   bash scripts/gpu_check.sh            (writes results under $OUT, or .bench/gpu when OUT is unset)
# Generation: base / 1 / 3 stacked / fused, ours vs plain diffusers+peft, switch time, peak memory.
# Training: `lora train` vs a loop equivalent to the diffusers script (fp16, rank 4, 512x512, batch 1).
# Textual inversion: `lora train --method ti` vs textual_inversion.py's loop (fp32, 512x512, batch 1).
# SDXL and Flux training: `lora train` (cached / uncached, with and without gradient checkpointing) vs loops
# equivalent to train_text_to_image_lora_sdxl.py and train_dreambooth_lora_flux.py (bf16, 1024x1024, batch 1).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-.bench/gpu}
mkdir -p "$out"
py=${PYTHON:-.venv/bin/python}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/card.txt"
"$py" scripts/gpu_check_generate.py --out "$out" 2>&1 | tee "$out/generate.log"
"$py" scripts/gpu_check_train.py --out "$out/train.json" 2>&1 | tee "$out/train.log"
# Textual inversion: `lora train --method ti` vs a loop equivalent to diffusers' textual_inversion.py (fp32).
"$py" scripts/bench_ti.py --sd15 --device cuda --resolution 512 --batch 1 --steps 50 --warmup 10 --repeats 2 \
    --out "$out/ti.json" 2>&1 | tee "$out/ti.log"
# SDXL and Flux training (random SDXL/Flux-shaped weights from lorahub_cli/archs/configs; a table with the
# card's name appended to docs/benchmarks/train-families.md).
"$py" scripts/bench_train_families.py --gpu --out "$out/train-families" \
    --write docs/benchmarks/train-families.md 2>&1 | tee "$out/train-families.log"
