"""Evaluation tests train tiny networks: one torch thread (two threads on a loaded 2-core machine spin-wait
and run many times slower); the previous setting is restored afterwards."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
