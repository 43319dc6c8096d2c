"""Plain results of `lora check`: one ``CheckResult`` per adapter; ``to_dict`` is the JSON object (keys are API).

Vocabulary:
- verdict: ``compatible`` (every module applies and the families agree), ``partial`` (some apply),
  ``incompatible`` (none apply, or the denoiser part does not).
- unmatched reason: ``missing-module`` (no layer of that name in the base), ``missing-component`` (the base
  has no such component), ``shape-mismatch`` (the layer exists with other widths or kernel),
  ``family-mismatch`` (name and shape fit, but the layer belongs to a different pretrained model),
  ``unmapped`` (the key normalisation could not name the layer).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from lorahub_cli.errors import LoraError

COMPATIBLE, PARTIAL, INCOMPATIBLE = "compatible", "partial", "incompatible"
VERDICTS = (COMPATIBLE, PARTIAL, INCOMPATIBLE)
REASONS = ("missing-module", "missing-component", "shape-mismatch", "family-mismatch", "unmapped")
JSON_UNMATCHED_LIMIT = 10   # the first few, as the issue asks; coverage.unmatched_by_reason counts them all


@dataclass(frozen=True)
class Unmatched:
    key: str          # the module's key stem as written in the file
    component: str
    reason: str       # one of REASONS
    detail: str = ""  # for people: what was expected and found

    def to_dict(self) -> dict:
        return {"key": self.key, "component": self.component, "reason": self.reason, "detail": self.detail}


@dataclass
class FamilyComparison:
    adapter: str                  # sd1 | sd2 | sdxl | sd3 | flux | unknown
    base: str
    adapter_evidence: str = ""

    @property
    def known(self) -> bool:
        return "unknown" not in (self.adapter, self.base)

    @property
    def match(self) -> Optional[bool]:
        """True / False when both families are known, None otherwise."""
        return self.adapter == self.base if self.known else None

    def to_dict(self) -> dict:
        return {"adapter": self.adapter, "base": self.base, "match": self.match,
                "adapter_evidence": self.adapter_evidence}


@dataclass
class ComponentCoverage:
    matched: int = 0
    total: int = 0

    def to_dict(self) -> dict:
        return {"matched": self.matched, "total": self.total}


@dataclass
class CheckResult:
    adapter: str                         # the library name or the path given
    base: str                            # the base's id (Hub repo id, or folder path)
    verdict: str
    summary: str                         # one line: why this verdict
    family: FamilyComparison
    per_component: dict[str, ComponentCoverage]
    unmatched: list[Unmatched] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    path: Optional[str] = None

    @property
    def total(self) -> int:
        return sum(c.total for c in self.per_component.values())

    @property
    def matched(self) -> int:
        return sum(c.matched for c in self.per_component.values())

    def reason_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for u in self.unmatched:
            counts[u.reason] = counts.get(u.reason, 0) + 1
        return counts

    def to_dict(self) -> dict:
        return {
            "adapter": self.adapter,
            "path": self.path,
            "base": self.base,
            "verdict": self.verdict,
            "summary": self.summary,
            "family": self.family.to_dict(),
            "coverage": {"total": self.total, "matched": self.matched,
                         "per_component": {c: v.to_dict() for c, v in self.per_component.items()},
                         "unmatched_by_reason": self.reason_counts()},
            "unmatched": [u.to_dict() for u in self.unmatched[:JSON_UNMATCHED_LIMIT]],
            "notes": list(self.notes),
        }


@dataclass
class CheckFailure:
    """An adapter that could not be checked (not found, not a LoRA, ...)."""

    adapter: str
    error: LoraError

    def to_dict(self) -> dict:
        return {"adapter": self.adapter, "error": self.error.to_dict()}
