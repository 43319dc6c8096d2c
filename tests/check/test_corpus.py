"""Real files from ../shared/corpus/wild against sd15 / sd21 / sdxl, with the verdict their MANIFEST implies.

From the manifest's ground truth: a LoRA fits the base of its own family fully; on another family it is
incompatible, except an SD1 text-encoder-only LoRA on SDXL (the shared CLIP ViT-L), which is partial.
Traps and broken files are reported with their inspection error code, not a verdict.
"""

from __future__ import annotations

import json

import pytest

from lorahub_cli.compat.engine import check_many
from lorahub_cli.compat.model import CheckFailure

BASES = {"sd15": "sd1", "sd21": "sd2", "sdxl": "sdxl"}
_FAMILIES = {"SD1.x": "sd1", "SD2.x": "sd2", "SDXL": "sdxl"}


def _expected(entry: dict, base_family: str) -> str:
    truth = entry["ground_truth"]
    family = _FAMILIES.get(truth.get("base_family", ""), "other")
    if family == base_family:
        return "compatible"
    if family == "sd1" and base_family == "sdxl" and truth.get("components") == ["text_encoder"]:
        return "partial"
    return "incompatible"


@pytest.mark.parametrize("alias", list(BASES))
def test_corpus_verdicts(home, corpus_dir, alias):
    manifest = json.loads((corpus_dir / "MANIFEST.json").read_text())["files"]
    entries = {e["name"]: e for e in manifest if (corpus_dir / e["name"]).is_file()}
    results = {r.adapter: r for r in check_many([str(corpus_dir / n) for n in entries], alias)}
    seen = 0
    for name, entry in entries.items():
        result = results[str(corpus_dir / name)]
        truth = entry.get("ground_truth") or {}
        truncated = str(truth.get("notes", "")).startswith("TRUNCATED")
        if truth.get("components") == ["ti_embedding"]:   # an embedding fits by its width (768: CLIP ViT-L)
            fits = {"sd1": "compatible", "sd2": "incompatible", "sdxl": "partial"}[BASES[alias]]
            assert not isinstance(result, CheckFailure) and result.verdict == fits, (name, result)
            continue
        if entry["role"] != "lora" or truncated:
            assert isinstance(result, CheckFailure), f"{name}: {result}"
            assert result.error.code == "truncated" or not truncated
            continue
        assert not isinstance(result, CheckFailure), f"{name}: {result.error.to_dict()}"
        assert result.verdict == _expected(entry, BASES[alias]), (name, result.summary)
        assert set(result.per_component) == set(truth["components"])
        if result.verdict == "compatible":
            assert result.matched == result.total and not result.unmatched
        seen += 1
    assert seen >= 5
