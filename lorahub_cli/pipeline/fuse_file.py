"""`lora fuse --single-file OUT.safetensors`: adapters baked into a single-file checkpoint in the original layout.

From a single-file base the file is rewritten tensor by tensor: each layer an adapter touches becomes
``W + sum_i w_i * scale_i * up_i @ down_i`` in fp32 (``pipeline.stack.merged_update``, the same arithmetic as
`lora generate` and `lora fuse -o`), then every tensor is cast once to --dtype. Nothing else changes: the VAE,
EMA weights, SD2's unused last text layer and every key lora has no name for are copied as they are (cast to
--dtype when they are floats). Peak memory is one tensor in fp32 plus one layer's update; the source is read
through safetensors' memory map.

From a folder, alias or Hub base the pipeline is loaded in fp32, merged the same way, then written through
``original.to_original`` (SD1.x-shaped, SD2 and SDXL pipelines whole; a Flux or SD3 transformer alone in BFL's / SAI's layout).

The file is written beside the target and renamed into place (``registry.publish``): it is whole or absent.
Its metadata carries ModelSpec (``modelspec.*``: the required keys, with the checkpoint's architecture id, resolution
and date where its family is known; issue 17 item 4) and a ``lorahub.fuse`` record naming the base and each
adapter's sha256 and weight. kohya's ``ss_*`` keys describe a network and are not written into a checkpoint.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional, Sequence

from lorahub_cli.errors import NonFinite, UnsafeOutput, UsageError
from lorahub_cli.export.conventions import ARCHITECTURES, MODELSPEC_VERSION, RESOLUTIONS

if TYPE_CHECKING:
    import torch

    from lorahub_cli.bases import Base
    from lorahub_cli.pipeline.adapters import LoadedAdapter

DTYPES = ("fp16", "bf16", "fp32")
# ModelSpec's implementation of an original-layout checkpoint: Stability's repo, BFL's for Flux
_IMPLEMENTATIONS = {"flux": "https://github.com/black-forest-labs/flux"}
_STABILITY = "https://github.com/Stability-AI/generative-models"


@dataclass
class FuseResult:
    """What a fuse wrote: a diffusers folder (``Library.fuse``) or one checkpoint file (``single_file``)."""

    output: Path
    base: str
    dtype: str
    adapters: list[dict[str, Any]]
    layers: int
    warnings: list[str] = field(default_factory=list)
    single_file: bool = False

    def to_dict(self) -> dict[str, Any]:
        out = {"output": str(self.output), "base": self.base, "dtype": self.dtype, "adapters": self.adapters,
               "layers": self.layers, "warnings": self.warnings}
        if self.single_file:   # the key only single-file fuses have always had
            out["single_file"] = True
        return out


def torch_dtype(name: str) -> "torch.dtype":
    import torch

    if name not in DTYPES:
        raise UsageError(f"--dtype {name!r}: a single file is written in fp16, bf16 or fp32")
    return {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[name]


def fuse_to_single_file(base: "Base", loaded: Sequence["LoadedAdapter"], output: Path, *, dtype: Optional[str],
                        force: bool) -> FuseResult:
    """Write ``base`` with ``loaded`` (checked adapters and their pairs) merged in as one file at ``output``."""
    from lorahub_cli.targets import check_file_output
    from registry.publish import publish_file

    output = check_file_output(output, force=force)
    _refuse_inputs(output, [Path(base.checkpoint)] if base.checkpoint else [], [a.adapter.path for a in loaded])
    plan = _plan(loaded)
    recipe = [a.adapter.to_recipe() for a in loaded]
    if base.checkpoint:
        tensors, specs, produce, skipped, name = _from_checkpoint(base, plan, dtype)
    else:
        tensors, specs, produce, skipped, name = _from_pipeline(base, plan, dtype or "fp16")
    metadata = _metadata(base, recipe, name, output)
    publish_file(output, lambda tmp: write_streaming(Path(tmp), specs, produce, metadata))
    warnings = [w for a in loaded for w in a.warnings]
    if skipped:
        warnings.append(f"{len(skipped)} adapter layer(s) have no place in this checkpoint and were left out, "
                        f"e.g. {skipped[0]}")
    return FuseResult(single_file=True, output=output, base=base.id, dtype=name, adapters=recipe,
                            layers=len(plan) - len(skipped), warnings=warnings)


def _refuse_inputs(output: Path, bases: Iterable[Path], adapters: Iterable[Path]) -> None:
    """Never write over what the file is made from (a rename would replace the user's base or adapter)."""
    import os

    for given in [*bases, *adapters]:
        try:
            same = os.path.samefile(given, output)
        except OSError:
            same = False
        if same:
            raise UnsafeOutput(f"{output} is an input of this fuse ({given}); it is never replaced",
                               hint="Pass --single-file with the path of a new file.")


def _plan(loaded: Sequence["LoadedAdapter"]) -> dict[str, list]:
    plan: dict[str, list] = {}
    for a in loaded:
        for key, pair in a.pairs.modules.items():
            plan.setdefault(key, []).append((pair, float(a.adapter.weight)))
    return plan


def _fits(weight: "torch.Tensor", pair: Any) -> bool:
    return weight.shape[0] == pair.up.shape[0] and weight[0].numel() == pair.down[0].numel()


def _merged(key: str, weight: "torch.Tensor", parts: list) -> "torch.Tensor":
    """``merged_update + W`` in fp32, as ``pipeline.stack.MergedStack.apply`` computes it (bit for bit)."""
    from lorahub_cli.pipeline.stack import merged_update

    delta = merged_update(parts, weight.device, weight).reshape(weight.shape)
    return delta.add_(weight.float())


# --- from a single-file base: tensor by tensor ----------------------------------------------------------------
def _from_checkpoint(base: "Base", plan: dict[str, list], dtype: Optional[str]):
    import torch

    from lorahub_cli.archs.single_file import layer_sources
    from lorahub_cli.checkpoints.dit import swap_halves

    path = Path(base.checkpoint or base.id)
    read, shapes, dtypes = _open(path)
    sources = layer_sources(shapes)
    updates: dict[str, list] = {}
    skipped = []
    for key, parts in plan.items():
        src = sources.get(key)
        if src is None:
            skipped.append(key)
            continue
        updates.setdefault(src.key, []).append((src, key, parts))
    name = dtype or _stored_dtype(dtypes)
    target = torch_dtype(name)
    specs = [(k, target if dtypes[k].is_floating_point else dtypes[k], shapes[k]) for k in shapes]

    def produce(key: str) -> "torch.Tensor":
        tensor = read(key)
        if key not in updates:
            return tensor.to(target) if tensor.is_floating_point() else tensor
        full = tensor.float()   # a copy in fp32: the layer's rows are merged into it
        for src, canonical, parts in updates[key]:
            rows = full[src.start:src.stop] if src.start is not None else full
            view = rows.T if src.transposed else rows
            if not all(_fits(view, pair) for pair, _ in parts):
                skipped.append(canonical)
                continue
            if src.swapped:   # merged in diffusers' row order, stored back in the file's
                view.copy_(swap_halves(_merged(canonical, swap_halves(view), parts)))
            else:
                view.copy_(_merged(canonical, view, parts))
        out = full.to(target)
        if not bool(torch.isfinite(out).all()):
            raise _overflow(key, name)
        return out

    return shapes, specs, produce, skipped, name


def _open(path: Path) -> tuple[Callable[[str], "torch.Tensor"], dict[str, tuple[int, ...]], dict[str, "torch.dtype"]]:
    """A tensor reader, shapes and dtypes: safetensors through its memory map, a pickle through the weights-only
    reader (whole, as torch.load must)."""
    from lorahub_cli.inspect.containers import read_container

    raw = read_container(path)
    if raw.container == "safetensors":
        from safetensors import safe_open

        handle = safe_open(str(path), framework="pt")
        dtypes = {}
        keys = list(raw.tensors)
        for k in keys:
            dtypes[k] = _st_dtype(raw.tensors[k].dtype)
        return handle.get_tensor, {k: raw.tensors[k].shape for k in keys}, dtypes
    from lorahub_cli.inspect.pickle_reader import load_pickle_tensors

    tensors = load_pickle_tensors(path)
    return tensors.__getitem__, {k: tuple(v.shape) for k, v in tensors.items()}, {k: v.dtype for k, v in
                                                                                  tensors.items()}


def _stored_dtype(dtypes: dict[str, "torch.dtype"]) -> str:
    """The base's own float type (by count), so a plain fuse keeps an fp16 file fp16; fp8 and others -> fp16."""
    import torch
    from collections import Counter

    counts = Counter(d for d in dtypes.values() if d in (torch.float16, torch.bfloat16, torch.float32))
    top = counts.most_common(1)[0][0] if counts else torch.float16
    return {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}[top]


# --- from a folder / alias / Hub base: the merged pipeline, renamed ---------------------------------------------
def _from_pipeline(base: "Base", plan: dict[str, list], dtype: str):
    import torch

    from lorahub_cli.checkpoints.original import WRITABLE_FAMILIES, to_original
    from lorahub_cli.pipeline.build import load_pipeline
    from lorahub_cli.pipeline.stack import live_layer

    if base.family not in WRITABLE_FAMILIES:
        from lorahub_cli.errors import UnsupportedConversion

        raise UnsupportedConversion(f"writing a {base.family} base as a single file is not supported yet",
                                    hint="Fuse into a diffusers folder instead (`lora fuse ... -o FOLDER`).")
    target = torch_dtype(dtype)
    pipe, _ = load_pipeline(base, device="cpu", dtype="fp32")
    skipped = []
    with torch.no_grad():
        for key, parts in plan.items():
            layer = live_layer(pipe, key)
            weight = getattr(layer, "weight", None)
            if weight is None or not all(_fits(weight, pair) for pair, _ in parts):
                skipped.append(key)
                continue
            weight.copy_(_merged(key, weight, parts))
    written = ("transformer",) if base.family in ("flux", "sd3") else ("unet", "vae", "text_encoder", "text_encoder_2")
    components = {c: getattr(pipe, c).state_dict() for c in written if getattr(pipe, c, None) is not None}
    tensors = to_original(components, base.family)
    del components
    specs = [(k, target if v.is_floating_point() else v.dtype, tuple(v.shape)) for k, v in tensors.items()]

    def produce(key: str) -> "torch.Tensor":
        tensor = tensors.pop(key)   # released as written
        out = tensor.to(target) if tensor.is_floating_point() else tensor
        if out.is_floating_point() and not bool(torch.isfinite(out).all()):
            raise _overflow(key, dtype)
        return out

    return None, specs, produce, skipped, dtype


# --- the file ------------------------------------------------------------------------------------------------
_ST_NAMES = {"float16": "F16", "bfloat16": "BF16", "float32": "F32", "float64": "F64", "int64": "I64",
             "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL",
             "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2"}


_TORCH_NAMES = {v: k for k, v in _ST_NAMES.items()}


def _st_dtype(name: str) -> "torch.dtype":
    import torch

    return getattr(torch, _TORCH_NAMES[name])


def write_streaming(path: Path, specs: Sequence[tuple[str, "torch.dtype", tuple[int, ...]]],
                    produce: Callable[[str], "torch.Tensor"], metadata: dict[str, str]) -> None:
    """A safetensors file whose header is known up front, its tensors produced and written one at a time."""
    import torch

    header: dict[str, Any] = {"__metadata__": metadata}
    offset = 0
    for name, dtype, shape in specs:
        size = torch.empty((), dtype=dtype).element_size()
        for d in shape:
            size *= d
        header[name] = {"dtype": _ST_NAMES[str(dtype).removeprefix("torch.")], "shape": list(shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        for name, dtype, shape in specs:
            tensor = produce(name)
            if tensor.dtype != dtype or tuple(tensor.shape) != tuple(shape):
                raise AssertionError(f"{name}: produced {tensor.dtype} {tuple(tensor.shape)}, planned {dtype} {shape}")
            if tensor.numel():
                f.write(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().data)
            del tensor


def _metadata(base: "Base", recipe: list[dict[str, Any]], dtype: str, output: Path) -> dict[str, str]:
    record = {"base": base.ref, "base_id": base.id, "adapters": recipe, "dtype": dtype, "merge": "fp32, cast once"}
    meta = {"modelspec.sai_model_spec": MODELSPEC_VERSION, "modelspec.title": output.stem,
            "modelspec.date": datetime.now(timezone.utc).date().isoformat(),
            "modelspec.implementation": _IMPLEMENTATIONS.get(base.family, _STABILITY),
            "modelspec.description": "fused by lorahub: " + ", ".join(f"{a['name']}:{a['weight']:g}" for a in recipe),
            "lorahub.fuse": json.dumps(record, sort_keys=True), "format": "pt"}
    meta.update(checkpoint_modelspec(base.family, _variants(base)))
    return meta


def checkpoint_modelspec(family: str, variants: Iterable[str] = ()) -> dict[str, str]:
    """ModelSpec's architecture and resolution for a whole checkpoint of ``family`` (no "/lora" suffix: the file is
    the model). An unknown family gets neither: ``architecture`` would be invented (export.conventions)."""
    if family not in ARCHITECTURES:
        return {}
    variants = set(variants)
    arch, resolution = ARCHITECTURES[family], RESOLUTIONS[family]
    if family == "sd2" and "v-prediction" in variants:
        arch, resolution = "stable-diffusion-v2-768-v", "768x768"
    elif family == "sdxl" and "refiner" in variants:
        arch = "stable-diffusion-xl-v1-refiner"
    elif family == "flux" and "schnell" in variants:
        arch = "flux-1-schnell"
    out = {"modelspec.architecture": arch, "modelspec.resolution": resolution}
    if "v-prediction" in variants:   # ModelSpec's optional key; lora inspect reads it back
        out["modelspec.prediction_type"] = "v"
    return out


def _variants(base: "Base") -> tuple[str, ...]:
    """A checkpoint's variants as inspected; a folder's v-prediction from its scheduler config."""
    if base.checkpoint:
        return tuple(base.variants)
    try:
        config = json.loads((Path(base.folder) / "scheduler" / "scheduler_config.json").read_text())
    except (OSError, ValueError):
        return ()
    return ("v-prediction",) if config.get("prediction_type") == "v_prediction" else ()


def _overflow(key: str, dtype: str) -> NonFinite:
    return NonFinite(f"the adapters make {key} NaN or infinite in {dtype}",
                     hint="Use smaller adapter weights, or --dtype fp32; nothing was written.")
