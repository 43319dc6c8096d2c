"""The merge tests run many small dense reference products; torch's thread pool only slows those down (and a
busy CI box makes that worse), so they run on one thread, restored after each module."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
