"""The tiny SD base and its small library, shared with the pipeline tests (built once per session here)."""

from tests.pipeline.conftest import _two_threads, lib_env, world  # noqa: F401 - fixtures
