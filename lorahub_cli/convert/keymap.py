"""Key normalisation: every module of a file's key layout -> its canonical "<component>.<module path>".

Names only (a ``Layout`` from ``lorahub_cli.inspect.layout``, which needs just the header), so ``lora check``
and ``lora merge`` can ask "which real layers does this adapter touch, and which names are not understood"
without loading a tensor or importing torch (the module tables come from their JSON cache).

Every spelling is resolved against the real architecture of the family's base (``module_table``), never by
guessing at underscores: kohya names through an index of the table's names with "." -> "_" (SAI/LDM U-Net
names and Flux/SD3 fused layers included), attn-procs ``processor.to_q_lora`` through the leaf it stands for,
cloneofsimo positions through the order that format was written in. A module whose shapes do not fit the
layer it names is reported, not mapped.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Union

from lorahub_cli.archs import base_components, module_table, resolve_alias
from lorahub_cli.archs.aliases import FAMILY_OF_ALIAS
from lorahub_cli.archs.fused import FusedLayer, flux_layers, sd3_layers
from lorahub_cli.archs.naming import sai_unet_names
from lorahub_cli.archs.positional import cloneofsimo_order
from lorahub_cli.archs.tables import BaseRef, Layer
from lorahub_cli.inspect.model import Layout, ModuleInfo

AnyLayer = Union[Layer, FusedLayer]

# kohya-style prefixes (longest first); the layout already decided the component, these only get stripped
_KOHYA_PREFIXES = ("lora_prior_unet_", "lora_transformer_", "lora_unet_", "lora_te1_", "lora_te2_", "lora_te3_",
                   "lora_te_", "oft_unet_", "lycoris_")
_DOTTED_PREFIXES = ("unet.", "transformer.", "text_encoder.", "text_encoder_2.", "text_encoder_3.")
_PEFT_ROOT = "base_model.model."
# attn-procs / 2023 text-encoder leaves ("to_q_lora") -> the layer they wrap, tried in this order
_PROC_LEAVES = {"to_q": ("to_q", "q_proj"), "to_k": ("to_k", "k_proj"), "to_v": ("to_v", "v_proj"),
                "to_out": ("to_out.0", "out_proj")}
_CLIP_NEST = "text_model."


@dataclass(frozen=True)
class MappedModule:
    """One module of the file and the real layer(s) it adapts."""

    stem: str                       # the module's key stem as written in the file
    component: str
    targets: tuple[str, ...]        # canonical "<component>.<path>"; several for a fused layer (Flux/SD3 qkv)
    out_splits: tuple[int, ...]     # out_features of each target: how the up/B rows divide between them


@dataclass
class KeyMap:
    family: str
    base: Optional[str]                                         # the alias (or folder) whose tables named the layers
    mapped: dict[str, MappedModule] = field(default_factory=dict)   # by stem
    unmapped: dict[str, str] = field(default_factory=dict)          # stem -> reason

    @property
    def targets(self) -> list[str]:
        return [t for m in self.mapped.values() for t in m.targets]

    def to_dict(self) -> dict:
        return {"family": self.family, "base": self.base,
                "mapped": {s: list(m.targets) for s, m in self.mapped.items()}, "unmapped": dict(self.unmapped)}


def map_layout(layout: Layout, family: str, *, base: Optional[BaseRef] = None,
               cache_dir: Optional[Path] = None) -> KeyMap:
    """Map every module of ``layout`` onto the layers of a base: ``base`` (an alias or a local diffusers folder)
    when given, else the reference base of ``family`` (sd1 -> sd15, sd2 -> sd21, sdxl, sd3, flux)."""
    alias = resolve_alias(family) if family and family != "unknown" else None
    if base is None and (alias is None or alias not in FAMILY_OF_ALIAS):
        out = KeyMap(family=family, base=None)
        for m in layout.modules:
            out.unmapped[m.key] = f"the base family is {family or 'unknown'}, so there is no architecture to map onto"
        return out
    ref = base if base is not None else alias
    out = KeyMap(family=FAMILY_OF_ALIAS.get(alias or "", family), base=str(ref))
    known = base_components(ref)
    by_component: dict[str, list[ModuleInfo]] = {}
    for m in layout.modules:
        by_component.setdefault(m.component, []).append(m)
    for component, modules in by_component.items():
        if component not in known:
            for m in modules:
                out.unmapped[m.key] = f"{ref} has no {component} (it has {', '.join(known)})"
            continue
        resolver = _resolver(str(ref), out.family, component, cache_dir)
        if layout.format == "cloneofsimo":
            _map_positional(modules, resolver, out)
            continue
        for m in modules:
            _record(out, m, resolver.lookup(m.key, layout.format), resolver.table)
    return out


def canonical_tables(family: str, *, cache_dir: Optional[Path] = None) -> dict[str, dict[str, Layer]]:
    """component -> module table of the family's base (for writers that need the real layer of a name)."""
    alias = resolve_alias(family)
    if alias is None:
        return {}
    return {c: module_table(alias, c, cache_dir=cache_dir) for c in base_components(alias)}


# --- one component's names ---------------------------------------------------------------------------
@functools.lru_cache(maxsize=32)
def _resolver(base: str, family: str, component: str, cache_dir: Optional[Path]) -> "_Resolver":
    """One per component: its indexes cost more than a whole small adapter's mapping."""
    return _Resolver(base, family, component, cache_dir)


class _Resolver:
    """The spellings of one component's layers: dotted table names and the kohya underscore index."""

    def __init__(self, base: str, family: str, component: str, cache_dir: Optional[Path]):
        self.component = component
        self.table: dict[str, Layer] = module_table(base, component, cache_dir=cache_dir)
        self.fused: dict[str, FusedLayer] = {}
        if component == "transformer" and family in ("flux", "sd3"):
            self.fused = flux_layers(self.table) if family == "flux" else sd3_layers(self.table)
        self.sai: dict[str, str] = {}
        if component == "unet":
            self.sai = {sai: name for name, sai in sai_unet_names(self.table).items()}
        self._underscored: Optional[dict[str, Optional[str]]] = None

    # name -> (canonical path, layer) or a reason
    def lookup(self, stem: str, fmt: str) -> Union[tuple[str, AnyLayer], str]:
        if fmt in ("kohya", "lycoris") or stem.startswith(_KOHYA_PREFIXES):
            return self._kohya(stem)
        return self._dotted(stem)

    def _kohya(self, stem: str) -> Union[tuple[str, AnyLayer], str]:
        rest = next((stem[len(p):] for p in _KOHYA_PREFIXES if stem.startswith(p)), None)
        if rest is None:
            return "not a kohya-style name (no lora_unet_ / lora_te*_ prefix)"
        index = self._index()
        if rest not in index:
            return f"no {self.component} layer is named {rest!r} (underscores for dots) in this architecture"
        name = index[rest]
        if name is None:
            return f"{rest!r} could name more than one {self.component} layer"
        return self._resolve_dotted(name) or f"{name} is not an adaptable layer"

    def _dotted(self, stem: str) -> Union[tuple[str, AnyLayer], str]:
        path = stem[len(_PEFT_ROOT):] if stem.startswith(_PEFT_ROOT) else stem
        for prefix in _DOTTED_PREFIXES:
            if path.startswith(prefix) and prefix[:-1] == self.component:
                path = path[len(prefix):]
                break
        if path.startswith("processor.") or ".processor." in path or path.rsplit(".", 1)[-1].endswith("_lora"):
            return self._procs(path)
        return self._resolve_dotted(path) or f"no {self.component} layer named {path!r} in this architecture"

    def _procs(self, path: str) -> Union[tuple[str, AnyLayer], str]:
        """attn-procs: "<attention>.processor.to_q_lora" (U-Net), "<attention>.to_q_lora" (2023 text encoders)."""
        attention, _, leaf = path.rpartition(".")
        attention = attention.removesuffix(".processor").removesuffix("processor")
        base = leaf.removesuffix("_lora")
        if base == leaf:
            return f"{leaf!r} is not an attention-processor LoRA name"
        for candidate in _PROC_LEAVES.get(base, (base,)):
            found = self._resolve_dotted(f"{attention}.{candidate}" if attention else candidate)
            if found:
                return found
        return f"no {self.component} layer behind the attention processor {path!r}"

    def _resolve_dotted(self, path: str) -> Optional[tuple[str, AnyLayer]]:
        """A table name as written, with CLIP's "text_model." level added, or a fused / SAI name."""
        for name in (path, _CLIP_NEST + path):
            if name in self.table:
                return name, self.table[name]
        if path in self.fused:
            return path, self.fused[path]
        if path in self.sai:
            return self.sai[path], self.table[self.sai[path]]
        return None

    def _index(self) -> dict[str, Optional[str]]:
        """kohya spelling -> dotted name; None where two names collapse onto one spelling."""
        if self._underscored is None:
            index: dict[str, Optional[str]] = {}
            spellings = [*self.table, *self.fused, *self.sai]
            spellings += [n[len(_CLIP_NEST):] for n in self.table if n.startswith(_CLIP_NEST)]  # transformers >= 5.6
            for name in spellings:
                key = name.replace(".", "_")
                index[key] = name if index.get(key, name) == name else None
            self._underscored = index
        return self._underscored


# --- recording, shapes and positions -----------------------------------------------------------------
def _record(out: KeyMap, m: ModuleInfo, found: Union[tuple[str, AnyLayer], str], table: Mapping[str, Layer]) -> None:
    if isinstance(found, str):
        out.unmapped[m.key] = found
        return
    path, layer = found
    problem = shape_problem(m, layer)
    if problem:
        out.unmapped[m.key] = f"{problem} of {m.component}.{path}"
        return
    if isinstance(layer, FusedLayer):
        parts = tuple(f"{m.component}.{p}" for p in layer.parts)
        splits = tuple(table[p].out_features for p in layer.parts)
        out.mapped[m.key] = MappedModule(m.key, m.component, parts, splits)
    else:
        out.mapped[m.key] = MappedModule(m.key, m.component, (f"{m.component}.{path}",), (layer.out_features,))


def shape_problem(m: ModuleInfo, layer: AnyLayer) -> Optional[str]:
    """Why the module's shapes cannot adapt ``layer`` (None when they fit).

    A 1x1 conv and a Linear are the same map, so either shape fits either layer; a LoHa/LoKr factor of a
    conv has the kernel folded into its input width.
    """
    kernel = layer.kernel
    k = kernel[0] * kernel[1] if kernel else 1
    if m.out_features is not None and m.out_features != layer.out_features:
        return f"output width {m.out_features} does not fit the {layer.out_features}"
    if m.in_features is None:
        return None
    folded = m.kernel is None and m.in_features == layer.in_features * k and k > 1
    if m.in_features != layer.in_features and not folded:
        return f"input width {m.in_features} does not fit the {layer.in_features}"
    mk = tuple(m.kernel) if m.kernel else None
    pointwise = mk in (None, (1, 1)) and kernel in (None, (1, 1))   # Linear or 1x1 conv on either side
    if folded or pointwise or mk == (tuple(kernel) if kernel else None):
        return None
    return f"kernel {mk or 'none'} does not fit the {tuple(kernel) if kernel else 'linear layer'}"


def _map_positional(modules: list[ModuleInfo], resolver: _Resolver, out: KeyMap) -> None:
    """cloneofsimo "unet:N": the N-th layer in the order the file was written (legacy diffusers, else today's)."""
    orders = [cloneofsimo_order(resolver.table, legacy=True), cloneofsimo_order(resolver.table, legacy=False)]
    chosen = None
    for order in orders:
        if all(_position_fits(m, order, resolver.table) for m in modules):
            chosen = order
            break
    for m in modules:
        index = int(m.key.split(":")[1])
        if chosen is None:
            order = orders[0]
            if index >= len(order):
                out.unmapped[m.key] = (f"position {index} is past the {len(order)} layers cloneofsimo targets "
                                       f"in {resolver.component}")
            else:
                out.unmapped[m.key] = (f"{shape_problem(m, resolver.table[order[index]]) or 'the positions do not fit'}"
                                       f" of {resolver.component}.{order[index]} (position {index})")
            continue
        _record(out, m, (chosen[index], resolver.table[chosen[index]]), resolver.table)


def _position_fits(m: ModuleInfo, order: list[str], table: Mapping[str, Layer]) -> bool:
    index = int(m.key.split(":")[1])
    return index < len(order) and shape_problem(m, table[order[index]]) is None
