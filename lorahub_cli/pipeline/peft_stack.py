"""Adapters as diffusers / PEFT layers: ``load_lora_weights`` per adapter, then ``set_adapters`` with the weights.

The flexible way (the base weights are never touched; weights change with one ``set_adapters`` call; tools that
expect PEFT layers see them), and the slow one: every adapted layer runs its extra low-rank kernels on every
step for every adapter. Each adapter is handed over in memory as the converted diffusers state dict (legacy
layouts included), its alpha folded into ``lora_B`` so no header metadata is needed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

from lorahub_cli.pipeline.stack import ApplyReport, _fits, live_layer

if TYPE_CHECKING:
    from lorahub_cli.canonical import CanonicalAdapter


def adapter_name(index: int, name: str) -> str:
    """A distinctive PEFT adapter name (PEFT keeps adapters in ModuleDicts: no dots; never "default_0")."""
    return f"lorahub{index}_{re.sub(r'[^A-Za-z0-9_]', '_', name)[:48]}"


def peft_state_dict(pipe: Any, pairs: "CanonicalAdapter", report: ApplyReport) -> dict[str, Any]:
    """"<component>.<path>.lora_A/B.weight" for the layers this pipeline has; lora_B carries the scale."""
    import torch

    out: dict[str, Any] = {}
    for key, pair in pairs.modules.items():
        if pair.magnitude is not None or pair.ia3 is not None:   # lora_A/B cannot say "against the base"
            from lorahub_cli.errors import UsageError

            raise UsageError(f"{key} is a DoRA or (IA)^3 layer: the peft stack cannot apply it exactly",
                             hint="Use the merged stack (the default) for DoRA and (IA)^3 adapters.")
        layer = live_layer(pipe, key)
        weight = getattr(layer, "weight", None)
        if weight is None or not _fits(weight, pair):
            report.skipped.append(key)
            continue
        out[f"{key}.lora_A.weight"] = pair.down.to(torch.float32).contiguous()
        out[f"{key}.lora_B.weight"] = (pair.up.to(torch.float32) * pair.scale).contiguous()
        report.layers += 1
    return out


@dataclass
class PeftStack:
    pipe: Any
    names: list[str] = field(default_factory=list)

    def apply(self, adapters: Sequence[tuple[str, "CanonicalAdapter", float]]) -> ApplyReport:
        """Remove our previous adapters, load these and activate them with their weights."""
        self.restore()
        report = ApplyReport()
        weights = []
        for i, (name, pairs, weight) in enumerate(adapters):
            state = peft_state_dict(self.pipe, pairs, report)
            if not state:
                continue
            peft_name = adapter_name(i, name)
            self.pipe.load_lora_weights(state, adapter_name=peft_name)
            self.names.append(peft_name)
            weights.append(float(weight))
        if self.names:
            self.pipe.set_adapters(self.names, adapter_weights=weights)
        return report

    def restore(self) -> int:
        count = len(self.names)
        if self.names:
            self.pipe.delete_adapters(self.names)
            self.names = []
        return count
