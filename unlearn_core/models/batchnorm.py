"""BatchNorm running statistics: find the layers, re-estimate their statistics in place, and
fold them into the convolutions of a frozen model.

Shared by composition (interpolated weights need statistics of their own) and PSG (a stop is
confirmed with statistics of the current weights rather than trailing ones; the frozen original
it attacks runs with its BatchNorms folded).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


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


@torch.no_grad()
def fold_into_convolutions(model: nn.Module) -> int:
    """Fold every BatchNorm2d that directly follows a Conv2d in a ``Sequential`` into that
    convolution, in place; returns how many were folded. ``model`` must be in eval mode and stay
    frozen (a folded layer no longer has statistics to update).

    Why: in eval mode a BatchNorm is a per-channel affine map, which the convolution's weights
    and bias can absorb exactly (up to float rounding: 6e-6 on the digits model's logits), and
    each one removed saves a pass over the activations. PSG's frozen original is only ever run
    forward (and differentiated for the input), so its scoring forwards get that for free:
    30 % faster on the digits model (docs/performance.md). Layers arranged otherwise (attributes
    of a residual block) are left as they are.
    """
    if model.training:
        raise ValueError("fold_into_convolutions needs a model in eval mode")
    folded = 0
    for module in model.modules():
        if not isinstance(module, nn.Sequential):
            continue
        names = list(module._modules)
        for first, second in zip(names, names[1:]):
            conv, norm = module._modules[first], module._modules[second]
            if not (isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d)
                    and norm.running_mean is not None and norm.running_var is not None):
                continue
            channels_last = conv.weight.is_contiguous(memory_format=torch.channels_last)
            fused = fuse_conv_bn_eval(conv, norm)
            if channels_last:
                fused = fused.to(memory_format=torch.channels_last)
            module._modules[first], module._modules[second] = fused, nn.Identity()
            folded += 1
    return folded
