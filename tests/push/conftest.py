"""The Hub area's fake Hub (loopback), now accepting commits, for `lora push`."""

from tests.hub.conftest import hf_env, hub, hub_server  # noqa: F401 - fixtures shared with the Hub area
