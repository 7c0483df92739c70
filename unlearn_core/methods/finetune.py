"""Fine-tuning on the remain set (FT): forgetting by catastrophic interference alone."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from unlearn_core.methods._loops import Pass, cross_entropy, make_sgd, train_passes
from unlearn_core.methods.base import (
    PassConfig, RunHooks, UnlearnData, UnlearnMethod, UnlearnResult, option, register,
)
from unlearn_core.models.architectures import Classifier


@dataclass
class FinetuneConfig(PassConfig):
    epochs: int = option(10, "Passes over the remain set (reference: 10).", min=1, max=500)
    lr: float = option(0.01, "SGD learning rate, constant (reference: 0.01).", min=1e-7, max=10.0)
    momentum: float = option(0.9, "SGD momentum (reference: 0.9).", min=0.0, max=0.999)
    weight_decay: float = option(5e-4, "L2 weight decay (reference: 5e-4).", min=0.0, max=0.1)


@register
class Finetune(UnlearnMethod):
    """Fine-tune the original model on ``D_r`` only with cross entropy.

    The forget set is never seen again, so its influence fades only as far as further training
    on the rest overwrites it: a cheap baseline that keeps remain accuracy but often forgets
    little. Defaults follow the FT recipe of Jia et al. (NeurIPS 2023, OPTML-Group/Unlearn-Sparse:
    10 epochs, SGD lr 0.01, momentum 0.9, weight decay 5e-4), after Golatkar et al. (CVPR 2020)
    and Warnecke et al.
    """

    name = "finetune"
    title = "Fine-tune (FT)"
    summary = "Keep training the model on the remain set only, hoping it overwrites the forgotten images."
    citation = ("Golatkar et al., Eternal Sunshine of the Spotless Net, CVPR 2020; Jia et al., Model Sparsity "
                "Can Simplify Machine Unlearning, NeurIPS 2023 (FT baseline).")
    config_class = FinetuneConfig

    def unlearn(self, model: Classifier, data: UnlearnData, config: FinetuneConfig, device: torch.device,
                hooks: RunHooks) -> UnlearnResult:
        optimizer = make_sgd(model.parameters(), config.lr, config.momentum, config.weight_decay)
        history = train_passes(model, data, config, device, hooks, epochs=config.epochs, optimizer=optimizer,
                               plan=lambda epoch: [Pass("remain", "remain", cross_entropy)], where="fine-tuning")
        return UnlearnResult(model=model, history=history)
