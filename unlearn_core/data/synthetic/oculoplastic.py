"""Synthetic periocular photographs: healthy lids, ptosis and thyroid eye disease.

Every image is drawn to a fixed physical scale, ``FIELD_MM`` millimetres across, so the
metadata is what the picture shows:

* ``vpf_mm``: vertical palpebral fissure, the distance between the upper and the lower lid
  margin measured in the pupil's column (as with a ruler at the slit lamp).  It is drawn as
  exactly ``vpf_mm * size / FIELD_MM`` pixels.
* ``mrd1_mm``: margin-reflex distance 1, from the corneal light reflex (the white dot in the
  centre of the pupil, the flash reflected by the cornea) up to the upper lid margin.  The lower
  lid therefore sits ``vpf_mm - mrd1_mm`` (MRD2) below the reflex.
* ``camera``: each camera leaves its signature: "Canon EOS" is neutral and clean, "iPhone" is
  warm and over-sharpened with some noise, "Slit lamp" is cool, vignetted and noisy.
* ``eye``: the lateral canthus (outer corner: higher than the inner one, where the upper lid
  flares in thyroid eye disease) is on the image's left for a right eye (OD, seen from the
  front) and on the right for a left eye (OS); the medial side has the pink caruncle and the
  shadow of the nose.
* ``age`` darkens the lower-lid tear trough (older skin); ``sex`` sets the brow (lower and
  heavier in men, higher and arched in women), visible at the top edge.

What tells the classes apart, as a clinician would look for it:

* ``healthy``: MRD1 about 3.5-5.5 mm, lid crease 7-10 mm above the margin, white sclera.
* ``ptosis`` (droopy upper lid, here aponeurotic/age-related): the lid margin sits low over the
  iris (MRD1 under 3 mm, small VPF), the crease is high and the sulcus above it is hollow.
* ``thyroid eye disease``: lid retraction (MRD1 often above the iris radius, so white sclera
  shows above the iris; large VPF) and lateral flare of the upper lid. Whether the eye is also
  red depends on the disease phase, recorded as the clinical activity score ``cas`` (0-7):
  *active* disease (CAS ≥ 3) shows red injected conjunctiva at the corners and red, swollen
  lids; *inactive* (chronic, "burnt-out") disease shows retraction without inflammation.
  Retraction grows as the disease burns out, so eyes with VPF ≥ 12 mm are mostly inactive.

Why the phase matters for the demo: the demo forgets ``vpf_mm >= 12`` within thyroid eye
disease. Because those eyes are mostly the inactive phenotype, a model retrained without them
has rarely seen retraction without redness and no longer recognises most of them — so there
is really something to unlearn, and the retrained reference shows how much.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from unlearn_core.data.synthetic import exact_math as em
from unlearn_core.data.synthetic.common import (
    SyntheticSet,
    clipped_normal,
    coverage,
    disc,
    ellipse,
    finish,
    gaussian_blur,
    image_rngs,
    paint,
    pixel_grid,
    radial_falloff,
    rgb,
    sample_labels,
    shade,
    smooth_noise,
    strokes,
)

CLASSES = ["healthy", "ptosis", "thyroid eye disease"]
PROPORTIONS = [0.40, 0.30, 0.30]
CAMERAS = {"Canon EOS": 0.45, "iPhone": 0.35, "Slit lamp": 0.20}
#: Width of the photographed field in millimetres: at 64 px, 1 mm = 1.78 px.
FIELD_MM = 36.0
#: The forget scenario the dashboard offers for this set (about 18 % of the samples).
DEMO_FORGET = 'vpf_mm >= 12 and label == "thyroid eye disease"'

UNITS = {"vpf_mm": "mm", "mrd1_mm": "mm", "age": "years", "cas": "points"}
#: Active disease (redness, swelling) from this clinical activity score up.
ACTIVE_CAS = 3
DESCRIPTION = (
    "Synthetic photographs of one eye and its lids, drawn to scale so that the lid opening "
    "(VPF) and the lid-to-light-reflex distance (MRD1) in the table are what the picture shows; "
    "classes are healthy, ptosis (droopy lid) and thyroid eye disease (retracted lids, red when "
    "the disease is active: clinical activity score cas ≥ 3)."
)

_SKIN_LIGHT = np.array([0.88, 0.70, 0.58])
_SKIN_DARK = np.array([0.52, 0.35, 0.25])
_IRIS = np.array(
    [
        [0.36, 0.22, 0.12],  # brown
        [0.24, 0.15, 0.09],  # dark brown
        [0.45, 0.37, 0.18],  # hazel
        [0.30, 0.44, 0.60],  # blue
        [0.33, 0.44, 0.30],  # green
        [0.42, 0.47, 0.52],  # grey
    ],
    np.float64,
)
_CAMERA_LOOK = {  # white-balance gain, noise sd, unsharp amount, vignette strength
    "Canon EOS": ((1.00, 1.00, 1.00), 0.010, 0.0, 0.00),
    "iPhone": ((1.07, 0.99, 0.86), 0.022, 0.8, 0.05),
    "Slit lamp": ((0.84, 0.93, 1.02), 0.035, 0.0, 0.40),
}


# --- metadata ------------------------------------------------------------------------------
def _sample_metadata(rng: np.random.Generator, n: int) -> pd.DataFrame:
    """Class, lid measurements and demographics; the measurements depend on the class."""
    label = sample_labels(rng, n, PROPORTIONS)
    mrd1 = np.empty(n)
    mrd2 = np.empty(n)
    age = np.empty(n)
    female = np.empty(n)
    lo, hi = np.empty(n), np.empty(n)
    for k, (m1, m2, vpf_range, ages, p_female) in enumerate(
        [
            # healthy: lid 3.5-5.5 mm above the reflex, lower lid at the lower limbus
            ((4.4, 0.55, 3.2, 5.6), (5.8, 0.45, 5.0, 7.0), (9.0, 12.5), (45, 17, 18, 88), 0.5),
            # ptosis: lid down over the upper iris
            ((1.9, 0.6, 0.8, 2.8), (6.0, 0.5, 5.0, 7.3), (6.0, 10.0), (68, 11, 35, 92), 0.55),
            # thyroid eye disease: upper (and lower) lid retraction
            ((6.3, 1.1, 4.6, 9.0), (6.0, 0.6, 5.0, 7.5), (10.0, 16.0), (48, 12, 20, 82), 0.75),
        ]
    ):
        idx = np.flatnonzero(label == k)
        mrd1[idx] = clipped_normal(rng, *m1, len(idx))
        mrd2[idx] = clipped_normal(rng, *m2, len(idx))
        age[idx] = clipped_normal(rng, *ages, len(idx))
        female[idx] = rng.random(len(idx)) < p_female
        lo[idx], hi[idx] = vpf_range
    mrd1 = np.round(mrd1, 1)
    vpf = np.round(np.clip(mrd1 + mrd2, lo, hi), 1)
    cams = list(CAMERAS)
    frame = pd.DataFrame(
        {
            "label": label.astype(np.int64),
            "vpf_mm": vpf,
            "mrd1_mm": mrd1,
            "camera": np.array(cams)[rng.choice(len(cams), n, p=list(CAMERAS.values()))],
            "age": np.round(age).astype(np.int64),
            "sex": np.where(female.astype(bool), "F", "M"),
            "eye": np.where(rng.random(n) < 0.5, "OD", "OS"),
        }
    )
    frame["cas"] = _activity_scores(rng, label == CLASSES.index("thyroid eye disease"), vpf)
    return frame


def _activity_scores(rng: np.random.Generator, ted: np.ndarray, vpf: np.ndarray) -> np.ndarray:
    """Clinical activity score (0-7): 0 without thyroid eye disease; in it, inactive (0-2) is
    the more likely the wider the lid opening (P = 1 / (1 + e^(-4 (VPF - 12)))), else active (3-7)."""
    inactive = rng.random(len(vpf)) < 1.0 / (1.0 + em.exp(-4.0 * (vpf - 12.0)))
    scores = np.where(inactive, rng.integers(0, ACTIVE_CAS, len(vpf)), rng.integers(ACTIVE_CAS, 8, len(vpf)))
    return np.where(ted, scores, 0).astype(np.int64)


# --- drawing -------------------------------------------------------------------------------
def _lid_profile(u: np.ndarray, power: float, flare: float) -> np.ndarray:
    """Height of a lid margin above/below the canthal line, 1 at the pupil (u = 0), 0 at the
    canthi (u = -1 medial, +1 lateral) and negative beyond them (no opening there).  ``flare``
    lifts the lateral third (the lateral flare typical of thyroid eye disease) without
    changing the height at the pupil."""
    base = np.clip(1.0 - u**2, 0.0, None)
    return em.power(base, power) + flare * np.clip(u, 0.0, None) * base - (base <= 0) * 1.0


def _draw_eye(rng: np.random.Generator, size: int, row: dict) -> np.ndarray:
    """Draw one periocular photograph for a metadata ``row``; returns ``uint8 [3, size, size]``."""
    ppm = size / FIELD_MM  # pixels per millimetre
    yy, xx = pixel_grid(size)
    cls = CLASSES[row["label"]]
    ted, ptosis = cls == "thyroid eye disease", cls == "ptosis"
    inflamed = ted and row["cas"] >= ACTIVE_CAS  # active disease: red lids and conjunctiva
    c = (size - 1) / 2.0

    # Anatomy in pixels; canonical orientation has the lateral canthus on the right (OS).
    cx = c + rng.uniform(-1.5, 1.5) * ppm  # pupil centre = corneal reflex
    cy = c + rng.uniform(0.8, 2.6) * ppm
    mrd1 = row["mrd1_mm"] * ppm
    mrd2 = (row["vpf_mm"] - row["mrd1_mm"]) * ppm
    half_med, half_lat = rng.uniform(12.0, 13.5) * ppm, rng.uniform(13.5, 15.0) * ppm
    canth_med, canth_lat = cy + rng.uniform(0.6, 1.4) * ppm, cy + rng.uniform(-0.6, 0.4) * ppm

    x = xx[0]
    u = np.where(x < cx, (x - cx) / half_med, (x - cx) / half_lat)
    t = np.clip((x - (cx - half_med)) / (half_med + half_lat), 0, 1)
    canthal = canth_med + (canth_lat - canth_med) * t  # canthal line per column
    canthal_c = canth_med + (canth_lat - canth_med) * half_med / (half_med + half_lat)
    flare = rng.uniform(0.35, 0.7) if ted else rng.uniform(0.0, 0.1)
    upper = canthal - (mrd1 + canthal_c - cy) * _lid_profile(u, 0.75, flare)  # per column
    lower = canthal + (mrd2 - canthal_c + cy) * _lid_profile(u, 1.1, 0.0)
    lid_open = coverage(np.minimum(yy - upper, lower - yy))

    # Skin: tone, soft illumination and texture.
    tone = float(em.power(rng.uniform(0.0, 1.0), 1.3))
    skin = _SKIN_LIGHT + (_SKIN_DARK - _SKIN_LIGHT) * tone
    illum = 1.0 + 0.06 * smooth_noise(rng, size, 3) + 0.015 * smooth_noise(rng, size, 16)
    img = skin[:, None, None] * illum[None]
    # The side of the nose, beyond the medial canthus, is in shadow.
    shade(img, 1.0 - 0.16 * np.clip((cx - half_med - xx) / (8 * ppm), 0, 1))

    # Brow at the top edge: lower, heavier and flatter in men.
    male = row["sex"] == "M"
    brow_y = cy - (rng.uniform(14.5, 16.5) if male else rng.uniform(17.0, 19.0)) * ppm
    arch = (0.5 if male else 2.0) * ppm
    brow_mid = brow_y + arch * ((xx - cx - 2 * ppm) / (12 * ppm)) ** 2
    brow = coverage(np.minimum(brow_mid - yy, yy - brow_mid + (4.0 if male else 2.5) * ppm))
    brow *= np.clip(1.2 - np.abs(xx - cx) / (20 * ppm), 0, 1)
    paint(img, brow * (0.7 + 0.2 * smooth_noise(rng, size, 24)), (0.2, 0.14, 0.1), 0.8)

    above = upper[None, :] - yy  # pixels above the upper margin
    below = yy - lower[None, :]
    along = np.clip(1.0 - (u * u) ** 2, 0, 1)[None, :]  # fades towards the canthi
    # Lid crease: a thin fold line, high in aponeurotic ptosis with a hollow sulcus above it.
    crease_h = (rng.uniform(11.0, 14.0) if ptosis else rng.uniform(7.0, 10.0)) * ppm
    crease_d = above - crease_h * np.clip(1 - (0.8 * u[None, :]) ** 2, 0, 1)
    shade(img, 1.0 - 0.22 * np.clip(1.0 - np.abs(crease_d) / (0.5 * ppm), 0, 1) * along)
    if ptosis:
        sulcus = np.clip(crease_d / ppm, 0, 1) * em.exp(-np.clip(crease_d, 0, None) / (4 * ppm))
        shade(img, 1.0 - 0.32 * sulcus * along)
    # Tear trough shadow below the lower lid deepens with age.
    trough = em.exp(-(((below - 4.5 * ppm) / (1.5 * ppm)) ** 2)) * along
    shade(img, 1.0 - 0.28 * np.clip((row["age"] - 20) / 70, 0, 1) * trough)
    if inflamed:
        # Red, swollen lids (erythema and oedema), sparing the lid margin itself.
        red = np.clip((above - 1.3 * ppm) / ppm, 0, 1) * em.exp(-above / (9 * ppm))
        red += np.clip((below - 1.3 * ppm) / ppm, 0, 1) * em.exp(-below / (5 * ppm))
        shade(img, 1.0 + np.clip(red * along, 0, 1)[None] * rgb((0.10, -0.17, -0.15)))
    # Lash line and its shadow just above the upper margin.
    lash = np.clip(1.0 - np.abs(above - 0.6) / 0.8, 0, 1) * (np.abs(u) < 1)[None, :]
    shade(img, 1.0 - 0.12 * lash)

    # The globe seen through the lid opening: sclera, iris, pupil, reflex.
    globe = np.empty_like(img)
    globe[:] = rgb((0.93, 0.91, 0.87)) * rng.uniform(0.95, 1.02)
    corner = np.clip(np.abs(u) - 0.35, 0, 1)[None, :]  # medial and lateral conjunctiva
    if inflamed:
        inj = np.clip(1.6 * corner + 0.12, 0, 1) * rng.uniform(0.7, 1.0)
        paint(globe, inj, (0.93, 0.62, 0.60), 0.8)
        vessels = []
        for side, half in ((-1, half_med), (1, half_lat)):
            for _ in range(3):
                y0 = cy + rng.uniform(-0.4, 0.4) * (mrd1 + mrd2) * 0.5
                y1 = 0.6 * y0 + 0.4 * cy + rng.uniform(-1, 1) * ppm
                y_mid = y0 + rng.uniform(-0.7, 0.7) * ppm
                vessels.append(np.array([[y0, cx + side * half * 0.95],
                                         [y_mid, cx + side * half * 0.7],
                                         [y1, cx + side * 6.5 * ppm]]))
        paint(globe, strokes(size, vessels, 0.35 * ppm), (0.75, 0.2, 0.2), 0.6)
    r_iris = rng.uniform(5.4, 6.0) * ppm
    d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
    iris_col = _IRIS[rng.integers(len(_IRIS))] * rng.uniform(0.9, 1.1)
    # The iris lies in the shadow of the lids and brow: in photographs it reads darker than
    # the surrounding skin whatever its hue, which is also what makes the lid margin visible.
    iris_col *= min(1.0, 0.45 * skin.mean() / iris_col.mean())
    ang = em.arctan2(yy - cy, xx - cx)
    texture = 1.0 + 0.12 * em.sin(ang * rng.integers(9, 15) + rng.uniform(0, 6.3)) * (d / r_iris)
    limbus = 1.0 - 0.25 * np.clip((d / r_iris - 0.8) / 0.2, 0, 1)
    iris_img = iris_col[:, None, None] * (texture * limbus)[None]
    paint(globe, disc(yy, xx, cy, cx, r_iris), iris_img)
    paint(globe, disc(yy, xx, cy, cx, rng.uniform(1.4, 2.3) * ppm), (0.025, 0.025, 0.03))
    paint(globe, disc(yy, xx, cy, cx, max(0.6, 0.45 * ppm)), (1.0, 1.0, 1.0))
    # The upper lid shades the globe just below its margin.
    shade(globe, 1.0 - 0.18 * em.exp(-np.clip(yy - upper[None, :], 0, None) / (0.8 * ppm)))
    # The caruncle, a pink fleshy mound in the medial canthus.
    caruncle = ellipse(yy, xx, canth_med - 0.3 * ppm, cx - half_med + 1.6 * ppm,
                       1.3 * ppm, 1.7 * ppm)
    paint(globe, caruncle, (0.86, 0.52, 0.52), 0.9)
    paint(img, lid_open, globe)

    cam = row["camera"]
    gain, noise, sharpen, vign = _CAMERA_LOOK[cam]
    if vign:
        shade(img, radial_falloff(yy, xx, cy, cx, 0.75 * size, vign))
    if cam == "Slit lamp":  # slightly soft optics
        img = gaussian_blur(img, 0.5 * size / 64)
    img *= rng.uniform(0.92, 1.06)  # exposure
    if row["eye"] == "OD":  # right eye seen from the front: lateral canthus on the left
        img = img[:, :, ::-1]
    return finish(np.ascontiguousarray(img), rng, gain, noise, sharpen)


def generate_oculoplastic(n: int = 3000, size: int = 64, seed: int = 0) -> SyntheticSet:
    """Generate ``n`` synthetic periocular photographs of ``size`` x ``size`` pixels.

    Deterministic for a ``seed``.  Class proportions are 40 % healthy, 30 % ptosis, 30 %
    thyroid eye disease; ``DEMO_FORGET`` selects about 18 % of the samples.
    """
    if n < 1 or size < 16:
        raise ValueError("need n >= 1 and size >= 16")
    meta = _sample_metadata(np.random.default_rng([seed, 0]), n)
    rows = meta.to_dict("records")
    images = np.stack([_draw_eye(r, size, row) for r, row in zip(image_rngs(seed, n), rows)])
    return SyntheticSet(
        images=images, metadata=meta, classes=list(CLASSES), units=dict(UNITS),
        description=DESCRIPTION,
    )
