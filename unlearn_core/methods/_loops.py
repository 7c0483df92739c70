"""The optimization loop the baselines share, and the small pieces they combine.

Why one loop: most baselines are "sweep some batches, minimize some loss with SGD" and differ
only in *which* samples a sweep draws (``D_f``, ``D_r``, both shuffled together, or ``D_r``
with a forget batch riding along) and *what* loss each batch gets. Writing that once keeps
cancellation (every step), the NaN/inf check, mixed precision, progress events and the
per-epoch history identical across methods, so the dashboard can compare them fairly.

A method describes an epoch as a list of :class:`Pass` objects (SCRUB: a max-pass on ``D_f``
then a min-pass on ``D_r``; fine-tuning: one pass on ``D_r``) and hands them to
:func:`train_passes`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from typing import ContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from unlearn_core.data.disk_images import pixel_batches
from unlearn_core.distributed import world
from unlearn_core.errors import UserError
from unlearn_core.methods.base import (
    LiveMonitor, RunHooks, UnlearnData, amp_context, check_finite, cycle_batches, index_batches, load_pixels,
    make_generator, on_device, set_batchnorm_frozen,
)
from unlearn_core.methods.stopping import make_stop_rule
from unlearn_core.models.architectures import Classifier

#: Where a pass draws its batches from.
SOURCES = ("forget", "remain", "both", "remain+forget")


@dataclass
class Batch:
    """One optimization batch on the run's device.

    Attributes:
        pixels: float images ``[n, C, H, W]`` in ``[0, 1]``.
        labels: true class indices ``[n]`` (int64).
        in_forget: bool ``[n]``, True for samples of ``D_f`` (so a loss can treat them apart).
    """

    pixels: torch.Tensor
    labels: torch.Tensor
    in_forget: torch.Tensor

    @property
    def forget_part(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.pixels[self.in_forget], self.labels[self.in_forget]

    @property
    def remain_part(self) -> tuple[torch.Tensor, torch.Tensor]:
        keep = ~self.in_forget
        return self.pixels[keep], self.labels[keep]


LossFn = Callable[[Classifier, Batch], torch.Tensor]


@dataclass(frozen=True)
class Pass:
    """One sweep within an epoch: where its batches come from and the loss each one minimizes.

    ``source`` is one of :data:`SOURCES`:

    * ``forget`` / ``remain``: one shuffled pass over ``D_f`` / ``D_r``;
    * ``both``: one shuffled pass over ``D_f ∪ D_r`` (batches mix the two, ``in_forget`` says which);
    * ``remain+forget``: one pass over ``D_r``, each batch joined by the next batch of an endless
      shuffled ``D_f`` stream (NegGrad+'s ``zip(retain, cycle(forget))``).

    ``batch_size`` (``None``: the config's) sizes the main sweep; ``forget_batch_size`` the
    joined forget batches of ``remain+forget``.
    """

    name: str
    source: str
    loss: LossFn
    batch_size: int | None = None
    forget_batch_size: int | None = None

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"unknown pass source {self.source!r}; use one of {SOURCES}")


def _sizes(data: UnlearnData, p: Pass, default_batch: int) -> tuple[int, int]:
    return p.batch_size or default_batch, p.forget_batch_size or p.batch_size or default_batch


def count_steps(data: UnlearnData, p: Pass, default_batch: int) -> int:
    """Optimization steps one pass takes (for progress fractions)."""
    batch, _ = _sizes(data, p, default_batch)
    n = {"forget": len(data.forget_indices), "remain": len(data.remain_indices),
         "both": len(data.forget_indices) + len(data.remain_indices),
         "remain+forget": len(data.remain_indices)}[p.source]
    return math.ceil(n / batch)


def pass_batches(data: UnlearnData, p: Pass, default_batch: int,
                 generator: torch.Generator) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(indices, in_forget)`` index batches of one pass, shuffled with ``generator``."""
    batch, forget_batch = _sizes(data, p, default_batch)
    forget, remain = data.forget_indices, data.remain_indices
    if p.source == "forget":
        for chunk in index_batches(forget, batch, generator):
            yield chunk, np.ones(len(chunk), dtype=bool)
    elif p.source == "remain":
        for chunk in index_batches(remain, batch, generator):
            yield chunk, np.zeros(len(chunk), dtype=bool)
    elif p.source == "both":
        union = np.concatenate([forget, remain])
        is_forget = np.concatenate([np.ones(len(forget), bool), np.zeros(len(remain), bool)])
        for positions in index_batches(np.arange(len(union)), batch, generator):
            yield union[positions], is_forget[positions]
    else:  # remain+forget
        forget_stream = cycle_batches(forget, forget_batch, generator)
        for chunk in index_batches(remain, batch, generator):
            extra = next(forget_stream)
            yield (np.concatenate([chunk, extra]),
                   np.concatenate([np.zeros(len(chunk), bool), np.ones(len(extra), bool)]))


def train_passes(
    model: Classifier,
    data: UnlearnData,
    config: Any,
    device: torch.device,
    hooks: RunHooks,
    *,
    epochs: int,
    plan: Callable[[int], Sequence[Pass]],
    optimizer: torch.optim.Optimizer,
    where: str,
    train_mode: Callable[[nn.Module], None] | None = None,
    grad_hook: Callable[[], None] | None = None,
    monitor_view: Callable[[Classifier], ContextManager[Classifier]] | None = None,
) -> list[dict]:
    """Run ``epochs`` epochs of ``plan(epoch)`` passes; return one history dict per epoch.

    Args:
        plan: the passes of a (1-based) epoch; called once per epoch, so a loss can depend on
            the epoch (ℓ1-sparse's decaying γ, SCRUB's first ``msteps`` max-passes).
        train_mode: puts the model in the right mode before each pass (default ``model.train()``).
        grad_hook: runs between ``backward`` and ``optimizer.step`` (SalUn's gradient mask).
        monitor_view: the model as the live monitor should score it (a context manager;
            Boundary Expanding scores its pruned head); default the model itself.

    With ``config.stop_at`` other than ``passes`` (:class:`~unlearn_core.methods.base.PassConfig`)
    the run also ends after a pass once its stop rule says the forget set is forgotten enough.

    Every step checks for cancellation first and stops the run on a NaN/inf loss. Forget and
    remain accuracy after each epoch come from :class:`LiveMonitor` (a small sample within
    its cost budget); losses are summed as tensors and read once per epoch.

    Under torchrun every rank draws the same seeded batches and trains on its interleaved
    share of each through DistributedDataParallel (the losses see the wrapper, which answers
    the model's own attributes); rank 0 decides a stop and every rank follows.
    """
    w = world()
    trainer = w.wrap(model) if w.active and any(p.requires_grad for p in model.parameters()) else model
    generator = make_generator(config.seed)
    stop_rule, stop_batches = None, None
    if getattr(config, "stop_at", "passes") != "passes":  # decided on the original, before any update
        stop_rule = make_stop_rule(config, model, data, device,
                                   lambda indices: load_pixels(data, indices, device, config.channels_last),
                                   hooks)
        stop_batches = cycle_batches(data.forget_indices, config.batch_size, make_generator(config.seed + 2))
    train_mode = train_mode or (lambda module: module.train())
    monitor = LiveMonitor(data, device, hooks.cost, seed=config.seed)
    monitor_view = monitor_view or contextlib.nullcontext
    history: list[dict] = []
    for epoch in range(1, epochs + 1):
        passes = list(plan(epoch))
        steps = sum(count_steps(data, p, config.batch_size) for p in passes)
        step = 0
        sums: dict[str, list] = {p.name: [torch.zeros((), device=device), 0] for p in passes}
        for p in passes:
            train_mode(model)
            # The pass's batches up front (same draws, same order), each rank's share of each, and
            # their pixels read ahead (image files on disk are decoded in DataLoader workers).
            batches = list(pass_batches(data, p, config.batch_size, generator))
            if w.active:
                batches = [(indices[share], in_forget[share]) for indices, in_forget in batches
                           for share in (w.shard(np.arange(len(indices))),)]
            reads = pixel_batches(data.imageset.images, [indices for indices, _ in batches])
            for (indices, in_forget), raw in zip(batches, reads):
                hooks.check_cancel()
                pixels, labels = on_device(data, raw, indices, device, config.channels_last)
                batch = Batch(pixels, labels, torch.as_tensor(in_forget, device=device))
                with amp_context(device, config):
                    loss = p.loss(trainer, batch)
                check_finite(loss.detach(), f"{where} (epoch {epoch}, {p.name} pass)")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if grad_hook is not None:
                    grad_hook()
                optimizer.step()
                step += 1
                sums[p.name][0] += loss.detach().float()
                sums[p.name][1] += 1
                if hooks.listening:
                    hooks.progress(epoch=epoch, epochs=epochs, step=step, steps=steps,
                                   metrics={"loss": float(loss.detach())})
        record: dict[str, float] = {"epoch": epoch}
        means = {name: float(s) / max(n, 1) for name, (s, n) in sums.items()}
        record["loss"] = sum(float(s) for s, _ in sums.values()) / max(sum(n for _, n in sums.values()), 1)
        if len(sums) > 1:
            record.update({f"{name}_loss": value for name, value in means.items()})
        record["lr"] = float(optimizer.param_groups[0]["lr"])
        with monitor_view(model) as view:
            record.update(monitor.measure(view))
            stopped = stop_rule is not None and epoch < epochs and w.from_main(lambda: stop_rule.should_stop(
                view, *load_pixels(data, next(stop_batches), device, config.channels_last))[0])
        history.append(record)
        hooks.progress(epoch=epoch, epochs=epochs, step=steps, steps=steps,
                       metrics={k: v for k, v in record.items() if k != "epoch"})
        if stopped:
            record["stopped"] = True
            break
    return history


# --- small shared pieces ----------------------------------------------------------------
def make_sgd(params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0) -> torch.optim.SGD:
    """Plain SGD, the optimizer of every reference baseline here."""
    params = [p for p in params if p.requires_grad]
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def batchnorm_policy(frozen: bool) -> Callable[[nn.Module], None]:
    """A ``train_mode`` for :func:`train_passes`: train mode, BN statistics fixed if ``frozen``."""
    return lambda module: set_batchnorm_frozen(module, frozen)


def cross_entropy(model: Classifier, batch: Batch) -> torch.Tensor:
    """Plain cross entropy on the batch's true labels (fine-tuning)."""
    return F.cross_entropy(model(batch.pixels), batch.labels)


def random_wrong_labels(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """A uniformly random class other than each true one (``y' ≠ y``).

    Drawn fresh for every batch from torch's seeded RNG, as the reference redraws per pass.
    """
    if num_classes < 2:
        raise UserError("Random-label unlearning needs at least two classes.")
    shift = torch.randint(1, num_classes, labels.shape, device=labels.device)
    return (labels + shift) % num_classes


def random_label_loss(model: Classifier, batch: Batch) -> torch.Tensor:
    """Cross entropy where forget samples carry random wrong labels and remain samples true ones.

    Shared by random-label unlearning and SalUn (which adds a weight mask on top).
    """
    targets = batch.labels.clone()
    if bool(batch.in_forget.any()):
        targets[batch.in_forget] = random_wrong_labels(batch.labels[batch.in_forget], model.spec.num_classes)
    return F.cross_entropy(model(batch.pixels), targets)


# --- blocks (CF-k, EU-k) ----------------------------------------------------------------
def last_blocks(model: Classifier, k: int) -> list[str]:
    """The last ``k`` blocks of ``model.blocks()`` that hold parameters, input to output.

    Parameter-free blocks (pooling) are skipped so ``k`` counts layers that can learn; the head
    counts as one block (Goel et al. count the classifier among the last k layers).
    """
    with_params = [name for name in model.blocks() if any(True for _ in model.get_submodule(name).parameters())]
    if not 1 <= k <= len(with_params):
        raise UserError(f"k={k} must be between 1 and {len(with_params)}: this {model.spec.arch} has "
                        f"{len(with_params)} trainable blocks ({', '.join(with_params)}).")
    return with_params[-k:]


def freeze_except(model: Classifier, trainable: Sequence[str]) -> list[nn.Parameter]:
    """Turn off gradients outside the ``trainable`` blocks; return the parameters left trainable."""
    model.requires_grad_(False)
    for name in trainable:
        model.get_submodule(name).requires_grad_(True)
    return [p for p in model.parameters() if p.requires_grad]


def partial_train_mode(trainable: Sequence[str]) -> Callable[[nn.Module], None]:
    """Train mode for the ``trainable`` blocks only; frozen blocks stay in eval mode.

    Why: a frozen block in train mode would still update its BatchNorm running statistics,
    so it would not really be frozen (the reference code has that leak).
    """
    def apply(model: nn.Module) -> None:
        model.eval()
        for name in trainable:
            model.get_submodule(name).train()
    return apply


def reinitialize(module: nn.Module) -> int:
    """Reset every submodule that has ``reset_parameters`` (fresh random init, BN stats cleared).

    Returns how many submodules were reset (0 means the block had nothing to reset).
    """
    count = 0
    for sub in module.modules():
        reset = getattr(sub, "reset_parameters", None)
        if callable(reset):
            reset()
            count += 1
    return count
