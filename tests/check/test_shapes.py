"""One module's update against the base layer(s) it targets: widths, kernels, fused parts.

The rule is the key normalisation's (convert.keymap.shape_problem); these cases pin what `check` relies on.
"""

from __future__ import annotations

import pytest

from lorahub_cli.archs import Layer
from lorahub_cli.compat.shapes import misfit
from lorahub_cli.inspect.model import ModuleInfo


def module(in_f, out_f, kernel=None, rank=4):
    return ModuleInfo(key="m", component="unet", rank=rank, in_features=in_f, out_features=out_f, kernel=kernel)


LINEAR = Layer("linear", 320, 640)
CONV1 = Layer("conv", 320, 640, (1, 1))
CONV3 = Layer("conv", 320, 640, (3, 3))


@pytest.mark.parametrize(("m", "layer"), [
    (module(320, 640), LINEAR),
    (module(320, 640, (1, 1)), LINEAR),      # a 1x1 conv LoRA on a Linear (SD2 proj_in written as conv)
    (module(320, 640), CONV1),               # a 2-D LoRA on SD1's 1x1 conv proj_in
    (module(320, 640, (3, 3)), CONV3),       # LoCon: 3x3 down on a 3x3 conv
    (module(320 * 9, 640), CONV3),           # LoHa/LoKr without a Tucker core: kernel folded into the input
])
def test_fits(m, layer):
    assert misfit(m, [layer]) is None


@pytest.mark.parametrize(("m", "layer", "words"), [
    (module(768, 640), LINEAR, ("768", "320")),
    (module(320, 1280), LINEAR, ("1280", "640")),
    (module(320, 640), CONV3, ("kernel", "3")),             # a 2-D update cannot fill a 3x3 kernel
    (module(320, 640, (3, 3)), CONV1, ("kernel", "3")),
])
def test_misfits_say_what_differs(m, layer, words):
    why = misfit(m, [layer])
    assert why is not None and all(w in why for w in words)


def test_fused_target_fits_when_parts_share_input_and_add_up():
    q, k, v = (Layer("linear", 3072, 3072),) * 3
    assert misfit(module(3072, 9216), [q, k, v]) is None
    assert "9216" in (misfit(module(3072, 9216), [q, k]) or "")
    assert "different widths" in (misfit(module(3072, 6144), [q, Layer("linear", 1024, 3072)]) or "")


def test_unknown_input_width_checks_only_the_output():
    oft = ModuleInfo(key="m", component="unet", rank=0, in_features=None, out_features=640)
    assert misfit(oft, [CONV3]) is None
    assert misfit(ModuleInfo(key="m", component="unet", rank=0, in_features=None, out_features=320), [CONV3])
