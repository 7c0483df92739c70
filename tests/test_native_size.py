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


def test_data_page_says_the_size_kept_or_the_resize_and_loads_that_size(tmp_path, monkeypatch):
    """Data & model: a 32x32 upload is announced and loaded at 32x32; ticking 'Resize the images'
    says from what to what, and the loaded set has the chosen size."""
    pytest.importorskip("streamlit")
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from unlearn_core.data.catalog import load_dataset

    monkeypatch.setenv("UNLEARN_STUDIO_HOME", str(tmp_path))
    app = str(Path(__file__).resolve().parent.parent / "app.py")
    at = AppTest.from_file(app, default_timeout=180)
    at.session_state["dm_source"] = "upload"
    at.switch_page("pages/1_data_model.py").run()
    at.get("file_uploader")[0].upload("clinic32.zip", _zip([(32, 32)] * 6), "application/zip")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    captions = [c.value for c in at.caption]
    assert ("The images keep their native size: 32 × 32 pixels (the first image in the CSV); all of them must "
            "have that size.") in captions
    at.button(key="dm_load_upload").click().run()
    assert load_dataset(at.session_state["us.dataset"]).image_size == 32
    at.checkbox(key="dm_resize").check().run()
    at.select_slider(key="dm_resize_to").set_value(16).run()
    assert "Every image will be resized from 32 × 32 pixels to 16 × 16 pixels." in [c.value for c in at.caption]
    at.button(key="dm_load_upload").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert load_dataset(at.session_state["us.dataset"]).image_size == 16
