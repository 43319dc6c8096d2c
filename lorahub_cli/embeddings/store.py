"""A pickled embedding (.pt/.bin) as the safetensors file the store holds, verified bit for bit.

Keys become the ones A1111, ComfyUI and diffusers read from a safetensors embedding: A1111's
``string_to_param.*`` is ``emb_params`` (its placeholder id, ``string_to_token``, is dropped: nothing
reads it back), every other key stays. ``name`` and ``step`` stay as header metadata, with the pickle's
sha256 as ``lorahub.source_sha256``. The file keeps the original's stem: an A1111 embedding's token is it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lorahub_cli.errors import InvalidEmbedding

if TYPE_CHECKING:
    import torch

    from lorahub_cli.inspect.model import AdapterReport

_KEPT_METADATA = ("name", "step", "sd_checkpoint", "sd_checkpoint_name")


@dataclass
class StoredEmbedding:
    dst: Path
    source_sha256: str
    source_report: "AdapterReport"   # the pickle as given (its sidecars' facts hold for the conversion)


def embedding_to_safetensors(src: Path, work_dir: Path, *, source_name: str | None = None) -> StoredEmbedding:
    """Convert the pickled embedding ``src`` into ``work_dir``; refuses what inspection refuses."""
    from lorahub_cli.convert.safe_write import write_verified
    from lorahub_cli.inspect.containers import read_container
    from lorahub_cli.inspect.embedding import describe_embedding, looks_like_embedding
    from lorahub_cli.inspect.hashing import sha256_file
    from lorahub_cli.inspect.pickle_reader import load_pickle_tensors

    src = Path(src)
    name = source_name or src.name
    raw = read_container(src)   # weights-only, after the bounded scan: traps are refused with their codes
    if not looks_like_embedding(raw):
        raise InvalidEmbedding("the pickle's keys are neither a LoRA's nor an embedding's: "
                               + ", ".join(list(raw.tensors)[:5]))
    report, _layout = describe_embedding(raw, src, name=name)
    report.sha256 = sha256_file(src)
    tensors = _store_keys(load_pickle_tensors(src))
    metadata = {k: raw.metadata[k] for k in _KEPT_METADATA if k in raw.metadata}
    metadata["lorahub.source_sha256"] = report.sha256
    dst = Path(work_dir) / (Path(name).stem + ".safetensors")
    write_verified(dst, tensors, metadata, force=True)
    return StoredEmbedding(dst, report.sha256, report)


def _store_keys(tensors: dict[str, "torch.Tensor"]) -> dict[str, "torch.Tensor"]:
    params = {k: t for k, t in tensors.items() if k.startswith("string_to_param.")}
    out = {k: t.detach().contiguous() for k, t in tensors.items()
           if not k.startswith(("string_to_param.", "string_to_token."))}
    if len(params) == 1:
        out["emb_params"] = next(iter(params.values())).detach().contiguous()
    else:   # several placeholders in one A1111 file (never seen written by A1111 itself): keep their names
        out.update({k: t.detach().contiguous() for k, t in params.items()})
    return out
