"""Does the forgetting survive ordinary handling? Two checks on an unlearned model (issue 10, item 7).

* **BatchNorm recalibration.** A method that trains with BatchNorm in train mode can store much
  of its forgetting in the running statistics rather than in the weights; anyone who
  recalibrates those statistics on the kept images (a routine step after fine-tuning, pruning
  or composing models) then gets the forgotten images back. The check recalibrates them on
  ``D_r`` (:func:`unlearn_core.compose.recalibrate_batchnorm`) and reports forget test accuracy
  after minus before; the goal is ``|Δ| ≤`` :data:`BN_TOLERANCE`.
* **Relearning.** A few ordinary fine-tuning steps on ``D_r`` alone (:class:`RelearnConfig`)
  are applied to the unlearned model and to the retrained model. A model that never saw
  ``D_f`` only regains it by generalising; an unlearned model that hides ``D_f`` behind a thin
  layer regains it faster. Flagged when the unlearned model's forget test accuracy rises more
  than the retrain's by over :data:`RELEARN_TOLERANCE` *and* ends over that much above the
  relearned retrain's. Why both: where the retrain keeps ``D_f`` (a random share: F = 1.0), a
  model that over-forgot climbs back towards the retrain; that is a distance problem, already
  reported, not forgetting that fails to hold.

Both return plain dataclasses, work on a copy (the model passed in is never changed) and are
used by the benchmark for every method.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from unlearn_core.compose import recalibrate_batchnorm
from unlearn_core.data.criteria import ForgetSplit
from unlearn_core.data.imageset import ImageSet
from unlearn_core.models.architectures import Classifier
from unlearn_core.models.batchnorm import batchnorms
from unlearn_core.models.inference import to_pixels
from unlearn_core.training import accuracy_on, fine_tuned_copy

#: Largest change of forget test accuracy after BN recalibration that still counts as "kept".
BN_TOLERANCE = 0.05
#: Largest extra rise of forget test accuracy (unlearned minus retrain) under relearning.
RELEARN_TOLERANCE = 0.05


@dataclass(frozen=True)
class RelearnConfig:
    """The relearning attack: ``steps`` SGD steps on random ``D_r`` batches.

    Why these values: 20 steps of 64 images is about one epoch of the smaller built-in sets'
    forget set sizes, ordinary handling rather than a targeted attack; the learning rate is the
    training recipe's peak times ``lr_scale`` (0.1, a typical fine-tuning rate), with the
    recipe's momentum and weight decay, all layers trainable, BatchNorm in train mode.
    """

    steps: int = 20
    batch_size: int = 64
    lr_scale: float = 0.1
    seed: int = 0


@dataclass(frozen=True)
class BNCheck:
    """Forget test accuracy before and after BN recalibration on ``D_r``."""

    before: float
    after: float
    has_batchnorm: bool

    @property
    def delta(self) -> float:
        return self.after - self.before

    @property
    def kept(self) -> bool:
        """Whether the forgetting survived (``|Δ| ≤ BN_TOLERANCE``; a nan Δ counts as kept)."""
        return math.isnan(self.delta) or abs(self.delta) <= BN_TOLERANCE


@dataclass(frozen=True)
class RelearnCheck:
    """Forget test accuracy of the unlearned and the retrained model, before and after relearning."""

    unlearned_before: float
    unlearned_after: float
    retrain_before: float
    retrain_after: float

    @property
    def unlearned_rise(self) -> float:
        return self.unlearned_after - self.unlearned_before

    @property
    def retrain_rise(self) -> float:
        return self.retrain_after - self.retrain_before

    @property
    def flagged(self) -> bool:
        """True when ``D_f`` comes back faster than for the retrain, and beyond where the retrain ends."""
        excess = self.unlearned_rise - self.retrain_rise
        above = self.unlearned_after - self.retrain_after
        return not math.isnan(excess) and excess > RELEARN_TOLERANCE and above > RELEARN_TOLERANCE


def bn_recalibration_check(model: Classifier, data: ImageSet, split: ForgetSplit, seed: int = 0) -> BNCheck:
    """Recalibrate a copy's BatchNorm statistics on ``D_r`` and compare forget test accuracy."""
    has_bn = bool(batchnorms(model))
    before = accuracy_on(model, data, split.forget_test)
    if not has_bn:
        return BNCheck(before, before, False)
    recalibrated = recalibrate_batchnorm(model, data, split.remain_train, seed=seed)
    return BNCheck(before, accuracy_on(recalibrated, data, split.forget_test), True)


def relearn(model: Classifier, data: ImageSet, remain_indices: np.ndarray, recipe_lr: float,
            momentum: float = 0.9, weight_decay: float = 5e-4,
            config: RelearnConfig = RelearnConfig()) -> Classifier:
    """A copy of ``model`` fine-tuned for ``config.steps`` SGD steps on ``D_r`` alone."""
    device = next(model.parameters()).device
    indices = np.asarray(remain_indices, dtype=np.int64)
    generator = torch.Generator().manual_seed(config.seed)

    def batches():
        for _ in range(config.steps):
            picks = torch.randint(len(indices), (min(config.batch_size, len(indices)),), generator=generator)
            batch = indices[picks.numpy()]
            yield to_pixels(data.images[batch], device), data.labels[batch].to(device)

    return fine_tuned_copy(model, batches(), recipe_lr * config.lr_scale, momentum, weight_decay)


def relearning_check(unlearned: Classifier, retrained: Classifier, data: ImageSet, split: ForgetSplit,
                     recipe_lr: float, momentum: float = 0.9, weight_decay: float = 5e-4,
                     config: RelearnConfig = RelearnConfig()) -> RelearnCheck:
    """Relearn both models the same way (same batches) and report forget test accuracy before/after."""
    def after(model: Classifier) -> float:
        relearned = relearn(model, data, split.remain_train, recipe_lr, momentum, weight_decay, config)
        return accuracy_on(relearned, data, split.forget_test)

    return RelearnCheck(accuracy_on(unlearned, data, split.forget_test), after(unlearned),
                        accuracy_on(retrained, data, split.forget_test), after(retrained))
