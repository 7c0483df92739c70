"""The one data type every part of the studio passes around: :class:`ImageSet`."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Union

import numpy as np
import pandas as pd
import torch

from unlearn_core.errors import UserError

if TYPE_CHECKING:
    from unlearn_core.data.disk_images import PixelStore

#: Columns every metadata frame has; everything else is a domain column (vpf_mm, device, ...).
RESERVED_COLUMNS = ("sample_id", "label", "split")


@dataclass
class ImageSet:
    """Images plus one metadata row per image.

    Attributes:
        name: short identifier (``oculoplastic``, ``fundus``, ``digits`` or a user's file stem).
        images: ``uint8`` tensor ``[N, C, H, W]`` in 0..255 (pixel space; models normalize), or
            a :class:`~unlearn_core.data.disk_images.PixelStore` whose pixels stay on disk and
            are read per index batch (``images[batch]`` is a uint8 tensor either way).
        metadata: one row per image, in the same order, with ``sample_id`` (unique str),
            ``label`` (int class index), ``split`` (``"train"``/``"test"``) and domain columns.
        classes: class names; ``label`` indexes into it.
        mean, std: per-channel statistics of the training images in [0, 1], used by the model's
            built-in normalization layer and by the boundary search to stay in pixel space.
        units: optional unit per metadata column (``{"vpf_mm": "mm"}``) for display.
        description: one sentence for the dashboard.
    """

    name: str
    images: Union[torch.Tensor, "PixelStore"]
    metadata: pd.DataFrame
    classes: list[str]
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    units: dict[str, str] = field(default_factory=dict)
    description: str = ""

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise UserError(
                f"Images must be a uint8 tensor [N, C, H, W]; got {self.images.dtype} "
                f"with shape {tuple(self.images.shape)}."
            )
        if len(self.metadata) != len(self.images):
            raise UserError(
                f"{len(self.images)} images but {len(self.metadata)} metadata rows; "
                "every image needs exactly one row."
            )
        missing = [c for c in RESERVED_COLUMNS if c not in self.metadata.columns]
        if missing:
            raise UserError(f"Metadata is missing the column(s) {missing}.")
        self.metadata = self.metadata.reset_index(drop=True)
        if not self.mean:
            self.mean, self.std = channel_stats(self.images, self.train_indices)

    # --- views -------------------------------------------------------------------------
    @property
    def labels(self) -> torch.Tensor:
        """Class index per image as ``int64 [N]``."""
        return torch.from_numpy(self.metadata["label"].to_numpy(dtype=np.int64, copy=True))

    @property
    def train_indices(self) -> np.ndarray:
        return np.flatnonzero(self.metadata["split"].to_numpy() == "train")

    @property
    def test_indices(self) -> np.ndarray:
        return np.flatnonzero(self.metadata["split"].to_numpy() == "test")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    @property
    def domain_columns(self) -> list[str]:
        """Metadata columns a user can filter on (everything but sample_id and split)."""
        return [c for c in self.metadata.columns if c not in ("sample_id", "split")]

    def fingerprint(self) -> str:
        """Content hash of images, labels and split: identifies the exact data a model saw.

        ``sha256(pixel bytes + labels + split)``. Pixels on disk are hashed chunk by chunk
        (or the hash their import recorded is used), giving the same value as in memory.
        """
        tail = fingerprint_tail(self.metadata)
        if not isinstance(self.images, torch.Tensor):
            return self.images.fingerprint_with(tail)
        digest = hashlib.sha256()
        digest.update(self.images.contiguous().numpy().tobytes())
        digest.update(tail)
        return digest.hexdigest()[:16]

    def class_counts(self) -> pd.DataFrame:
        """Samples per class and split, for summaries and checks."""
        table = (
            self.metadata.assign(cls=[self.classes[i] for i in self.metadata["label"]])
            .groupby(["cls", "split"]).size().unstack(fill_value=0)
        )
        return table.reindex(self.classes, fill_value=0)


def fingerprint_tail(metadata: pd.DataFrame) -> bytes:
    """What :meth:`ImageSet.fingerprint` hashes after the pixels: labels, then the split."""
    return (metadata["label"].to_numpy(dtype=np.int64).tobytes()
            + "".join(metadata["split"].astype(str)).encode())


def stats_from_sums(totals: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and (unbiased) std per channel from rows ``[sum, sum of squares, count]`` of values in [0, 1]."""
    totals = np.asarray(totals, dtype=np.float64)
    channels = len(totals)
    if not channels or totals[:, 2].min() <= 1:
        return (0.5,) * channels, (0.25,) * channels
    total, squares, count = totals[:, 0], totals[:, 1], totals[:, 2]
    mean = total / count
    var = np.maximum(squares - total * mean, 0.0) / (count - 1)
    std = np.maximum(np.sqrt(var), 1e-3)
    return tuple(round(float(m), 6) for m in mean), tuple(round(float(s), 6) for s in std)


def channel_stats(images, indices: np.ndarray | None = None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std in [0, 1] of ``uint8 [N, C, H, W]`` images (``images[indices]``).

    A tensor is reduced at once (as before: the shipped models' statistics come from this);
    pixels on disk are summed chunk by chunk in float64, never all in memory.
    """
    if not isinstance(images, torch.Tensor):
        from unlearn_core.data.disk_images import iter_pixels

        totals = np.zeros((int(images.shape[1]), 3))
        for _, chunk in iter_pixels(images, indices):
            values = chunk.numpy().transpose(1, 0, 2, 3).reshape(len(totals), -1).astype(np.float64) / 255.0
            totals += np.stack([values.sum(1), np.square(values).sum(1), np.full(len(totals), values.shape[1])], 1)
        return stats_from_sums(totals)
    if indices is not None:
        images = images[indices]
    if len(images) == 0:
        channels = images.shape[1]
        return (0.5,) * channels, (0.25,) * channels
    as_float = images.float().div_(255.0)
    mean = as_float.mean(dim=(0, 2, 3))
    std = as_float.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return tuple(round(float(m), 6) for m in mean), tuple(round(float(s), 6) for s in std)


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> np.ndarray:
    """Seeded, per-class train/test assignment; returns an array of ``"train"``/``"test"``.

    Why stratified: small classes must appear in both splits or test accuracy per class is
    undefined. Deterministic for a given seed so the split can be recreated and persisted.
    """
    if not 0.0 < test_fraction < 1.0:
        raise UserError(f"test_fraction must be between 0 and 1, got {test_fraction}.")
    rng = np.random.default_rng(seed)
    split = np.full(len(labels), "train", dtype=object)
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        rng.shuffle(members)
        n_test = int(round(len(members) * test_fraction))
        if len(members) >= 2:
            n_test = min(max(n_test, 1), len(members) - 1)
        split[members[:n_test]] = "test"
    return split
