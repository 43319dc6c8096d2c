"""PyTorch pickles (.bin/.pt/.pth/.ckpt): loaded only with ``torch.load(weights_only=True)``, never executed.

torch is imported inside the functions, so importing this module stays cheap. A pickle the weights-only loader
refuses is refused here (UnsafePickle naming the global it wanted); there is no fallback to full unpickling.

Payload shapes met in the wild, turned into ``name -> tensor``:
* a state dict, possibly wrapped as ``{"state_dict": {...}}`` (ComfyUI and the safetensors converter unwrap it);
* nested dicts of tensors (names joined with ".");
* cloneofsimo's bare list ``[up0, down0, up1, down1, ...]``, named ``unet:{i}:up`` / ``unet:{i}:down``
  (``text_encoder:...`` for ``*.text_encoder.pt``), the names its own safetensors files use.
Small non-tensor leaves (str, int, float, bool) become metadata strings; anything else is listed in the notes.
A pickle holding no tensors at all is returned with no tensors (and a note): deciding that it is not a LoRA
is the next stage's job, as for a safetensors file with an empty header.
"""

from __future__ import annotations

import pickletools
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lorahub_cli.errors import CorruptHeader, LoraError, NotAnAdapterFile, PickleBomb, Truncated, UnsafePickle
from lorahub_cli.inspect.model import RawFile, TensorSpec
from lorahub_cli.inspect.pickle_scan import EXPANSION_BOUND, PickleScan, scan_pickle
from lorahub_cli.inspect.regular import open_regular, regular_size

if TYPE_CHECKING:
    import torch

_MAX_METADATA_STR = 65_536  # longer strings are noted, not copied into metadata
_NOT_WEIGHTS_ONLY_HINT = ("lora reads pickles only with torch's weights-only loader and never falls back to full "
                          "unpickling; ask the author for a .safetensors file, or re-save it with torch.save.")


@dataclass
class _Payload:
    tensors: dict[str, "torch.Tensor"] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def read_pickle(path: Path, size: int) -> RawFile:
    """Describe a PyTorch pickle: names, safetensors-style dtypes and shapes (no offsets)."""
    payload = _load_payload(path)
    tensors = payload.tensors
    specs = {name: TensorSpec(dtype_name(t.dtype), tuple(t.shape)) for name, t in tensors.items()}

    def read_values(name: str) -> np.ndarray:
        t = tensors[name].detach()
        if t.is_complex():
            return t.resolve_conj().numpy()
        if t.is_floating_point():
            return t.double().numpy()
        return t.numpy()

    return RawFile(path=path, size=size, container="pickle", tensors=specs, metadata=payload.metadata,
                   read_values=read_values, notes=payload.notes)


def load_pickle_tensors(path: Path) -> dict[str, "torch.Tensor"]:
    """``name -> tensor`` with the same unwrapping and naming as ``read_container``.

    Every tensor owns contiguous memory (aliases are cloned apart, strided views made contiguous), so the
    result can go straight to ``safetensors.torch.save_file``.
    """
    return _load_payload(Path(path)).tensors


def dtype_name(dtype: "torch.dtype") -> str:
    """torch dtype -> safetensors dtype name (F16, BF16, F32, ...); unknown ones keep torch's name, upper-cased."""
    import torch

    names = {
        torch.bool: "BOOL", torch.uint8: "U8", torch.int8: "I8", torch.int16: "I16", torch.int32: "I32",
        torch.int64: "I64", torch.float16: "F16", torch.bfloat16: "BF16", torch.float32: "F32",
        torch.float64: "F64", torch.complex64: "C64",
    }
    optional = {"uint16": "U16", "uint32": "U32", "uint64": "U64", "float8_e4m3fn": "F8_E4M3",
                "float8_e5m2": "F8_E5M2", "float8_e4m3fnuz": "F8_E4M3FNUZ", "float8_e5m2fnuz": "F8_E5M2FNUZ",
                "float8_e8m0fnu": "F8_E8M0"}
    for attr, name in optional.items():  # newer torch dtypes, absent from older releases
        if getattr(torch, attr, None) is dtype:
            return name
    return names.get(dtype) or str(dtype).removeprefix("torch.").upper()


# --- loading ----------------------------------------------------------------------------------------
def _load_payload(path: Path) -> _Payload:
    path = Path(path)
    size = regular_size(path)
    scan = scan_pickle(path, size)   # bombs are refused from the opcodes, before torch builds anything
    obj = _torch_load(path, scan)
    payload = _Payload()
    obj = _unwrap_state_dict(obj, payload)
    if isinstance(obj, (list, tuple)) and obj and all(_is_tensor(t) for t in obj):
        _name_positional(obj, path, payload)
    elif _is_tensor(obj):
        payload.tensors["tensor"] = obj.detach()
        payload.notes.append("the payload is a single bare tensor, named 'tensor' here")
    else:
        ignored: list[str] = []
        _flatten(obj, "", payload, ignored, _Walk())
        if ignored:
            shown = ", ".join(ignored[:10]) + (f", … ({len(ignored)}{'+' if len(ignored) >= 100 else ''} in all)"
                                               if len(ignored) > 10 else "")
            payload.notes.append(f"non-tensor entries ignored: {shown}")
    if not payload.tensors:
        payload.notes.append(f"the pickle holds no tensors (its payload is {_kind(obj)})")
    _check_expansion(payload, size)
    _separate_storages(payload)
    return payload


def _torch_load(path: Path, scan: PickleScan) -> Any:
    import pickle

    import torch

    try:
        with warnings.catch_warnings():  # torch warns about protocol versions; the engine never prints
            warnings.simplefilter("ignore")
            # a file object, not the path: torch hands any name ending .safetensors to the safetensors loader,
            # and the container was sniffed from the bytes already (a renamed pickle is still a pickle)
            with open_regular(path) as f:
                return torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise _refusal(scan, str(e)) from None
    except EOFError:
        raise Truncated("the pickle ends before its STOP instruction: the file was probably cut short") from None
    except LoraError:
        raise
    except Exception as e:  # noqa: BLE001 - torch's reader raises many types on hostile bytes; none may escape raw
        raise _load_failure(e) from None


def _load_failure(e: Exception) -> LoraError:
    message = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
    if "Invalid magic number" in message:
        return NotAnAdapterFile("a Python pickle, but not one written by torch.save (no PyTorch magic number)")
    if "central directory" in message:
        return Truncated("the PyTorch zip checkpoint has no zip directory at its end: the file was probably cut short")
    return CorruptHeader(f"torch could not read this checkpoint: {type(e).__name__}: {message}")


# --- refusals: say which global the pickle wanted ---------------------------------------------------
_SAFE_MODULES = ("torch", "collections", "_codecs")
_SAFE_BUILTINS = {"builtins.set", "builtins.bytearray", "builtins.complex"}
_CODE_OPCODES = {"GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "NEWOBJ", "NEWOBJ_EX", "REDUCE", "BUILD",
                 "EXT1", "EXT2", "EXT4", "PERSID"}


def _refusal(scan: PickleScan, message: str) -> LoraError:
    named = re.search(r"GLOBAL (\S+?)(?: was not an allowed global| whose module)", message)
    if named:
        name = named.group(1) if "." in named.group(1) else f"builtins.{named.group(1)}"  # torch drops "builtins."
        return _imports([name])
    suspicious = [g for g in scan.globals if not _looks_safe(g)]
    if suspicious:
        return _imports(suspicious)
    operand = re.search(r"Unsupported operand (\d+)", message)
    if operand:
        op = _opcode_name(int(operand.group(1)))
        if op is None:
            return CorruptHeader(f"not a valid pickle: byte 0x{int(operand.group(1)):02x} is not a pickle instruction")
        if op in _CODE_OPCODES:
            return UnsafePickle(f"the pickle uses the {op} instruction to build objects that are not tensors; "
                                "torch's weights-only loader refused it and lora never runs pickled code")
        return UnsafePickle(f"the pickle uses the {op} instruction, which torch's weights-only loader does not "
                            "accept (a newer pickle protocol than torch.save writes)", hint=_NOT_WEIGHTS_ONLY_HINT)
    body = message.split("\n\nCheck the documentation")[0]
    detail = body.split("WeightsUnpickler error:")[-1] if "WeightsUnpickler error:" in body else body.split("\n\n")[-1]
    detail = " ".join(detail.split())[:300]
    return UnsafePickle(f"torch's weights-only loader refused this pickle ({detail}); lora never runs pickled code",
                        hint=_NOT_WEIGHTS_ONLY_HINT)


def _imports(names: list[str]) -> UnsafePickle:
    what = "is not a tensor type" if len(names) == 1 else "are not tensor types"
    return UnsafePickle(f"the pickle imports {', '.join(names[:5])}, which {what}; torch's weights-only loader "
                        "refused it and lora never runs pickled code")


def _looks_safe(name: str) -> bool:
    return name.split(".", 1)[0] in _SAFE_MODULES or name in _SAFE_BUILTINS


def _opcode_name(code: int) -> str | None:
    for op in pickletools.opcodes:
        if op.code == chr(code):
            return op.name
    return None


def pickle_globals(path: Path) -> list[str]:
    """The globals a pickle file would import, found by disassembly only (nothing is run); for messages."""
    path = Path(path)
    return scan_pickle(path, regular_size(path)).globals


# --- shaping the payload ----------------------------------------------------------------------------
def _is_tensor(obj: Any) -> bool:
    import torch

    return isinstance(obj, torch.Tensor)


def _kind(obj: Any) -> str:
    if isinstance(obj, dict):
        return f"a dict of {len(obj)} entries"
    if isinstance(obj, (list, tuple)):
        return f"a {type(obj).__name__} of {len(obj)} items"
    return f"a {type(obj).__name__}"


def _unwrap_state_dict(obj: Any, payload: _Payload) -> Any:
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        others = [str(k) for k in obj if k != "state_dict"]
        payload.notes.append("the tensors were wrapped in {'state_dict': ...}"
                             + (f"; other top-level entries ignored: {', '.join(others[:10])}" if others else ""))
        return obj["state_dict"]
    return obj


def _name_positional(items: Any, path: Path, payload: _Payload) -> None:
    component, why = positional_component(items, path.name)
    for i, tensor in enumerate(items):
        payload.tensors[f"{component}:{i // 2}:{'up' if i % 2 == 0 else 'down'}"] = tensor.detach()
    odd = " (an odd count: the last pair has no down)" if len(items) % 2 else ""
    payload.notes.append(f"the payload is a bare positional {type(items).__name__} of {len(items)} tensors "
                         f"(cloneofsimo [up0, down0, up1, ...]); named {component}:N:up/down ({why}){odd}")


# cloneofsimo/lora trained SD1 and SD2: their text encoders are the candidate tables a list can match
_POSITIONAL_BASES = ("sd15", "sd21")
_TEXT_ENCODER_SUFFIX = ".text_encoder.pt"


def positional_component(items: Any, file_name: str) -> tuple[str, str]:
    """(component, why) of a cloneofsimo list [up0, down0, ...], from its shapes: the text encoder's positions
    are CLIP's attention Linears (4 per layer, all hidden -> hidden), a U-Net's never are all one square width.
    The file name (``X.text_encoder.pt``) only breaks a tie: a list whose shapes say nothing."""
    named = "text_encoder" if file_name.endswith(_TEXT_ENCODER_SUFFIX) else "unet"
    shapes = _pair_shapes(items)
    if not shapes:
        return named, "from its file name: its shapes fit any table"
    for base, (width, modules) in _text_encoder_tables().items():
        if len(shapes) <= modules and all(pair == (width, width) for pair in shapes):
            return "text_encoder", f"its {len(shapes)} pairs are all {width}->{width}, {base}'s CLIP attention"
    return "unet", ("its shapes are not a text encoder's, whatever its name says" if named != "unet"
                    else "its shapes are not a text encoder's")


def _pair_shapes(items: Any) -> list[tuple[int, int]]:
    """(in, out) of each [up, down] pair, up [out, r] and down [r, in]; [] when any pair is not that."""
    shapes = []
    for up, down in zip(items[0::2], items[1::2]):
        if up.dim() < 2 or down.dim() < 2 or up.shape[1] != down.shape[0]:
            return []
        shapes.append((int(down.shape[1]), int(up.shape[0])))
    return shapes


def _text_encoder_tables() -> dict[str, tuple[int, int]]:
    """base -> (hidden width, number of attention Linears) of its CLIP text encoder, from the packaged configs."""
    import json

    from lorahub_cli.archs.aliases import config_dir

    tables = {}
    for base in _POSITIONAL_BASES:
        config = json.loads((config_dir(base) / "text_encoder" / "config.json").read_text(encoding="utf-8"))
        tables[base] = (int(config["hidden_size"]), 4 * int(config["num_hidden_layers"]))
    return tables


class _Walk:
    """The containers entered so far: a container met twice (shared, or holding itself) is not walked again,
    so the walk is linear in the number of distinct objects (the scan bounded those)."""

    def __init__(self) -> None:
        self.entered: set[int] = set()
        self.depth = 0

    def enter(self, obj: Any) -> bool:
        if id(obj) in self.entered or self.depth >= _MAX_DEPTH:
            return False
        self.entered.add(id(obj))
        return True


_MAX_DEPTH = 64   # a state dict nests a few levels; deeper is not one (and would exhaust Python's stack)


def _flatten(obj: Any, prefix: str, payload: _Payload, ignored: list[str], walk: _Walk) -> None:
    if _is_tensor(obj):
        payload.tensors[prefix or "tensor"] = obj.detach()  # a Parameter becomes a plain tensor
    elif isinstance(obj, dict) or isinstance(obj, (list, tuple)) and prefix:
        if not walk.enter(obj):
            if len(ignored) < 100:
                ignored.append(f"{prefix or '(top level)'} (a {type(obj).__name__} met before, or nested too deep)")
            return
        items = obj.items() if isinstance(obj, dict) else enumerate(obj)
        walk.depth += 1
        for key, value in items:
            _flatten(value, f"{prefix}.{key}" if prefix else str(key), payload, ignored, walk)
        walk.depth -= 1
    elif isinstance(obj, (str, int, float, bool)) and prefix and len(str(obj)) <= _MAX_METADATA_STR:
        payload.metadata[prefix] = str(obj)
    elif len(ignored) < 100:   # enough for the note, which shows ten
        ignored.append(f"{prefix or '(top level)'} ({type(obj).__name__})")


def _check_expansion(payload: _Payload, size: int) -> None:
    """The scan's bound again, on what torch built: making every tensor dense and separate must not need more
    than the file's size plus a fixed bound (views that repeat one value, in any form the scan did not model)."""
    dense = sum(t.numel() * t.element_size() for t in payload.tensors.values())
    if dense > size + EXPANSION_BOUND:
        raise PickleBomb(f"the tensors would take {dense:,} bytes once made dense, but the file is {size:,} bytes: "
                         "views repeating the same stored values (a pickle bomb)")


def _separate_storages(payload: _Payload) -> None:
    """Give every tensor its own dense memory: aliases (two names, one storage) and strided views are copied."""
    import torch

    groups: dict[int, list[str]] = {}
    for name, t in payload.tensors.items():
        if t.layout != torch.strided:
            payload.notes.append(f"{name}: a {t.layout} tensor, made dense")
            payload.tensors[name] = t = t.to_dense()
        if t.untyped_storage().nbytes():
            groups.setdefault(t.untyped_storage().data_ptr(), []).append(name)
    for names in groups.values():
        if len(names) > 1:
            payload.notes.append(f"tensors sharing one storage, copied apart: {', '.join(names[:6])}"
                                 + (" …" if len(names) > 6 else ""))
            for name in names:
                payload.tensors[name] = payload.tensors[name].detach().clone(memory_format=torch.contiguous_format)
    for name, t in payload.tensors.items():
        if not t.is_contiguous():
            payload.tensors[name] = t.contiguous()
