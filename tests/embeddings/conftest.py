"""The Hub area's fake Hub (loopback) for pull tests of embeddings."""

from tests.hub.conftest import hf_env, hub, hub_server  # noqa: F401 - fixtures shared with the Hub area
