"""The one in-memory form every later stage works on: an adapter as named low-rank pairs.

Whatever layout a file had (kohya, diffusers-old, attn-procs, peft, cloneofsimo positions, ...), key
normalisation turns it into a ``CanonicalAdapter``: one ``LoraPair`` per adapted layer, keyed by
"<component>.<module path>" where the module path is exactly the name in the base's module table
(``lorahub_cli.archs.tables.module_table``; CLIP text encoders keep the ``text_model.`` level), e.g.
``unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k`` or
``text_encoder.text_model.encoder.layers.3.self_attn.q_proj``.

The effective update of a pair is ``scale * up @ down`` with ``scale = alpha / rank`` (alpha None means
alpha = rank, scale 1). Conversion writes pairs out in a target layout; ``check`` compares their shapes
with a base; ``merge`` combines them. Keeping one form means those commands can never disagree.
Tensors are torch tensors (this module itself imports nothing heavy).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass
class LoraPair:
    down: Any                     # torch.Tensor [rank, in] or conv [rank, in, kh, kw]
    up: Any                       # torch.Tensor [out, rank] or conv [out, rank, 1, 1]
    alpha: Optional[float] = None
    magnitude: Any = None         # DoRA: the magnitude vector; the update is then computed against the base
                                  # weight (lorahub_cli.lycoris.dora), and ``delta`` alone does not describe it
    ia3: Any = None               # (IA)^3: ``lycoris.ia3.IA3Scale``; the update scales the base weight (up and
                                  # down are then zero, rank 1, shaped for the layer)

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    @property
    def scale(self) -> float:
        return 1.0 if self.alpha is None else float(self.alpha) / self.rank

    def delta(self, dtype=None):
        """The dense update ``scale * up @ down`` in the weight's shape (for tests and small layers only)."""
        down, up = self.down, self.up
        if dtype is not None:
            down, up = down.to(dtype), up.to(dtype)
        flat = up.reshape(up.shape[0], -1) @ down.reshape(down.shape[0], -1)
        out_shape = (up.shape[0], *down.shape[1:])
        return (flat * self.scale).reshape(out_shape)


@dataclass
class CanonicalAdapter:
    family: str                                            # sd1 | sd2 | sdxl | sd3 | flux | unknown
    modules: dict[str, LoraPair] = field(default_factory=dict)  # "<component>.<module path>" -> pair
    tokens: dict[str, Any] = field(default_factory=dict)   # embedded textual-inversion vectors
    metadata: dict[str, str] = field(default_factory=dict)  # carried-over header metadata

    def components(self) -> list[str]:
        return sorted({key.split(".", 1)[0] for key in self.modules})
