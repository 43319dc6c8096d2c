"""Run the Civitai-compatible test server on its own (for scripts/bench_civitai.py):

    python -m tests.civitai --lora-mb 150      # prints: CIVITAI_ENDPOINT=http://127.0.0.1:PORT SIZE=N
    python -m tests.civitai --lora-mb 150 --mbps 100   # the storage host sends at 100 MB/s

Serves model 1 (LORA) with version 10: one safetensors file of about that size. Stops when stdin closes.
"""

from __future__ import annotations

import argparse
import struct
import sys

from tests.civitai.server import CFile, CivitaiServer, CModel, CVersion


def big_lora(mb: float) -> bytes:
    """A valid kohya-style safetensors file of ~``mb`` MB (zero-free float16 data)."""
    import json

    n = max(int(mb * 1e6) // 2 // 2, 64)
    rank = 8
    cols = n // rank
    tensors = {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": (rank, cols),
               "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": (cols, rank)}
    header, offset = {}, 0
    for name, shape in tensors.items():
        size = shape[0] * shape[1] * 2
        header[name] = {"dtype": "F16", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    header["__metadata__"] = {"ss_network_dim": str(rank), "ss_network_alpha": str(rank)}
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + b"\x00\x3c" * (offset // 2)   # 1.0 in float16


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lora-mb", type=float, default=50)
    parser.add_argument("--mbps", type=float, default=0, help="the storage host's bandwidth, MB/s (0: unpaced)")
    args = parser.parse_args()
    server = CivitaiServer()
    server.bandwidth = args.mbps * 1e6 if args.mbps else None
    data = big_lora(args.lora_mb)
    server.add_model(CModel(1, "Bench", versions=[CVersion(10, 1, "v1", [CFile(100, "bench.safetensors", data)])]))
    print(f"CIVITAI_ENDPOINT={server.url} SIZE={len(data)}", flush=True)
    sys.stdin.read()
    server.stop()


if __name__ == "__main__":
    main()
