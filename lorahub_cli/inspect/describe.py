"""One adapter file described from its container view: layout, family, ranks, alpha and sidecar facts.

Hashes (and the all-zero-weights warning) are added afterwards by the orchestration in ``__init__``;
it reads ``Layout.modules[*].up_keys`` to know which tensors to check.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Optional

from lorahub_cli.errors import CorruptHeader, UnsupportedDtype
from lorahub_cli.inspect.facts import FAMILY_NAMES, Facts, family_from_name, gather_facts
from lorahub_cli.inspect.family import detect_family
from lorahub_cli.inspect.layout import analyse_layout
from lorahub_cli.inspect.model import AdapterReport, Layout, ModuleInfo, RawFile

# Report order of components; "text_encoder_3" is SD3's T5, "tokens" marks embedded textual inversion.
COMPONENT_ORDER = ("unet", "transformer", "text_encoder", "text_encoder_2", "text_encoder_3", "tokens")


def _rename_flux_t5(layout: Layout, family: str) -> None:
    """kohya writes T5 as lora_te3_ for SD3 and Flux alike; in a Flux pipeline T5 is ``text_encoder_2``."""
    if family != "flux" or any(m.component == "text_encoder_2" for m in layout.modules):
        return
    for m in layout.modules:
        if m.component == "text_encoder_3":
            m.component = "text_encoder_2"


def _components(layout: Layout, tokens: list[str]) -> list[str]:
    present = {m.component for m in layout.modules} | ({"tokens"} if tokens else set())
    return [c for c in COMPONENT_ORDER if c in present] + sorted(present - set(COMPONENT_ORDER))


def _stored_alphas(raw: RawFile, modules: list[ModuleInfo]) -> tuple[list[float], list[str]]:
    """The alpha scalars in the file (only those tiny tensors are read)."""
    keys = [m.alpha_key for m in modules if m.alpha_key]
    if not keys or raw.read_values is None:
        return [], []
    from lorahub_cli.inspect.safetensors_header import read_scalars

    keys = [k for k in keys if k in raw.tensors and raw.tensors[k].shape in ((), (1,))]
    try:
        values = read_scalars(raw, keys)
    except Exception as err:  # noqa: BLE001 - unreadable scalars must not sink the report
        return [], [f"could not read the stored alphas ({type(err).__name__}: {err}); alpha taken from "
                    "metadata if any"]
    finite = [v for v in values if math.isfinite(v)]
    if len(finite) < len(values):   # read anyway: header-only inspection still sees a NaN or infinite alpha
        return finite, [f"non-finite: {len(values) - len(finite)} stored alpha(s) are NaN or infinite; the scale "
                        "alpha / rank of those modules means nothing"]
    return finite, []


def _alpha(raw: RawFile, layout: Layout, facts: Facts) -> tuple[Optional[float], list[str]]:
    values, warnings = _stored_alphas(raw, layout.modules)
    if values:
        return Counter(values).most_common(1)[0][0], warnings
    if facts.alpha is not None:
        return float(facts.alpha.value), warnings
    return None, warnings


def _dtype(raw: RawFile, layout: Layout) -> Optional[str]:
    """The dtype of the weights (by count of weight tensors); alpha scalars and (IA)^3 on_input flags do not count."""
    alpha_keys = {m.alpha_key for m in layout.modules}
    counts = Counter(raw.tensors[k].dtype for m in layout.modules for k in m.tensor_keys
                     if k not in alpha_keys and not k.endswith(".on_input"))
    return counts.most_common(1)[0][0] if counts else None


def _rank_warnings(ranks: list[int], facts: Facts) -> list[str]:
    claimed = facts.rank
    if claimed is None or not ranks or int(claimed.value) in ranks:
        return []
    return [f"{claimed.source} says rank {claimed.value}, but the tensors have rank "
            f"{', '.join(map(str, ranks))}; using the tensors"]


def describe(raw: RawFile, path: Path) -> tuple[AdapterReport, Layout]:
    """The report for one file (without hashes) and the key layout later stages need.

    Raises TextualInversion, NotDiffusion or NotALora (via the layout) when the file is not a usable LoRA.
    """
    check_loadable(raw)
    layout, layout_remarks = analyse_layout(raw)
    facts = gather_facts(raw.metadata, path, layout.format)
    family, evidence, family_warnings = detect_family(raw, layout, facts)
    family_warnings += _drop_contradicted_base(facts, family)
    _rename_flux_t5(layout, family)

    tokens = layout.tokens + [t for t in facts.tokens if t not in layout.tokens]
    ranks = sorted({m.rank for m in layout.modules if m.rank > 0})
    alpha, alpha_warnings = _alpha(raw, layout, facts)
    warnings = (list(raw.notes) + layout_remarks + family_warnings + alpha_warnings + _rank_warnings(ranks, facts)
                + facts.warnings)
    report = AdapterReport(
        path=str(path),
        size=raw.size,
        container=raw.container,
        format=layout.format,
        network=layout.network,
        family=family,
        family_evidence=evidence,
        components=_components(layout, tokens),
        rank=max(ranks) if ranks else None,
        ranks=ranks,
        alpha=alpha,
        dtype=_dtype(raw, layout),
        n_tensors=len(raw.tensors),
        n_modules=len(layout.modules),
        tokens=tokens,
        base_model=facts.base_model.value if facts.base_model else None,
        base_model_source=facts.base_model.source if facts.base_model else None,
        trigger_words=[w.value for w in facts.trigger_words],
        trigger_word_sources={w.value: w.source for w in facts.trigger_words},
        license=facts.license.value if facts.license else None,
        license_source=facts.license.source if facts.license else None,
        tags=list(facts.tags),
        metadata=dict(raw.metadata),
        warnings=_dedupe(warnings),
    )
    return report, layout


# Valid in a safetensors file, but no torch tensor can hold them: packed sub-byte floats (torch has no F6, and its
# F4 packs two values per element, so shapes change) and dimensions of 2**63 or more (past int64).
_UNLOADABLE_DTYPES = ("F4", "F6_E2M3", "F6_E3M2")
_MAX_DIM = 2**63 - 1


def check_loadable(raw: RawFile) -> None:
    """Refuse what convert, merge and generate could not load, so inspect and add accept exactly what they can
    use: UnsupportedDtype for packed sub-byte dtypes, CorruptHeader for a dimension past int64."""
    for name, spec in raw.tensors.items():
        if spec.dtype in _UNLOADABLE_DTYPES:
            raise UnsupportedDtype(f"tensor {name!r} is {spec.dtype}, a packed sub-byte type that torch cannot "
                                   "load, so lora could neither convert, merge nor apply this adapter",
                                   hint="Ask for the adapter in F16, BF16 or F32.")
        if any(d > _MAX_DIM for d in spec.shape):
            raise CorruptHeader(f"tensor {name!r} has shape {list(spec.shape)}: a dimension of 2**63 or more, "
                                "which no framework can create (the header is damaged or crafted)")


def _drop_contradicted_base(facts: Facts, family: str) -> list[str]:
    """A base model whose name says another family than the one decided (shapes win) is not kept: filters
    like ``lora list --base`` would find the adapter under a base it does not fit."""
    base = facts.base_model
    named = family_from_name(str(base.value)) if base is not None and family != "unknown" else None
    if named is None or named == family:
        return []
    facts.base_model = None
    return [f"base model '{base.value}' ({base.source}) is a {FAMILY_NAMES[named]} model, but this "
            f"adapter is {FAMILY_NAMES[family]}; it is not recorded as the base"]


def _dedupe(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))
