"""Shared helpers for the architecture tests: tables come from the fixtures' warm cache."""

from __future__ import annotations

import pytest

from lorahub_cli.archs import module_table
from lorahub_cli.archs.tables import Layer
from tests.fixtures.adapters import FIXTURE_CACHE


@pytest.fixture(scope="session")
def table():
    """table(base, component) -> {name: Layer}, from the cache the adapter fixtures share."""

    def get(base: str, component: str) -> dict[str, Layer]:
        return module_table(base, component, cache_dir=FIXTURE_CACHE)

    return get
