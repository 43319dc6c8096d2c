"""A merged adapter -> a verified safetensors file in the diffusers layout (through convert's writer).

The tensors and the ``lora_adapter_metadata`` LoraConfigs (per-module ranks and alphas as patterns) come from
``convert.write.diffusers_layout``; the file is written to a temp file, read back bit for bit and renamed into
place by ``convert.safe_write.write_verified``. Before the rename the file is also read back *as an adapter*
(same key normalisation as any input) and each module's update is compared with the merged one, so a file that
another loader would read differently is never kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lorahub_cli.canonical import CanonicalAdapter
from lorahub_cli.errors import VerifyFailed

MODELSPEC_VERSION = "1.0.1"


def save_merged(adapter: CanonicalAdapter, dst: Path, *, title: str, force: bool = False) -> list[str]:
    """Write ``adapter`` to ``dst``; returns warnings (e.g. embedded tokens a LoRA layout cannot hold)."""
    from lorahub_cli.convert.keymap import canonical_tables
    from lorahub_cli.convert.safe_write import write_verified
    from lorahub_cli.convert.write import diffusers_layout, tokens_left_out

    tensors, entries = diffusers_layout(adapter, canonical_tables(adapter.family))
    metadata = {**adapter.metadata, **entries, "format": "pt",
                "modelspec.sai_model_spec": MODELSPEC_VERSION, "modelspec.title": title,
                "modelspec.implementation": "diffusers"}

    def check(tmp: Path, reloaded: dict) -> None:
        same_updates(tmp, reloaded, adapter)

    write_verified(Path(dst), tensors, metadata, force=force, check=check)
    note = tokens_left_out(adapter)
    return [note] if note else []


def same_updates(path: Path, reloaded: dict[str, Any], expected: CanonicalAdapter) -> None:
    """``path`` (with its tensors ``reloaded``) read as an adapter has the family, modules and updates expected."""
    import torch

    from lorahub_cli.convert.load import Source, to_canonical
    from lorahub_cli.inspect.containers import read_container
    from lorahub_cli.inspect.describe import describe

    raw = read_container(path)
    report, layout = describe(raw, path)
    if report.family != expected.family:
        raise VerifyFailed(f"the merged file reads as a {report.family} adapter ({report.family_evidence}), "
                           f"not {expected.family}")
    got, _ = to_canonical(Source(path=path, raw=raw, layout=layout, report=report, tensors=reloaded, sha256=""))
    if set(got.modules) != set(expected.modules):
        missing = sorted(set(expected.modules) - set(got.modules))
        raise VerifyFailed(f"the merged file reads back as other modules (missing {missing[:3]})")
    for key, want in expected.modules.items():
        have = got.modules[key]
        if (have.rank != want.rank or have.scale != want.scale or not torch.equal(have.up, want.up)
                or not torch.equal(have.down, want.down)):
            raise VerifyFailed(f"module {key} of the merged file reads back with another rank, scale or factors")
