"""Adapter modules against a base's layers: per-module fit, per-component counts, the verdict and its notes.

Rules (the `lora check` help says the same):
- A module applies when its canonical name is a layer of the base, its shape fits that layer
  (``shapes.misfit``), and the layer is the same pretrained model the adapter was trained on: with both
  families known and different, only shared text encoders qualify (``families.same_model``).
- compatible: every module applies and the families agree (or the adapter's family is unknown).
- incompatible: nothing applies, or the adapter adapts the denoiser (U-Net / transformer) and none of that
  part applies: what a LoRA learned lives there, so its text-encoder part alone is not the adapter.
- partial: everything else, including a family mismatch where shared text encoders still take their part
  (an SD1 text-encoder LoRA on SDXL lands on SDXL's CLIP ViT-L, which then feeds a U-Net it never saw).
"""

from __future__ import annotations

from typing import Optional, Sequence

from lorahub_cli.compat.families import DENOISERS, identity, same_base_id, same_model
from lorahub_cli.compat.index import BaseIndex
from lorahub_cli.compat.keys import KeyMapping
from lorahub_cli.compat.model import (COMPATIBLE, INCOMPATIBLE, PARTIAL, CheckResult, ComponentCoverage,
                                      FamilyComparison, Unmatched)
from lorahub_cli.compat.shapes import misfit


def assess(mapping: KeyMapping, index: BaseIndex, *, adapter: str, family: FamilyComparison,
           base_model: Optional[str] = None, tokens: Sequence[str] = (), path: Optional[str] = None) -> CheckResult:
    """The verdict for one adapter whose modules were named by the key normalisation (``mapping``)."""
    base = index.base
    per: dict[str, ComponentCoverage] = {}
    unmatched: list[Unmatched] = []
    shared: dict[str, int] = {}
    for m in mapping.mapped:
        component = m.targets[0].split(".", 1)[0]
        cov = per.setdefault(component, ComponentCoverage())
        cov.total += 1
        problem = _problem(m.module, m.targets, component, index)
        if problem is None and not same_model(family.adapter, family.base, component):
            problem = ("family-mismatch", f"fits by name and shape, but the {family.base} {component} is the "
                       f"{identity(family.base, component) or 'another model'}, not the "
                       f"{identity(family.adapter, component) or family.adapter + ' ' + component}")
        if problem is None:
            cov.matched += 1
            if family.match is False:
                shared[component] = shared.get(component, 0) + 1
        else:
            unmatched.append(Unmatched(m.module.key, component, *problem))
    for u in mapping.unmapped:
        per.setdefault(u.component, ComponentCoverage()).total += 1
        unmatched.append(Unmatched(u.key, u.component, "unmapped", u.reason))

    verdict, summary = _verdict(per, family, base.family)
    notes = _notes(family, shared, base_model, base.id, tokens)
    return CheckResult(adapter=adapter, base=base.id, verdict=verdict, summary=summary, family=family,
                       per_component=dict(sorted(per.items(), key=lambda kv: _order(kv[0]))),
                       unmatched=unmatched, notes=notes, path=path)


def _problem(module, targets: Sequence[str], component: str, index: BaseIndex) -> Optional[tuple[str, str]]:
    if component not in index.components:
        return ("missing-component", f"the base has no {component} (it has {', '.join(index.components)})")
    layers = [index.layers.get(t) for t in targets]
    missing = [t for t, layer in zip(targets, layers) if layer is None]
    if missing:
        return ("missing-module", f"no layer {missing[0]} in the base")
    why = misfit(module, layers, targets)  # type: ignore[arg-type]
    return ("shape-mismatch", why) if why else None


def _verdict(per: dict[str, ComponentCoverage], family: FamilyComparison, base_family: str) -> tuple[str, str]:
    total = sum(c.total for c in per.values())
    matched = sum(c.matched for c in per.values())
    denoiser = [c for name, c in per.items() if name in DENOISERS]
    d_total, d_matched = sum(c.total for c in denoiser), sum(c.matched for c in denoiser)
    differ = family.match is False
    fam = f"{family.adapter} adapter, {base_family} base"
    if total == 0:
        return INCOMPATIBLE, "the adapter has no modules to apply"
    if matched == 0:
        return INCOMPATIBLE, (f"{fam}: none of its {total} modules apply" if differ
                              else f"none of its {total} modules apply to this base")
    if d_total and d_matched == 0:
        part = "U-Net" if "unet" in per else "transformer"
        return INCOMPATIBLE, (f"{fam}: its {part} part ({d_total} modules) does not apply; only {matched} "
                              f"text-encoder modules would")
    if matched == total and not differ:
        return COMPATIBLE, f"all {total} modules apply"
    if matched == total:
        return PARTIAL, (f"{fam}: all {total} modules apply, but only to text encoders the two families "
                         f"share; the adapter was trained with another denoiser")
    return PARTIAL, f"{matched} of {total} modules apply" + (f" ({fam})" if differ else "")


def _notes(family: FamilyComparison, shared: dict[str, int], base_model: Optional[str], base_id: str,
           tokens: Sequence[str]) -> list[str]:
    notes = []
    for component, n in shared.items():
        notes.append(f"the {family.base} {component} is the same {identity(family.base, component)} as the "
                     f"{family.adapter} one: {n} modules apply there")
    if family.match and base_model and not same_base_id(base_model, base_id):
        notes.append(f"same family ({family.base}); the adapter was trained on {base_model}, this base is "
                     f"{base_id}: a different checkpoint, usually fine")
    if family.adapter == "unknown":
        notes.append("the adapter's family is unknown: the verdict rests on layer names and shapes alone")
    if tokens:
        notes.append(f"{len(tokens)} embedded textual-inversion token(s) ({', '.join(tokens[:3])}) are not checked")
    return notes


_ORDER = ("unet", "transformer", "text_encoder", "text_encoder_2", "text_encoder_3")


def _order(component: str) -> tuple[int, str]:
    return (_ORDER.index(component) if component in _ORDER else len(_ORDER), component)
