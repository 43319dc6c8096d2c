"""The order in which cloneofsimo/lora wrote its positional files ("unet:N:up", or a bare list).

cloneofsimo's ``_find_modules_v2`` walks ``model.modules()``, keeps every module whose class name is a
target (U-Net: CrossAttention / Attention / GEGLU; text encoder: CLIPAttention), and takes each one's
Linear children in registration order. Position N in a file is the N-th Linear of that walk, so the
names come back only by walking the architecture in the same order.

The diffusers of that time (late 2022, early 2023) registered the U-Net's up_blocks before mid_block
and a transformer block's feed-forward (GEGLU) before attn2. The real files follow that order
(analog_svd_rank4.safetensors: index 4 is the 320->2560 GEGLU, indices 6-7 are attn2 k/v reading 768,
and the mid block comes last). Today's diffusers registers attn2 before ff, so ``legacy=False`` gives the
order a file written with current diffusers would have.
"""

from __future__ import annotations

import re
from typing import Mapping

from lorahub_cli.archs.tables import Layer

TARGET_CLASSES = {"unet": ("CrossAttention", "Attention", "GEGLU"), "text_encoder": ("CLIPAttention",)}

_UNET = re.compile(r"^(?P<top>down_blocks|up_blocks|mid_block)(?:\.(?P<block>\d+))?\.attentions\.(?P<attn>\d+)"
                   r"\.transformer_blocks\.(?P<tb>\d+)\.(?P<part>attn1|attn2|ff\.net\.0)"
                   r"\.(?P<leaf>to_q|to_k|to_v|to_out\.0|proj)$")
_CLIP = re.compile(r"^text_model\.encoder\.layers\.(\d+)\.self_attn\.(q_proj|k_proj|v_proj|out_proj)$")
_TOP_RANK = {"down_blocks": 0, "up_blocks": 1, "mid_block": 2}
_LEGACY_PART_RANK = {"attn1": 0, "ff.net.0": 1, "attn2": 2}
_LEAF_RANK = {"to_q": 0, "to_k": 1, "to_v": 2, "to_out.0": 3, "proj": 0}


def cloneofsimo_order(table: Mapping[str, Layer], *, legacy: bool = True) -> list[str]:
    """Module names of a U-Net or CLIP text-encoder table in cloneofsimo's position order.

    The CLIP attention's Linears keep the table's (registration) order: k, v, q, out.
    """
    unet = [name for name in table if _UNET.match(name)]
    if unet:
        return sorted(unet, key=_legacy_key) if legacy else unet
    return [name for name in table if _CLIP.match(name)]


def _legacy_key(name: str) -> tuple[int, ...]:
    m = _UNET.match(name)
    assert m is not None
    return (_TOP_RANK[m["top"]], int(m["block"] or 0), int(m["attn"]), int(m["tb"]),
            _LEGACY_PART_RANK[m["part"]], _LEAF_RANK[m["leaf"]])

