"""Train the original model and the retrain reference (same recipe, remain set only).

The recipe follows the reference code (SGD, momentum 0.9, weight decay, cross entropy) with a
cosine learning-rate schedule so short CPU runs converge. The split indices are passed in,
never re-shuffled between methods (a fix to the reference, which reshuffled).
"""

from __future__ import annotations

import copy
import math
import numbers
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from unlearn_core.data.disk_images import pixel_batches
from unlearn_core.data.imageset import ImageSet
from unlearn_core.device import autocast, resolve_device
from unlearn_core.distributed import SINGLE, world
from unlearn_core.errors import UserError
from unlearn_core.models.architectures import Classifier, build_model, spec_for
from unlearn_core.models.inference import predict_logits, to_pixels
from unlearn_core.progress import Cancelled, ProgressCallback, ProgressEvent, StopCheck


#: Most epochs a training may ask for (a typo like 1000000000 would otherwise never end).
MAX_EPOCHS = 1000


@dataclass
class TrainConfig:
    """Training recipe for the original model and the retrain reference.

    Attributes:
        arch: architecture name (``small_cnn`` is the fast CPU default).
        epochs: passes over the training indices.
        batch_size: images per SGD step.
        lr: peak learning rate of SGD (cosine-decayed to zero).
        momentum: SGD momentum (0.9 as in the reference code).
        weight_decay: L2 penalty (the reference uses 1e-4..5e-4).
        seed: seeds initialization and batch order, so a run can be reproduced.
        device: ``auto``, ``cpu``, ``cuda`` or ``mps``.
        amp: bf16 mixed precision on CUDA (ignored elsewhere).
        channels_last: NHWC memory layout on CUDA (ignored elsewhere).
    """

    arch: str = "small_cnn"
    epochs: int = 8
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    channels_last: bool = True

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> "TrainConfig":
        """Refuse settings no training can use, naming the setting and its allowed range.

        Why before training: ``lr=nan`` otherwise surfaces as "training diverged, lower the
        learning rate", and ``epochs=10**9`` as a run that never ends.
        """
        from unlearn_core.models.architectures import ARCHITECTURES

        if self.arch not in ARCHITECTURES:
            raise UserError(f"Unknown architecture {self.arch!r}; choose one of {', '.join(ARCHITECTURES)}.")
        for name, low, high in (("epochs", 1, MAX_EPOCHS), ("batch_size", 1, 4096), ("seed", 0, 2**63 - 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not low <= value <= high:
                raise UserError(f"{name} must be a whole number from {low} to {high:,}, got {value!r}.")
        for name, low, high, low_open in (("lr", 0.0, 10.0, True), ("momentum", 0.0, 0.999, False),
                                          ("weight_decay", 0.0, 1.0, False)):
            value = getattr(self, name)
            number = float(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else None
            if number is None or not math.isfinite(number) or number > high or number < low or (
                    low_open and number == low):
                bounds = f"{'above' if low_open else 'from'} {low:g} {'and at most' if low_open else 'to'} {high:g}"
                raise UserError(f"{name} must be a finite number {bounds}, got {value!r}.")
        return self

    def recipe_key(self) -> str:
        """What makes two trainings equivalent (device and speed switches excluded)."""
        d = self.to_dict()
        for key in ("device", "amp", "channels_last"):
            d.pop(key)
        return ",".join(f"{k}={d[k]}" for k in sorted(d))


@dataclass
class TrainResult:
    """A trained model; ``images_trained`` = images through forward and backward (cost beside time)."""

    model: Classifier
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    test_acc: float = float("nan")
    images_trained: int = 0


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch's global RNG (weight init) and return a generator for batch order."""
    torch.manual_seed(seed)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def prepare_model(model: Classifier, device: torch.device, channels_last: bool) -> Classifier:
    model.to(device)
    if channels_last and device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    return model


def iterate_batches(indices: np.ndarray, batch_size: int, generator: torch.Generator):
    """Shuffled index batches of one epoch (the last smaller batch is kept: no sample dropped)."""
    order = torch.randperm(len(indices), generator=generator).numpy()
    for start in range(0, len(order), batch_size):
        yield indices[order[start : start + batch_size]]


def train_model(
    data: ImageSet,
    train_indices: np.ndarray,
    config: TrainConfig,
    *,
    on_progress: ProgressCallback | None = None,
    should_stop: StopCheck | None = None,
    phase: str = "train",
) -> TrainResult:
    """Train a fresh model on ``data.images[train_indices]``; report test accuracy at the end.

    Raises :class:`Cancelled` when ``should_stop()`` becomes true (checked every step).

    Under torchrun (:mod:`unlearn_core.distributed`) the model trains under
    DistributedDataParallel: every rank draws the same seeded shuffle, so the global batches
    are the one-process run's, and each rank takes its interleaved share of each batch
    (``DistributedSampler``'s rule applied per batch); gradients are averaged over ranks, so a
    step sees the same images as one process would, and the step count and learning-rate
    schedule are unchanged. A cancel on any rank stops all of them at the same step.
    """
    train_indices = np.asarray(train_indices, dtype=np.int64)
    if len(train_indices) == 0:
        raise UserError("There is nothing to train on: the training selection is empty.")
    config.validate()
    w = world()
    device = resolve_device(w.device_name(config.device))
    generator = seed_everything(config.seed)
    model = prepare_model(build_model(spec_for(data, config.arch)), device, config.channels_last)
    trainer = w.wrap(model)  # the model itself in a one-process run
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    steps_per_epoch = math.ceil(len(train_indices) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=total_steps, pct_start=0.15
    )
    labels = data.labels
    loss_fn = nn.CrossEntropyLoss()
    history: list[dict] = []
    started = time.perf_counter()
    step = 0
    for epoch in range(config.epochs):
        model.train()
        running_loss, seen = 0.0, 0
        # This rank's share of each shuffled batch; pixels on disk are decoded in DataLoader workers.
        batches = [w.shard(b) for b in iterate_batches(train_indices, config.batch_size, generator)]
        for step_in_epoch, (batch, raw) in enumerate(zip(batches, pixel_batches(data.images, batches)), 1):
            stop = should_stop is not None and should_stop()
            if w.active and w.any(stop):
                stop = True
            if stop:
                raise Cancelled(f"{phase} cancelled at epoch {epoch + 1}")
            pixels = to_pixels(raw, device)
            if config.channels_last and device.type == "cuda":
                pixels = pixels.contiguous(memory_format=torch.channels_last)
            with autocast(device, config.amp):
                loss = loss_fn(trainer(pixels), labels[batch].to(device))
            if not torch.isfinite(loss):
                raise UserError(f"Training diverged (loss {loss.item()}) at epoch {epoch + 1}; lower the learning rate.")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            running_loss += float(loss.detach()) * len(batch)
            seen += len(batch)
            if on_progress is not None:
                elapsed = time.perf_counter() - started
                on_progress(ProgressEvent(
                    phase=phase, epoch=epoch + 1, epochs=config.epochs, step=step_in_epoch, steps=steps_per_epoch,
                    fraction=step / total_steps, eta_seconds=elapsed / step * (total_steps - step),
                    message=f"{phase}: epoch {epoch + 1}/{config.epochs}",
                    metrics={"loss": running_loss / seen},
                ))
        history.append({"epoch": epoch + 1, "loss": running_loss / max(seen, 1)})
    seconds = time.perf_counter() - started
    model.eval()
    test_acc = accuracy_on(model, data, data.test_indices, sharded=True)
    return TrainResult(model=model, history=history, seconds=seconds, test_acc=test_acc,
                       images_trained=config.epochs * len(train_indices))


def fine_tuned_copy(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], lr: float,
                    momentum: float = 0.9, weight_decay: float = 0.0) -> nn.Module:
    """A copy of ``model`` after one plain SGD cross-entropy step per ``(pixels, labels)`` batch, in eval mode.

    Why one helper: "fine-tune briefly on kept images" is both PSG's check that a stop holds
    (:class:`unlearn_core.methods.stopping.HoldProbe`) and the benchmark's relearning check
    (:func:`unlearn_core.forgetting_checks.relearn`); they differ only in their batches and
    rates. All layers trainable, BatchNorm and dropout in train mode; ``model`` is not changed.
    """
    tuned = copy.deepcopy(model).train()
    optimizer = torch.optim.SGD(tuned.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    for pixels, labels in batches:
        loss = nn.functional.cross_entropy(tuned(pixels).float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return tuned.eval()


def accuracy_on(model: Classifier, data: ImageSet, indices: np.ndarray, sharded: bool = False) -> float:
    """Eval-mode accuracy on ``indices`` (nan when empty).

    ``sharded`` (every rank of a torchrun run calls it): each rank scores every ``size``-th
    image and the hit counts are summed, so every rank returns the accuracy on all of ``indices``.
    """
    indices = np.asarray(indices, dtype=np.int64)
    if len(indices) == 0:
        return float("nan")
    w = world() if sharded else SINGLE
    mine = indices[w.rank :: w.size] if w.active else indices
    logits = predict_logits(model, data.images, mine)
    hits = float((logits.argmax(1) == data.labels.numpy()[mine]).sum())
    if w.active:
        hits = float(w.sum(torch.tensor([hits], dtype=torch.float64)).item())
    return hits / len(indices)
