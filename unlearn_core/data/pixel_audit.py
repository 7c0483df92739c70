"""Compare a data set's pixels with the pixels a model was trained on, without the pixels.

Why: a shipped demo model records which data it learned from.  Labels, metadata and the split
must match exactly (otherwise every result would be meaningless), but the pixels of a
generated set could in principle differ in a few rounding steps on an unusual platform.  A
model file cannot carry tens of megabytes of reference pixels, so it carries one small
checksum per image instead (CRC-32 and the sum of the pixel values, about 8 bytes an image,
compressed).  From those we can say *how many* images differ and by at least how many
grey levels, and let the caller decide with a measured accuracy whether the model still fits.
"""

from __future__ import annotations

import base64
import hashlib
import json
import zlib
from dataclasses import dataclass

import numpy as np
import torch

from unlearn_core.errors import UserError


def structure_fingerprint(images: torch.Tensor, metadata, classes: list[str]) -> str:
    """Hash of everything but the pixel values: image shape, classes, labels, split and every
    metadata column.  Two sets with equal structure differ at most in their pixels."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"shape": list(images.shape), "classes": list(classes)}).encode())
    digest.update(metadata.to_csv(index=False).encode())
    return digest.hexdigest()[:16]


def image_checksums(images: torch.Tensor) -> np.ndarray:
    """``int64 [N, 2]``: per image, its CRC-32 and the sum of its pixel values.

    Read a chunk at a time (:func:`~unlearn_core.data.disk_images.iter_pixels`), so pixels on
    disk are never all in memory.
    """
    from unlearn_core.data.disk_images import iter_pixels

    parts = [np.zeros((0, 2), dtype=np.int64)]
    for _, chunk in iter_pixels(images):
        flat = chunk.reshape(len(chunk), -1).contiguous().numpy()
        crc = np.fromiter((zlib.crc32(row.tobytes()) for row in flat), dtype=np.int64, count=len(flat))
        parts.append(np.stack([crc, flat.sum(axis=1, dtype=np.int64)], axis=1))
    return np.concatenate(parts)


def encode_checksums(checksums: np.ndarray) -> str:
    """Checksums as compact text for a safetensors metadata field (about 8 bytes an image)."""
    payload = np.asarray(checksums, dtype="<u4").tobytes()  # CRC and sums both fit in 32 bits
    return base64.b64encode(zlib.compress(payload, 9)).decode("ascii")


def decode_checksums(text: str) -> np.ndarray:
    """The inverse of :func:`encode_checksums`; a damaged field raises ``UserError``."""
    try:
        raw = zlib.decompress(base64.b64decode(text.encode("ascii"), validate=True))
    except (ValueError, zlib.error) as error:
        raise UserError(f"The recorded image checksums are damaged ({error}).") from error
    if len(raw) % 8:
        raise UserError("The recorded image checksums are damaged (wrong length).")
    return np.frombuffer(raw, dtype="<u4").astype(np.int64).reshape(-1, 2)


@dataclass(frozen=True)
class PixelDifference:
    """How the pixels of today's data differ from those a model was trained on.

    Attributes:
        images: number of images in the set.
        images_changed: images whose pixels differ at all (CRC-32 differs).
        min_levels_changed: a lower bound on the grey levels changed in total (the sum of the
            absolute changes of each image's pixel sum; a one-level flip counts one).
    """

    images: int
    images_changed: int
    min_levels_changed: int

    @property
    def identical(self) -> bool:
        return self.images_changed == 0

    def describe(self) -> str:
        if self.identical:
            return "the images are identical to those the model was trained on"
        return (f"{self.images_changed:,} of {self.images:,} images differ from those the model was "
                f"trained on (at least {self.min_levels_changed:,} pixel values changed by one grey "
                "level or more)")


def compare_checksums(recorded: np.ndarray, current: np.ndarray) -> PixelDifference:
    """Compare two checksum tables of the same set (same image count, same order)."""
    if recorded.shape != current.shape:
        raise UserError(f"The model records {len(recorded)} images but the data set has {len(current)}.")
    current = current.astype(np.int64)
    current[:, 0] &= 0xFFFFFFFF
    changed = recorded[:, 0] != current[:, 0]
    return PixelDifference(
        images=len(current), images_changed=int(changed.sum()),
        min_levels_changed=int(np.abs(recorded[:, 1] - current[:, 1]).sum()),
    )
