"""The synthetic generators: shapes, determinism, metadata, and that the metadata is drawn.

The "is it drawn" tests measure the images with simple colour rules (no model), so they fail
if a generator ever writes a metadata value that the picture does not show.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from unlearn_core.data.synthetic import SyntheticSet, generate_fundus, generate_oculoplastic
from unlearn_core.data.synthetic import fundus as fundus_mod
from unlearn_core.data.synthetic import oculoplastic as oculo_mod

N = 160


@pytest.fixture(scope="module")
def oculo() -> SyntheticSet:
    return generate_oculoplastic(n=N, size=64, seed=1)


@pytest.fixture(scope="module")
def fundus() -> SyntheticSet:
    return generate_fundus(n=N, size=64, seed=1)


def _named(s: SyntheticSet) -> pd.DataFrame:
    """Metadata with ``label`` as the class name, the way the demo criteria are written."""
    return s.metadata.assign(label=[s.classes[i] for i in s.metadata["label"]])


# --- structure -----------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["oculo", "fundus"])
def test_shapes_types_and_columns(which: str, request: pytest.FixtureRequest) -> None:
    s: SyntheticSet = request.getfixturevalue(which)
    assert s.images.dtype == np.uint8 and s.images.shape == (N, 3, 64, 64)
    assert len(s.metadata) == N and len(s.classes) == 3
    assert not {"sample_id", "split"} & set(s.metadata.columns)
    assert s.metadata["label"].dtype == np.int64
    assert set(s.metadata["label"]) == {0, 1, 2}
    assert isinstance(s.units, dict) and s.units["age"] == "years"
    assert isinstance(s.description, str) and s.description.endswith(".")
    assert len(s.description) > 40
    assert s.images.std() > 20  # not blank
    expected = {
        "oculo": {"label", "vpf_mm", "mrd1_mm", "camera", "age", "sex", "eye"},
        "fundus": {"label", "device", "exam_year", "eye", "age"},
    }[which]
    assert expected <= set(s.metadata.columns)


def test_other_sizes() -> None:
    assert generate_oculoplastic(n=4, size=32, seed=0).images.shape == (4, 3, 32, 32)
    assert generate_fundus(n=4, size=96, seed=0).images.shape == (4, 3, 96, 96)


@pytest.mark.parametrize("gen", [generate_oculoplastic, generate_fundus])
def test_deterministic_per_seed(gen) -> None:
    a, b, c = gen(n=12, seed=5), gen(n=12, seed=5), gen(n=12, seed=6)
    assert np.array_equal(a.images, b.images)
    pd.testing.assert_frame_equal(a.metadata, b.metadata)
    assert not np.array_equal(a.images, c.images)
    assert not a.metadata.equals(c.metadata)


# --- metadata ------------------------------------------------------------------------------
def test_oculoplastic_metadata_ranges(oculo: SyntheticSet) -> None:
    m = _named(oculo)
    assert m["vpf_mm"].between(6, 16).all()
    assert np.allclose(m["vpf_mm"] * 10, np.round(m["vpf_mm"] * 10))  # one decimal
    assert (m["mrd1_mm"] > 0).all() and (m["mrd1_mm"] < m["vpf_mm"] - 4).all()
    assert set(m["camera"]) == set(oculo_mod.CAMERAS)
    assert set(m["sex"]) == {"F", "M"} and set(m["eye"]) == {"OD", "OS"}
    assert m["age"].between(18, 95).all()
    vpf = m.groupby("label")["vpf_mm"]
    assert vpf.mean()["ptosis"] < vpf.mean()["healthy"] < vpf.mean()["thyroid eye disease"]
    # realistic overlap between the classes, not three disjoint bands
    assert vpf.max()["ptosis"] > vpf.min()["healthy"]
    assert vpf.min()["thyroid eye disease"] < vpf.max()["healthy"]
    assert (m.groupby("label")["mrd1_mm"].mean().sort_values().index
            == ["ptosis", "healthy", "thyroid eye disease"]).all()


def test_fundus_metadata_ranges(fundus: SyntheticSet) -> None:
    m = fundus.metadata
    assert set(m["device"]) == set(fundus_mod.DEVICES) == {"Spectralis", "Cirrus 800 FA", "Topcon"}
    assert m["exam_year"].between(2012, 2024).all()
    for device, (first, last) in fundus_mod.DEVICE_YEARS.items():
        assert m.loc[m["device"] == device, "exam_year"].between(first, last).all()
    assert m.loc[m["device"] == "Cirrus 800 FA", "exam_year"].max() <= 2018
    assert set(m["eye"]) == {"OD", "OS"} and m["age"].between(18, 95).all()
    # the demo device appears in every class
    assert (pd.crosstab(m["label"], m["device"])["Cirrus 800 FA"] > 0).all()


@pytest.mark.parametrize("mod", [oculo_mod, fundus_mod])
def test_class_balance_and_demo_forget_fraction(mod) -> None:
    # the exact metadata generate(seed=0) uses for its default 3000 samples
    meta = mod._sample_metadata(np.random.default_rng([0, 0]), 3000)
    shares = meta["label"].value_counts(normalize=True)
    assert len(shares) == 3 and shares.between(0.25, 0.45).all()
    named = meta.assign(label=[mod.CLASSES[i] for i in meta["label"]])
    fraction = len(named.query(mod.DEMO_FORGET)) / len(named)
    assert 0.05 <= fraction <= 0.25, fraction


def test_demo_forget_in_a_generated_set(oculo: SyntheticSet, fundus: SyntheticSet) -> None:
    for s, mod in ((oculo, oculo_mod), (fundus, fundus_mod)):
        assert 0.05 <= len(_named(s).query(mod.DEMO_FORGET)) / N <= 0.25


# --- the oculoplastic metadata is what is drawn --------------------------------------------
def _pupil_column(image: np.ndarray) -> tuple[np.ndarray, int, int, int]:
    """Find the lids in the pupil's column: ``(strip [3, H], reflex row, top row, bottom row)``.

    Pupil: the darkest pixels; reflex: the brightest pixel inside the pupil; skin: pixels whose
    chromaticity and brightness are close to the image's median (the face is mostly skin).
    Walking up and down from the reflex, the lid margins are the first skin pixels; ``top`` and
    ``bottom`` are the last pixels of the opening.
    """
    a = image.astype(np.float32) / 255.0
    ys, xs = np.nonzero(a.mean(0)[8:-8, 8:-8] < 0.09)
    col = int(round(xs.mean())) + 8
    strip = np.median(a[:, :, col - 1 : col + 2], axis=2)  # [3, H], light denoising
    r0, r1 = ys.min() + 8, ys.max() + 9
    reflex = r0 + int(np.argmax(strip.mean(0)[r0:r1]))
    ref = np.median(a.reshape(3, -1), axis=1)
    brightness = strip.mean(0) + 1e-3
    chroma = np.abs(strip / brightness - (ref / ref.mean())[:, None]).max(0)
    ratio = brightness / ref.mean()
    skin = (chroma < 0.15) & (ratio > 0.7) & (ratio < 1.4)
    top = bottom = reflex
    while top > 0 and not skin[top - 1]:
        top -= 1
    while bottom < len(skin) - 1 and not skin[bottom + 1]:
        bottom += 1
    return strip, reflex, top, bottom


def test_drawn_lid_opening_matches_vpf_and_mrd1(oculo: SyntheticSet) -> None:
    px_per_mm = 64 / oculo_mod.FIELD_MM
    found = [_pupil_column(im) for im in oculo.images]
    vpf = np.array([bottom - top + 1.0 for _, _, top, bottom in found])
    mrd1 = np.array([reflex - top + 0.5 for _, reflex, top, _ in found])
    vpf_px = oculo.metadata["vpf_mm"].to_numpy() * px_per_mm
    mrd1_px = oculo.metadata["mrd1_mm"].to_numpy() * px_per_mm
    err = vpf - vpf_px
    assert np.corrcoef(vpf, vpf_px)[0, 1] > 0.95
    assert np.median(np.abs(err)) <= 1.0 and np.quantile(np.abs(err), 0.9) <= 2.0
    assert abs(err.mean()) < 0.75  # no systematic scale error
    assert np.corrcoef(mrd1, mrd1_px)[0, 1] > 0.9
    assert np.median(np.abs(mrd1 - mrd1_px)) <= 1.0


def test_scleral_show_only_when_the_lid_clears_the_iris(oculo: SyntheticSet) -> None:
    # White sclera right under the upper lid in the pupil column means MRD1 > iris radius.
    show = []
    for im in oculo.images:
        strip, _, top, _ = _pupil_column(im)
        below_lid = strip[:, top : top + 2]
        show.append(below_lid.min(0).max() > 0.5)
    show = np.array(show)
    mrd1 = oculo.metadata["mrd1_mm"].to_numpy()
    assert show[mrd1 > 6.5].mean() > 0.8, show[mrd1 > 6.5].mean()
    assert show[mrd1 < 5.0].mean() < 0.1, show[mrd1 < 5.0].mean()


def test_eye_side_is_mirrored(oculo: SyntheticSet) -> None:
    # The nose side (medial) is shaded: on the image's right for a right eye seen from the front.
    lum = oculo.images.astype(np.float32).mean(1)
    right_darker = lum[:, :, -8:].mean((1, 2)) < lum[:, :, :8].mean((1, 2))
    od = (oculo.metadata["eye"] == "OD").to_numpy()
    assert (right_darker == od).mean() > 0.85


def test_active_ted_conjunctiva_is_red(oculo: SyntheticSet) -> None:
    # Red pixels (red far above green and blue, bright) inside the eye opening area.
    a = oculo.images.astype(np.float32)
    red = ((a[:, 0] - a[:, 1] > 70) & (a[:, 0] > 150) & (a[:, 1] < a[:, 2] + 25)).sum((1, 2))
    label = _named(oculo)["label"].to_numpy()
    active = (label == "thyroid eye disease") & (oculo.metadata["cas"].to_numpy() >= 3)
    assert np.median(red[active]) > 5 * (np.median(red[~active]) + 1)


# --- the fundus metadata is what is drawn --------------------------------------------------
def _field_fraction(images: np.ndarray) -> np.ndarray:
    """Share of the frame inside the camera's field of view (not black)."""
    return (images.astype(np.float32).mean(1) > 25).mean((1, 2))


def test_fundus_device_signature_is_visible(fundus: SyntheticSet) -> None:
    dev = fundus.metadata["device"].to_numpy()
    fov = _field_fraction(fundus.images)
    # field of view: Cirrus small circle < Topcon large circle < Spectralis near-square
    assert fov[dev == "Cirrus 800 FA"].max() < fov[dev == "Topcon"].min()
    assert fov[dev == "Topcon"].max() < fov[dev == "Spectralis"].min()
    # colour response inside the field: Spectralis greener than Topcon
    rgb = fundus.images.astype(np.float32).sum((2, 3))
    g_over_r = rgb[:, 1] / rgb[:, 0]
    spectralis, topcon = g_over_r[dev == "Spectralis"], g_over_r[dev == "Topcon"]
    assert np.median(spectralis) > 1.15 * np.median(topcon)
    assert (spectralis > np.median(topcon)).mean() > 0.9
    # sensor noise, seen in the black corners outside the field: the old Cirrus is grainiest
    corners = fundus.images[:, :, [0, 1, 2, -3, -2, -1]][:, :, :, [0, 1, 2, -3, -2, -1]]
    grain = corners.astype(np.float32).mean((1, 2, 3))
    assert np.median(grain[dev == "Cirrus 800 FA"]) > 1.5 * np.median(grain[dev == "Topcon"])
    assert np.median(grain[dev == "Topcon"]) > 1.2 * np.median(grain[dev == "Spectralis"])


def test_fundus_disc_on_the_nasal_side(fundus: SyntheticSet) -> None:
    a = fundus.images.astype(np.float32)
    bright = a.mean(1)
    cols = []
    for im in bright:
        thr = np.quantile(im, 0.985)
        cols.append(np.nonzero(im >= thr)[1].mean())
    cols = np.array(cols)
    eye = fundus.metadata["eye"].to_numpy()
    assert (cols[eye == "OD"] > 32).mean() > 0.95 and (cols[eye == "OS"] < 32).mean() > 0.95


def test_fundus_cup_and_lesions_are_drawn(fundus: SyntheticSet) -> None:
    m = _named(fundus)
    topcon = (m["device"] == "Topcon").to_numpy()
    a = fundus.images[topcon].astype(np.float32)
    r, g, b = a[:, 0], a[:, 1], a[:, 2]
    # pale cup: bright and whitish; its area grows with the cup-to-disc ratio squared
    cup = ((r > 200) & (g > 175) & (b > 120)).sum((1, 2))
    cdr = m.loc[topcon, "cdr"].to_numpy()
    assert np.corrcoef(cup, cdr**2)[0, 1] > 0.8
    # hard exudates: bright yellow (blue well below green) only in diabetic retinopathy
    yellow = ((r > 180) & (g > 0.75 * r) & (b < 0.55 * g)).sum((1, 2))
    dr = (m.loc[topcon, "label"] == "diabetic retinopathy").to_numpy()
    assert np.mean(yellow[dr] > 0) > 0.8 and np.mean(yellow[~dr] > 0) < 0.1


def test_wide_ted_eyes_are_mostly_inactive(oculo: SyntheticSet) -> None:
    meta = oculo.metadata
    ted = meta[meta["label"] == oculo.classes.index("thyroid eye disease")]
    assert (meta.loc[meta["label"] != oculo.classes.index("thyroid eye disease"), "cas"] == 0).all()
    assert ted["cas"].between(0, 7).all()
    wide = ted["vpf_mm"] >= 12
    assert (ted.loc[wide, "cas"] < 3).mean() > 0.6
    assert (ted.loc[~wide, "cas"] >= 3).mean() > 0.6
