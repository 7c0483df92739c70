"""CF-k: catastrophically forget by fine-tuning only the last k blocks on the remain set."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from unlearn_core.methods._loops import (
    Pass, cross_entropy, freeze_except, last_blocks, make_sgd, partial_train_mode, train_passes,
)
from unlearn_core.methods.base import (
    PassConfig, RunHooks, UnlearnData, UnlearnMethod, UnlearnResult, option, register,
)
from unlearn_core.models.architectures import Classifier


@dataclass
class CFkConfig(PassConfig):
    k: int = option(2, "How many blocks to train, counted from the output over blocks with weights (the head is "
                    "one): 2 = the last feature block and the head.", min=1, max=64)
    epochs: int = option(10, "Passes over the remain set (reference: 10).", min=1, max=500)
    lr: float = option(0.01, "SGD learning rate, constant (reference: 0.01).", min=1e-7, max=10.0)
    momentum: float = option(0.0, "SGD momentum (reference: plain SGD, 0).", min=0.0, max=0.999)
    weight_decay: float = option(0.0, "L2 weight decay (reference: 0).", min=0.0, max=0.1)


@register
class CFk(UnlearnMethod):
    """Freeze all but the last ``k`` blocks and fine-tune those on ``D_r``.

    Only the top of the network, where class-specific features live, gets the chance to
    catastrophically forget ``D_f``; everything below stays exactly as it was (BatchNorm
    statistics included: frozen blocks run in eval mode, a leak of the reference code fixed).
    Goel et al., 2022; defaults from the reference benchmark (10 epochs, plain SGD lr 0.01).
    The reference trains the last feature block with the head frozen; Goel et al. count the
    classifier among the last k layers, so the default ``k = 2`` trains both.
    """

    name = "cf_k"
    title = "CF-k (fine-tune last k blocks)"
    summary = "Fine-tune only the last few layers on the remain set, leaving the rest of the network untouched."
    citation = ("Goel et al., Towards Adversarial Evaluation of Machine Unlearning (Evaluating Inexact Unlearning "
                "Requires Revisiting Forgetting), 2022.")
    config_class = CFkConfig

    def prepare(self, model: Classifier, blocks: list[str]) -> dict:
        """Change the trainable blocks before training (nothing for CF-k; EU-k re-initializes)."""
        return {}

    def unlearn(self, model: Classifier, data: UnlearnData, config: CFkConfig, device: torch.device,
                hooks: RunHooks) -> UnlearnResult:
        blocks = last_blocks(model, config.k)
        diagnostics = {"trained_blocks": blocks, **self.prepare(model, blocks)}
        trainable = freeze_except(model, blocks)
        optimizer = make_sgd(trainable, config.lr, config.momentum, config.weight_decay)
        try:
            history = train_passes(model, data, config, device, hooks, epochs=config.epochs, optimizer=optimizer,
                                   plan=lambda epoch: [Pass("remain", "remain", cross_entropy)],
                                   train_mode=partial_train_mode(blocks), where=f"{self.title} training")
        finally:
            model.requires_grad_(True)
        return UnlearnResult(model=model, history=history, diagnostics=diagnostics)
