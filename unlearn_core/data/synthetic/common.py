"""Shared pieces of the synthetic clinical image generators.

:class:`SyntheticSet` is what every generator returns.  The drawing helpers work on float64
images of shape ``[3, H, W]`` (channels first, which keeps numpy's broadcasting fast) with
values in 0..1 and on soft *coverage* masks ``[H, W]`` in
0..1 (anti-aliased: a pixel half inside a shape gets 0.5).  Everything is plain numpy on whole
pixel grids, so one 64 x 64 image costs a few dozen array operations, never a per-pixel loop.

Same bits on every CPU: drawing uses float64 and only exactly rounded operations, with the
elementary functions (``exp``, ``sin``, powers...) taken from :mod:`exact_math` rather than
numpy's SIMD-dispatched ones, and the image is quantized to ``uint8`` once at the end.  A
generated set therefore has the same fingerprint on baseline x86-64, AVX2, AVX-512 and ARM,
which is what lets a shipped demo model match the data a user regenerates
(``tests/test_builtin_portability.py`` checks it under every numpy SIMD level).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from unlearn_core.data.synthetic import exact_math as em

Image = np.ndarray  # float64 [3, H, W] in 0..1
Mask = np.ndarray  # float64 [H, W] in 0..1


@dataclass(frozen=True)
class SyntheticSet:
    """A generated image set before it becomes an ``ImageSet``.

    Attributes:
        images: ``uint8`` array ``[N, 3, size, size]``.
        metadata: one row per image with ``label`` (int index into ``classes``) and the
            domain columns of the generator.  No ``sample_id``/``split``: the caller adds them.
        classes: class names.
        units: unit per metadata column, for display (``{"vpf_mm": "mm"}``).
        description: one plain sentence for a clinician.
    """

    images: np.ndarray
    metadata: pd.DataFrame
    classes: list[str]
    units: dict[str, str] = field(default_factory=dict)
    description: str = ""


# --- randomness ------------------------------------------------------------------------------
def image_rngs(seed: int, n: int) -> list[np.random.Generator]:
    """One independent random stream per image, all derived from ``seed``."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence([seed, 1]).spawn(n)]


def sample_labels(rng: np.random.Generator, n: int, proportions: list[float]) -> np.ndarray:
    """Class labels with (almost) exactly the given proportions, in random order."""
    p = np.asarray(proportions, dtype=float) / np.sum(proportions)
    counts = np.floor(p * n).astype(int)
    counts[np.argsort(-(p * n - counts))[: n - counts.sum()]] += 1
    labels = np.repeat(np.arange(len(p)), counts)
    rng.shuffle(labels)
    return labels


def clipped_normal(
    rng: np.random.Generator, mean: float, sd: float, low: float, high: float, n: int
) -> np.ndarray:
    """Normal samples clipped into ``[low, high]`` (a simple way to keep them plausible)."""
    return np.clip(rng.normal(mean, sd, n), low, high)


# --- geometry --------------------------------------------------------------------------------
def pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column coordinates of the pixel centres, each ``float64 [size, size]``."""
    r = np.arange(size, dtype=np.float64)
    return np.meshgrid(r, r, indexing="ij")


def coverage(signed_px: np.ndarray) -> Mask:
    """Anti-aliased coverage from a signed distance in pixels (positive = inside)."""
    return np.clip(np.asarray(signed_px, dtype=np.float64) + 0.5, 0.0, 1.0)


def ellipse(
    yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float
) -> Mask:
    """Soft mask of an axis-aligned ellipse (centre and radii in pixels)."""
    rho = np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)
    return coverage((1.0 - rho) * min(ry, rx))


def disc(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, r: float) -> Mask:
    """Soft mask of a circle (centre and radius in pixels)."""
    return coverage(r - np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2))


def blobs(yy: np.ndarray, xx: np.ndarray, centres: np.ndarray, radii: np.ndarray) -> Mask:
    """Soft mask of many small circles at once: ``centres [k, 2]`` (row, col), ``radii [k]``."""
    if len(centres) == 0:
        return np.zeros(yy.shape, np.float64)
    dy = yy[None] - centres[:, 0, None, None]
    dx = xx[None] - centres[:, 1, None, None]
    d = np.sqrt(dy**2 + dx**2)
    return coverage(np.max(radii[:, None, None] - d, axis=0))


def cubic_bezier(p: np.ndarray, n: int) -> np.ndarray:
    """``n`` points ``[n, 2]`` (row, col) along the cubic Bezier curve with controls ``p[4, 2]``."""
    t = np.linspace(0.0, 1.0, n)[:, None]
    s = 1 - t  # cubes written as products: numpy's ``** 3`` goes through a SIMD power
    return s * s * s * p[0] + 3 * s * s * t * p[1] + 3 * s * t * t * p[2] + t * t * t * p[3]


# --- rasterising -----------------------------------------------------------------------------
def splat(size: int, pts: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Accumulate points ``[n, 2]`` (row, col) into a ``[size, size]`` grid, bilinearly."""
    if len(pts) == 0:
        return np.zeros((size, size), np.float64)
    w = np.ones(len(pts)) if weights is None else np.asarray(weights, dtype=float)
    y, x = pts[:, 0], pts[:, 1]
    y0, x0 = np.floor(y).astype(int), np.floor(x).astype(int)
    fy, fx = y - y0, x - x0
    out = np.zeros(size * size)
    for dy, dx, wt in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx),
                       (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        yi, xi = y0 + dy, x0 + dx
        ok = (yi >= 0) & (yi < size) & (xi >= 0) & (xi < size)
        out += np.bincount(yi[ok] * size + xi[ok], weights=(w * wt)[ok], minlength=size * size)
    return out.reshape(size, size)


def gaussian_blur(a: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of ``[H, W]`` or ``[C, H, W]`` over the last two axes (edges
    replicated)."""
    if sigma <= 0:
        return a
    rad = max(1, int(np.ceil(2.5 * sigma)))
    k = em.exp(-0.5 * (np.arange(-rad, rad + 1) / sigma) ** 2)
    k = k / k.sum()
    h, w = a.shape[-2:]
    p = a[..., np.clip(np.arange(-rad, h + rad), 0, h - 1), :]  # replicate the edge rows
    a = sum(k[i] * p[..., i : i + h, :] for i in range(2 * rad + 1))
    p = a[..., np.clip(np.arange(-rad, w + rad), 0, w - 1)]
    return sum(k[i] * p[..., i : i + w] for i in range(2 * rad + 1))


def strokes(size: int, curves: list[np.ndarray], width: float) -> Mask:
    """Soft mask of polylines (each ``[n, 2]`` row/col points) drawn ``width`` pixels wide.

    Every segment is sampled about every 0.25 px, each sample weighted so the ink per unit
    length is constant; the samples are splatted, blurred and scaled so that the
    centre of a line has full coverage.
    """
    if not curves:
        return np.zeros((size, size), np.float64)
    a = np.concatenate([c[:-1] for c in curves])
    d = np.concatenate([np.diff(c, axis=0) for c in curves])
    length = em.hypot(d[:, 0], d[:, 1])
    step = 0.25
    m = np.maximum(1, np.ceil(length / step).astype(int))  # samples per segment
    seg = np.repeat(np.arange(len(m)), m)
    t = (np.arange(len(seg)) - np.repeat(np.cumsum(m) - m, m) + 0.5) / m[seg]
    pts = a[seg] + d[seg] * t[:, None]
    weights = (length / (m * step))[seg]
    sigma = max(0.35, width / 2.5)
    acc = gaussian_blur(splat(size, pts, weights), sigma)
    peak = 1.0 / (step * np.sqrt(2 * np.pi) * sigma)
    return np.clip(acc / peak * 1.6, 0.0, 1.0)


def rgb(color: np.ndarray | tuple[float, ...]) -> np.ndarray:
    """An RGB triple as a ``float64 [3, 1, 1]`` array that broadcasts over an image."""
    return np.asarray(color, dtype=np.float64).reshape(3, 1, 1)


def paint(
    img: Image, mask: Mask, color: np.ndarray | tuple[float, ...], alpha: float = 1.0
) -> None:
    """Blend ``color`` (RGB triple or ``[3, H, W]`` image) into ``img`` where ``mask`` is."""
    a = np.asarray(mask * alpha, dtype=np.float64)
    color = np.asarray(color, dtype=np.float64)
    img *= 1.0 - a
    img += a * (color.reshape(3, 1, 1) if color.ndim == 1 else color)


def shade(img: Image, factor: Mask | np.ndarray) -> None:
    """Multiply ``img`` in place by a factor ``[H, W]`` or a per-channel factor ``[3, H, W]``."""
    img *= np.asarray(factor, dtype=np.float64)


def smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Low-frequency texture in -1..1: random values on a coarse grid, bilinearly upsampled."""
    g = rng.uniform(-1.0, 1.0, (cells + 1, cells + 1))
    t = np.linspace(0, cells, size)
    i = np.minimum(t.astype(int), cells - 1)
    f = (t - i)[:, None]
    rows = g[i] * (1 - f) + g[i + 1] * f  # [size, cells+1]
    f = f.T
    return rows[:, i] * (1 - f) + rows[:, i + 1] * f


def radial_falloff(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, radius: float,
                   strength: float) -> np.ndarray:
    """Brightness factor that drops by ``strength`` towards ``radius`` (lens vignetting)."""
    r2 = ((yy - cy) ** 2 + (xx - cx) ** 2) / (radius * radius)
    return np.clip(1.0 - strength * r2, 0.0, 1.0)


def finish(img: Image, rng: np.random.Generator, gain: tuple[float, float, float],
           noise: float, sharpen: float = 0.0) -> np.ndarray:
    """Camera stage: unsharp mask, white balance ``gain``, sensor noise; to ``uint8 [3, H, W]``."""
    if sharpen > 0:
        img = img + sharpen * (img - gaussian_blur(img, 1.0))
    img = img * rgb(gain)
    img = img + noise * rng.standard_normal(img.shape)
    return np.floor(np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)  # the one rounding
