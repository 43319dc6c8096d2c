"""The tiny SD base and its small library, shared with the pipeline tests (built once per session here), and
the local Hub server of the hub tests (for a card's sample images)."""

from tests.hub.conftest import hf_env, hub, hub_server  # noqa: F401 - fixtures
from tests.pipeline.conftest import _two_threads, lib_env, world  # noqa: F401 - fixtures
