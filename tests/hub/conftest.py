"""Fixtures for the Hub area: a fake Hub on a loopback port and an environment that points at it.

The environment is set with monkeypatch.setenv, so it reaches this process (the engine reads HF_* per call)
and any `lora` subprocess alike. A developer's own token, cache or proxy never leaks into a test.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.hubserver import HubServer

# read once when huggingface_hub is imported: no telemetry/agent lookup (it would go to huggingface.co),
# no Xet, and loopback never through a proxy
for _name, _value in (("HF_HUB_DISABLE_TELEMETRY", "1"), ("HF_HUB_DISABLE_XET", "1"),
                      ("NO_PROXY", "127.0.0.1,localhost")):
    os.environ.setdefault(_name, _value)

_CLEARED = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HUB_ETAG_TIMEOUT",
            "HF_HUB_ENABLE_HF_TRANSFER", "TRANSFORMERS_OFFLINE", "HF_OIDC_RESOURCE", "HTTP_PROXY", "HTTPS_PROXY",
            "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


@pytest.fixture
def hub_server():
    with HubServer() as server:
        yield server


@pytest.fixture
def hub(hub_server):
    """The fake Hub's state: create repos, add faults, read the request log."""
    return hub_server.hub


@pytest.fixture
def hf_env(hub_server, tmp_path, monkeypatch) -> dict[str, str]:
    """HF_* variables for this test: the fake Hub's endpoint, a fresh HF_HOME, online."""
    for name in _CLEARED:
        monkeypatch.delenv(name, raising=False)
    env = {**hub_server.env(), "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_OFFLINE": "0"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def hf_cache(hf_env) -> Path:
    return Path(hf_env["HF_HOME"]) / "hub"


@pytest.fixture
def offline(monkeypatch):
    """Turn HF_HUB_OFFLINE on for the rest of the test."""

    def go_offline() -> None:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    return go_offline
