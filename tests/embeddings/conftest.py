"""Shared by the embedding tests: the Hub area's fake Hub (loopback), and one tiny SD base whose text encoder
is 768 wide (the width real SD1 embeddings have), built once per session."""

import pytest

from tests.embeddings.files import make_ti_sd_pipeline
from tests.hub.conftest import hf_env, hub, hub_server  # noqa: F401 - fixtures shared with the Hub area


@pytest.fixture(scope="session")
def ti_base(tmp_path_factory):
    """One tiny SD1-width base for every embedding test that builds a pipeline (2 CPU cores: built once)."""
    return make_ti_sd_pipeline(tmp_path_factory.mktemp("ti-base") / "tiny-sd-768")
