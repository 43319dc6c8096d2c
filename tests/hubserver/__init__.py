"""A stdlib Hub-compatible HTTP server for tests, and helpers to build the repositories it serves.

    with HubServer() as server:
        repo = server.hub.create_repo("owner/name", {"README.md": diffusers_card(), "x.safetensors": lora_safetensors()})
        # point huggingface_hub at server.url through HF_ENDPOINT (server.env())
"""

from tests.hubserver.files import (HTML_PAGE, diffusers_card, lora_bin, lora_modules, lora_safetensors,
                                   lora_state, model_card, rank_for_size)
from tests.hubserver.repo import FakeHub, FakeRepo, Fault, Request, StoredFile, git_blob_sha1, lfs_pointer
from tests.hubserver.server import HubServer

__all__ = [
    "FakeHub", "FakeRepo", "Fault", "HTML_PAGE", "HubServer", "Request", "StoredFile", "diffusers_card",
    "git_blob_sha1", "lfs_pointer", "lora_bin", "lora_modules", "lora_safetensors", "lora_state", "model_card",
    "rank_for_size",
]
