"""Module tables of a single-file checkpoint, from its header's names and shapes alone (no torch, no weights).

``layer_tables(shapes)`` names every Linear / Conv2d of the U-Net or transformer and the text encoders as
diffusers and transformers name them (``ldm`` holds the spelling rules), so the tables equal those that
``tables.module_table`` builds from the equivalent diffusers folder's configs (tests/checkpoints check this for
SD1.5, SD2.1, SDXL and Flux). ``table_folder`` stores them where ``module_table`` reads them back
(``<component>/layers.json`` beside a model_index.json), so check, coverage and the table hash treat a checkpoint
base like any folder. Flux and SD3 tables are read for the transformer; their text encoders (usually shipped
apart) come from the family's published configs.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Optional, Sequence

from lorahub_cli.archs import ldm
from lorahub_cli.archs.fused import FLUX_DOUBLE, FLUX_SINGLE, SD3_JOINT
from lorahub_cli.archs.tables import (LAYERS_FILE, Layer, base_components, cache_root, component_class,
                                      module_table, table_payload)
from lorahub_cli.errors import UnknownArchitecture

Shapes = Mapping[str, tuple[int, ...]]


def layer_tables(shapes: Shapes) -> dict[str, dict[str, Layer]]:
    """Each adaptable component's Linear / Conv2d layers under diffusers names, from names and shapes only."""
    found = ldm.architecture_of(shapes)
    if found is None:
        raise UnknownArchitecture("no U-Net or transformer in the checkpoint's keys")
    arch, root = found
    tensors = shapes
    if arch == "ldm-unet":
        tables = {"unet": _unet_table(_below(tensors, root))}
        xl = any(k.startswith(root + "label_emb.") for k in tensors)
        for prefix, component, openclip in ((ldm.SD1_TEXT_ROOT, "text_encoder", False),
                                            (ldm.SDXL_TEXT_ROOT, "text_encoder", False),
                                            (ldm.SD2_TEXT_ROOT, "text_encoder", True),
                                            (ldm.SDXL_TEXT2_ROOT, "text_encoder_2", True),
                                            (ldm.REFINER_TEXT2_ROOT, "text_encoder_2", True)):
            below = _below(tensors, prefix)
            if below:
                # SD2's pipeline runs OpenCLIP-H without its last layer (penultimate features), so the diffusers
                # text encoder has one layer less than the checkpoint; SDXL's bigG keeps all of them
                tables[component] = (_openclip_table(below, drop_last=not xl) if openclip
                                     else _clip_table(below))
        return tables
    if arch == "flux":
        return {"transformer": _flux_table(_below(tensors, root))}
    return {"transformer": _dit_table(_below(tensors, root), ldm.SD3_TOP, SD3_BLOCKS)}


def _below(tensors: Shapes, root: str) -> Shapes:
    return {k[len(root):]: s for k, s in tensors.items() if k.startswith(root)}


def _layer(shape: tuple[int, ...]) -> Optional[Layer]:
    if len(shape) == 2:
        return Layer("linear", shape[1], shape[0])
    if len(shape) == 4:
        return Layer("conv", shape[1], shape[0], (shape[2], shape[3]))
    return None


def _weights(tensors: Shapes) -> Shapes:
    return {k[: -len(".weight")]: s for k, s in tensors.items() if k.endswith(".weight")}


def _unet_table(tensors: Shapes) -> dict[str, Layer]:
    weights = _weights(tensors)
    names = ldm.unet_from_ldm(weights)
    table = {}
    for module, ours in names.items():
        layer = _layer(weights[module])
        if layer is not None:
            table[ours] = layer
    return table


def _clip_table(tensors: Shapes) -> dict[str, Layer]:
    table = {}
    for module, shape in _weights(tensors).items():
        layer = _layer(shape)
        if layer is None or layer.kind != "linear" or ".embeddings." in f".{module}":
            continue   # token / position embeddings are 2-D but no Linear (a folder's tables have none)
        name = module if module.startswith("text_model.") or module == "text_projection" else f"text_model.{module}"
        table[name] = layer
    return table


def _openclip_table(tensors: Shapes, *, drop_last: bool) -> dict[str, Layer]:
    rows: list[tuple[int, str, Layer]] = []
    for key, spec in tensors.items():
        found = ldm.openclip_layer(key)
        if found is None or len(spec) != 2:
            continue
        index, leaves = found
        out, fan_in = spec
        for leaf in leaves:
            rows.append((index, leaf, Layer("linear", fan_in, out // len(leaves))))
    last = max((r[0] for r in rows), default=-1)
    table = {ldm.clip_name(i, leaf): layer for i, leaf, layer in rows if not (drop_last and i == last)}
    projection = tensors.get("text_projection")
    if projection is not None and len(projection) == 2:   # a bare matrix (x @ P): Linear(P.T) in diffusers
        table["text_projection"] = Layer("linear", projection[0], projection[1])
    return table


# (the original file's block root, diffusers' block root, the fused layers inside a block)
FLUX_BLOCKS = (("double_blocks", "transformer_blocks", FLUX_DOUBLE),
               ("single_blocks", "single_transformer_blocks", FLUX_SINGLE))
SD3_BLOCKS = (("joint_blocks", "transformer_blocks", SD3_JOINT),)


def _flux_table(tensors: Shapes) -> dict[str, Layer]:
    return _dit_table(tensors, ldm.FLUX_TOP, FLUX_BLOCKS)


def _dit_table(tensors: Shapes, top: Mapping[str, str], blocks) -> dict[str, Layer]:
    """A DiT's layers: ``top`` renames, then each block's fused layers split into their diffusers parts."""
    weights = _weights(tensors)
    table = {}
    for theirs, ours in top.items():
        if theirs in weights and (layer := _layer(weights[theirs])):
            table[ours] = layer
    for fused in _fused_layers(weights, blocks):
        for part, out in zip(fused.parts, fused_widths(fused.shape, fused.parts)):
            table[f"{fused.ours}.{part}"] = Layer("linear", fused.shape[1], out)
    return table


@dataclass(frozen=True)
class _Fused:
    theirs: str               # the fused layer's name in the file, e.g. "double_blocks.3.img_attn.qkv"
    ours: str                 # its block's name in diffusers, e.g. "transformer_blocks.3"
    parts: tuple[str, ...]    # the diffusers layers it stacks, in output order
    shape: tuple[int, ...]
    last_block: bool


def _fused_layers(weights: Mapping[str, tuple[int, ...]], blocks) -> Iterator[_Fused]:
    """Every fused 2-D layer present in ``weights``, block by block, with its diffusers parts."""
    for block, ours_block, rules in blocks:
        numbers = sorted({int(m.group(1)) for k in weights if (m := re.match(rf"^{block}\.(\d+)\.", k))})
        for n in numbers:
            for theirs, parts in rules:
                shape = weights.get(f"{block}.{n}.{theirs}")
                if shape is not None and len(shape) == 2:
                    yield _Fused(f"{block}.{n}.{theirs}", f"{ours_block}.{n}", parts, tuple(shape),
                                 n == numbers[-1])


def fused_widths(shape: tuple[int, ...], parts: tuple[str, ...]) -> list[int]:
    """Output widths of a fused layer's parts: q, k, v each as wide as the input; a single block's MLP the rest."""
    out, fan_in = shape
    if len(parts) == 1:
        return [out]
    if parts[-1] == "proj_mlp":
        return [fan_in, fan_in, fan_in, out - 3 * fan_in]
    return [out // len(parts)] * len(parts)


# --- the tables as a base folder ---------------------------------------------------------------------------
_PIPELINES = {"sd1": "StableDiffusionPipeline", "sd2": "StableDiffusionPipeline", "unknown": "StableDiffusionPipeline",
              "sdxl": "StableDiffusionXLPipeline", "sd3": "StableDiffusion3Pipeline", "flux": "FluxPipeline"}
_CLASSES = {"unet": ("diffusers", "UNet2DConditionModel"), "transformer": ("diffusers", "FluxTransformer2DModel"),
            "text_encoder": ("transformers", "CLIPTextModel"),
            "text_encoder_2": ("transformers", "CLIPTextModelWithProjection")}
_FAMILY_ALIAS = {"sd1": "sd15", "sd2": "sd21", "sdxl": "sdxl", "sd3": "sd3", "flux": "flux"}


def table_folder(shapes: Shapes, family: str, variants: Sequence[str] = ()) -> tuple[Path, tuple[str, ...]]:
    """A folder in the derived-data cache that ``archs.module_table`` reads as this checkpoint's tables
    (model_index.json + ``<component>/layers.json``), and the adaptable components it holds.

    A component the file lacks (a transformer-only Flux or SD3 file) is taken from the family's published
    configs, as the user's UI would load the standard one beside it. Keyed by the tables' hash, so equal
    architectures share one folder; published atomically.
    """
    from registry.publish import publish_file

    tables = layer_tables(shapes)
    index: dict[str, object] = {"_class_name": _PIPELINES[family]}
    alias = _FAMILY_ALIAS.get(family)
    if "refiner" in variants:
        index["_class_name"] = "StableDiffusionXLImg2ImgPipeline"
    for component in tables:
        index[component] = list(_CLASSES.get(component, ("diffusers", "Unknown")))
    if alias and "refiner" not in variants:
        for component in base_components(alias):
            if component not in tables:
                tables[component] = module_table(alias, component)
                index[component] = list(component_class(alias, component))
    if family in ("flux", "sd3") and "transformer" in tables:
        index["transformer"] = ["diffusers", "FluxTransformer2DModel" if family == "flux" else
                                "SD3Transformer2DModel"]
    payloads = {c: json.dumps(table_payload(t), sort_keys=True) for c, t in tables.items()}
    key = hashlib.sha256(json.dumps([index, payloads], sort_keys=True).encode()).hexdigest()[:24]
    folder = Path(cache_root()).parent / "checkpoints" / key
    if not (folder / "model_index.json").is_file():
        for component, payload in payloads.items():
            publish_file(folder / component / LAYERS_FILE, payload)
        publish_file(folder / "model_index.json", json.dumps(index, indent=2, sort_keys=True))   # last: marks it whole
    return folder, tuple(sorted(tables))   # model_index.json order, as diffusers writes it (alphabetical)


# --- where each layer's weight sits in the file (what `fuse --single-file` updates in place) ----------------
class Source(tuple):
    """(tensor key, first row, end row, transposed, swapped): a layer's weight is rows [start, stop) of that tensor
    (all of it when start/stop are None); ``transposed``: the file keeps it as in x out (OpenCLIP's projection);
    ``swapped``: the file keeps its two row halves the other way round (the DiTs' final AdaLayerNorm, SD3's last
    context norm: (shift, scale) where diffusers has (scale, shift))."""

    __slots__ = ()

    def __new__(cls, key: str, start: Optional[int] = None, stop: Optional[int] = None, transposed: bool = False,
                swapped: bool = False):
        return super().__new__(cls, (key, start, stop, transposed, swapped))

    key = property(lambda self: self[0])
    start = property(lambda self: self[1])
    stop = property(lambda self: self[2])
    transposed = property(lambda self: self[3])
    swapped = property(lambda self: self[4])


def layer_sources(shapes: Shapes) -> dict[str, Source]:
    """"<component>.<module>" (the tables' canonical names) -> where its weight is in the checkpoint."""
    found = ldm.architecture_of(shapes)
    if found is None:
        raise UnknownArchitecture("no U-Net or transformer in the checkpoint's keys")
    arch, root = found
    out: dict[str, Source] = {}
    if arch in ("flux", "sd3"):
        weights = _weights(_below(shapes, root))
        top, blocks = (ldm.FLUX_TOP, FLUX_BLOCKS) if arch == "flux" else (ldm.SD3_TOP, SD3_BLOCKS)
        swapped = ldm.FLUX_SWAPPED if arch == "flux" else ldm.SD3_SWAPPED
        for theirs, ours in top.items():
            if theirs in weights:
                out[f"transformer.{ours}"] = Source(f"{root}{theirs}.weight", swapped=theirs in swapped)
        for fused in _fused_layers(weights, blocks):
            key = f"{root}{fused.theirs}.weight"
            if arch == "sd3" and fused.last_block and fused.theirs.endswith("." + ldm.SD3_LAST_SWAPPED):
                out[f"transformer.{fused.ours}.{fused.parts[0]}"] = Source(key, swapped=True)
                continue
            row = 0
            for part, width in zip(fused.parts, fused_widths(fused.shape, fused.parts)):
                out[f"transformer.{fused.ours}.{part}"] = Source(key, row, row + width)
                row += width
        return out
    weights = _weights(_below(shapes, root))
    for module, ours in ldm.unet_from_ldm(weights).items():
        if len(weights[module]) in (2, 4):
            out[f"unet.{ours}"] = Source(f"{root}{module}.weight")
    xl = any(k.startswith(root + "label_emb.") for k in shapes)
    for prefix, component in ((ldm.SD1_TEXT_ROOT, "text_encoder"), (ldm.SDXL_TEXT_ROOT, "text_encoder")):
        for module, shape in _weights(_below(shapes, prefix)).items():
            if len(shape) == 2 and ".embeddings." not in f".{module}":
                name = module if module.startswith("text_model.") or module == "text_projection" \
                    else f"text_model.{module}"
                out[f"{component}.{name}"] = Source(f"{prefix}{module}.weight")
    for prefix, component in ((ldm.SD2_TEXT_ROOT, "text_encoder"), (ldm.SDXL_TEXT2_ROOT, "text_encoder_2"),
                              (ldm.REFINER_TEXT2_ROOT, "text_encoder_2")):
        below = _below(shapes, prefix)
        rows = [(ldm.openclip_layer(k), k, s) for k, s in below.items()]
        rows = [(found, k, s) for found, k, s in rows if found is not None and len(s) == 2]
        last = max((found[0] for found, _, _ in rows), default=-1)
        for (index, leaves), key, shape in rows:
            if index == last and not xl:
                continue   # SD2's unused last layer (see layer_tables)
            width = shape[0] // len(leaves)
            for i, leaf in enumerate(leaves):
                start, stop = (i * width, (i + 1) * width) if len(leaves) > 1 else (None, None)
                out[f"{component}.{ldm.clip_name(index, leaf)}"] = Source(prefix + key, start, stop)
        if "text_projection" in below:
            out[f"{component}.text_projection"] = Source(prefix + "text_projection", transposed=True)
    return out
