"""Does one adapter module's update have the shape of the base layer(s) it targets?

The rule is the key normalisation's own (``convert.keymap.shape_problem``: widths equal, a Linear and a 1x1
conv interchangeable, a conv kernel folded into the input width accepted), so `check` and `convert` judge a
shape the same way. Here it is applied to the *base's* layers, which may differ from the ones the adapter
was named against. A fused target (Flux's double_blocks qkv = to_q, to_k, to_v) is one layer whose output
is the parts' outputs stacked, when every part reads the same input.
"""

from __future__ import annotations

from typing import Optional, Sequence

from lorahub_cli.archs import Layer
from lorahub_cli.inspect.model import ModuleInfo


def misfit(module: ModuleInfo, layers: Sequence[Layer], targets: Sequence[str] = ()) -> Optional[str]:
    """None when ``module`` fits the stacked ``layers``; otherwise what differs, for people."""
    from lorahub_cli.archs.fused import FusedLayer
    from lorahub_cli.convert.keymap import shape_problem

    if len(layers) == 1:
        return shape_problem(module, layers[0])
    fan_in = {layer.in_features for layer in layers}
    if len(fan_in) != 1:
        return f"the {len(layers)} layers it stacks read different widths ({', '.join(map(str, sorted(fan_in)))})"
    fused = FusedLayer(tuple(targets) or tuple(f"part{i}" for i in range(len(layers))), fan_in.pop(),
                       sum(layer.out_features for layer in layers))
    return shape_problem(module, fused)
