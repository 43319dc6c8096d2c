"""PyTorch pickles as conversion sources: read once with the weights-only loader, never run.

The reading itself (``torch.load(weights_only=True)``, refusals with ``unsafe-pickle``, the state_dict wrapper,
the cloneofsimo bare list, aliased and strided tensors made dense) is ``lorahub_cli.inspect.pickle_reader``;
this module asks it for the tensors *and* the small metadata leaves in one load (a second ``torch.load`` would
cost as much as the whole conversion of a large file), and joins a cloneofsimo ``X.pt`` with the
``X.text_encoder.pt`` written beside it, so one output holds both halves of the adapter.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from lorahub_cli.errors import LoraError
from lorahub_cli.inspect.model import RawFile, TensorSpec
from lorahub_cli.inspect.regular import is_regular

if TYPE_CHECKING:
    import torch

COMPANION_SUFFIX = ".text_encoder.pt"


@dataclass
class PickleSource:
    raw: RawFile
    tensors: dict[str, "torch.Tensor"]
    companion: Optional[Path] = None             # the X.text_encoder.pt that was merged in (notes: raw.notes)


def read_pickle_source(path: Path) -> PickleSource:
    """Tensors and metadata of a pickle (plus its cloneofsimo text-encoder companion, when there is one)."""
    from lorahub_cli.inspect.pickle_reader import _load_payload, dtype_name  # one load: tensors + leaves

    payload = _load_payload(path)
    tensors = dict(payload.tensors)
    metadata = dict(payload.metadata)
    notes = list(payload.notes)
    companion = companion_of(path, tensors)
    if companion is not None:
        extra, refused = _load_companion(companion)
        clash = sorted(set(extra.tensors) & set(tensors)) if extra is not None else []
        if extra is None:   # the companion's own problem, under its own name: X.pt itself is fine
            notes.append(f"{companion.name} was not merged: {refused.code}: {refused.message}")
            companion = None
        elif clash:  # the reader names the companion's list text_encoder:N, so this means a mislabelled file
            notes.append(f"{companion.name} was not merged: it repeats {clash[0]}")
            companion = None
        else:
            tensors.update(extra.tensors)
            notes.append(f"merged the text-encoder half from {companion.name} ({len(extra.tensors)} tensors)")
    specs = {name: TensorSpec(dtype_name(t.dtype), tuple(t.shape)) for name, t in tensors.items()}

    def read_values(name: str):
        t = tensors[name].detach()
        return t.double().numpy() if t.is_floating_point() else t.numpy()

    raw = RawFile(path=Path(path), size=Path(path).stat().st_size, container="pickle", tensors=specs,
                  metadata=metadata, read_values=read_values, notes=notes)
    return PickleSource(raw=raw, tensors=tensors, companion=companion)


def _load_companion(companion: Path) -> tuple[Optional[object], Optional[LoraError]]:
    """(the companion's payload, None), or (None, why it was refused): an unsafe or damaged companion is
    reported as itself, never as the file it sits beside."""
    from lorahub_cli.inspect.pickle_reader import _load_payload

    try:
        return _load_payload(companion), None
    except LoraError as err:
        return None, err


def companion_of(path: Path, tensors: dict) -> Optional[Path]:
    """cloneofsimo saved the text encoder's list as "X.text_encoder.pt" beside the U-Net's "X.pt"."""
    path = Path(path)
    if path.name.endswith(COMPANION_SUFFIX) or not any(k.startswith("unet:") for k in tensors):
        return None
    candidate = path.with_name(path.name[: -len(path.suffix)] + COMPANION_SUFFIX) if path.suffix else None
    return candidate if candidate is not None and is_regular(candidate) else None   # never raises on long names
