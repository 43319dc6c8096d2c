"""The lock area uses the Hub area's local Hub server and environment (a real huggingface_hub client)."""

from tests.hub.conftest import hf_cache, hf_env, hub, hub_server, offline  # noqa: F401
