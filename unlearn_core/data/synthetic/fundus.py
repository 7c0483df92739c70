"""Synthetic colour fundus photographs: diabetic retinopathy, glaucoma and normal retinas.

Each image is a macula-centred photograph of the back of the eye, as a fundus camera sees it:

* an orange-red retina (the colour comes from the choroid's blood and the pigment epithelium)
  inside the camera's field of view, black outside it;
* the optic disc, where the optic nerve leaves the eye, as a bright yellowish oval on the nasal
  side (on the image's right for a right eye, ``OD``, on the left for ``OS``), with the pale
  central cup; it is drawn somewhat larger than life so the cup is resolvable at 64 px;
* vessels leaving the disc: the superior and inferior temporal arcades that curve around the
  macula (darker, wider veins and lighter, thinner arteries) and shorter nasal branches;
* the macula, a darker area two disc diameters temporal to the disc, with the fovea at its
  centre; young eyes show a bright foveal light reflex that fades with ``age``, and older eyes
  look hazier and yellower through the ageing lens.

The classes, as a grader would see them:

* ``diabetic retinopathy``: microaneurysms (tiny dark red dots), dot-blot haemorrhages (larger
  red spots), hard exudates (yellow lipid spots, often in a ring around leaking vessels near
  the macula) and sometimes cotton-wool spots (fluffy white nerve-fibre infarcts).
* ``glaucoma``: a large pale cup, vertical cup-to-disc ratio ``cdr`` 0.65-0.9 (normal 0.15-0.45,
  drawn to that ratio), a thin neuroretinal rim and a pale ring of peripapillary atrophy.
* ``normal``: none of these.

``device`` leaves the signature of the instrument: "Topcon" (colour fundus camera) gives a
large round field with warm colours; "Spectralis" (confocal scanning laser ophthalmoscope,
MultiColor) gives an almost square field, greener false colour, higher contrast and little
noise; "Cirrus 800 FA" (an older camera, used here until 2018) gives a smaller round field,
dim yellowish colour, strong vignetting, softer optics and more noise.  ``exam_year`` follows
the years each device was in use; it is not drawn.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from unlearn_core.data.synthetic import exact_math as em
from unlearn_core.data.synthetic.common import (
    SyntheticSet,
    blobs,
    clipped_normal,
    coverage,
    cubic_bezier,
    ellipse,
    finish,
    gaussian_blur,
    image_rngs,
    paint,
    pixel_grid,
    radial_falloff,
    sample_labels,
    shade,
    smooth_noise,
    strokes,
)

CLASSES = ["diabetic retinopathy", "glaucoma", "normal"]
PROPORTIONS = [0.35, 0.30, 0.35]
DEVICES = {"Topcon": 0.50, "Spectralis": 0.35, "Cirrus 800 FA": 0.15}
#: First and last exam year per device (the Cirrus 800 FA was retired in 2018).
DEVICE_YEARS = {"Topcon": (2012, 2024), "Spectralis": (2014, 2024), "Cirrus 800 FA": (2012, 2018)}
#: The forget scenario the dashboard offers for this set (about 15 % of the samples).
DEMO_FORGET = 'device == "Cirrus 800 FA"'

UNITS = {"age": "years", "exam_year": "year", "cdr": "ratio"}
DESCRIPTION = (
    "Synthetic colour fundus photographs from three devices, each with its own look, showing "
    "diabetic retinopathy (red dots, haemorrhages, yellow exudates), glaucoma (large optic cup) "
    "or a normal retina."
)

# field of view: (shape, radius or half side as a fraction of the image), white balance gain,
# noise sd, vignetting, blur sigma in px at 64, contrast, unsharp amount
_DEVICE_LOOK = {
    "Topcon": ("circle", 0.48, (1.06, 0.96, 0.86), 0.015, 0.22, 0.0, 1.0, 0.0),
    "Spectralis": ("square", 0.49, (0.84, 1.10, 1.04), 0.008, 0.0, 0.0, 1.25, 0.5),
    "Cirrus 800 FA": ("circle", 0.40, (0.98, 0.92, 0.62), 0.035, 0.50, 0.7, 0.9, 0.0),
}
_RETINA_LIGHT = np.array([0.84, 0.40, 0.18])
_RETINA_DARK = np.array([0.60, 0.24, 0.11])


# --- metadata ------------------------------------------------------------------------------
def _sample_metadata(rng: np.random.Generator, n: int) -> pd.DataFrame:
    """Class, device (independent of class), exam year within the device's years, eye, age, CDR."""
    label = sample_labels(rng, n, PROPORTIONS)
    devs = list(DEVICES)
    device = np.array(devs)[rng.choice(len(devs), n, p=list(DEVICES.values()))]
    year = np.empty(n, np.int64)
    for d, (first, last) in DEVICE_YEARS.items():
        idx = np.flatnonzero(device == d)
        year[idx] = rng.integers(first, last + 1, len(idx))
    age = np.empty(n)
    cdr = np.empty(n)
    for k, ages, cdrs in [
        (0, (58, 12, 25, 90), (0.15, 0.45)),
        (1, (67, 10, 40, 92), (0.65, 0.90)),
        (2, (48, 17, 18, 88), (0.15, 0.45)),
    ]:
        idx = np.flatnonzero(label == k)
        age[idx] = clipped_normal(rng, *ages, len(idx))
        cdr[idx] = rng.uniform(*cdrs, len(idx))
    return pd.DataFrame(
        {
            "label": label.astype(np.int64),
            "device": device,
            "exam_year": year,
            "eye": np.where(rng.random(n) < 0.5, "OD", "OS"),
            "age": np.round(age).astype(np.int64),
            "cdr": np.round(cdr, 2),
        }
    )


# --- drawing -------------------------------------------------------------------------------
def _field_of_view(yy: np.ndarray, xx: np.ndarray, shape: str, half: float) -> np.ndarray:
    """Soft mask of the camera's field: a circle, or a rounded square (superellipse, scanner)."""
    c = (yy.shape[0] - 1) / 2.0
    dy2, dx2 = (yy - c) ** 2, (xx - c) ** 2
    if shape == "circle":
        d = np.sqrt(dy2 + dx2)
    else:  # 8-norm: the 8th powers as repeated squares, the root through exact_math
        d = em.power((dy2 * dy2) ** 2 + (dx2 * dx2) ** 2, 0.125)
    return coverage(half - d)


def _vessel_tree(rng: np.random.Generator, disc: tuple[float, float], fovea: tuple[float, float],
                 r0: float) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Veins, arteries and small branches as point lists (row, col), canonical right eye."""
    (dy, dx), (fy, fx) = disc, fovea
    veins, arteries, branches = [], [], []
    j = lambda a: rng.uniform(-a, a) * r0  # noqa: E731  (small anatomical jitter)
    for sign in (-1.0, 1.0):  # superior, inferior
        for group, off in ((veins, 0.0), (arteries, 0.07)):
            p = np.array([
                [dy, dx],
                [dy + sign * (0.32 + off) * r0 + j(0.03), dx - 0.04 * r0],
                [fy + sign * (0.52 + off) * r0 + j(0.04), fx + (0.05 - off) * r0],
                [fy + sign * (0.26 + off) * r0 + j(0.06), fx - 0.80 * r0],
            ])
            arc = cubic_bezier(p, 24)
            group.append(arc)
            for t in rng.choice(np.arange(7, 21), 2, replace=False):  # branches off the arcade
                start = arc[t]
                towards_macula = rng.random() < 0.5
                ty = start[0] + (-sign if towards_macula else sign) * rng.uniform(0.15, 0.3) * r0
                tx = start[1] - rng.uniform(0.05, 0.2) * r0
                mid = (start + np.array([ty, tx])) / 2 + np.array([j(0.04), j(0.04)])
                branches.append(np.array([start, mid, [ty, tx]]))
        # nasal vessels towards the image edge beyond the disc
        p = np.array([[dy, dx], [dy + sign * 0.15 * r0, dx + 0.12 * r0],
                      [dy + sign * 0.35 * r0 + j(0.05), dx + 0.25 * r0],
                      [dy + sign * 0.55 * r0 + j(0.08), dx + 0.30 * r0 + j(0.05)]])
        veins.append(cubic_bezier(p, 12))
        arteries.append(cubic_bezier(p + np.array([sign * 0.05 * r0, 0.04 * r0]), 12))
    return veins, arteries, branches


def _posterior_pole_points(rng: np.random.Generator, k: int, fovea: tuple[float, float],
                           disc: tuple[float, float], r_disc: float, spread: float) -> np.ndarray:
    """``k`` random points within ``spread`` px of the fovea but off the optic disc."""
    pts = np.empty((0, 2))
    while len(pts) < k:
        ang = rng.uniform(0, 2 * np.pi, 2 * k)
        rad = spread * np.sqrt(rng.uniform(0.02, 1.0, 2 * k))
        cand = np.stack([fovea[0] + rad * em.sin(ang), fovea[1] + rad * em.cos(ang)], axis=1)
        far = em.hypot(cand[:, 0] - disc[0], cand[:, 1] - disc[1]) > 1.4 * r_disc
        pts = np.concatenate([pts, cand[far]])
    return pts[:k]


def _draw_fundus(rng: np.random.Generator, size: int, row: dict) -> np.ndarray:
    """Draw one fundus photograph for a metadata ``row``; returns ``uint8 [3, size, size]``."""
    yy, xx = pixel_grid(size)
    c = (size - 1) / 2.0
    s = size / 64.0
    r0 = 0.47 * size  # anatomical scale (about the radius of a 45-degree field)
    cls = CLASSES[row["label"]]
    shape, half, gain, noise, vign, blur, contrast, sharpen = _DEVICE_LOOK[row["device"]]

    # Anatomy in the canonical right eye: disc nasal (right), fovea near the centre.
    fovea = (c + rng.uniform(-0.05, 0.05) * r0, c - rng.uniform(0.10, 0.18) * r0)
    disc = (fovea[0] - rng.uniform(0.02, 0.08) * r0, fovea[1] + rng.uniform(0.58, 0.64) * r0)
    r_disc = rng.uniform(0.082, 0.094) * size
    d_fovea2 = (yy - fovea[0]) ** 2 + (xx - fovea[1]) ** 2
    d_disc2 = (yy - disc[0]) ** 2 + (xx - disc[1]) ** 2

    # Retina: pigmentation, uneven illumination, choroidal texture, brighter around the disc.
    base = _RETINA_LIGHT + (_RETINA_DARK - _RETINA_LIGHT) * rng.uniform(0, 1)
    illum = 1.0 + 0.07 * smooth_noise(rng, size, 4) + 0.035 * smooth_noise(rng, size, 12)
    illum += 0.18 * em.exp(-d_disc2 / (2 * (2.5 * r_disc) * (2.5 * r_disc)))
    img = base[:, None, None] * illum[None]
    # Macula and fovea: more pigment, hence darker.
    shade(img, 1.0 - 0.25 * em.exp(-d_fovea2 / (2 * (0.13 * r0) * (0.13 * r0))))
    shade(img, 1.0 - 0.18 * em.exp(-d_fovea2 / (2 * (0.035 * r0) * (0.035 * r0))))

    # Optic disc, its neuroretinal rim and the cup (vertical cup-to-disc ratio = cdr).
    disc_mask = ellipse(yy, xx, disc[0], disc[1], 1.08 * r_disc, r_disc)
    if cls == "glaucoma":  # peripapillary atrophy: a pale halo, widest temporally
        halo = ellipse(yy, xx, disc[0], disc[1] - 0.15 * r_disc, 1.45 * r_disc, 1.5 * r_disc)
        paint(img, halo * (1 - disc_mask), (0.86, 0.66, 0.46), 0.7)
    paint(img, disc_mask, (0.93, 0.64, 0.40))
    cup_r = row["cdr"] * 1.08 * r_disc
    cup = ellipse(yy, xx, disc[0], disc[1] - 0.1 * r_disc * row["cdr"], cup_r, 0.92 * cup_r)
    paint(img, cup, (1.0, 0.93, 0.76))

    # Vessels leave the disc over the rim; the cup floor stays visible.
    veins, arteries, branches = _vessel_tree(rng, disc, fovea, r0)
    keep_cup = 1.0 - 0.8 * cup
    paint(img, strokes(size, branches, 0.7 * s) * keep_cup, (0.58, 0.13, 0.08), 0.85)
    paint(img, strokes(size, arteries, 1.1 * s) * keep_cup, (0.68, 0.17, 0.10), 0.95)
    paint(img, strokes(size, veins, 1.6 * s) * keep_cup, (0.45, 0.07, 0.05), 0.95)

    if cls == "diabetic retinopathy":
        spread = 0.6 * r0
        ma = _posterior_pole_points(rng, int(rng.integers(8, 24)), fovea, disc, r_disc, spread)
        paint(img, blobs(yy, xx, ma, rng.uniform(0.55, 0.85, len(ma)) * s), (0.50, 0.06, 0.05))
        hem = _posterior_pole_points(rng, int(rng.integers(2, 7)), fovea, disc, r_disc, spread)
        paint(img, blobs(yy, xx, hem, rng.uniform(1.1, 1.8, len(hem)) * s), (0.44, 0.05, 0.04))
        # hard exudates in a partial ring (circinate) around a leaking spot near the macula
        centre = _posterior_pole_points(rng, 1, fovea, disc, r_disc, 0.3 * r0)[0]
        k = int(rng.integers(5, 16))
        ang = rng.uniform(0, 1.5 * np.pi) + rng.uniform(0, np.pi * 1.3, k)
        ring = rng.uniform(0.07, 0.13) * r0 * rng.uniform(0.8, 1.2, k)
        ex = centre + np.stack([ring * em.sin(ang), ring * em.cos(ang)], axis=1)
        paint(img, blobs(yy, xx, ex, rng.uniform(0.5, 1.0, k) * s), (0.98, 0.88, 0.42))
        n_cws = int(rng.integers(0, 3))
        if n_cws:
            cws = _posterior_pole_points(rng, n_cws, fovea, disc, r_disc, 0.5 * r0)
            soft = gaussian_blur(blobs(yy, xx, cws, np.full(n_cws, 1.4 * s)), 0.8 * s)
            paint(img, soft, (0.95, 0.90, 0.80), 0.75)

    # Young eyes: a bright foveal reflex.  Older eyes: haze through a yellowing lens.
    young = float(np.clip((55 - row["age"]) / 35, 0, 1))
    if young > 0:
        paint(img, blobs(yy, xx, np.array([fovea]), np.array([0.6 * s])), (1.0, 0.95, 0.85),
              0.8 * young)
    old = float(np.clip((row["age"] - 40) / 50, 0, 1))
    paint(img, np.ones((size, size)), (0.78, 0.62, 0.40), 0.18 * old)

    # Device: optics, contrast, vignetting, field of view; then gain and sensor noise.
    if blur:
        img = gaussian_blur(img, blur * s)
    if contrast != 1.0:
        img = np.clip(img.mean() + contrast * (img - img.mean()), 0, 1)
    if vign:
        shade(img, radial_falloff(yy, xx, c, c, half * size, vign))
    shade(img, _field_of_view(yy, xx, shape, half * size))
    img *= rng.uniform(0.92, 1.06)  # exposure
    if row["eye"] == "OS":  # left eye: disc on the image's left
        img = img[:, :, ::-1]
    return finish(np.ascontiguousarray(img), rng, gain, noise, sharpen)


def generate_fundus(n: int = 3000, size: int = 64, seed: int = 0) -> SyntheticSet:
    """Generate ``n`` synthetic colour fundus photographs of ``size`` x ``size`` pixels.

    Deterministic for a ``seed``.  Classes are 35 % diabetic retinopathy, 30 % glaucoma,
    35 % normal; devices 50 % Topcon, 35 % Spectralis, 15 % Cirrus 800 FA, independent of class.
    """
    if n < 1 or size < 16:
        raise ValueError("need n >= 1 and size >= 16")
    meta = _sample_metadata(np.random.default_rng([seed, 0]), n)
    rows = meta.to_dict("records")
    images = np.stack([_draw_fundus(r, size, row) for r, row in zip(image_rngs(seed, n), rows)])
    return SyntheticSet(
        images=images, metadata=meta, classes=list(CLASSES), units=dict(UNITS),
        description=DESCRIPTION,
    )
