"""Small real data and quickly trained models for method tests (import from any test module).

Why a helper module rather than ``conftest.py``: several helpers write tests at once, and
``conftest.py`` belongs to one of them; plain functions wrapped in ``lru_cache`` give the same
"train once per test session" effect without fixture plumbing.

``tiny_digits()`` keeps four classes of the real UCI digits at 16×16 pixels (about 580
training images); ``tiny_model()`` trains the default ``small_cnn`` on it in a few seconds on
one CPU thread and reaches ≥ 95 % test accuracy.
"""

from __future__ import annotations

import copy
import functools

import numpy as np
import torch
import torch.nn.functional as F

from unlearn_core.data.builtin import load_builtin
from unlearn_core.data.criteria import ForgetCriteria, ForgetSplit, split_sets
from unlearn_core.data.imageset import ImageSet
from unlearn_core.models.architectures import Classifier
from unlearn_core.training import TrainConfig, train_model

TINY_CLASSES = 4
TINY_SIZE = 16


@functools.lru_cache(maxsize=2)
def tiny_digits(classes: int = TINY_CLASSES, size: int = TINY_SIZE) -> ImageSet:
    """Digits ``0 .. classes-1`` of the built-in set, downsampled to ``size`` px (same split)."""
    digits = load_builtin("digits")
    rows = np.flatnonzero(digits.metadata["label"].to_numpy() < classes)
    images = digits.images[torch.from_numpy(rows)].float()
    images = F.interpolate(images, size=(size, size), mode="area").round().clamp(0, 255).to(torch.uint8)
    metadata = digits.metadata.iloc[rows][["sample_id", "label", "split"]].reset_index(drop=True)
    return ImageSet(name=f"tiny_digits{classes}", images=images, metadata=metadata,
                    classes=digits.classes[:classes], description="Test subset of the UCI digits.")


def tiny_split(criteria: str = 'label == "3"') -> ForgetSplit:
    return split_sets(tiny_digits(), ForgetCriteria.parse(criteria))


@functools.lru_cache(maxsize=2)
def _trained(train_on: str, epochs: int) -> Classifier:
    data = tiny_digits()
    indices = data.train_indices if train_on == "all" else tiny_split(train_on).remain_train
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # tests share a small machine
    try:
        result = train_model(data, indices, TrainConfig(epochs=epochs, batch_size=32, lr=0.05, device="cpu"))
    finally:
        torch.set_num_threads(previous)
    return result.model.eval()


def tiny_model(epochs: int = 4) -> Classifier:
    """A fresh copy of a ``small_cnn`` trained on all of :func:`tiny_digits` (cached per session)."""
    return copy.deepcopy(_trained("all", epochs))


def tiny_retrain(criteria: str = 'label == "3"', epochs: int = 4) -> Classifier:
    """A fresh copy of the same recipe trained on the remain set of ``criteria`` only."""
    return copy.deepcopy(_trained(criteria, epochs))
