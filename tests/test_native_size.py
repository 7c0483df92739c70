"""Uploaded images keep their native size unless the user chooses to resize (issue 14, item 5).

Small ZIPs of PNGs are made here; nothing is downloaded.
"""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from unlearn_core.data.loaders import first_image_size, load_image_folder, load_user_data
from unlearn_core.errors import UserError


def _png(width: int, height: int, value: int) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.full((height, width), value, np.uint8)).save(out, format="PNG")
    return out.getvalue()


def _zip(sizes: list[tuple[int, int]]) -> bytes:
    """A ZIP of greyscale PNGs (two classes, a split column) plus labels.csv."""
    rows = ["file,label,split,site"]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for i, (width, height) in enumerate(sizes):
            name = f"img{i}.png"
            archive.writestr(name, _png(width, height, 40 * (i % 2) + 10))
            rows.append(f"{name},{'ab'[i % 2]},{'train' if i < len(sizes) - 2 else 'test'},s{i % 3}")
        archive.writestr("labels.csv", "\n".join(rows) + "\n")
    return out.getvalue()


def test_32_pixel_images_stay_32_pixels():
    data = load_image_folder(_zip([(32, 32)] * 6))
    assert data.image_size == 32
    assert tuple(data.images.shape) == (6, 1, 32, 32)


def test_resize_only_when_asked():
    data = load_user_data("mine.zip", _zip([(32, 32)] * 6), image_size=16)
    assert data.image_size == 16


def test_mixed_sizes_are_refused_with_the_way_out():
    with pytest.raises(UserError, match=r"not all one square size.*img2.png \(48x48\).*Resize the images"):
        load_image_folder(_zip([(32, 32), (32, 32), (48, 48), (32, 32), (32, 32), (32, 32)]))


def test_a_non_square_first_image_asks_for_a_resize():
    with pytest.raises(UserError, match=r"40x30 pixels, not square.*Resize the images"):
        load_image_folder(_zip([(40, 30)] * 6))
    assert load_image_folder(_zip([(40, 30)] * 6), image_size=20).image_size == 20


def test_first_image_size_is_what_the_page_announces():
    assert first_image_size(_zip([(40, 30)] * 6)) == (40, 30)


def test_a_stored_upload_keeps_the_chosen_size_for_every_later_load(tmp_path, monkeypatch):
    """The dashboard's store: native by default; a chosen resize is written into the stored ZIP,
    so the command line (which loads the stored path without options) gets the same size."""
    pytest.importorskip("streamlit")
    monkeypatch.setenv("UNLEARN_STUDIO_HOME", str(tmp_path))
    from unlearn_core.data.catalog import load_dataset
    from unlearn_core.ui import cache

    raw = _zip([(32, 32)] * 6)
    native = cache.store_data_upload("digits32.zip", raw)
    resized = cache.store_data_upload("digits32.zip", raw, image_size=16)
    assert native != resized
    assert load_dataset(native).image_size == 32
    assert load_dataset(resized).image_size == 16
