"""SalUn: random-label unlearning restricted to the weights most salient for the forget set."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from unlearn_core.methods.base import (
    CommonConfig, RunHooks, UnlearnData, UnlearnMethod, UnlearnResult, index_batches, load_pixels, make_generator,
    option, register,
)
from unlearn_core.methods.random_labels import RandomLabelsConfig, random_label_training
from unlearn_core.models.architectures import Classifier

Mask = dict[str, torch.Tensor]


@dataclass
class SalUnConfig(RandomLabelsConfig):
    """Random-label settings plus the mask; the learning rate default differs from RL's reference."""

    lr: float = option(0.1, "SGD learning rate, constant (reference: 0.1; plain RL uses 0.01).", min=1e-7, max=10.0)
    weight_decay: float = option(5e-4, "L2 weight decay, applied to the salient weights only (reference: 5e-4).",
                                 min=0.0, max=0.1)
    mask_ratio: float = option(0.5, "Share of all weights SalUn may change: those with the largest forget-loss "
                               "gradient magnitude, one global threshold (reference: 0.5).", min=0.001, max=1.0)


def saliency_mask(model: Classifier, data: UnlearnData, config: CommonConfig, device: torch.device,
                  ratio: float, check_cancel: Callable[[], None] = lambda: None) -> Mask:
    """1 for the ``ratio`` share of weights with the largest ``|∇_θ CE(D_f)|``, 0 elsewhere.

    The paper's mask ``1(|g| ≥ threshold)``: the gradient of the forget loss, summed over all
    forget batches at the *original* weights in eval mode (the reference also sums per-batch
    gradients, but takes optimizer steps in between, which is not copied; the sign of the loss
    does not matter since only magnitudes are ranked). The threshold is global across all
    parameter tensors and ties are broken by rank, so exactly ``round(ratio · N)`` entries are 1.
    """
    was_training = model.training
    model.eval()
    model.zero_grad(set_to_none=True)
    for batch in index_batches(data.forget_indices, config.batch_size, make_generator(config.seed)):
        check_cancel()
        pixels, labels = load_pixels(data, batch, device, config.channels_last)
        F.cross_entropy(model(pixels), labels, reduction="sum").backward()
    magnitudes = [torch.zeros(p.numel(), device=p.device) if p.grad is None else p.grad.detach().abs().flatten()
                  for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    flat = torch.cat(magnitudes).float()
    keep = round(ratio * flat.numel())
    chosen = torch.zeros_like(flat)
    chosen[torch.argsort(flat, descending=True, stable=True)[:keep]] = 1.0
    mask, start = {}, 0
    for name, p in model.named_parameters():
        mask[name] = chosen[start : start + p.numel()].view_as(p).to(p.dtype)
        start += p.numel()
    return mask


def mask_fraction(mask: Mask) -> float:
    """Share of weights the mask lets change."""
    return float(sum(m.sum() for m in mask.values()) / sum(m.numel() for m in mask.values()))


@register
class SalUn(UnlearnMethod):
    """Random-label fine-tuning that only updates the weights salient for ``D_f``.

    First a weight-saliency mask: the gradient of the forget loss w.r.t. every weight, keeping
    the top ``mask_ratio`` share by magnitude (one global threshold). Then random-label
    training (``D_f`` relabelled to random wrong classes, mixed with ``D_r``) where every
    gradient is multiplied by the mask, so the other weights stay exactly as they were. Weight
    decay is folded into the gradient *before* masking (the optimizer has none), so it cannot
    move unmasked weights either; the reference restores them after each step instead.
    Fan et al., ICLR 2024 (OPTML-Group/Unlearn-Saliency: mask ratio 0.5, 10 epochs, SGD lr 0.1,
    momentum 0.9, weight decay 5e-4).
    """

    name = "salun"
    title = "SalUn (saliency unlearning)"
    summary = "Random-label unlearning that only touches the weights that matter most for the forget images."
    citation = ("Fan et al., SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency in Both Image "
                "Classification and Generation, ICLR 2024.")
    config_class = SalUnConfig

    def unlearn(self, model: Classifier, data: UnlearnData, config: SalUnConfig, device: torch.device,
                hooks: RunHooks) -> UnlearnResult:
        hooks.progress(epoch=1, epochs=config.epochs, step=0, steps=1,
                       message="SalUn: weighing every weight's saliency for the forget set")
        mask = saliency_mask(model, data, config, device, config.mask_ratio, hooks.check_cancel)
        params = dict(model.named_parameters())

        def mask_gradients() -> None:
            with torch.no_grad():
                for name, p in params.items():
                    if p.grad is not None:
                        p.grad.add_(p, alpha=config.weight_decay).mul_(mask[name])

        history = random_label_training(model, data, config, device, hooks, grad_hook=mask_gradients,
                                        weight_decay=0.0, where="SalUn random-label training")
        return UnlearnResult(model=model, history=history, diagnostics={
            "mask_fraction": mask_fraction(mask), "masked_weights": int(sum(m.sum() for m in mask.values()))})
