"""The import rules of issue 14 item 7, checked by import-linter from the contracts in pyproject.toml.

- ``lint-imports`` itself, as CI and a developer run it: every contract kept.
- Each contract, checked against the real import graph with one forbidden import added, breaks: the rules are
  wired to the real package names (a misspelt module would make a contract pass vacuously).

grimp reads every import statement, function-local ones included, so a lazy import cannot hide a violation.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("importlinter", reason="install the test extra: pip install -c constraints.txt -e '.[test]'")

import grimp  # noqa: E402  (import-linter's graph builder, installed with it)
from importlinter import api  # noqa: E402
from importlinter.contracts.acyclic_siblings import AcyclicSiblingsContract  # noqa: E402
from importlinter.contracts.forbidden import ForbiddenContract  # noqa: E402
from importlinter.contracts.layers import LayersContract  # noqa: E402

CONTRACT_TYPES = {c.type_name: c for c in (LayersContract, ForbiddenContract, AcyclicSiblingsContract)}
REPO = Path(__file__).resolve().parent.parent
PYPROJECT = REPO / "pyproject.toml"

# contract id -> an import that must break it (importer, imported); each names modules that exist today
BREAKERS = {
    "layers": [("lorahub_cli.archs.tables", "lorahub_cli.merge.job")],        # knowledge -> engine
    "registry-self-contained": [("registry.api", "lorahub_cli.errors")],
    "no-ui-below-the-face": [("lorahub_cli.sources.url", "rich")],
    "inspect-without-torch": [("lorahub_cli.inspect.facts", "torch")],
    "acyclic": [("lorahub_cli.merge.job", "lorahub_cli.pipeline.api"),
                ("lorahub_cli.pipeline.api", "lorahub_cli.merge.job")],       # the cycle issue 14 found
}


@pytest.fixture(scope="module")
def config() -> dict:
    return api.read_configuration(str(PYPROJECT))


@pytest.fixture(scope="module")
def graph(config) -> grimp.ImportGraph:
    options = config["session_options"]
    return grimp.build_graph(*options["root_packages"], cache_dir=None,
                             include_external_packages=options.get("include_external_packages") == "True")


def check(config: dict, contract_options: dict, graph: grimp.ImportGraph) -> bool:
    contract_class = CONTRACT_TYPES[contract_options["type"]]
    contract = contract_class(name=contract_options["name"], session_options=config["session_options"],
                              contract_options=contract_options)
    return contract.check(copy.deepcopy(graph), verbose=False).kept  # a check removes ignored imports from it


def test_lint_imports_keeps_every_contract():
    tool = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert tool, "lint-imports is not installed (the test extra)"
    proc = subprocess.run([tool, "--config", str(PYPROJECT), "--no-cache"], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def test_every_contract_has_a_breaking_case(config):
    ids = {c.get("id") for c in config["contracts_options"]}
    assert ids == set(BREAKERS), "give each contract an id in pyproject.toml and a breaking import here"


@pytest.mark.parametrize("contract_id", sorted(BREAKERS))
def test_each_contract_breaks_on_the_import_it_forbids(config, graph, contract_id):
    options = next(c for c in config["contracts_options"] if c.get("id") == contract_id)
    assert check(config, options, graph), f"{contract_id} is broken on the code as it is"
    changed = copy.deepcopy(graph)
    for importer, imported in BREAKERS[contract_id]:
        assert importer in changed.modules, importer  # still named as it is in the code
        changed.add_import(importer=importer, imported=imported)
    assert not check(config, options, changed), f"{contract_id} did not notice {BREAKERS[contract_id]}"


def test_every_module_of_lorahub_cli_is_in_a_layer(config, graph):
    # a new top-level module or package outside every layer would be bound by none of the rules
    layers = next(c for c in config["contracts_options"] if c.get("id") == "layers")["layers"]
    named = {name.strip().strip("()") for layer in layers for name in layer.split(":")}
    assert sorted(graph.find_children("lorahub_cli") - named) == []
