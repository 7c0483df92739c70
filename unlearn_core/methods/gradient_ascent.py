"""Gradient ascent on the forget set (GA): push its loss up until the model stops fitting it."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from unlearn_core.methods._loops import Batch, Pass, batchnorm_policy, make_sgd, train_passes
from unlearn_core.methods.base import (
    PassConfig, RunHooks, UnlearnData, UnlearnMethod, UnlearnResult, option, register,
)
from unlearn_core.models.architectures import Classifier


@dataclass
class GradientAscentConfig(PassConfig):
    epochs: int = option(5, "Passes over the forget set (reference: 5).", min=1, max=500)
    lr: float = option(1e-4, "SGD learning rate, constant (reference: 1e-4). Ascent is unstable: a confident model "
                       "barely moves at first, then collapses; watch both accuracies.", min=1e-8, max=10.0)
    momentum: float = option(0.9, "SGD momentum (reference: 0.9).", min=0.0, max=0.999)
    weight_decay: float = option(5e-4, "L2 weight decay (reference: 5e-4).", min=0.0, max=0.1)
    freeze_batchnorm: bool = option(True, "Keep BatchNorm statistics fixed. The reference trains them, but then "
                                    "forget-only batches overwrite them and 'forgetting' is mostly that drift.")


def negative_cross_entropy(model: Classifier, batch: Batch) -> torch.Tensor:
    """−CE on the true labels: minimizing it ascends the forget loss."""
    return -F.cross_entropy(model(batch.pixels), batch.labels)


@register
class GradientAscent(UnlearnMethod):
    """Maximize the cross entropy of ``D_f`` by SGD on its negative.

    The loss is unbounded, so GA forgets fast but can wreck the remain set if run too long;
    nothing anchors the remain data. Defaults follow the GA baseline of Jia et al. (NeurIPS 2023,
    OPTML-Group/Unlearn-Sparse: 5 epochs, SGD momentum 0.9, weight decay 5e-4), after Thudi et
    al. (EuroS&P 2022) and Golatkar et al., lr 1e-4. One deliberate change: BatchNorm statistics
    are frozen. In train mode every forget-only batch is normalized by its own single-class
    statistics, and on digits with the small CNN the eval-mode drop in forget accuracy came from
    the running statistics drifting toward the forget class rather than from the ascent.

    Measured on the same data, the ascent is abrupt: forget accuracy stays near 1 while the
    saturated softmax gives tiny gradients, then falls to 0 within an epoch and takes the remain
    accuracy with it; a few epochs more and the loss overflows (the run then stops with an
    error and the original model is kept).
    """

    name = "gradient_ascent"
    title = "Gradient ascent (GA)"
    summary = "Train the model to get the forget images wrong by climbing their loss."
    citation = ("Thudi et al., Unrolling SGD: Understanding Factors Influencing Machine Unlearning, EuroS&P 2022; "
                "Jia et al., Model Sparsity Can Simplify Machine Unlearning, NeurIPS 2023 (GA baseline).")
    config_class = GradientAscentConfig

    def unlearn(self, model: Classifier, data: UnlearnData, config: GradientAscentConfig, device: torch.device,
                hooks: RunHooks) -> UnlearnResult:
        optimizer = make_sgd(model.parameters(), config.lr, config.momentum, config.weight_decay)
        history = train_passes(model, data, config, device, hooks, epochs=config.epochs, optimizer=optimizer,
                               plan=lambda epoch: [Pass("forget", "forget", negative_cross_entropy)],
                               train_mode=batchnorm_policy(config.freeze_batchnorm), where="gradient ascent")
        return UnlearnResult(model=model, history=history)
