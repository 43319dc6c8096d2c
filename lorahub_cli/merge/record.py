"""The header metadata a merged adapter carries: what it was made from, how, and what the cut lost."""

from __future__ import annotations

import json
from typing import Optional, Sequence

from lorahub_cli.canonical import CanonicalAdapter
from lorahub_cli.merge.plan import MergeSource
from lorahub_cli.merge.svd import Truncation

MERGE_KEY = "lorahub.merge"   # JSON: {method, rank, ranks, density, family, inputs: [{name, sha256, weight}], ...}
FAMILY_KEY = "lorahub.family"


def merge_metadata(adapters: Sequence[CanonicalAdapter], weights: Sequence[float], sources: Sequence[MergeSource],
                   *, method: str, rank: Optional[int], density: Optional[float], family: str,
                   cuts: dict[str, Truncation], ranks: Sequence[int] = ()) -> dict[str, str]:
    """``rank`` is the asked target (svd, ties); ``ranks`` the distinct per-module ranks of the result. The
    record's "rank" is the target, or for stack (no target: the ranks add up) the largest module rank."""
    ranks = sorted(set(ranks))
    record: dict = {
        "method": method,
        "rank": rank if rank is not None else (ranks[-1] if ranks else None),
        "ranks": ranks,
        "family": family,
        "inputs": [{"name": s.name, "sha256": s.sha256, "weight": float(w)} for s, w in zip(sources, weights)],
    }
    if density is not None:
        record["density"] = density
    if cuts:
        record["truncation"] = truncation_summary(cuts)
    meta = {
        MERGE_KEY: json.dumps(record, sort_keys=True),
        FAMILY_KEY: family,
        "modelspec.merged_from": ", ".join(s.name for s in sources),
    }
    architecture = _architecture(adapters, family)
    if architecture:
        meta["modelspec.architecture"] = architecture
    # the ecosystem's keys (export.conventions): A1111 files a merge without ss_base_model_version as SD1;
    # the title and implementation are the saver's, alpha lives per module in the LoraConfig
    from lorahub_cli.export.conventions import ecosystem_metadata

    single_rank = ranks[0] if len(ranks) == 1 else None
    meta.update({k: v for k, v in ecosystem_metadata(family, title="", rank=single_rank).items()
                 if k not in meta and k not in ("modelspec.title", "modelspec.implementation")})
    return meta


def _architecture(adapters: Sequence[CanonicalAdapter], family: str) -> Optional[str]:
    """The inputs' ModelSpec architecture when they all state the same one, else the family's usual one."""
    from lorahub_cli.convert.metadata import ARCHITECTURES

    stated = {a.metadata.get("modelspec.architecture") for a in adapters}
    if len(stated) == 1 and None not in stated:
        return stated.pop()
    return f"{ARCHITECTURES[family]}/lora" if family in ARCHITECTURES else None


def truncation_summary(cuts: dict[str, Truncation]) -> dict:
    """Relative Frobenius error of the rank cut over all modules together, and the worst single module."""
    total = sum(c.total_sq for c in cuts.values())
    discarded = sum(c.discarded_sq for c in cuts.values())
    worst_key = max(cuts, key=lambda k: cuts[k].relative_error)
    return {"relative_error": (discarded / total) ** 0.5 if total > 0 else 0.0,
            "worst_module": worst_key, "worst_relative_error": cuts[worst_key].relative_error}


def read_merge_record(metadata: dict[str, str]) -> Optional[dict]:
    """The ``lorahub.merge`` record of a file's metadata, or None when it is absent or unreadable."""
    raw = metadata.get(MERGE_KEY)
    if not raw:
        return None
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None
