"""Perturbed sign gradient (PSG) boundary unlearning, and Boundary Shrink as its special case.

The outer loop of the bilevel problem in ``docs/method.md``: for every forget batch, find
boundary points ``x*`` with :class:`~unlearn_core.methods.boundary_search.PerturbedSignGradient`
(attacking the frozen original model ``θ0`` by default) and fine-tune the model so that the
*clean* forget images are classified as their nearest wrong class ``ŷ = argmax f_θ0(x*)``,
optionally mixed with a remain-set loss weighted by ``φ``::

    min_θ  E_{x∈D_f} CE(f_θ(x), ŷ(x))  +  φ · E_{(x,y)∈D_r} CE(f_θ(x), y)

Presets: ``psg`` (our tuned defaults), ``boundary_shrink`` (Chen et al., CVPR 2023: one FGSM
step, no noise, no closeness term, lr 1e-5) and ``psg_reference`` (the public reference code's
single noisy step, raw noise scale, lr 1e-5). ``boundary_shrink`` is also registered as its own
method so pickers and the benchmark list it. No setting here was chosen with a retrain's result
on the scenario it is used for: where to stop is estimated per request (``stop_at='auto'``,
:mod:`unlearn_core.stop_target`).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from unlearn_core.data.disk_images import decoded_on_read, pixel_batches
from unlearn_core.distributed import World, world
from unlearn_core.methods.base import (
    STOP_RULES, CommonConfig, LiveMonitor, PassConfig, RunHooks, UnlearnData, UnlearnMethod, UnlearnResult,
    amp_context, check_finite, cycle_batches, load_pixels, make_generator, on_device, option, register,
    set_batchnorm_frozen,
)
from unlearn_core.methods.boundary_search import (
    FAILED_FLIP_POLICIES, LAM_SCHEDULES, NOISE_FAMILIES, NOISE_SCALES, BoundaryResult, PerturbedSignGradient,
)
from unlearn_core.methods.retired_classes import (
    BIAS_SAMPLE, classes_without_kept_images, retire_classes, retirement_bias, whole_classes_only,
)
from unlearn_core.methods.stopping import (
    BN_POLICIES, RECALIBRATION_BATCHES, HoldProbe, StopRule, make_hold_probe, make_stop_rule, normalized_by_kept_images,
)
from unlearn_core.models.architectures import Classifier
from unlearn_core.models.batchnorm import fold_into_convolutions, reestimate_statistics

PSG_CITATION = (
    "Nahass et al., \"Targeted Unlearning Using Perturbed Sign Gradient Methods With Applications On "
    "Medical Images\", TMLR (arXiv 2505.21872)."
)
BOUNDARY_SHRINK_CITATION = (
    "Chen et al., \"Boundary Unlearning: Rapid Forgetting of Deep Networks via Shifting the Decision "
    "Boundary\", CVPR 2023."
)


@dataclass
class PSGConfig(PassConfig):
    """Every knob of PSG unlearning (inner boundary search, then outer fine-tuning).

    The defaults are the ``psg`` preset, chosen on the benchmark's tuning scenarios only (see
    ``docs/method.md``); the reference code's values are in the ``psg_reference`` preset.
    """

    # --- inner search (boundary points) ---
    eps: float = option(0.1, "Largest change per pixel when searching the nearest decision boundary "
                        "(L∞ radius in pixel units; 0.1 ≈ 25 grey levels of 255).", min=0.0, max=1.0)
    step_size: float = option(0.0, "Pixel change per search step η; 0 = automatic (ε for one step as in "
                              "the reference, else ε/4).", min=0.0, max=1.0)
    inner_steps: int = option(2, "Search steps per image (T_in); 1 with step ε is the reference FGSM step.",
                              min=1, max=100)
    gamma: float = option(0.5, "Noise weight γ added to the gradient before its sign (0 = no noise).",
                          min=0.0, max=100.0)
    noise: str = option("normal", "Noise family ξ of the perturbed sign gradient.", choices=NOISE_FAMILIES)
    noise_scale: str = option("relative", "Noise scale: 'relative' = γ times each image's gradient RMS "
                              "(comparable across models), 'raw' = γ in absolute units, 'batch_mean' = raw "
                              "noise against the batch-mean gradient, as the published code (B times stronger).",
                              choices=NOISE_SCALES)
    lam: float = option(0.0, "Closeness weight λ pulling the search back towards the original image "
                        "(0 = off; in units of the raw input gradient).", min=0.0, max=1e6)
    lam_schedule: str = option("constant", "How λ changes over search steps: constant, inverse (λ/t), "
                               "exp (λ·e^(−0.01t)) or linear (λ(1−(t−1)/T)).", choices=LAM_SCHEDULES)
    early_stop_on_flip: bool = option(True, "Stop searching an image once its predicted class flips "
                                      "(keeps the boundary point close to the image).")
    round_to_255: bool = option(False, "Keep searched images on the 8-bit grid (multiples of 1/255).")
    failed_flip: str = option("next_best", "When the search cannot flip an image: 'next_best' uses the "
                              "most likely wrong class, 'skip' leaves the image out, 'true_label' trains it "
                              "towards its own class (the published code).",
                              choices=FAILED_FLIP_POLICIES)
    attack_model: str = option("original", "Search boundaries of the frozen original model (stable "
                               "targets) or of the model being unlearned ('current').",
                               choices=("original", "current"))
    relabel: str = option("once", "Search new targets every pass (fresh noise, reference) or once "
                          "and reuse them (faster).", choices=("every_pass", "once"))
    # --- outer fine-tuning ---
    targets: str = option("hard", "Train towards the nearest wrong class ('hard') or towards the soft "
                          "class probabilities at the boundary point ('soft', KL divergence).",
                          choices=("hard", "soft"))
    temperature: float = option(1.0, "Softmax temperature of soft targets (higher = softer).",
                                min=0.01, max=100.0)
    top_k: int = option(0, "Soft targets keep only the k most likely classes, renormalized (0 = all).",
                        min=0, max=10000)
    phi: float = option(10.0, "Weight φ of the remain-set loss mixed into every step (0 = forget set only, "
                        "as in Boundary Shrink; protects accuracy on everything else).", min=0.0, max=100.0)
    remain_batch_size: int = option(64, "Remain images per step when φ > 0.", min=1, max=4096)
    lr: float = option(2e-3, "SGD learning rate (the reference's 1e-5 barely moves small models).",
                       min=1e-8, max=10.0)
    momentum: float = option(0.8, "SGD momentum (reference 0.9, which cost remain accuracy on a subgroup; "
                             "0.5 forgot only a thin layer that fine-tuning on kept images undid).",
                             min=0.0, max=0.999)
    weight_decay: float = option(0.0, "L2 weight decay during unlearning.", min=0.0, max=0.1)
    epochs: int = option(16, "Passes over the forget set (an upper bound: the stop rule usually ends the run "
                         "sooner).",
                         min=1, max=1000)
    bn_policy: str = option("remain_stats", "BatchNorm during unlearning: 'remain_stats' (batch statistics in "
                            "the forward, running statistics from kept images only, so the forgetting lives in "
                            "the weights and survives recalibration), 'train' (batch statistics, the reference: "
                            "running statistics absorb forget batches) or 'frozen' statistics and no dropout "
                            "(needs a much smaller learning rate).", choices=BN_POLICIES)
    stop_at: str = option("auto", "When to stop: 'auto' = near the forget accuracy a model that never saw these "
                          "images would have, estimated without retraining (see docs/method.md); 'target' = at "
                          "target_forget_acc (inherited from PassConfig, checked before every step here); "
                          "'passes' = run every pass.", choices=STOP_RULES)
    hold_check_steps: int = option(40, "Before an accuracy stop ('auto' or 'target') is accepted, a copy of the model "
                                   "is fine-tuned this many SGD steps on kept images (learning rate hold_check_lr, "
                                   "momentum 0.9); if the forgotten images come back there, unlearning goes on "
                                   "(0 = stop at the first step that reaches the target). Twice the benchmark's "
                                   "20-step relearning check: the copy is read on forget images the run trained on, "
                                   "which hold more firmly than unseen ones. Skipped when the forget set is whole "
                                   "classes only, which the run retires (retire_empty_classes).", min=0, max=1000)
    hold_check_adopt: bool = option(False, "When the hold check fails, carry on unlearning from its fine-tuned copy "
                                    "(the model after ordinary fine-tuning on kept images) instead of from the model "
                                    "before it. On whole classes the forgetting then held better under longer "
                                    "relearning, with fewer passes; on a subgroup one seed in three held worse "
                                    "(docs/method.md), hence off by default.")
    retire_empty_classes: bool = option(True, "When the forget set holds every training image of a class, end the "
                                        "run by clearing that class's output (weights zeroed, bias at the kept "
                                        "images' typical lowest logit), so the model no longer names it and "
                                        "fine-tuning on kept images cannot bring it back, as with a retrain that "
                                        "never saw the class (docs/method.md). A run that stops before its first "
                                        "update is left as it was.")
    hold_check_lr: float = option(5e-3, "Learning rate of that check: ordinary fine-tuning, a tenth of the 0.05 the "
                                  "built-in training recipe uses (not the unlearning lr: a gentle run would get a "
                                  "gentle check).", min=1e-8, max=10.0)


#: The published defaults of the reference code (Boundary Shrink's FGSM step, lr 1e-5).
_REFERENCE = {
    "eps": 0.1, "step_size": 0.0, "inner_steps": 1, "lam": 0.0, "noise_scale": "raw",
    "early_stop_on_flip": False, "round_to_255": True, "failed_flip": "next_best",
    "attack_model": "original", "relabel": "every_pass", "targets": "hard", "phi": 0.0,
    "lr": 1e-5, "momentum": 0.9, "weight_decay": 0.0, "epochs": 10, "bn_policy": "train",
    "target_forget_acc": 0.0, "stop_at": "passes", "batch_size": 64, "retire_empty_classes": False,
}

PRESETS: dict[str, dict[str, Any]] = {
    # Our method with our defaults (= the config defaults), chosen on the tuning scenarios:
    # two noisy sign steps of ε/4 with relative noise (T_in = 1 forgot too little, 5 cost 2.5×
    # the search for the same distance), targets searched once, forget+remain batches (φ = 10)
    # normalized by their kept images, SGD lr 2e-3 with momentum 0.8, at most 16 passes,
    # stopping at the automatic target once the forgetting holds under 40 steps of fine-tuning
    # on kept images (hold_check_steps; 20 until 2026-12-02, see docs/method.md). Momentum 0.5
    # (lr 3e-3) stopped with a thin layer of forgetting that such fine-tuning undid (digits class 3: 0.05 -> 0.43; oculoplastic VPF:
    # never held in 16 passes); 0.9 held but cost the oculoplastic remain accuracy 7-14 points.
    # Why not frozen BN with the reference's SGD: our models are trained with weight decay,
    # so conv weights are small and, without batch statistics to renormalize them, their
    # gradients are ~30× their size; even lr 1e-3 on the forget set's *true* labels took
    # digits remain accuracy to 0, and the stable lr (~1e-5) damaged remain accuracy as much
    # as it forgot.
    "psg": {f.name: f.default for f in dataclasses.fields(PSGConfig) if f.name not in
            {g.name for g in dataclasses.fields(CommonConfig)}},
    # Chen et al. as published: one FGSM step of size ε (0.1, rounded to 1/255), no noise, no
    # closeness term, no remain loss, relabel every pass, BatchNorm in train mode, SGD lr 1e-5
    # with momentum 0.9 for 10 passes. (Larger learning rates without a remain loss wrecked
    # our small models: lr 0.01 left digits remain accuracy at 0.13.)
    "boundary_shrink": {**_REFERENCE, "gamma": 0.0},
    # The PSG reference code as published: the same single step with raw Gaussian noise γ = 0.1
    # against the gradient of the batch-mean loss (so the noise weighs B times more and mostly
    # decides the sign: only ~4 % of the digits 3s flip, which the relative scale fixes), and
    # new labels taken unfiltered (an image whose search failed is trained on its own label).
    # `bench --vs-reference` checks these labels against a naive copy of the published loop.
    "psg_reference": {**_REFERENCE, "gamma": 0.1, "noise_scale": "batch_mean", "failed_flip": "true_label"},
}

#: Images per call when ``relabel='once'`` searches the whole forget set before training.
SEARCH_BATCH = 512
#: Largest first-step cache (input gradients of the whole forget set) kept in memory.
START_CACHE_BYTES = 512 * 2**20


@dataclass
class Targets:
    """New labels for the whole forget set, as tensors indexed by position in ``D_f``.

    Attributes:
        new_labels: ``[n]`` int64 ``ŷ``; flipped: ``[n]`` bool; keep: ``[n]`` bool (False =
        skipped); logits: ``[n, K]`` float32 ``f_θ0(x*)`` (soft targets need them).
    """

    new_labels: torch.Tensor
    flipped: torch.Tensor
    keep: torch.Tensor
    logits: torch.Tensor

    def take(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return (self.new_labels[positions], self.flipped[positions], self.keep[positions],
                self.logits[positions])


class StartCache:
    """First-step logits and input gradients of each forget image, against the frozen θ0.

    Why: with the attack on the unchanged original model, the first search step starts from
    the same point every pass, so its forward and backward give the same result every pass;
    the published code recomputes them each time. Only used when they fit in
    :data:`START_CACHE_BYTES` (else every pass recomputes, as before).
    """

    def __init__(self, count: int, image_shape: tuple[int, ...], device: torch.device) -> None:
        self.grads = torch.empty((count, *image_shape), device=device)
        self.logits: torch.Tensor | None = None
        self.filled = torch.zeros(count, dtype=torch.bool)

    @staticmethod
    def fits(count: int, image_shape: tuple[int, ...]) -> bool:
        return count * math.prod(image_shape) * 4 <= START_CACHE_BYTES

    def get(self, search: PerturbedSignGradient, model: nn.Module, pixels: torch.Tensor, labels: torch.Tensor,
            positions: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The start point of ``positions``: cached, or computed now and kept."""
        where = torch.as_tensor(positions)
        if bool(self.filled[where].all()):
            assert self.logits is not None
            return self.logits[where.to(self.logits.device)], self.grads[where.to(self.grads.device)]
        logits, grad = search.start_point(model, pixels, labels)
        if self.logits is None:
            self.logits = torch.empty((len(self.filled), logits.shape[1]), device=logits.device)
        at = where.to(logits.device)
        self.logits[at], self.grads[at] = logits, grad
        self.filled[where] = True
        return logits, grad


def make_search(config: PSGConfig, device: torch.device) -> PerturbedSignGradient:
    """The inner solver configured from a :class:`PSGConfig`."""
    return PerturbedSignGradient(
        eps=config.eps, step_size=config.step_size, steps=config.inner_steps, gamma=config.gamma,
        noise=config.noise, noise_scale=config.noise_scale, lam=config.lam, lam_schedule=config.lam_schedule,
        early_stop_on_flip=config.early_stop_on_flip, round_to_255=config.round_to_255,
        failed_flip=config.failed_flip, amp=config.amp and device.type == "cuda",
    )


def soft_targets(logits: torch.Tensor, temperature: float, top_k: int) -> torch.Tensor:
    """``softmax(logits / T)``, optionally keeping the top-k classes renormalized.

    **fix**: the reference used raw logits as cross-entropy targets; these are probabilities.
    """
    probs = (logits.float() / temperature).softmax(1)
    if 0 < top_k < probs.shape[1]:
        top = probs.topk(top_k, dim=1)
        probs = torch.zeros_like(probs).scatter(1, top.indices, top.values)
        probs = probs / probs.sum(1, keepdim=True)
    return probs


def forget_loss(logits: torch.Tensor, new_labels: torch.Tensor, target_logits: torch.Tensor,
                config: PSGConfig) -> torch.Tensor:
    """Mean CE towards ``ŷ`` (hard) or KL to the soft boundary probabilities (soft)."""
    if config.targets == "hard":
        return F.cross_entropy(logits.float(), new_labels)
    target = soft_targets(target_logits, config.temperature, config.top_k)
    return F.kl_div(logits.float().log_softmax(1), target, reduction="batchmean")


def frozen_copy(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` whose parameters never require (or receive) gradients,
    its BatchNorms folded into the convolutions before them (the same function, faster
    forwards: :func:`~unlearn_core.models.batchnorm.fold_into_convolutions`)."""
    clone = copy.deepcopy(model).eval()
    fold_into_convolutions(clone)
    for parameter in clone.parameters():
        parameter.requires_grad_(False)
    return clone


def balanced_batches(indices: np.ndarray, batch_size: int, generator: torch.Generator) -> list[np.ndarray]:
    """One shuffled pass in ``ceil(n / batch_size)`` batches of near-equal size (none dropped).

    Why not a small last batch: each forget batch's loss is a mean, so a last batch of a few
    images gets the same weight as a full one and its noisy step visibly moved remain accuracy
    on the digits scenarios (144 = 64 + 64 + 16 → 48 + 48 + 48 is steadier).
    """
    order = indices[torch.randperm(len(indices), generator=generator).numpy()]
    return [part for part in np.array_split(order, -(-len(order) // batch_size)) if len(part)]


@dataclass
class StepOutcome:
    """What one outer step did: its loss (None if no update) and the pre-update forget accuracy."""

    loss: torch.Tensor | None
    forget_acc: float
    stopped: bool
    trained_images: int = 0


@register
class PSG(UnlearnMethod):
    """Perturbed sign gradient boundary unlearning.

    Nahass et al., "Targeted Unlearning Using Perturbed Sign Gradient Methods With Applications
    On Medical Images" (arXiv 2505.21872), a bilevel extension of Boundary Shrink (Chen et al.,
    CVPR 2023). Implements ``docs/method.md`` including its fixes (relative noise scale, correct
    sign of the closeness term, next-best class for failed searches, soft targets as
    probabilities, pixel-space search).
    """

    name = "psg"
    title = "PSG boundary unlearning"
    summary = ("Nudge each forgotten image just across the nearest decision boundary with noisy sign-gradient "
               "steps, then fine-tune the model to predict that neighbouring class.")
    citation = PSG_CITATION
    config_class = PSGConfig
    presets = PRESETS

    #: Bench only: also return every pass's new labels (``diagnostics["new_labels_per_pass"]``,
    #: a ``[passes, n_forget]`` tensor) so ``bench --vs-reference`` can compare them.
    record_labels: bool = False

    def unlearn(self, model: Classifier, data: UnlearnData, config: PSGConfig, device: torch.device,
                hooks: RunHooks) -> UnlearnResult:
        """The outer loop; per-sample bookkeeping is tensors indexed by position in ``D_f``.

        Under torchrun (:mod:`unlearn_core.distributed`) every rank walks the same seeded forget
        batches and takes its interleaved share of each: it searches boundary points for its
        share only and trains on it (with its share of the remain batch) through
        DistributedDataParallel, so gradients are averaged over ranks and the global step is the
        one-process step. Whether to stop is decided on rank 0 (on the whole batch, with its
        BatchNorm statistics, which DDP broadcasts) and handed to all ranks.
        """
        w = world()
        # θ0 is needed to attack it (default) or for soft targets; otherwise skip the copy.
        needs_original = config.attack_model == "original" or config.targets == "soft"
        original = frozen_copy(model) if needs_original else None
        attacked = original if config.attack_model == "original" else model
        search = make_search(config, device)
        batch_order = make_generator(config.seed)
        noise_generator = torch.Generator(device=device)
        noise_generator.manual_seed(config.seed + 7919 * w.rank)  # ranks search different images
        remain_batches = (cycle_batches(data.remain_indices, config.remain_batch_size, make_generator(config.seed + 1))
                          if config.phi > 0 or config.bn_policy == "remain_stats" else None)
        stop_rule = make_stop_rule(config, model, data, device,
                                   lambda indices: load_pixels(data, indices, device, config.channels_last), hooks)
        optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                    weight_decay=config.weight_decay)
        trainer = w.wrap(model)  # the model itself in a one-process run
        forget = data.forget_indices
        count = len(forget)
        steps = -(-count // config.batch_size)
        retiring = (classes_without_kept_images(data.imageset.labels, forget, data.remain_indices)
                    if config.retire_empty_classes else [])
        # Only whole classes, retired at the end: fine-tuning on kept images cannot bring them back,
        # so the hold check would have nothing to check (docs/method.md, "Retiring a class").
        only_whole = whole_classes_only(data.imageset.labels, forget, retiring)
        hold = None if only_whole else make_hold_probe(
            config, stop_rule, data, device, lambda indices: load_pixels(data, indices, device, config.channels_last),
            cycle_batches(data.remain_indices, config.remain_batch_size, make_generator(config.seed + 2)), steps)
        image_shape = tuple(data.imageset.images.shape[1:])
        monitor = LiveMonitor(data, device, hooks.cost, seed=config.seed)
        targets: Targets | None = None
        start_cache = (StartCache(count, image_shape, device)
                       if attacked is original and config.relabel == "every_pass" and StartCache.fits(count, image_shape)
                       else None)
        last_labels = torch.full((count,), -1, dtype=torch.long, device=device)
        labelled_at = torch.full((count,), -1, dtype=torch.long) if w.active else None  # step of the last label
        kept = torch.ones(count, dtype=torch.bool, device=device)
        label_table = torch.full((config.epochs, count), -1, dtype=torch.long) if self.record_labels else None
        history: list[dict] = []
        flip_rates: list[float] = []
        stopped_early = False
        cost = {"searched_images": 0, "search_steps": 0, "trained_images": 0}

        for epoch in range(1, config.epochs + 1):
            if config.relabel == "once" and targets is None:
                targets = self._search_all(search, attacked, original, data, device, config, noise_generator, cost)
            loss_sum = torch.zeros((), device=device)
            loss_count, searched = 0, 0
            flips = torch.zeros((), dtype=torch.long, device=device)
            batches = balanced_batches(np.arange(count), config.batch_size, batch_order)
            decoded = _decoded_in_workers(data, [forget[positions] for positions in batches])
            for step, batch_positions in enumerate(batches, 1):
                hooks.check_cancel()
                batch_pixels, batch_labels = (
                    load_pixels(data, forget[batch_positions], device, config.channels_last) if decoded is None
                    else on_device(data, next(decoded), forget[batch_positions], device, config.channels_last))
                positions, pixels, labels = batch_positions, batch_pixels, batch_labels
                if w.active:  # this rank's share of the batch (the stop rule still reads all of it)
                    offsets = w.shard(np.arange(len(batch_positions)))
                    positions = batch_positions[offsets]
                    shares = torch.as_tensor(offsets, device=device)
                    pixels, labels = batch_pixels[shares], batch_labels[shares]
                    labelled_at[torch.as_tensor(positions)] = (epoch - 1) * steps + step
                where = torch.as_tensor(positions, device=device)
                if targets is not None:
                    new_labels, flipped, keep, target_logits = targets.take(where)
                else:
                    start = (start_cache.get(search, attacked, pixels, labels, positions)
                             if start_cache is not None else None)
                    found = search(attacked, pixels, labels, generator=noise_generator, start=start)
                    new_labels, flipped, keep, target_logits = found.new_labels, found.flipped, found.keep, found.logits
                    target_logits = self._soft_source(found, original, attacked, config, target_logits)
                    cost["searched_images"] += len(positions)
                    cost["search_steps"] += int(found.steps_taken.sum())
                flips += flipped.sum()
                searched += len(positions)
                last_labels[where] = new_labels
                kept[where] = keep
                if label_table is not None:
                    label_table[epoch - 1, torch.as_tensor(positions)] = new_labels.cpu()
                outcome = self._step(model, optimizer, pixels, labels, new_labels, keep, target_logits,
                                     remain_batches, data, device, config, stop_rule, cost["trained_images"] > 0,
                                     hold, (epoch - 1) * steps + step, trainer=trainer,
                                     batch=(batch_pixels, batch_labels))
                cost["trained_images"] += outcome.trained_images
                if outcome.loss is not None:
                    loss_sum += outcome.loss * len(positions)
                    loss_count += len(positions)
                if hooks.listening:
                    metrics = {"loss": float(loss_sum) / max(loss_count, 1), "flip_rate": float(flips) / max(searched, 1)}
                    if not math.isnan(outcome.forget_acc):
                        metrics["batch_forget_acc"] = outcome.forget_acc
                    hooks.progress(epoch=epoch, epochs=config.epochs, step=step, steps=steps,
                                   message=f"PSG unlearning: pass {epoch}/{config.epochs}", metrics=metrics)
                if outcome.stopped:
                    stopped_early = True
                    break
            if w.active:  # the pass's flips over all ranks
                totals = w.sum(torch.tensor([float(flips), float(searched)], dtype=torch.float64))
                flips, searched = int(totals[0]), int(totals[1])
            flip_rates.append(float(flips) / max(searched, 1))
            record = {"epoch": epoch, **monitor.measure(model), "loss": float(loss_sum) / max(loss_count, 1),
                      "flip_rate": flip_rates[-1]}
            history.append(record)
            hooks.progress(epoch=epoch, epochs=config.epochs, step=steps, steps=steps,
                           message=f"PSG unlearning: pass {epoch}/{config.epochs} done",
                           metrics={k: v for k, v in record.items() if k != "epoch"})
            if stopped_early:
                break

        # Statistics of the final weights (a stop has just recalibrated them; no update, no need).
        if config.bn_policy == "remain_stats" and not stopped_early and cost["trained_images"]:
            reestimate_statistics(model, self._remain_pixels(remain_batches, data, device, config))
        model.eval()
        trained = bool(cost["trained_images"])  # a run that stopped before its first update changes nothing
        retire = bool(retiring) and (w.any(trained) if w.active else trained)
        retired = self._retire_classes(model, retiring, data, device, config, w) if retire else {}
        if w.active:
            last_labels, kept = _latest_labels(w, last_labels, kept, labelled_at)
            totals = w.sum(torch.tensor([float(v) for v in cost.values()], dtype=torch.float64)).tolist()
            cost = {key: int(value) for key, value in zip(cost, totals)}  # every rank's share of the work
        seen = last_labels >= 0
        counts = torch.bincount(last_labels[seen & kept], minlength=len(data.imageset.classes)).tolist()
        classes = data.imageset.classes
        diagnostics = {
            "flip_rate_per_pass": flip_rates,
            "flip_rate": flip_rates[-1] if flip_rates else float("nan"),
            "new_label_counts": {classes[k]: int(n) for k, n in enumerate(counts) if n},
            "samples_skipped": int((seen & ~kept).sum()),
            "stopped_early": stopped_early,
            "stop_rule": {**stop_rule.describe(), **(hold.describe() if hold is not None else {}),
                          **({"hold_check": "skipped: only whole classes, retired at the end"}
                             if only_whole else {})},
            **({"stop_target": stop_rule.target.to_dict()} if stop_rule.target is not None else {}),
            "passes": len(history),
            **cost,
            "search": repr(search),
            **retired,
        }
        if label_table is not None:
            diagnostics["new_labels_per_pass"] = label_table[: len(history)]
        return UnlearnResult(model=model, history=history, diagnostics=diagnostics)

    @staticmethod
    def _soft_source(found, original: nn.Module | None, attacked: nn.Module, config: PSGConfig,
                     target_logits: torch.Tensor) -> torch.Tensor:
        """Soft targets come from θ0 (spec), also when the search attacked the current model."""
        if config.targets == "soft" and attacked is not original and original is not None:
            with torch.no_grad():  # not inference_mode: the KL loss saves its target for backward
                return original(found.x_star).float()
        return target_logits

    def _search_all(self, search: PerturbedSignGradient, attacked: nn.Module, original: nn.Module | None,
                    data: UnlearnData, device: torch.device, config: PSGConfig, generator: torch.Generator,
                    cost: dict[str, int]) -> Targets:
        """``relabel='once'``: search the whole forget set up front in batches of :data:`SEARCH_BATCH`.

        ``batch_mean`` noise keeps the training batch size as its ``B`` (what it stands for).

        Under torchrun each rank searches every ``size``-th forget image and the targets are
        gathered back into ``D_f`` order on every rank.
        """
        w = world()
        if w.active:
            return _gathered_targets(w, self._search_all_of(
                np.arange(len(data.forget_indices))[w.rank :: w.size], search, attacked, original, data, device,
                config, generator, cost), len(data.forget_indices), cost)
        return self._search_all_of(np.arange(len(data.forget_indices)), search, attacked, original, data, device,
                                   config, generator, cost)

    def _search_all_of(self, positions: np.ndarray, search: PerturbedSignGradient, attacked: nn.Module,
                       original: nn.Module | None, data: UnlearnData, device: torch.device, config: PSGConfig,
                       generator: torch.Generator, cost: dict[str, int]) -> Targets:
        """The targets of the forget images at ``positions`` (positions in ``D_f``), in that order."""
        forget = data.forget_indices[positions]
        parts = []
        for start in range(0, len(forget), SEARCH_BATCH):
            pixels, labels = load_pixels(data, forget[start : start + SEARCH_BATCH], device, config.channels_last)
            found = search(attacked, pixels, labels, generator=generator, mean_over=config.batch_size)
            found.logits = self._soft_source(found, original, attacked, config, found.logits)
            found.x_star = found.x_star[:0]  # not needed later; do not keep the whole set's images
            parts.append(found)
            cost["searched_images"] += len(labels)
            cost["search_steps"] += int(found.steps_taken.sum())
        if not parts:  # more ranks than forget images: this rank searched none
            empty = torch.zeros(0, dtype=torch.long, device=device)
            return Targets(empty, empty.bool(), empty.bool(), torch.zeros((0, len(data.imageset.classes)), device=device))
        found = BoundaryResult.concat(parts)
        return Targets(found.new_labels, found.flipped, found.keep, found.logits)

    @staticmethod
    def _retire_classes(model: Classifier, classes: list[int], data: UnlearnData, device: torch.device,
                        config: PSGConfig, w: World) -> dict[str, Any]:
        """Clear the output of ``classes``, those the forget set took whole (:mod:`.retired_classes`).

        Returns the diagnostics to record. The bias comes from rank 0 under torchrun, so every
        rank's head ends the same.
        """
        remain = data.remain_indices
        order = torch.randperm(len(remain), generator=make_generator(config.seed + 3))[:BIAS_SAMPLE].numpy()
        sample = np.sort(remain[order])
        bias = w.from_main(lambda: retirement_bias(
            model, load_pixels(data, sample, device, config.channels_last)[0], classes))
        retire_classes(model, classes, bias)
        names = data.imageset.classes
        return {"retired_classes": [names[k] for k in classes], "retired_class_bias": bias}

    @staticmethod
    def _remain_pixels(remain_batches, data: UnlearnData, device: torch.device, config: PSGConfig):
        """:data:`RECALIBRATION_BATCHES` kept batches to re-estimate BatchNorm statistics on.

        Why re-estimate: running statistics trail the weights (an exponential average over the
        last steps); right after the steps that forgot, eval-mode accuracy read with trailing
        statistics differed a lot from what the weights do with statistics of their own (digits
        class 3: 0 % with trailing statistics, 65 % after recalibration).
        """
        for _ in range(RECALIBRATION_BATCHES):
            yield load_pixels(data, next(remain_batches), device, config.channels_last)[0]

    @staticmethod
    def _step(model: Classifier, optimizer: torch.optim.Optimizer, pixels: torch.Tensor, labels: torch.Tensor,
              new_labels: torch.Tensor, keep: torch.Tensor, target_logits: torch.Tensor, remain_batches,
              data: UnlearnData, device: torch.device, config: PSGConfig, stop_rule: StopRule,
              updated: bool, hold: HoldProbe | None = None, step_number: int = 0, *,
              trainer: nn.Module | None = None,
              batch: tuple[torch.Tensor, torch.Tensor] | None = None) -> StepOutcome:
        """One SGD step on the kept forget images (plus a remain batch when φ > 0).

        Forget and remain images share one forward pass, so BatchNorm with batch statistics sees
        a mixed batch rather than forget-only statistics. With ``remain_stats`` that forward
        leaves the running statistics alone, and a no-gradient forward of the remain batch after
        the update moves them (kept images only); with φ = 0 that remain batch is drawn only for it.

        Before updating, ``stop_rule`` looks at the model in eval mode (the model a user gets);
        when it says stop, the run ends without touching the model, BatchNorm statistics
        included (more steps after enough forgetting only cost remain accuracy). With BatchNorm
        in train mode the training logits use batch statistics and can disagree badly with eval
        mode (on the fundus scenario they read 0.7 while eval accuracy was 0.97), hence a
        separate eval-mode look rather than the training forward. A stop is then confirmed by
        ``hold`` (does the forgetting survive fine-tuning on kept images?); until it does, the
        steps go on.

        Under torchrun ``pixels`` is this rank's share of the forget batch and ``batch`` the whole
        batch: rank 0 decides whether to stop on the whole batch and every rank follows; the
        update goes through ``trainer`` (DistributedDataParallel) on each rank's share.
        """
        w = world()
        full_pixels, full_labels = batch if batch is not None else (pixels, labels)

        def decide() -> tuple[bool, float, bool]:
            stop, forget_acc = stop_rule.should_stop(model, full_pixels, full_labels)
            probing = hold is not None and updated
            adopted = False
            if stop and probing and not hold.ready(step_number):
                stop = False  # a probe failed less than a pass ago: train on
            elif stop and config.bn_policy == "remain_stats" and updated:  # the weights, or trailing statistics?
                reestimate_statistics(model, PSG._remain_pixels(remain_batches, data, device, config))
                stop, forget_acc = stop_rule.should_stop(model, full_pixels, full_labels)
            if stop and probing:
                stop = hold.confirm(model, step_number)
                if not stop and config.hold_check_adopt:  # go on from where fine-tuning took the copy
                    hold.carry_on_from_copy(model)
                    adopted = True
            return stop, forget_acc, adopted

        stop, forget_acc, adopted = w.from_main(decide) if w.active else decide()
        if adopted and w.active:  # rank 0 took the copy's weights: every rank must (DDP syncs only gradients)
            model.load_state_dict(w.broadcast(model.state_dict() if w.is_main else None))
        if stop:
            return StepOutcome(loss=None, forget_acc=forget_acc, stopped=True)
        set_batchnorm_frozen(model, config.bn_policy == "frozen")
        inputs = pixels
        if remain_batches is not None:
            remain_pixels, remain_labels = load_pixels(data, w.shard(next(remain_batches)), device,
                                                       config.channels_last)
            inputs = torch.cat([pixels, remain_pixels])
        any_kept = bool(keep.any())
        if not (w.any(any_kept) if w.active else any_kept) and config.phi == 0:
            return StepOutcome(loss=None, forget_acc=forget_acc, stopped=False)
        normalization = (normalized_by_kept_images(model, len(pixels)) if config.bn_policy == "remain_stats"
                         else contextlib.nullcontext())
        with normalization, amp_context(device, config):
            logits = (trainer or model)(inputs)
        forget_logits = logits[: len(pixels)]
        loss = (forget_loss(forget_logits[keep], new_labels[keep], target_logits[keep], config) if any_kept
                else logits.float().sum() * 0.0)  # zero, yet every weight takes part (DDP averages it)
        if config.phi > 0:
            loss = loss + config.phi * F.cross_entropy(logits[len(pixels):].float(), remain_labels)
        check_finite(loss, "PSG unlearning")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return StepOutcome(loss=loss.detach(), forget_acc=forget_acc, stopped=False,
                           trained_images=len(inputs))


def _decoded_in_workers(data: UnlearnData, batches: list[np.ndarray]) -> Iterator[torch.Tensor] | None:
    """The pass's forget batches read by DataLoader workers when the images are files decoded on
    read (an in-place import), else ``None``: in-memory tensors and raw pixel files are indexed
    in the loop, which keeps the hot path of the common case as it is."""
    images = data.imageset.images
    return pixel_batches(images, batches) if decoded_on_read(images) else None


def _gathered_targets(w: World, mine: Targets, count: int, cost: dict[str, int]) -> Targets:
    """Every rank's targets (rank ``r`` searched positions ``r::size`` of ``D_f``), back in ``D_f`` order.

    Each rank counts its own search cost; the run sums them at its end.
    """
    device = mine.new_labels.device
    parts = w.all_gather(tuple(t.cpu() for t in (mine.new_labels, mine.flipped, mine.keep, mine.logits)))
    shaped = [torch.empty((count, *parts[0][k].shape[1:]) if k == 3 else (count,), dtype=parts[0][k].dtype)
              for k in range(4)]
    for rank, part in enumerate(parts):
        for k in range(4):
            shaped[k][rank :: w.size] = part[k]
    return Targets(*(t.to(device) for t in shaped))


def _latest_labels(w: World, last_labels: torch.Tensor, kept: torch.Tensor,
                   labelled_at: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each forget image's last new label and keep flag from whichever rank labelled it last (rank 0 only)."""
    gathered = w.gather((last_labels.cpu(), kept.cpu(), labelled_at))
    if gathered is None:
        return last_labels, kept
    stamps = torch.stack([part[2] for part in gathered])
    latest = stamps.argmax(0)
    labels = torch.stack([part[0] for part in gathered]).gather(0, latest.view(1, -1))[0]
    keeps = torch.stack([part[1] for part in gathered]).gather(0, latest.view(1, -1))[0]
    return labels.to(last_labels.device), keeps.to(kept.device)


def _config_with_defaults(name: str, base: type, overrides: dict[str, Any]) -> type:
    """A config dataclass like ``base`` whose defaults are ``overrides`` (same help and bounds)."""
    hints = typing.get_type_hints(base)
    fields = [(f.name, hints[f.name], dataclasses.field(default=overrides[f.name], metadata=f.metadata))
              for f in dataclasses.fields(base) if f.name in overrides]
    config_class = dataclasses.make_dataclass(name, fields, bases=(base,))
    config_class.__module__ = __name__
    config_class.__doc__ = f"{base.__doc__}\n\nDefaults: {overrides}"
    return config_class


@register
class BoundaryShrink(PSG):
    """Boundary Shrink (Chen et al., "Boundary Unlearning", CVPR 2023).

    PSG with γ = λ = φ = 0, one FGSM step of size ε and BatchNorm in train mode: each forget
    image is relabelled with the class of its nearest adversarial neighbour and the model is
    fine-tuned on those labels. Listed separately so the method picker and the benchmark show it.
    """

    name = "boundary_shrink"
    title = "Boundary Shrink"
    summary = ("Relabel each forgotten image with the class of its nearest adversarial neighbour (one "
               "gradient-sign step) and fine-tune on those labels.")
    citation = BOUNDARY_SHRINK_CITATION
    config_class = _config_with_defaults("BoundaryShrinkConfig", PSGConfig, PRESETS["boundary_shrink"])
    presets = {"boundary_shrink": PRESETS["boundary_shrink"]}
