"""Adapter vs base: does an adapter fit a base model, and how much of it applies (base from configs only).

- engine.py: find the adapter (file or library entry), inspect its header, name its layers, assess
- keys.py: the seam to the key normalisation conversion uses (so check and convert agree)
- index.py: a base's layers under canonical names, built once per process from the cached module tables
- shapes.py: does one module's update fit a layer (widths, kernel, fused parts)
- families.py: which pretrained model each component of a family is (shared text encoders)
- coverage.py: per-module fit -> per-component counts -> verdict and notes
- filter.py: ``compatible_filter`` for `lora list --compatible-with`, with a per-base verdict cache
Nothing here prints or imports torch on a warm path.
"""

from lorahub_cli.compat.model import (COMPATIBLE, INCOMPATIBLE, PARTIAL, VERDICTS, CheckFailure, CheckResult,
                                      ComponentCoverage, FamilyComparison, Unmatched)

__all__ = ["COMPATIBLE", "INCOMPATIBLE", "PARTIAL", "VERDICTS", "CheckFailure", "CheckResult", "ComponentCoverage",
           "FamilyComparison", "Unmatched", "check", "check_many", "compatible_filter"]


def __getattr__(name: str):
    # the engine loads on first use, so importing the package for its vocabulary stays cheap
    if name in ("check", "check_many"):
        from lorahub_cli.compat import engine as _engine

        return getattr(_engine, name)
    if name == "compatible_filter":
        from lorahub_cli.compat.filter import compatible_filter

        return compatible_filter
    raise AttributeError(name)
