"""Shared test setup."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for modules that train many tiny models.

    Why: on a shared 2-core machine two threads per tiny batch made training about 20× slower
    (thread hand-offs dominate); one thread is never much slower for these sizes.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
