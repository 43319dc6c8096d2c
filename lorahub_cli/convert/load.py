"""File -> CanonicalAdapter: read the tensors once, map the names, apply the layout's alpha semantics.

Alpha (scale = alpha / rank) as each layout means it:
* a stored ``<module>.alpha`` tensor (kohya, and diffusers files converted from kohya) wins;
* diffusers / peft lora_A/lora_B: the LoraConfig in the header's ``lora_adapter_metadata`` (per component,
  "unet.r", or flat), else a PEFT ``adapter_config.json`` beside the file; rank_pattern / alpha_pattern are
  matched as peft matches them, and rsLoRA scales by alpha / sqrt(r);
* otherwise (attn-procs, diffusers-old, cloneofsimo, kohya without alpha) the scale is 1 (alpha = rank).
Plain low-rank pairs are read as they are. LyCORIS LoHa, LoKr, Tucker cores (lora_mid) and full-difference
layers are read as their exact update, one pair built from the factors (``lorahub_cli.lycoris.factors``), so
every later stage applies exactly what LyCORIS computes. DoRA and (IA)^3 need the base weight (``needs-base``
without one; on a base, ``lorahub_cli.lycoris.based``); OFT and GLoRA name themselves in ``not-supported``;
lora_B biases are refused (``unsupported-conversion``).
"""

from __future__ import annotations

import json
import os
import math
import re
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from lorahub_cli.canonical import CanonicalAdapter, LoraPair
from lorahub_cli.convert.keymap import KeyMap, canonical_tables, map_layout
from lorahub_cli.errors import (HashMismatch, LoraError, NonFinite, NotALora, UnmappedModules,
                                UnsupportedConversion)
from lorahub_cli.inspect.model import AdapterReport, Layout, ModuleInfo, RawFile

if TYPE_CHECKING:
    import torch

LOW_RANK_NETWORKS = ("lora", "locon")
EXACT_NETWORKS = ("loha", "lokr", "full")       # read as their exact update (lorahub_cli.lycoris)
_PAIR_ROLES = {"down", "up", "alpha"}
_FACTOR_ROLES = {"mid", "hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2", "lokr_w1",
                 "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2", "diff"}
_NETWORK_NAMES = {"loha": "LoHa", "lokr": "LoKr", "oft": "OFT", "dora": "DoRA", "glora": "GLoRA", "ia3": "IA3",
                  "full": "full-difference (LyCORIS diff)"}
_CLIP_NEST = "text_model."


@dataclass
class Source:
    """An adapter file read for conversion: container view, key layout, inspection report and the tensors."""

    path: Path
    raw: RawFile
    layout: Layout
    report: AdapterReport
    tensors: dict[str, "torch.Tensor"]
    sha256: str
    companion: Optional[Path] = None
    companion_sha256: Optional[str] = None
    warnings: list[str] = field(default_factory=list)
    name: Optional[str] = None   # the file's real name when ``path`` is not it (a Hub cache blob is its sha256)

    @property
    def file_name(self) -> str:
        return self.name or self.path.name


def read_source(path: Path, *, sha256: Optional[str] = None) -> Source:
    """Read any adapter file (safetensors or weights-only pickle); inspection errors propagate with their codes.

    ``sha256``: the hash recorded for these bytes (a library entry, stored or in place). The bytes are hashed
    while they are read either way, and a difference is refused with ``hash-mismatch`` naming ``lora doctor``:
    a flipped byte in the store never becomes a new adapter that records the old, correct hash."""
    from lorahub_cli.inspect.describe import check_loadable, describe
    from lorahub_cli.inspect.hashing import sha256_file
    from lorahub_cli.inspect.regular import is_regular

    path = Path(path)
    companion = None
    with ThreadPoolExecutor(max_workers=1) as pool:   # hashlib releases the GIL: hash while torch reads
        digest = pool.submit(sha256_file, path) if is_regular(path) else None
        if is_torch_pickle(path):
            from lorahub_cli.convert.pickle import read_pickle_source

            pickled = read_pickle_source(path)
            raw, tensors, companion = pickled.raw, pickled.tensors, pickled.companion
        else:
            from lorahub_cli.inspect.containers import read_container

            raw = read_container(path)  # the header is checked (truncation, traps) before torch reads a byte
            check_loadable(raw)         # what inspect refuses is refused here too, before torch fails on it
            tensors = _load_safetensors(path)
        actual = digest.result() if digest else ""
    if sha256 and actual != sha256:
        raise HashMismatch(f"{path} no longer has the bytes recorded for it: sha256 {actual[:12]}…, recorded "
                           f"{sha256[:12]}… (damaged, or changed since it was added); nothing was made from it",
                           hint="Run `lora doctor` to list damaged entries (`lora doctor --fix` repairs the "
                                "library's records), then add the file again.")
    sha256 = actual
    report, layout = describe(raw, path)
    return Source(path=path, raw=raw, layout=layout, report=report, tensors=tensors, sha256=sha256,
                  companion=companion, companion_sha256=sha256_file(companion) if companion else None,
                  warnings=list(report.warnings))


def is_torch_pickle(path: Path) -> bool:
    """A torch.save file (zip with data.pkl, or the legacy raw pickle), from its first bytes."""
    from lorahub_cli.inspect.containers import is_pickle_head
    from lorahub_cli.inspect.regular import open_regular

    try:
        with open_regular(path) as f:   # never a FIFO or device: read_container refuses those with not-a-file
            head = f.read(9)
            size = os.fstat(f.fileno()).st_size
    except (OSError, LoraError):
        return False  # read_container reports missing files, folders and devices with the right code
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as archive:
                return any(n == "data.pkl" or n.endswith("/data.pkl") for n in archive.namelist())
        except (zipfile.BadZipFile, OSError, ValueError, EOFError):
            return False  # read_container says truncated / damaged
    return is_pickle_head(head, size)


def _load_safetensors(path: Path) -> dict[str, "torch.Tensor"]:
    from safetensors.torch import load_file

    return load_file(str(path))


def load_adapter(path: Path) -> CanonicalAdapter:
    """The canonical form of any adapter file (reads it once)."""
    source = read_source(path)
    adapter, _ = to_canonical(source)
    return adapter


def to_canonical(source: Source, keymap: Optional[KeyMap] = None) -> tuple[CanonicalAdapter, KeyMap]:
    """The adapter as named low-rank pairs; raises when a module is not a low-rank pair or maps nowhere."""
    layout = source.layout
    _check_low_rank(layout)
    keymap = keymap or map_layout(layout, source.report.family)
    if keymap.unmapped:
        stem, reason = next(iter(keymap.unmapped.items()))
        raise UnmappedModules(f"{len(keymap.unmapped)} of {len(layout.modules)} modules have no layer in the "
                              f"{keymap.family} architecture, e.g. {stem!r}: {reason}",
                              hint="Check the base family (lora inspect); a LoRA for another base cannot be converted.")
    adapter = low_rank_pairs(source, keymap, canonical_tables(keymap.family))
    adapter.tokens = {t: source.tensors[t] for t in layout.tokens if t in source.tensors}
    return adapter, keymap


def low_rank_pairs(source: Source, keymap: KeyMap, tables: dict[str, dict[str, Any]]) -> CanonicalAdapter:
    """The mapped modules of ``source`` as pairs with each layout's alpha, shaped for the layers of ``tables``
    and in their order. Unmapped modules are left out (``to_canonical`` refuses them first); two modules that
    adapt one layer are refused, never one silently dropped."""
    config = PeftConfigs(source)
    modules: dict[str, LoraPair] = {}
    for m in source.layout.modules:
        mapped = keymap.mapped.get(m.key)
        if mapped is None:
            continue
        roles = _roles(m)
        if "ia3" in roles:   # no factors: a scaling vector, applied against the base weight
            _add_ia3(modules, source, m, roles, mapped, tables)
            continue
        alpha = _alpha(source, m, roles, config)
        if roles.keys() & _FACTOR_ROLES:   # LyCORIS: the exact update as one pair, its scale folded in
            from lorahub_cli.lycoris.factors import exact_pair

            exact = exact_pair({r: source.tensors[k] for r, k in roles.items() if r != "alpha"}, alpha)
            down, up, alpha = exact.down, exact.up, None
        else:
            down, up = source.tensors[roles["down"]], source.tensors[roles["up"]]
            _check_pair(m, down, up)
        magnitude = source.tensors[roles["magnitude"]] if "magnitude" in roles else None
        ups = up.split(list(mapped.out_splits), dim=0) if len(mapped.targets) > 1 else (up,)
        magnitudes = _split_magnitude(m, magnitude, mapped.out_splits)
        for target, part, magnitude in zip(mapped.targets, ups, magnitudes):
            if target in modules:   # e.g. a layer under both its SAI and its diffusers name
                other = next(k for k, v in keymap.mapped.items() if target in v.targets and k != m.key)
                raise UnsupportedConversion(f"modules {other!r} and {m.key!r} both adapt {target}; a layout "
                                            "holds one pair per layer", hint="Merge them with `lora merge` first.")
            modules[target] = LoraPair(down=down, up=part, alpha=alpha, magnitude=magnitude)
    modules = {k: _fit(pair, tables[k.split(".", 1)[0]][k.split(".", 1)[1]]) for k, pair in _ordered(modules, tables)}
    return CanonicalAdapter(family=keymap.family, modules=modules, metadata=dict(source.raw.metadata))


def _split_magnitude(m: ModuleInfo, magnitude: Any, out_splits: tuple[int, ...]) -> tuple[Any, ...]:
    """A DoRA magnitude for each part of a fused layer (Flux/SD3 qkv): a per-output-row norm splits with the
    rows; a per-input-channel norm spans every part's rows, so no part can be applied alone."""
    if magnitude is None or len(out_splits) == 1:
        return (magnitude,) * len(out_splits)
    total = sum(out_splits)
    if magnitude.numel() == total and (magnitude.dim() <= 1 or magnitude.shape[0] == total):
        return tuple(magnitude.reshape(total, *magnitude.shape[1:]).split(list(out_splits), dim=0))
    raise UnsupportedConversion(f"{m.key}: a DoRA magnitude per input channel on a fused layer (its norm spans "
                                f"all {len(out_splits)} parts at once) is not supported")


def _add_ia3(modules: dict[str, LoraPair], source: Source, m: ModuleInfo, roles: dict[str, str], mapped: Any,
             tables: dict[str, dict[str, Any]]) -> None:
    """An (IA)^3 module as pairs carrying its vector, with zero rank-1 factors shaped for each target layer."""
    import torch

    from lorahub_cli.lycoris.ia3 import check_fits, read_scale

    scale = read_scale(m.key, source.tensors[roles["ia3"]], source.tensors[roles["on_input"]])
    for target, part in zip(mapped.targets, scale.split(mapped.out_splits)):
        component, path = target.split(".", 1)
        layer = tables[component][path]
        check_fits(m.key, part, layer.out_features, layer.in_features)
        if target in modules:
            raise UnsupportedConversion(f"two modules adapt {target}; a layout holds one per layer")
        width = layer.in_features * (layer.kernel[0] * layer.kernel[1] if layer.kernel else 1)
        modules[target] = LoraPair(down=torch.zeros(1, width), up=torch.zeros(layer.out_features, 1), ia3=part)


def _check_low_rank(layout: Layout, *, with_base: bool = False) -> None:
    """Refuse what no pair can carry: DoRA without its base (``with_base``: the caller applies it against
    the base weight), networks not implemented, biases."""
    from lorahub_cli.errors import NeedsBase, NotSupported

    if layout.network == "dora" and not with_base:
        raise NeedsBase("this is a DoRA adapter: each layer's update depends on the base weight (magnitude "
                        "times the normalised direction), so it cannot be computed or converted without the base")
    if layout.network == "ia3" and not with_base:
        raise NeedsBase("this is an (IA)^3 adapter: each layer's update scales the base weight's rows or input "
                        "channels, so it cannot be computed or converted without the base")
    if layout.network not in LOW_RANK_NETWORKS + EXACT_NETWORKS + (("dora", "ia3") if with_base else ()):
        name = _NETWORK_NAMES.get(layout.network, layout.network)
        raise NotSupported(f"this is a {name} adapter ({layout.format} names): {name} updates are not "
                           "implemented, so nothing was converted, merged or applied")
    for m in layout.modules:
        roles = set(_roles(m))
        if "magnitude" in roles and not with_base:
            raise NeedsBase(f"module {m.key!r} has DoRA magnitude vectors: its update depends on the base weight")
        if "diff_b" in roles:
            raise NotSupported(f"module {m.key!r} has a bias difference (diff_b): bias updates are not "
                               "implemented, so nothing was converted, merged or applied")
        extra = roles - _PAIR_ROLES - _FACTOR_ROLES - ({"magnitude", "ia3", "on_input"} if with_base else set())
        if extra:
            what = {"magnitude": "DoRA magnitude vectors", "mid": "Tucker cores (lora_mid)",
                    "up_bias": "lora_B biases"}
            names = ", ".join(what.get(r, r) for r in sorted(extra))
            raise UnsupportedConversion(f"module {m.key!r} has {names}: more than scale * up @ down, which the "
                                        "target layouts cannot carry without changing the result")


def _roles(m: ModuleInfo) -> dict[str, str]:
    from lorahub_cli.inspect.layout import ia3_vector, split_key

    keys = set(m.tensor_keys)
    return {p.role: k for k in m.tensor_keys if (p := split_key(k) or ia3_vector(k, keys)) is not None}


def _check_pair(m: ModuleInfo, down: "torch.Tensor", up: "torch.Tensor") -> None:
    """up [out, r] or [out, r, 1, 1] against down [r, ...]: anything else is not ``up @ down``."""
    pair = down.dim() >= 2 and up.dim() in (2, 4) and up.shape[1] == down.shape[0]
    if not pair or tuple(up.shape[2:]) not in ((), (1, 1)):
        raise NotALora(f"module {m.key!r} has up {tuple(up.shape)} and down {tuple(down.shape)}: not a low-rank pair "
                       "(up [out, r] or [out, r, 1, 1], down [r, in] or [r, in, kh, kw])",
                       hint="The file is damaged or not a LoRA; inspect it with `lora inspect`.")


def _alpha(source: Source, m: ModuleInfo, roles: dict[str, str], config: "PeftConfigs") -> Optional[float]:
    if "alpha" in roles:
        stored = source.tensors[roles["alpha"]]
        if stored.numel() != 1:
            raise NotALora(f"module {m.key!r} stores alpha as {stored.numel()} values, not one")
        alpha = float(stored.reshape(-1)[0].item())
        if not math.isfinite(alpha):
            raise NonFinite(f"module {m.key!r} has alpha {alpha}: its scale alpha / rank means nothing",
                            hint="The file is damaged or was saved after training diverged.")
        return alpha
    if source.layout.format in ("diffusers", "peft"):
        return config.alpha(m)
    return None


def _ordered(modules: dict[str, LoraPair], tables: dict[str, dict]) -> list[tuple[str, LoraPair]]:
    """Components in pipeline order, layers in the architecture's order: the same output for any input order."""
    order = {c: i for i, c in enumerate(tables)}
    position = {f"{c}.{name}": i for c, table in tables.items() for i, name in enumerate(table)}
    return sorted(modules.items(), key=lambda kv: (order.get(kv[0].split(".", 1)[0], 99), position.get(kv[0], 0)))


def _fit(pair: LoraPair, layer: Any) -> LoraPair:
    """Factors in the shape of the real layer: 2-D for a Linear, [r, in, kh, kw] / [out, r, 1, 1] for a conv.

    A 1x1 conv and a Linear compute the same map, and files disagree about which one proj_in is; reshaping
    keeps every value and byte.
    """
    r = pair.down.shape[0]
    if layer.kind == "linear":
        down, up = pair.down.reshape(r, layer.in_features), pair.up.reshape(pair.up.shape[0], r)
    else:
        kh, kw = layer.kernel
        down = pair.down.reshape(r, layer.in_features, kh, kw)
        up = pair.up.reshape(pair.up.shape[0], r, 1, 1)
    return LoraPair(down=down, up=up, alpha=pair.alpha, magnitude=pair.magnitude, ia3=pair.ia3)


# --- PEFT LoraConfig alphas ---------------------------------------------------------------------------
class PeftConfigs:
    """The LoraConfig(s) that give a diffusers / peft file its alphas, per component."""

    def __init__(self, source: Source):
        self.flat: Optional[dict] = None
        self.per_component: dict[str, dict] = {}
        self.source_name = ""
        text = source.raw.metadata.get("lora_adapter_metadata")
        if text:
            self._from_metadata(text, source)
        elif source.layout.format in ("diffusers", "peft"):
            self._from_sidecar(source)

    def _from_metadata(self, text: str, source: Source) -> None:
        try:
            data = json.loads(text)
        except ValueError:
            source.warnings.append("lora_adapter_metadata is not JSON; alphas taken as the ranks (scale 1)")
            return
        if not isinstance(data, dict):
            return
        self.source_name = "lora_adapter_metadata"
        for key, value in data.items():
            component, dot, rest = key.partition(".")
            if dot and component in ("unet", "transformer", "text_encoder", "text_encoder_2", "text_encoder_3"):
                self.per_component.setdefault(component, {})[rest] = value
        if not self.per_component:
            self.flat = data
        for config in [self.flat or {}, *self.per_component.values()]:
            problem = _config_problem(config)
            if problem:
                source.warnings.append(f"lora_adapter_metadata: {problem}; alphas taken as the ranks (scale 1)")
                self.flat, self.per_component = None, {}
                return

    def _from_sidecar(self, source: Source) -> None:
        from lorahub_cli.inspect.facts import sidecar_paths

        for path in sidecar_paths(source.path, source.layout.format)[1]:
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                source.warnings.append(f"{path.name} could not be read; alphas taken as the ranks (scale 1)")
                continue
            if isinstance(data, dict) and ("lora_alpha" in data or "r" in data):
                problem = _config_problem(data)
                if problem:
                    source.warnings.append(f"{path.name}: {problem}; alphas taken as the ranks (scale 1)")
                    return
                self.flat, self.source_name = data, path.name
                return

    def alpha(self, m: ModuleInfo) -> Optional[float]:
        config = self.per_component.get(m.component, self.flat)
        if not config:
            return None
        names = _pattern_names(m)
        r = _pattern_value(config.get("rank_pattern") or {}, names, config.get("r")) or m.rank
        alpha = _pattern_value(config.get("alpha_pattern") or {}, names, config.get("lora_alpha"))
        if alpha is None:
            return None
        if not config.get("use_rslora") and int(r) == m.rank:
            return float(alpha)  # no arithmetic: the scale stays exactly alpha / r
        scale = float(alpha) / (math.sqrt(float(r)) if config.get("use_rslora") else float(r))
        return scale * m.rank


def _config_problem(config: dict) -> Optional[str]:
    """Why ``alpha`` could not use this LoraConfig (None when it can): every number finite, r positive, each
    pattern a mapping of valid regexes to such numbers."""
    def bad(value: Any, positive: bool = False) -> bool:
        number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        return not number or (positive and value <= 0)

    for key, positive in (("r", True), ("lora_alpha", False)):
        if config.get(key) is not None and bad(config[key], positive):
            return f"{key} is {config[key]!r}, not a {'positive ' if positive else ''}number"
    for key, positive in (("rank_pattern", True), ("alpha_pattern", False)):
        pattern = config.get(key) or {}
        if not isinstance(pattern, dict):
            return f"{key} is not a mapping"
        for name, value in pattern.items():
            try:
                re.compile(name)
            except re.error:
                return f"{key} key {name!r} is not a valid pattern"
            if bad(value, positive):
                return f"{key}[{name!r}] is {value!r}, not a {'positive ' if positive else ''}number"
    return None


def _pattern_names(m: ModuleInfo) -> list[str]:
    """The module path as peft saw it: without component / base_model prefixes, CLIP with and without text_model."""
    path = m.key.removeprefix("base_model.model.")
    if path.startswith(m.component + "."):
        path = path[len(m.component) + 1:]
    names = [path]
    names.append(path[len(_CLIP_NEST):] if path.startswith(_CLIP_NEST) else _CLIP_NEST + path)
    return names


def _pattern_value(pattern: dict, names: list[str], default: Any) -> Any:
    """peft's get_pattern_key: the first key that matches the end of the module name at a dot boundary."""
    for key, value in pattern.items():
        for name in names:
            if re.match(rf"(.*\.)?({key})$", name):
                return value
    return default
