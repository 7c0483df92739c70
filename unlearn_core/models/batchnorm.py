"""BatchNorm running statistics: find the layers, and re-estimate their statistics in place.

Shared by composition (interpolated weights need statistics of their own) and PSG (a stop is
confirmed with statistics of the current weights rather than trailing ones).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


def batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every BatchNorm layer of ``model``."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def reestimate_statistics(model: nn.Module, pixel_batches: Iterable[torch.Tensor]) -> None:
    """Reset every BatchNorm's running statistics and re-estimate them on ``pixel_batches``, in place.

    A cumulative average (``momentum=None``) over the batches, BatchNorm alone in train mode
    (dropout stays off), no gradients: no weight changes. Momenta and the model's mode are
    restored afterwards.
    """
    layers = batchnorms(model)
    if not layers:
        return
    momenta = [layer.momentum for layer in layers]
    was_training = model.training
    model.eval()
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None
        layer.train()
    try:
        for pixels in pixel_batches:
            model(pixels)
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
        model.train(was_training)
