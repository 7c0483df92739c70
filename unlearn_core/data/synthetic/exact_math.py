"""Elementary functions that give the same bits on every CPU.

Why this exists: numpy picks a SIMD implementation of ``exp``, ``sin``, ``arctan2``, ``power``...
at run time (baseline x86-64, AVX2, AVX-512, NEON on ARM), and the implementations differ in
the last bit.  A generated pixel that sits on a rounding boundary then flips, the built-in data
set's fingerprint changes, and the shipped demo model no longer matches the data.

The functions below use only operations that IEEE 754 defines exactly (``+ - * /``, ``sqrt``,
``floor``, ``rint``, ``ldexp``, comparisons), applied one numpy ufunc at a time, so no compiler can
fuse them into an FMA.  Every CPU therefore computes identical float64 results.  They are
accurate to a few units in the last place, which is all image generation needs.

All functions take and return float64 arrays (scalars are accepted and come back as 0-d
arrays or numpy floats).
"""

from __future__ import annotations

import numpy as np

_LN2_HI = 6.93147180369123816490e-01  # ln 2 split so that k * _LN2_HI is exact for |k| < 2**20
_LN2_LO = 1.90821492927058770002e-10
_INV_LN2 = 1.44269504088896338700e00
_PI = 3.14159265358979311600e00
_HALF_PI_HI = 1.57079632673412561417e00  # pi/2 split likewise (Cody-Waite reduction)
_HALF_PI_LO = 6.07710050650619224932e-11
_INV_HALF_PI = 6.36619772367581382433e-01

# Taylor coefficients 1/n! for exp on |r| <= ln2/2 (degree 13: error below 1e-17).
_EXP_COEFFS = [1.0 / float(np.prod(np.arange(1, n + 1, dtype=np.float64))) for n in range(14)]


def _f64(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _horner(r: np.ndarray, coeffs: list[float]) -> np.ndarray:
    """``sum(coeffs[i] * r**i)`` evaluated as separate multiplies and adds (no FMA)."""
    acc = np.full_like(r, coeffs[-1])
    for c in reversed(coeffs[:-1]):
        acc = np.add(np.multiply(acc, r), c)
    return acc


def exp(x) -> np.ndarray:
    """``e**x``; inputs are clamped to [-700, 700] so results stay normal and finite."""
    x = np.clip(_f64(x), -700.0, 700.0)
    k = np.rint(x * _INV_LN2)
    r = (x - k * _LN2_HI) - k * _LN2_LO
    return np.ldexp(_horner(r, _EXP_COEFFS), k.astype(np.int64))


def log(x) -> np.ndarray:
    """Natural logarithm of positive ``x`` (``-inf`` at 0, ``nan`` below)."""
    x = _f64(x)
    safe = np.where(x > 0, x, 1.0)
    m, e = np.frexp(safe)  # safe = m * 2**e, m in [0.5, 1)
    small = m < 0.7071067811865476
    m = np.where(small, m * 2.0, m)  # now m in [sqrt(1/2), sqrt(2))
    e = (e - small).astype(np.float64)
    s = (m - 1.0) / (m + 1.0)  # |s| <= 0.172
    s2 = s * s
    series = _horner(s2, [1.0 / (2 * i + 1) for i in range(12)])  # atanh(s)/s
    out = (e * _LN2_HI + 2.0 * s * series) + e * _LN2_LO
    return np.where(x > 0, out, np.where(x == 0, -np.inf, np.nan))


def power(base, exponent) -> np.ndarray:
    """``base ** exponent`` for ``base >= 0`` (0 ** positive is 0)."""
    base = _f64(base)
    exponent = _f64(exponent)
    out = exp(exponent * log(np.where(base > 0, base, 1.0)))
    return np.where(base > 0, out, np.where(exponent > 0, 0.0, 1.0))


def _sin_cos_reduced(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reduce ``x`` to ``r`` in [-pi/4, pi/4] with quadrant ``q``; return sin(r), cos(r), q."""
    k = np.rint(x * _INV_HALF_PI)
    r = (x - k * _HALF_PI_HI) - k * _HALF_PI_LO
    r2 = r * r
    # sin r = r (1 - r^2/3! + ...), cos r = 1 - r^2/2! + ...  (degree 17/16: error < 1e-17)
    sin_r = r * _horner(r2, [(-1.0) ** i / float(np.prod(np.arange(1, 2 * i + 2, dtype=np.float64)))
                             for i in range(9)])
    cos_r = _horner(r2, [(-1.0) ** i / float(np.prod(np.arange(1, 2 * i + 1, dtype=np.float64)))
                         for i in range(9)])
    return sin_r, cos_r, np.mod(k, 4.0)


def sin(x) -> np.ndarray:
    """Sine for moderate arguments (|x| < 1e5; generators stay far below)."""
    s, c, q = _sin_cos_reduced(_f64(x))
    return np.select([q == 0, q == 1, q == 2], [s, c, -s], -c)


def cos(x) -> np.ndarray:
    """Cosine for moderate arguments (|x| < 1e5)."""
    s, c, q = _sin_cos_reduced(_f64(x))
    return np.select([q == 0, q == 1, q == 2], [c, -s, -c], s)


def arctan(t) -> np.ndarray:
    """Arctangent: fold to |t| <= 1, halve the angle twice, then a Taylor series."""
    t = _f64(t)
    a = np.abs(t)
    big = a > 1.0
    a = np.where(big, 1.0 / np.where(big, a, 1.0), a)
    for _ in range(2):  # atan(a) = 2 atan(a / (1 + sqrt(1 + a^2))): |a| <= tan(pi/16) < 0.2
        a = a / (1.0 + np.sqrt(1.0 + a * a))
    a2 = a * a
    out = 4.0 * a * _horner(a2, [(-1.0) ** i / (2 * i + 1) for i in range(13)])
    out = np.where(big, _PI / 2 - out, out)
    return np.where(t < 0, -out, out)


def arctan2(y, x) -> np.ndarray:
    """Angle of the point ``(x, y)`` in (-pi, pi], like ``numpy.arctan2``."""
    y, x = np.broadcast_arrays(_f64(y), _f64(x))
    safe_x = np.where(x == 0, 1.0, x)
    base = arctan(y / safe_x)
    out = np.where(x > 0, base, np.where(y >= 0, base + _PI, base - _PI))
    on_axis = np.where(y > 0, _PI / 2, np.where(y < 0, -_PI / 2, 0.0))
    return np.where(x == 0, on_axis, out)


def hypot(a, b) -> np.ndarray:
    """``sqrt(a*a + b*b)`` with the exact operations (libm's hypot differs between platforms)."""
    a, b = _f64(a), _f64(b)
    return np.sqrt(a * a + b * b)
