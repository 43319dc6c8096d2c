"""Base-model family: tensor shapes first, then header metadata, then model card / adapter_config.

Shapes give a ``ShapeVerdict``: the family they point at and the set of families they allow. When the
shapes allow only one family, any metadata or card claim that disagrees becomes a warning and the shapes
win. When they allow several (a text-encoder-only LoRA on CLIP ViT-L fits SD1, SDXL, SD3 and Flux), the
most trusted claim among the allowed families picks one.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Optional

from lorahub_cli.inspect.facts import FAMILY_NAMES, Facts
from lorahub_cli.inspect.model import Layout, ModuleInfo, RawFile

ALL_FAMILIES = frozenset({"sd1", "sd2", "sdxl", "sd3", "flux"})

# Cross-attention context width (what attn2.to_k/to_v read) of each UNet family's text encoder
CONTEXT_DIMS = {768: ("sd1", "CLIP ViT-L context"), 1024: ("sd2", "OpenCLIP ViT-H context"),
                2048: ("sdxl", "CLIP-L + OpenCLIP-bigG context")}
FLUX_HIDDEN = 3072
FLUX_DOUBLE_BLOCKS = 19
SD3_HIDDEN = {1536: "SD3/SD3.5 medium", 2432: "SD3.5 large"}


@dataclass(frozen=True)
class ShapeVerdict:
    family: str                  # what the shapes point at ("unknown" when they cannot choose)
    candidates: frozenset[str]   # the families the shapes allow
    evidence: str

    @property
    def definitive(self) -> bool:
        return len(self.candidates) == 1 and self.family in self.candidates


def _norm(key: str) -> str:
    """One spelling for every format: dots and colons become underscores."""
    return key.replace(".", "_").replace(":", "_")


def _mode(values: Iterable[Optional[int]]) -> Optional[int]:
    counts = Counter(v for v in values if v)
    return counts.most_common(1)[0][0] if counts else None


# ---------------------------------------------------------------------------------------------------
# DiT transformers (Flux, SD3)
# ---------------------------------------------------------------------------------------------------

def _transformer_verdict(modules: list[ModuleInfo]) -> Optional[ShapeVerdict]:
    if not modules:
        return None
    names = [_norm(m.key) for m in modules]
    hidden = _mode(m.in_features for m in modules)   # most layers read the hidden width
    n = len(modules)
    if any("joint_blocks_" in s for s in names):
        variant = SD3_HIDDEN.get(hidden, f"hidden width {hidden}")
        if any("x_block_attn2" in s for s in names):
            variant = "SD3.5 medium"
        return ShapeVerdict("sd3", frozenset({"sd3"}), f"SD3 MMDiT joint_blocks ({variant}) in {n} modules")
    if any(re.search(r"(double_blocks|single_blocks|single_transformer_blocks)_\d", s) for s in names):
        if hidden == FLUX_HIDDEN:
            return ShapeVerdict("flux", frozenset({"flux"}), f"Flux double/single-stream blocks with hidden width "
                                                              f"{FLUX_HIDDEN} in {n} modules")
        return ShapeVerdict("unknown", frozenset(), f"Flux-style double/single blocks but hidden width {hidden} "
                                                    f"(Flux.1 is {FLUX_HIDDEN})")
    blocks = [int(m.group(1)) for s in names if (m := re.search(r"transformer_blocks_(\d+)_", s))]
    if blocks:
        if hidden in SD3_HIDDEN:
            return ShapeVerdict("sd3", frozenset({"sd3"}), f"DiT transformer_blocks with hidden width {hidden} "
                                                            f"({SD3_HIDDEN[hidden]}) in {n} modules")
        mmdit = any("add_q_proj" in s or "add_k_proj" in s for s in names)
        if hidden == FLUX_HIDDEN and mmdit and max(blocks) < FLUX_DOUBLE_BLOCKS:
            return ShapeVerdict("flux", frozenset({"flux"}), f"Flux double-stream transformer_blocks (add_q_proj, "
                                                              f"hidden width {FLUX_HIDDEN}) in {n} modules")
    return ShapeVerdict("unknown", frozenset(), f"DiT transformer LoRA with hidden width {hidden}: not Flux.1 or "
                                                f"SD3 by shape")


# ---------------------------------------------------------------------------------------------------
# UNets (SD1, SD2, SDXL)
# ---------------------------------------------------------------------------------------------------

_CROSS_KV_RE = re.compile(r"attn2_(processor_)?to_[kv](_lora)?$")


def _context_verdict(modules: list[ModuleInfo], positional: bool) -> Optional[ShapeVerdict]:
    """attn2.to_k/to_v read the text encoder's width; without names, any down of that width does."""
    if positional:
        # cloneofsimo files have no names: a UNet down whose input is 768/1024/2048 wide is no channel
        # width of the UNet, so it can only read the text-encoder context (attn2 to_k / to_v)
        dims = [m.in_features for m in modules if m.in_features in CONTEXT_DIMS]
        what = "UNet downs with in-features {d} (not a UNet channel width: {ctx}) in {n} modules"
    else:
        dims = [m.in_features for m in modules if _CROSS_KV_RE.search(_norm(m.key))]
        what = "attn2.to_k/to_v LoRA down in-features {d} ({ctx}) in {n} modules"
    if not dims:
        return None
    d = _mode(dims)
    n = sum(1 for x in dims if x == d)
    if d not in CONTEXT_DIMS:
        return ShapeVerdict("unknown", frozenset(), f"attn2.to_k/to_v LoRA down in-features {d}: no known "
                                                    f"SD1/SD2/SDXL context width")
    family, ctx = CONTEXT_DIMS[d]
    return ShapeVerdict(family, frozenset({family}), what.format(d=d, ctx=ctx, n=n))


def _structure_verdict(modules: list[ModuleInfo]) -> Optional[ShapeVerdict]:
    """Which blocks carry attention: SDXL has none at 320 channels, up to 10 transformer blocks per block."""
    names = [_norm(m.key) for m in modules]
    deep = [int(m.group(1)) for s in names if (m := re.search(r"transformer_blocks_(\d+)_", s))]
    if deep and max(deep) >= 1:
        return ShapeVerdict("sdxl", frozenset({"sdxl"}), f"UNet transformer_blocks index up to {max(deep)} "
                                                          f"(SD1/SD2 have one per attention block)")
    if any(re.search(r"(^|_)up_blocks_0_attentions_", s) for s in names):
        return ShapeVerdict("sdxl", frozenset({"sdxl"}), "attention in up_blocks.0 (SDXL only)")
    sgm_attn = {int(m.group(1)) for s in names if (m := re.search(r"input_blocks_(\d+)_1_", s))}
    if sgm_attn & {4, 5, 7, 8} and not sgm_attn & {1, 2}:
        return ShapeVerdict("sdxl", frozenset({"sdxl"}), "attention in input_blocks 4/5/7/8 but not 1/2 (SDXL)")
    attn_320 = any(re.search(r"attentions_\d+_", s) for s, m in zip(names, modules) if m.in_features == 320)
    if attn_320 or sgm_attn & {1, 2} or any(re.search(r"down_blocks_0_attentions_|up_blocks_3_attentions_", s)
                                            for s in names):
        return ShapeVerdict("unknown", frozenset({"sd1", "sd2"}), "UNet attention at 320 channels (SD1/SD2 "
                                                                  "layout), but no cross-attention key/value "
                                                                  "to tell SD1 from SD2")
    return None


# ---------------------------------------------------------------------------------------------------
# Text encoders
# ---------------------------------------------------------------------------------------------------

_MLP_OUT_RE = re.compile(r"(fc2|DenseReluDense_wo|mlp_c_proj)$")
_T5_RE = re.compile(r"SelfAttention|DenseReluDense|encoder_block_\d")


def _text_encoder_verdict(modules: list[ModuleInfo]) -> Optional[ShapeVerdict]:
    if not modules:
        return None
    by_comp: dict[str, list[ModuleInfo]] = {}
    for m in modules:
        by_comp.setdefault(m.component, []).append(m)
    widths: dict[str, Optional[int]] = {}
    t5 = False
    layers = 0
    for comp, mods in by_comp.items():
        names = [_norm(m.key) for m in mods]
        widths[comp] = _mode(m.in_features for m, s in zip(mods, names) if not _MLP_OUT_RE.search(s))
        t5 = t5 or widths[comp] == 4096 or any(_T5_RE.search(s) for s in names)
        layers = max([layers] + [int(x.group(1)) + 1 for s in names if (x := re.search(r"layers_(\d+)_", s))])
    all_widths = set(widths.values())
    kohya_te1 = any(m.key.startswith("lora_te1_") for m in modules)
    layer_note = f" over {layers} layers" if layers else ""
    if t5:
        if 1280 in all_widths:
            return ShapeVerdict("sd3", frozenset({"sd3"}), "text-encoder LoRA on CLIP-L, CLIP-G (1280) and T5 "
                                                           "(SD3's three text encoders)")
        return ShapeVerdict("flux", frozenset({"flux", "sd3"}), "text-encoder LoRA on a T5 encoder without CLIP-G "
                                                                "(Flux's CLIP-L + T5)")
    if 1280 in all_widths:
        return ShapeVerdict("sdxl", frozenset({"sdxl", "sd3"}), f"text-encoder LoRA in-features 1280 (OpenCLIP "
                                                                f"bigG, SDXL's second text encoder){layer_note}")
    if 1024 in all_widths:
        return ShapeVerdict("sd2", frozenset({"sd2"}), f"text-encoder LoRA in-features 1024 (OpenCLIP ViT-H, SD2's "
                                                       f"text encoder){layer_note}")
    if 768 in all_widths:
        if kohya_te1:
            return ShapeVerdict("unknown", frozenset({"sdxl", "sd3", "flux"}),
                                f"lora_te1_ text-encoder LoRA in-features 768 (CLIP ViT-L, the first text encoder "
                                f"of SDXL/SD3/Flux){layer_note}")
        return ShapeVerdict("sd1", ALL_FAMILIES - {"sd2"},
                            f"text-encoder LoRA in-features 768 (CLIP ViT-L: SD1's text encoder, also the first of "
                            f"SDXL/SD3/Flux){layer_note}")
    return ShapeVerdict("unknown", ALL_FAMILIES, f"text-encoder LoRA with in-features {sorted(all_widths)}")


# ---------------------------------------------------------------------------------------------------
# Shapes, then claims
# ---------------------------------------------------------------------------------------------------

def _unet_verdict(unet: list[ModuleInfo], positional: bool) -> Optional[ShapeVerdict]:
    return _context_verdict(unet, positional) or _structure_verdict(unet)


def family_from_shapes(layout: Layout) -> tuple[Optional[ShapeVerdict], list[str]]:
    """The shapes' verdict (None when they say nothing) and warnings when parts of the file disagree."""
    unet = [m for m in layout.modules if m.component == "unet"]
    dit = [m for m in layout.modules if m.component == "transformer"]
    te = [m for m in layout.modules if m.component.startswith("text_encoder")]
    main = _transformer_verdict(dit) if dit else _unet_verdict(unet, layout.format == "cloneofsimo")
    te_verdict = _text_encoder_verdict(te)
    if main is None or te_verdict is None:
        return main or te_verdict, []
    if main.definitive:
        if main.family in te_verdict.candidates:
            return main, []
        return main, [f"the text-encoder shapes ({te_verdict.evidence}) do not fit the "
                      f"{FAMILY_NAMES[main.family]} that the other layers show"]
    both = main.candidates & te_verdict.candidates
    if not both:
        return main, []
    # e.g. a UNet that is SD1-or-SD2 plus a 1024-wide text encoder: together they decide
    family = te_verdict.family if te_verdict.family in both else (next(iter(both)) if len(both) == 1 else "unknown")
    return ShapeVerdict(family, both, f"{main.evidence}; {te_verdict.evidence}"), []


def detect_family(raw: RawFile, layout: Layout, facts: Facts) -> tuple[str, str, list[str]]:
    """(family, one-sentence evidence, warnings).

    ``raw`` is the container view; its metadata reaches this stage already read into ``facts``.
    """
    verdict, warnings = family_from_shapes(layout)
    claims = facts.family_claims
    if verdict is not None and verdict.definitive:
        family = verdict.family
        evidence = verdict.evidence
        agreeing = [c for c in claims if c.family == family]
        if agreeing:
            evidence += f"; {agreeing[0].describe()} agrees"
        warnings += [f"{c.source} says {FAMILY_NAMES[c.family]} ({c.what}), but the tensor shapes say "
                     f"{FAMILY_NAMES[family]} ({verdict.evidence}); trusting the shapes"
                     for c in claims if c.family != family]
        return family, evidence, _dedupe(warnings)

    allowed = verdict.candidates if verdict is not None else ALL_FAMILIES
    chosen = next((c for c in claims if c.family in allowed), None)
    if chosen is not None:
        family = chosen.family
        evidence = chosen.describe() + (f"; the shapes allow it ({verdict.evidence})" if verdict else "")
    elif verdict is not None:
        family, evidence = verdict.family, verdict.evidence
    else:
        family, evidence = "unknown", "no shape, metadata or card evidence"
    for c in claims:
        if c.family == family:
            continue
        if c.family not in allowed:
            warnings.append(f"{c.source} says {FAMILY_NAMES[c.family]} ({c.what}), but the tensor shapes rule it "
                            f"out ({verdict.evidence if verdict else ''}); reporting {FAMILY_NAMES[family]}")
        elif chosen is not None:
            warnings.append(f"{c.source} says {FAMILY_NAMES[c.family]} ({c.what}), but {chosen.source} says "
                            f"{FAMILY_NAMES[family]}; using {FAMILY_NAMES[family]}")
    return family, evidence, _dedupe(warnings)


def _dedupe(items: Iterable[str]) -> list[str]:
    out: list[str] = []
    for item in items:
        if item not in out:
            out.append(item)
    return out
