"""The disk cache of generated built-in sets: made once, read back identical, never trusted blindly."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import torch

from unlearn_core.data import builtin_cache
from unlearn_core.data.imageset import ImageSet, stratified_split


def _small_set() -> ImageSet:
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 10)
    metadata = pd.DataFrame({
        "sample_id": [f"s-{i}" for i in range(20)], "label": labels,
        "device": pd.Series(["a", "b"] * 10, dtype="str"), "vpf_mm": rng.normal(10, 1, 20).round(2),
        "split": stratified_split(labels, 0.25, 0),
    })
    images = torch.from_numpy(rng.integers(0, 256, (20, 3, 8, 8), dtype=np.uint8))
    return ImageSet("small", images, metadata, ["no", "yes"], units={"vpf_mm": "mm"}, description="tiny")


@pytest.fixture
def counted(tmp_path, monkeypatch):
    """The cache in a temporary folder and a generator that counts its calls."""
    monkeypatch.setenv(builtin_cache.CACHE_ENV, str(tmp_path / "cache"))
    calls = []

    def make() -> ImageSet:
        calls.append(1)
        return _small_set()
    return make, calls


def test_a_set_is_made_once_and_read_back_identical(counted):
    make, calls = counted
    first = builtin_cache.load_or_make("small", make)
    second = builtin_cache.load_or_make("small", make)
    assert len(calls) == 1
    assert torch.equal(first.images, second.images)
    pd.testing.assert_frame_equal(first.metadata, second.metadata)
    assert (second.classes, second.units, second.description) == (first.classes, first.units, first.description)
    assert second.fingerprint() == first.fingerprint()


def test_changed_code_makes_a_new_entry_instead_of_reusing_the_old(counted, monkeypatch):
    make, calls = counted
    builtin_cache.load_or_make("small", make)
    monkeypatch.setattr(builtin_cache, "code_version", lambda: "another-version")
    builtin_cache.load_or_make("small", make)
    assert len(calls) == 2


def test_a_damaged_or_altered_file_is_a_miss_not_an_error(counted, caplog):
    make, calls = counted
    builtin_cache.load_or_make("small", make)
    path = next(builtin_cache.cache_dir().glob("small-*.npz"))
    path.write_bytes(path.read_bytes()[:200])  # truncated
    with caplog.at_level(logging.WARNING):
        again = builtin_cache.load_or_make("small", make)
    assert len(calls) == 2 and "unreadable" in caplog.text
    assert again.fingerprint() == _small_set().fingerprint()

    # Pixels that differ from the fingerprint recorded beside them are refused too.
    with np.load(path, allow_pickle=False) as arrays:
        contents = {key: arrays[key] for key in arrays.files}
    contents["images"][0, 0, 0, 0] ^= 1
    np.savez(path, **contents)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        builtin_cache.load_or_make("small", make)
    assert len(calls) == 3 and "does not match" in caplog.text


def test_off_always_generates_and_an_unwritable_folder_never_fails(tmp_path, monkeypatch):
    calls = []

    def make() -> ImageSet:
        calls.append(1)
        return _small_set()
    monkeypatch.setenv(builtin_cache.CACHE_ENV, "off")
    builtin_cache.load_or_make("small", make)
    builtin_cache.load_or_make("small", make)
    assert len(calls) == 2
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    monkeypatch.setenv(builtin_cache.CACHE_ENV, str(blocked / "cache"))
    assert builtin_cache.load_or_make("small", make).fingerprint() == _small_set().fingerprint()
