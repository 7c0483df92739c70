"""When a boundary-unlearning run has forgotten enough, and where its BatchNorm statistics come from.

Two questions every pass-based run has to answer without a retrained model at hand:

* **When to stop.** :func:`make_stop_rule` turns ``stop_at`` into a :class:`StopRule`:
  ``passes`` never stops early; ``target`` stops at a fixed forget-batch accuracy; ``auto``
  estimates, with :mod:`unlearn_core.stop_target`, what a model that never saw ``D_f`` would
  do on it. When that model would still recognize ``D_f`` (a random share, a subgroup that
  looks like the rest of its class) the visible accuracy must not move, and the rule switches
  to the membership view: stop once the forget images' losses look like those of unseen
  images of the same classes, which is what a membership attacker compares.
* **Whether the forgetting holds.** Stopping at the first step that reaches the target leaves
  the model just across the boundary: a few ordinary fine-tuning steps on kept images moved
  it back (digits class 3: forget test accuracy 0.05 → 0.43 after 20 such steps, where the
  retrained model stays at 0). :class:`HoldProbe` confirms an accuracy stop on a throw-away
  copy fine-tuned on kept images; if the forgetting does not hold there, the run goes on.
* **Where the forgetting is stored.** With BatchNorm in train mode the running statistics
  absorb the forget-heavy batches; recalibrating them on the kept images then brings much of
  the forgotten accuracy back (composition and ordinary fine-tuning do exactly that). The
  ``remain_stats`` policy normalizes each training batch with the statistics of its kept
  images (:func:`normalized_by_kept_images`), so the weights learn to forget under the
  statistics the evaluated model uses, and a stop is confirmed after recalibrating them on
  kept images (:func:`unlearn_core.models.batchnorm.reestimate_statistics`): what the stop rule
  reads survives recalibration.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from unlearn_core.distributed import world
from unlearn_core.methods.boundary_search import eval_mode
from unlearn_core.models.batchnorm import batchnorms
from unlearn_core.stop_target import StopTarget
from unlearn_core.stop_target_cache import estimate_or_reuse
from unlearn_core.training import fine_tuned_copy

BN_POLICIES = ("remain_stats", "train", "frozen")
#: Images per side of the membership check's fixed samples (forget, unseen).
MEMBERSHIP_SAMPLE = 128


def _normalize_with_reference(layer: nn.modules.batchnorm._BatchNorm, inputs: torch.Tensor,
                              reference_from: int) -> torch.Tensor:
    """BatchNorm of the whole batch with the statistics of ``inputs[reference_from:]`` (kept images).

    The statistics stay in the autograd graph, as in ordinary batch normalization; the running
    statistics move towards them as PyTorch's own update would (unbiased variance).
    """
    reference = inputs[reference_from:].float()
    dims = [0, *range(2, inputs.dim())]
    mean = reference.mean(dims)
    var = reference.var(dims, unbiased=False)
    if layer.track_running_stats and layer.running_mean is not None:
        with torch.no_grad():
            count = reference.numel() / reference.shape[1]
            momentum = 0.1 if layer.momentum is None else layer.momentum
            layer.running_mean.mul_(1 - momentum).add_(mean.detach(), alpha=momentum)
            layer.running_var.mul_(1 - momentum).add_(var.detach() * count / max(count - 1, 1), alpha=momentum)
    shape = (1, -1) + (1,) * (inputs.dim() - 2)
    normalized = (inputs.float() - mean.view(shape)) / torch.sqrt(var.view(shape) + layer.eps)
    if layer.affine:
        normalized = normalized * layer.weight.view(shape) + layer.bias.view(shape)
    return normalized.to(inputs.dtype)


@contextlib.contextmanager
def normalized_by_kept_images(model: nn.Module, reference_from: int) -> Iterator[None]:
    """Every BatchNorm normalizes the batch with the statistics of its rows ``reference_from:``.

    Why: at evaluation the model normalizes with statistics of the kept images, so a training
    forward normalized by a batch that is half forget images teaches weights that only forget
    under that mix; recalibrating the statistics on kept images then undid most of it (digits
    class 3: 0 % -> 65 %). Normalizing by the kept part of each batch trains the model that is
    evaluated, and lets only kept images move the running statistics.
    """
    layers = batchnorms(model)
    for layer in layers:
        layer.forward = (lambda inputs, layer=layer: _normalize_with_reference(layer, inputs, reference_from))
    try:
        yield
    finally:
        for layer in layers:
            del layer.forward


#: Kept-image batches a recalibration averages over (8 × 64 = 512 images by default).
RECALIBRATION_BATCHES = 8


class StopRule:
    """Asked before each outer step, with the fresh forget batch about to be trained on."""

    target: StopTarget | None = None

    def should_stop(self, model: nn.Module, pixels: torch.Tensor, labels: torch.Tensor) -> tuple[bool, float]:
        """``(stop, forget-batch accuracy or nan)``; ``model`` is left in the mode it came in."""
        return False, float("nan")

    def describe(self) -> dict:
        return {"rule": "passes"}


@dataclass
class AccuracyStop(StopRule):
    """Stop once the eval-mode accuracy on a fresh forget batch is at or below ``value``."""

    value: float
    target: StopTarget | None = None

    def should_stop(self, model, pixels, labels):
        with torch.inference_mode(), eval_mode(model):
            accuracy = float((model(pixels).argmax(1) == labels).float().mean())
        return accuracy <= self.value, accuracy

    def describe(self) -> dict:
        return {"rule": "accuracy", "value": self.value}


class MembershipStop(StopRule):
    """Stop once forget images look like unseen images of the same classes (median loss, accuracy).

    Fixed seeded samples of ``D_f`` and of unseen images ``U`` (``T_f`` when it has enough
    images, else the test images of ``D_f``'s classes) are scored with the *current* model
    before every step; the run stops when the forget sample's median loss reaches the unseen
    sample's, or its accuracy falls below theirs. Medians, because a few misclassified unseen
    images dominate a mean loss.
    """

    def __init__(self, target: StopTarget, forget_pixels: torch.Tensor, forget_labels: torch.Tensor,
                 unseen_pixels: torch.Tensor, unseen_labels: torch.Tensor) -> None:
        self.target = target
        self.pixels = torch.cat([forget_pixels, unseen_pixels])
        self.labels = torch.cat([forget_labels, unseen_labels])
        self.split = len(forget_pixels)
        self.last: dict[str, float] = {}

    def should_stop(self, model, pixels, labels):
        with torch.inference_mode(), eval_mode(model):
            logits = model(self.pixels).float()
        losses = F.cross_entropy(logits, self.labels, reduction="none")
        hits = (logits.argmax(1) == self.labels).float()
        forget_loss, unseen_loss = losses[: self.split].median(), losses[self.split :].median()
        forget_acc, unseen_acc = hits[: self.split].mean(), hits[self.split :].mean()
        self.last = {"forget_median_loss": float(forget_loss), "unseen_median_loss": float(unseen_loss),
                     "forget_acc": float(forget_acc), "unseen_acc": float(unseen_acc)}
        return bool(forget_loss >= unseen_loss or forget_acc < unseen_acc), float(forget_acc)

    def describe(self) -> dict:
        return {"rule": "membership", **self.last}


def unseen_indices(data, min_count: int = 32) -> np.ndarray:
    """Unseen images like ``D_f``: ``T_f`` if it has ``min_count``, else test images of ``D_f``'s classes."""
    split = data.split
    if len(split.forget_test) >= min_count:
        return split.forget_test
    labels = data.imageset.labels.numpy()
    classes = np.unique(labels[split.forget_train])
    test = np.concatenate([split.forget_test, split.remain_test])
    return np.sort(test[np.isin(labels[test], classes)])


def make_stop_rule(config, model: nn.Module, data, device: torch.device, load_pixels, hooks=None) -> StopRule:
    """The :class:`StopRule` a config asks for (``stop_at``, ``target_forget_acc``, ``seed``).

    ``model`` must still be the original (the estimate is about it); ``load_pixels(indices)``
    returns ``(pixels, labels)`` on ``device``. ``hooks`` (the method's
    :class:`~unlearn_core.methods.base.RunHooks`) announce the estimate as a stage of its own,
    so the run's one progress bar names it instead of sitting still.
    """
    if config.stop_at == "passes":
        return StopRule()
    if config.stop_at == "target":
        return AccuracyStop(config.target_forget_acc)
    def announce() -> None:  # only when a new estimate is made: a kept one costs no time
        if hooks is not None:
            hooks.announce("stop_target", "training small proxy models on the kept images to estimate where to stop")

    # Under torchrun rank 0 estimates (or reuses its workspace's estimate) and hands it to all ranks.
    target = world().from_main(lambda: estimate_or_reuse(model, data, device, seed=config.seed,
                                                         cache=data.stop_targets, before_new=announce))
    if not target.keep_case:
        return AccuracyStop(target.value, target)
    rng = np.random.default_rng(config.seed)
    unseen = unseen_indices(data)
    forget = rng.permutation(data.split.forget_train)[:MEMBERSHIP_SAMPLE]
    unseen = rng.permutation(unseen)[:MEMBERSHIP_SAMPLE]
    if len(unseen) == 0:  # no test image of these classes: only the accuracy view is left
        return AccuracyStop(target.value, target)
    return MembershipStop(target, *load_pixels(np.sort(forget)), *load_pixels(np.sort(unseen)))


#: How far above the target the probe's forget accuracy may end and still count as holding:
#: one image of the 128-image sample. Why so strict: the probe reads forget images the run
#: trained on, which hold more firmly than unseen images matching the same criteria. With
#: 0.02 (two images) digits_class seed 1 passed at 0.02 and the benchmark's relearning check
#: on the test images still flagged 0.054 (chosen on the tuning scenarios, docs/method.md).
HOLD_TOLERANCE = 0.01


class HoldProbe:
    """Confirms an accuracy stop only if the forgetting survives ordinary fine-tuning on kept images.

    Why: a stop rule alone ends the run the moment the forget batch crosses the target, with
    the forget images just across the boundary; the gradient of the kept images' loss there
    points back the way the unlearning came, so a few fine-tuning steps on ``D_r`` (routine
    handling, and an attack) bring ``D_f`` back, while a model that never saw it stays put.
    The probe fine-tunes a *copy* for ``steps`` SGD steps on kept batches (its own seeded
    stream, so the run's batches are unchanged) and reads a fixed ``D_f`` sample in eval
    mode: the stop holds when that accuracy is at most ``value + HOLD_TOLERANCE``. After a
    failed probe the run continues, and the next probe waits ``wait_steps`` steps (one pass),
    doubling after every failed probe: a probe of 40 steps costs about three passes of a
    mid-sized forget set, and probing every pass doubled the oculoplastic run's work for the
    same result. A failed probe keeps its fine-tuned copy (``relearned``), which PSG can carry
    on from (``hold_check_adopt``, off by default: on the tuning part it held better on whole
    classes and worse on one subgroup seed, docs/method.md).
    """

    def __init__(self, value: float, forget_pixels: torch.Tensor, forget_labels: torch.Tensor,
                 remain_batch: Callable[[], tuple[torch.Tensor, torch.Tensor]], steps: int, lr: float,
                 wait_steps: int, momentum: float = 0.9, keep_copy: bool = True) -> None:
        self.value = value
        self.keep_copy = keep_copy  # keep a failed probe's copy (only when the run may carry on from it)
        self.forget_pixels, self.forget_labels = forget_pixels, forget_labels
        self.remain_batch = remain_batch
        self.steps, self.lr, self.momentum, self.wait_steps = steps, lr, momentum, wait_steps
        self.next_step = 0
        self.probes: list[float] = []
        #: The fine-tuned copy of the last failed probe (None after a probe that held, or
        #: when ``keep_copy`` is off).
        self.relearned: nn.Module | None = None
        #: How many failed probes' copies the run carried on from (``hold_check_adopt``).
        self.adopted = 0

    def ready(self, step: int) -> bool:
        """Whether outer step ``step`` may probe (a failed probe waits a pass)."""
        return step >= self.next_step

    def confirm(self, model: nn.Module, step: int) -> bool:
        """Whether a stop the rule asked for at outer step ``step`` holds (``model`` is not changed)."""
        if not self.ready(step):
            return False
        probe = fine_tuned_copy(model, (self.remain_batch() for _ in range(self.steps)), self.lr, self.momentum)
        with torch.inference_mode():
            accuracy = float((probe(self.forget_pixels).argmax(1) == self.forget_labels).float().mean())
        self.probes.append(accuracy)
        self.relearned = None
        if accuracy <= self.value + HOLD_TOLERANCE:
            return True
        self.relearned = probe if self.keep_copy else None
        self.next_step = step + self.wait_steps * 2 ** (len(self.probes) - 1)
        return False

    def carry_on_from_copy(self, model: nn.Module) -> None:
        """Give ``model`` the last failed probe's fine-tuned weights (``hold_check_adopt``), and count it."""
        if self.relearned is None:
            raise RuntimeError("no failed probe's copy to carry on from (is keep_copy on?)")
        model.load_state_dict(self.relearned.state_dict())
        self.relearned = None  # its weights live in the model now
        self.adopted += 1

    def describe(self) -> dict:
        return {"hold_probe_steps": self.steps, "hold_probe_forget_acc": self.probes,
                "hold_probe_adopted": self.adopted}


def make_hold_probe(config, rule: StopRule, data, device: torch.device, load_pixels, remain_batches: Iterator,
                    wait_steps: int) -> HoldProbe | None:
    """A :class:`HoldProbe` for accuracy stops (``auto`` outside the keep case, ``target``), else None.

    Membership stops need none: there the model keeps recognizing ``D_f`` like a retrained one.
    """
    if not isinstance(rule, AccuracyStop) or config.hold_check_steps <= 0:
        return None
    rng = np.random.default_rng(config.seed + 3)
    forget = np.sort(rng.permutation(data.split.forget_train)[:MEMBERSHIP_SAMPLE])
    return HoldProbe(rule.value, *load_pixels(forget), lambda: load_pixels(next(remain_batches)),
                     config.hold_check_steps, config.hold_check_lr, wait_steps,
                     keep_copy=config.hold_check_adopt)
