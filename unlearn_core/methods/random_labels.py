"""Random labels (RL): fine-tune with the forget images relabelled at random, plus the remain set."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from unlearn_core.methods._loops import Pass, batchnorm_policy, make_sgd, random_label_loss, train_passes
from unlearn_core.methods.base import (
    PassConfig, RunHooks, UnlearnData, UnlearnMethod, UnlearnResult, option, register,
)
from unlearn_core.models.architectures import Classifier


@dataclass
class RandomLabelsConfig(PassConfig):
    epochs: int = option(10, "Passes over the training data (reference: 10).", min=1, max=500)
    lr: float = option(0.01, "SGD learning rate, constant (reference: 0.01).", min=1e-7, max=10.0)
    momentum: float = option(0.9, "SGD momentum (reference: 0.9).", min=0.0, max=0.999)
    weight_decay: float = option(5e-4, "L2 weight decay (reference: 5e-4).", min=0.0, max=0.1)
    use_remain: bool = option(True, "Mix the remain set (true labels) into the batches so it stays learned "
                              "(reference: yes); off trains on the relabelled forget set alone, with "
                              "BatchNorm statistics frozen.")


def random_label_training(model: Classifier, data: UnlearnData, config: RandomLabelsConfig, device: torch.device,
                          hooks: RunHooks, *, grad_hook: Callable[[], None] | None = None,
                          weight_decay: float | None = None, where: str = "random-label training") -> list[dict]:
    """The RL loop, shared with SalUn (which passes its gradient mask as ``grad_hook``).

    Each epoch is one shuffled pass over ``D_f ∪ D_r`` (forget samples relabelled), or over
    ``D_f`` alone with BatchNorm statistics frozen when ``use_remain`` is off.
    """
    decay = config.weight_decay if weight_decay is None else weight_decay
    optimizer = make_sgd(model.parameters(), config.lr, config.momentum, decay)
    passes = [Pass("random_labels", "both" if config.use_remain else "forget", random_label_loss)]
    return train_passes(model, data, config, device, hooks, epochs=config.epochs, optimizer=optimizer,
                        plan=lambda epoch: passes, train_mode=batchnorm_policy(not config.use_remain),
                        grad_hook=grad_hook, where=where)


@register
class RandomLabels(UnlearnMethod):
    """Train on ``D_f`` with a random wrong label ``y' ≠ y`` per image (fresh every batch), mixed with ``D_r``.

    Confusing the model about exactly the forget images erases what it learned from them while
    the remain set keeps the rest in place. Golatkar et al. (CVPR 2020) and Hayase et al.;
    defaults from the RL baseline of Jia et al. / Fan et al. (OPTML-Group/Unlearn-Saliency
    ``RL``: 10 epochs, SGD lr 0.01, momentum 0.9, weight decay 5e-4).
    """

    name = "random_labels"
    title = "Random labels (RL)"
    summary = "Keep training while telling the model the forget images belong to random other classes."
    citation = ("Golatkar et al., Eternal Sunshine of the Spotless Net, CVPR 2020; Fan et al., SalUn, ICLR 2024 "
                "(RL baseline).")
    config_class = RandomLabelsConfig

    def unlearn(self, model: Classifier, data: UnlearnData, config: RandomLabelsConfig, device: torch.device,
                hooks: RunHooks) -> UnlearnResult:
        history = random_label_training(model, data, config, device, hooks)
        return UnlearnResult(model=model, history=history)
