"""Small real-shaped adapter files, written with numpy (no torch), for tests and benchmarks that need many.

The keys and shapes are those of a kohya SD1.5 LoRA (cross-attention to_k/to_v take the 768-wide CLIP text
context), so the inspection engine recognises them; ``seed`` makes each file's bytes different.
For the full range of formats and families, tests use ``tests.fixtures.adapters.write_adapter``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
from safetensors.numpy import save_file

_SD1_ATTN2 = [  # (kohya module stem, in features, out features)
    ("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k", 768, 320),
    ("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_v", 768, 320),
    ("lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_attn2_to_k", 768, 320),
    ("lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_k", 768, 1280),
]


def write_kohya_sd1(path: Path, *, seed: int = 0, rank: int = 4, alpha: float = 4.0, modules: int = 2,
                    metadata: Optional[dict[str, str]] = None) -> Path:
    rng = np.random.default_rng(seed)
    tensors = {}
    for stem, fin, fout in _SD1_ATTN2[:modules]:
        tensors[f"{stem}.lora_down.weight"] = rng.standard_normal((rank, fin), dtype=np.float32)
        tensors[f"{stem}.lora_up.weight"] = rng.standard_normal((fout, rank), dtype=np.float32)
        tensors[f"{stem}.alpha"] = np.array(alpha, dtype=np.float32)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"ss_network_dim": str(rank), **(metadata or {})}
    save_file(tensors, str(path), metadata=meta)
    head = path.read_bytes()[:2]
    if head[0] == 0x80 and 2 <= head[1] <= 5:
        # the inspection engine currently takes a header length like 0x0380 for a pickle protocol
        # marker (reported to its owners): pad the header so these tests exercise the registry instead
        save_file(tensors, str(path), metadata={**meta, "pad": "-" * 8})
    return path
