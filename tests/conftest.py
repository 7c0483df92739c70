"""Shared test setup."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest
import torch

from unlearn_core.data.builtin_cache import CACHE_ENV


def pytest_configure(config):
    """One disk cache of generated built-in sets for the whole session, subprocesses included
    (they inherit the variable), kept apart from the user's own cache and removed at the end."""
    if CACHE_ENV not in os.environ:
        folder = tempfile.mkdtemp(prefix="unlearn-studio-data-cache-")
        os.environ[CACHE_ENV] = folder
        config.add_cleanup(lambda: shutil.rmtree(folder, ignore_errors=True))


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
