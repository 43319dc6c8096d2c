"""merge and pipeline do not import each other, not even inside a function (issue 14, item 6).

Mapping an adapter's names onto a base lives in ``compat.on_base`` and the weight parser in ``values``, both
below the two packages. An import-linter contract sees only module-level imports; a function-local import is
what hid this cycle, so every ``import`` statement in the source is read here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import lorahub_cli

PACKAGE = Path(lorahub_cli.__file__).parent


def imported_packages(package: str) -> dict[str, set[str]]:
    """file -> the lorahub_cli sub-packages its import statements name (module-level and local alike)."""
    out: dict[str, set[str]] = {}
    for path in sorted((PACKAGE / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules = [node.module]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            else:
                continue
            for module in modules:
                parts = module.split(".")
                if parts[0] == "lorahub_cli" and len(parts) > 1:
                    names.add(parts[1])
        out[str(path.relative_to(PACKAGE))] = names
    return out


def test_pipeline_never_imports_merge():
    offenders = {f: n for f, n in imported_packages("pipeline").items() if "merge" in n}
    assert offenders == {}


def test_merge_never_imports_pipeline():
    offenders = {f: n for f, n in imported_packages("merge").items() if "pipeline" in n}
    assert offenders == {}


def test_the_layers_below_import_neither():
    # compat.on_base and values are what both use: they must not lead back up into either package
    for package in ("compat", "archs"):
        offenders = {f: n for f, n in imported_packages(package).items() if n & {"merge", "pipeline"}}
        assert offenders == {}, package
    values = ast.parse((PACKAGE / "values.py").read_text(encoding="utf-8"))
    local = {n.module for n in ast.walk(values) if isinstance(n, ast.ImportFrom) and n.module}
    assert not any(m.startswith(("lorahub_cli.merge", "lorahub_cli.pipeline")) for m in local)
