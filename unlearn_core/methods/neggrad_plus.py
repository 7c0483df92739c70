"""NegGrad+: fine-tune on the remain set while ascending the forget loss, in one weighted loss."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F

from unlearn_core.methods._loops import Batch, Pass, make_sgd, train_passes
from unlearn_core.methods.base import (
    PassConfig, RunHooks, UnlearnData, UnlearnMethod, UnlearnResult, option, register,
)
from unlearn_core.models.architectures import Classifier


@dataclass
class NegGradPlusConfig(PassConfig):
    epochs: int = option(5, "Passes over the remain set, each remain batch joined by a forget batch (reference: 5).",
                         min=1, max=500)
    lr: float = option(0.01, "SGD learning rate, constant (reference: 0.01).", min=1e-7, max=10.0)
    momentum: float = option(0.0, "SGD momentum (reference: plain SGD, 0).", min=0.0, max=0.999)
    weight_decay: float = option(0.0, "L2 weight decay (reference: 0).", min=0.0, max=0.1)
    alpha: float = option(0.9999, "Weight α of the remain loss; the forget loss is ascended with weight 1 − α "
                          "(reference: 0.9999). Lower it (e.g. 0.9) for a stronger push on the forget set.",
                          min=0.0, max=1.0)


def neggrad_plus_loss(model: Classifier, batch: Batch, alpha: float) -> torch.Tensor:
    """α·CE(D_r batch) − (1 − α)·CE(D_f batch), two forward passes as in the reference."""
    remain_pixels, remain_labels = batch.remain_part
    forget_pixels, forget_labels = batch.forget_part
    remain_loss = F.cross_entropy(model(remain_pixels), remain_labels)
    forget_loss = F.cross_entropy(model(forget_pixels), forget_labels)
    return alpha * remain_loss - (1.0 - alpha) * forget_loss


@register
class NegGradPlus(UnlearnMethod):
    """Minimize ``α·CE(D_r) − (1 − α)·CE(D_f)`` with SGD.

    The remain term anchors what must be kept, so the ascent on ``D_f`` can run without
    collapsing the model (plain GA has no such anchor). As in the reference, an epoch is one
    pass over ``D_r`` with forget batches drawn from an endless shuffled ``D_f`` stream.
    Kurmanji et al. (NeurIPS 2023, meghdadk/SCRUB ``train_negrad``); defaults from the
    reference benchmark (5 epochs, SGD lr 0.01, no momentum or weight decay, α = 0.9999).
    """

    name = "neggrad_plus"
    title = "NegGrad+"
    summary = "Keep training on the remain set while pushing the forget images' loss up, in one balanced loss."
    citation = "Kurmanji et al., Towards Unbounded Machine Unlearning, NeurIPS 2023 (NegGrad+)."
    config_class = NegGradPlusConfig

    def unlearn(self, model: Classifier, data: UnlearnData, config: NegGradPlusConfig, device: torch.device,
                hooks: RunHooks) -> UnlearnResult:
        optimizer = make_sgd(model.parameters(), config.lr, config.momentum, config.weight_decay)
        loss = partial(neggrad_plus_loss, alpha=config.alpha)
        history = train_passes(model, data, config, device, hooks, epochs=config.epochs, optimizer=optimizer,
                               plan=lambda epoch: [Pass("remain+forget", "remain+forget", loss)], where="NegGrad+")
        return UnlearnResult(model=model, history=history)
