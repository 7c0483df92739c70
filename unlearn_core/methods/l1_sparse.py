"""ℓ1-sparse unlearning: fine-tune on the remain set with a decaying ℓ1 penalty on the weights."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from unlearn_core.methods._loops import Batch, Pass, make_sgd, train_passes
from unlearn_core.methods.base import (
    PassConfig, RunHooks, UnlearnData, UnlearnMethod, UnlearnResult, option, register,
)
from unlearn_core.models.architectures import Classifier


@dataclass
class L1SparseConfig(PassConfig):
    epochs: int = option(10, "Passes over the remain set (reference: 10).", min=1, max=500)
    lr: float = option(0.01, "SGD learning rate, constant (reference: 0.01).", min=1e-7, max=10.0)
    momentum: float = option(0.9, "SGD momentum (reference: 0.9).", min=0.0, max=0.999)
    weight_decay: float = option(5e-4, "L2 weight decay (reference: 5e-4).", min=0.0, max=0.1)
    gamma: float = option(5e-4, "Initial weight γ of the ℓ1 penalty ‖θ‖₁ (paper: 5e-4); it decays linearly "
                          "to 0.", min=0.0, max=1.0)
    no_l1_epochs: int = option(0, "Final epochs without the penalty; γ reaches 0 when they start "
                               "(reference: 0).", min=0, max=500)


def l1_gamma(gamma: float, epoch: int, epochs: int, no_l1_epochs: int) -> float:
    """γ for a 1-based ``epoch``: ``γ·(1 − (epoch − 1)/(epochs − no_l1_epochs))``, 0 afterwards.

    The linearly decaying schedule of the reference (``FT_l1``): sparsity is pushed hardest
    first, then the model is left to recover accuracy.
    """
    active = epochs - no_l1_epochs
    if epoch > active or active <= 0:
        return 0.0
    return gamma * (1.0 - (epoch - 1) / active)


def l1_norm(model: Classifier) -> torch.Tensor:
    """‖θ‖₁ over every parameter."""
    return sum(p.abs().sum() for p in model.parameters())


@register
class L1Sparse(UnlearnMethod):
    """Fine-tune on ``D_r`` minimizing ``CE + γ_t‖θ‖₁`` with γ decaying linearly to zero.

    Jia et al. show that sparser weights narrow the gap between approximate and exact
    unlearning; the ℓ1 term pushes the model toward such a sparse solution while fine-tuning
    washes out ``D_f``. Jia et al., NeurIPS 2023 (OPTML-Group/Unlearn-Sparse ``FT_l1``: 10
    epochs, SGD lr 0.01, momentum 0.9, weight decay 5e-4, linearly decaying γ).
    """

    name = "l1_sparse"
    title = "ℓ1-sparse fine-tune"
    summary = "Fine-tune on the remain set while pushing many weights toward zero, which helps the model forget."
    citation = "Jia et al., Model Sparsity Can Simplify Machine Unlearning, NeurIPS 2023."
    config_class = L1SparseConfig

    def unlearn(self, model: Classifier, data: UnlearnData, config: L1SparseConfig, device: torch.device,
                hooks: RunHooks) -> UnlearnResult:
        def plan(epoch: int) -> list[Pass]:
            gamma = l1_gamma(config.gamma, epoch, config.epochs, config.no_l1_epochs)

            def loss(net: Classifier, batch: Batch) -> torch.Tensor:
                ce = F.cross_entropy(net(batch.pixels), batch.labels)
                return ce + gamma * l1_norm(net) if gamma > 0 else ce
            return [Pass("remain", "remain", loss)]

        optimizer = make_sgd(model.parameters(), config.lr, config.momentum, config.weight_decay)
        history = train_passes(model, data, config, device, hooks, epochs=config.epochs, optimizer=optimizer,
                               plan=plan, where="ℓ1-sparse fine-tuning")
        for record in history:
            record["l1_gamma"] = l1_gamma(config.gamma, int(record["epoch"]), config.epochs, config.no_l1_epochs)
        return UnlearnResult(model=model, history=history, diagnostics={"l1_norm_after": float(l1_norm(model).detach())})
