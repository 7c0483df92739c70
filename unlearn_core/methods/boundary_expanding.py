"""Boundary Expanding: send the forget set to a temporary shadow class, then prune that class away."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from unlearn_core.methods._loops import Batch, Pass, batchnorm_policy, make_sgd, train_passes
from unlearn_core.methods.base import (
    PassConfig, RunHooks, UnlearnData, UnlearnMethod, UnlearnResult, option, register,
)
from unlearn_core.models.architectures import Classifier
from unlearn_core.models.inference import predict_logits


@dataclass
class BoundaryExpandingConfig(PassConfig):
    epochs: int = option(10, "Passes over the forget set toward the shadow class (reference: 10).", min=1, max=500)
    lr: float = option(1e-4, "SGD learning rate, constant. The reference uses 1e-5 with ~40 forget steps per "
                       "epoch on CIFAR-10; 1e-4 gives a similar total move on a few forget batches.",
                       min=1e-8, max=10.0)
    momentum: float = option(0.9, "SGD momentum (reference: 0.9).", min=0.0, max=0.999)
    weight_decay: float = option(0.0, "L2 weight decay (reference: 0).", min=0.0, max=0.1)
    freeze_batchnorm: bool = option(True, "Keep BatchNorm statistics fixed. The reference trains them, but then "
                                    "forget-only batches overwrite them and 'forgetting' is mostly that drift.")


def expand_head(head: nn.Linear) -> nn.Linear:
    """The head with one extra output (the shadow class) after the original classes.

    The original rows are copied exactly, so before training the widened model scores every
    original class as before; the shadow row gets PyTorch's default fresh initialization.
    """
    wide = nn.Linear(head.in_features, head.out_features + 1, bias=head.bias is not None,
                     device=head.weight.device, dtype=head.weight.dtype)
    with torch.no_grad():
        wide.weight[:-1].copy_(head.weight)
        if head.bias is not None:
            wide.bias[:-1].copy_(head.bias)
    return wide


def prune_shadow(head: nn.Linear, num_classes: int) -> nn.Linear:
    """The head with only the first ``num_classes`` outputs: the shadow neuron removed."""
    pruned = nn.Linear(head.in_features, num_classes, bias=head.bias is not None,
                       device=head.weight.device, dtype=head.weight.dtype)
    with torch.no_grad():
        pruned.weight.copy_(head.weight[:num_classes])
        if head.bias is not None:
            pruned.bias.copy_(head.bias[:num_classes])
    return pruned


@contextmanager
def pruned_view(model: Classifier, num_classes: int) -> Iterator[Classifier]:
    """Temporarily give ``model`` its pruned head (for live accuracy during training)."""
    wide = model.head
    model.head = prune_shadow(wide, num_classes)
    try:
        yield model
    finally:
        model.head = wide


@register
class BoundaryExpanding(UnlearnMethod):
    """Widen the head by a shadow class, train ``D_f`` toward it, then prune the shadow neuron.

    Moving the forget images into a new class gives them somewhere to go without disturbing the
    boundaries between the original classes; once the shadow neuron is removed, they fall to
    whichever real class is nearest. The whole network trains (as in the reference), on
    ``D_f`` only. Chen et al., CVPR 2023 (reference code: SGD lr 1e-5, momentum 0.9, 10
    epochs over the forget set). Two measured changes: the learning rate is 1e-4 (see its help),
    and BatchNorm statistics are frozen: with the reference's training statistics, 1e-5 moved
    none of ``D_f`` into the shadow class on digits, and the drop in forget accuracy came only
    from running statistics drifting toward the forget batches.

    Diagnostics: ``forget_in_shadow`` is the share of ``D_f`` the widened model put in the
    shadow class just before pruning (how far the expansion got).
    """

    name = "boundary_expanding"
    title = "Boundary Expanding"
    summary = "Move the forget images into a temporary extra class, then delete that class."
    citation = ("Chen et al., Boundary Unlearning: Rapid Forgetting of Deep Networks via Shifting the Decision "
                "Boundary, CVPR 2023.")
    config_class = BoundaryExpandingConfig

    def unlearn(self, model: Classifier, data: UnlearnData, config: BoundaryExpandingConfig, device: torch.device,
                hooks: RunHooks) -> UnlearnResult:
        num_classes = model.head.out_features
        shadow = num_classes
        model.head = expand_head(model.head)

        def to_shadow(net: Classifier, batch: Batch) -> torch.Tensor:
            return F.cross_entropy(net(batch.pixels), torch.full_like(batch.labels, shadow))

        optimizer = make_sgd(model.parameters(), config.lr, config.momentum, config.weight_decay)
        history = train_passes(model, data, config, device, hooks, epochs=config.epochs, optimizer=optimizer,
                               plan=lambda epoch: [Pass("shadow", "forget", to_shadow)],
                               train_mode=batchnorm_policy(config.freeze_batchnorm), monitor_view=lambda net: pruned_view(net, num_classes),
                               where="Boundary Expanding")
        widened = predict_logits(model, data.imageset.images, data.forget_indices, device=device)
        model.head = prune_shadow(model.head, num_classes)
        return UnlearnResult(model=model, history=history, diagnostics={
            "shadow_class": shadow, "forget_in_shadow": float((widened.argmax(1) == shadow).mean())})
