"""Composition: build new models out of finished runs, and score each candidate.

Why: unlearning methods trade forgetting against remain accuracy, and different runs land on
different sides of that trade. Reusing parts of runs is nearly free compared with another run:

    * head swap (the reference): body of run A (good remain accuracy) + head of run B (good
      forgetting);
    * block-wise choice: each top-level block (``model.blocks()``) from any of several runs;
    * interpolation: ``θ = (1 − α) θ_A + α θ_B``, swept over α to trace a trade-off curve;
    * task-vector sum: ``θ = θ_0 + s Σ_i (θ_i − θ_0)``, to combine runs that forgot different
      groups of the same original model.

Mixing weights breaks the agreement between weights and BatchNorm running statistics, so
candidates can be recalibrated on ``D_r`` (:func:`recalibrate_batchnorm`) and briefly
fine-tuned on it (:func:`repair`). Every function deep-copies: inputs are never modified.

This is a pure library: it takes models and returns models (or scored candidates). Run lookup,
saving and the command line live elsewhere.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
from torch import nn

from unlearn_core.data.criteria import ForgetSplit
from unlearn_core.data.imageset import ImageSet
from unlearn_core.errors import UserError
from unlearn_core.evaluate import evaluate_model
from unlearn_core.models.architectures import Classifier
from unlearn_core.models.batchnorm import batchnorms, reestimate_statistics
from unlearn_core.models.inference import predict_logits, to_pixels
from unlearn_core.progress import Cancelled, ProgressCallback, ProgressEvent, StopCheck
from unlearn_core.runs.requests import STRATEGIES, STRATEGY_RUNS
from unlearn_core.training import accuracy_on, iterate_batches


# --- compatibility -------------------------------------------------------------------------
def check_compatible(
    models: Sequence[Classifier],
    base_hashes: Sequence[str | None] | None = None,
    names: Sequence[str] | None = None,
) -> None:
    """Raise :class:`UserError` unless all models can be mixed weight by weight.

    Models must share the architecture spec (same layers, classes, input shape and the data
    normalization they were trained with) and, when ``base_hashes`` is given, come from the
    same original model: weights of unrelated trainings live in unrelated coordinates, so
    averaging or swapping them gives noise. ``names`` (run ids) make the message specific.
    """
    if not models:
        raise UserError("Pick at least one run to compose.")
    names = list(names) if names is not None else [f"model {i + 1}" for i in range(len(models))]
    first, first_name = models[0], names[0]
    for model, name in zip(models[1:], names[1:]):
        differences = _spec_differences(first, model)
        if differences:
            raise UserError(
                f"{name} cannot be combined with {first_name}: their {'; '.join(differences)} differ. "
                "Compose only runs of the same architecture trained on the same data."
            )
    if base_hashes is not None:
        _check_same_base(list(base_hashes), names)


def _spec_differences(a: Classifier, b: Classifier) -> list[str]:
    """Human-readable list of what differs between two models' specs and layer shapes."""
    spec_a, spec_b = a.spec.to_dict(), b.spec.to_dict()
    differences = [
        f"{'normalization (' + key + ')' if key in ('mean', 'std') else key} "
        f"({spec_a[key]!r} vs {spec_b[key]!r})"
        for key in spec_a
        if spec_a[key] != spec_b[key]
    ]
    if differences:
        return differences
    state_a, state_b = a.state_dict(), b.state_dict()
    if set(state_a) != set(state_b):
        only = sorted(set(state_a) ^ set(state_b))
        return [f"layers ({', '.join(only[:4])}{'...' if len(only) > 4 else ''})"]
    shapes = [k for k in state_a if state_a[k].shape != state_b[k].shape]
    return [f"layer shapes ({', '.join(shapes[:4])})"] if shapes else []


def _check_same_base(base_hashes: list[str | None], names: list[str]) -> None:
    if len(base_hashes) != len(names):
        raise UserError(f"Got {len(base_hashes)} original-model hashes for {len(names)} runs.")
    known = {(h, n) for h, n in zip(base_hashes, names) if h}
    if len({h for h, _ in known}) > 1:
        listing = ", ".join(f"{n}: {h}" for h, n in sorted(known, key=lambda item: item[1]))
        raise UserError(
            "These runs start from different original models, so their weights cannot be mixed "
            f"({listing}). Compose only runs unlearned from the same original model."
        )


# --- building blocks -----------------------------------------------------------------------
def blockwise(models: Sequence[Classifier], choice: Mapping[str, int]) -> Classifier:
    """A new model whose top-level block ``name`` comes from ``models[choice[name]]``.

    Blocks not named in ``choice`` come from ``models[0]``, as do the normalization buffers.
    BatchNorm statistics travel with their block.
    """
    check_compatible(models)
    blocks = models[0].blocks()
    unknown = sorted(set(choice) - set(blocks))
    if unknown:
        raise UserError(f"Unknown block(s) {', '.join(unknown)}; the blocks are {', '.join(blocks)}.")
    for block, source in choice.items():
        if not 0 <= int(source) < len(models):
            raise UserError(f"Block {block} should come from model {source}, but there are only "
                            f"{len(models)} models (0 to {len(models) - 1}).")
    states = [m.state_dict() for m in models]
    merged = {key: states[_source_of(key, choice)][key] for key in states[0]}
    return _model_with_state(models[0], merged)


def _source_of(key: str, choice: Mapping[str, int]) -> int:
    for block, source in choice.items():
        if key.startswith(block + "."):
            return int(source)
    return 0


def head_swap(body_from: Classifier, head_from: Classifier) -> Classifier:
    """Body (every block before the head, BatchNorm statistics included) of one run, head of another."""
    return blockwise([body_from, head_from], {"head": 1})


def interpolate(a: Classifier, b: Classifier, alpha: float) -> Classifier:
    """``θ = (1 − α) θ_A + α θ_B`` on weights and BatchNorm running statistics.

    α = 0 gives A and α = 1 gives B exactly; α outside [0, 1] extrapolates. Integer buffers
    (BatchNorm's ``num_batches_tracked`` counters) are not averaged: they come from the nearer
    end (A for α ≤ 0.5), which keeps A's for the usual sweep and both ends exact.
    """
    alpha = _finite(alpha, "alpha")
    return linear_combination([a, b], [1.0 - alpha, alpha])


def task_sum(original: Classifier, runs: Sequence[Classifier], scale: float = 1.0) -> Classifier:
    """``θ = θ_0 + scale · Σ_i (θ_i − θ_0)``: add each run's change to the original.

    Why: runs that forgot different groups each move the weights away from the original; adding
    the moves aims at a model that forgot every group. Negative BatchNorm variances that the
    sum can produce are clipped to zero (recalibrate on ``D_r`` to fix the statistics properly).
    """
    if not runs:
        raise UserError("A task-vector sum needs at least one run besides the original.")
    scale = _finite(scale, "scale")
    return linear_combination([original, *runs], [1.0 - scale * len(runs)] + [scale] * len(runs))


def linear_combination(models: Sequence[Classifier], weights: Sequence[float]) -> Classifier:
    """``Σ_i w_i θ_i`` over floating tensors, computed in float64 for exact endpoints.

    Integer tensors come from the model with the largest weight (first on ties). BatchNorm
    running variances are clipped at zero, since negative weights can push them below.
    """
    check_compatible(models)
    if len(weights) != len(models):
        raise UserError(f"{len(weights)} weights for {len(models)} models.")
    states = [m.state_dict() for m in models]
    leader = int(np.argmax(weights))
    merged = {}
    for key, reference in states[0].items():
        if reference.is_floating_point():
            total = sum(w * s[key].detach().to("cpu", torch.float64) for w, s in zip(weights, states))
            merged[key] = total.to(reference.dtype)
        else:
            merged[key] = states[leader][key]
    result = _model_with_state(models[0], merged)
    _clip_negative_variances(result)
    return result


def _finite(value: float, name: str) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise UserError(f"{name} must be a finite number, got {value}.")
    return value


def _model_with_state(template: Classifier, state: Mapping[str, torch.Tensor]) -> Classifier:
    """A deep copy of ``template`` (same device) holding ``state``, in eval mode."""
    model = copy.deepcopy(template)
    model.load_state_dict(dict(state))
    return model.eval()


@torch.no_grad()
def _clip_negative_variances(model: nn.Module) -> None:
    for bn in batchnorms(model):
        if bn.running_var is not None:
            bn.running_var.clamp_(min=0.0)


# --- fixing a composed model ---------------------------------------------------------------
@torch.no_grad()
def recalibrate_batchnorm(
    model: Classifier,
    data: ImageSet,
    indices: Sequence[int] | np.ndarray,
    batches: int = 20,
    batch_size: int = 128,
    seed: int = 0,
    should_stop: StopCheck | None = None,
) -> Classifier:
    """A copy of ``model`` whose BatchNorm running statistics are re-estimated on ``indices``.

    Why: interpolated or swapped weights no longer produce the activations their stored
    statistics describe, and eval-mode predictions suffer. The statistics are reset and
    re-estimated as a cumulative average (``momentum=None``) over up to ``batches`` shuffled
    batches of ``D_r``, in train mode for BatchNorm only and without gradients, so no weight
    changes. A model without BatchNorm is returned as an unchanged copy.
    """
    model = copy.deepcopy(model).eval()
    idx = _nonempty(indices, "recalibrate BatchNorm")
    if not batchnorms(model):
        return model
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)

    def pixel_batches():
        for number, batch in enumerate(iterate_batches(idx, batch_size, generator)):
            if number >= batches:
                break
            _raise_if_stopped(should_stop, "BatchNorm recalibration")
            yield to_pixels(data.images[batch], device)

    reestimate_statistics(model, pixel_batches())
    return model.eval()


def repair(
    model: Classifier,
    data: ImageSet,
    indices: Sequence[int] | np.ndarray,
    epochs: int = 5,
    lr: float = 1e-4,
    head_only: bool = False,
    batch_size: int = 64,
    seed: int = 0,
    on_progress: ProgressCallback | None = None,
    should_stop: StopCheck | None = None,
) -> Classifier:
    """A copy of ``model`` fine-tuned with Adam on ``indices`` (``D_r``) to restore remain accuracy.

    ``head_only`` trains the linear head alone and keeps the body in eval mode, so the body,
    BatchNorm statistics included, stays exactly as composed. Reports ``ProgressEvent``s of
    phase ``"repair"`` and raises :class:`Cancelled` once ``should_stop()`` is true.
    """
    if epochs < 0 or lr <= 0 or batch_size < 1:
        raise UserError("Repair needs epochs ≥ 0, a positive learning rate and batch_size ≥ 1.")
    model = copy.deepcopy(model)
    idx = _nonempty(indices, "repair")
    trained = list(model.head.parameters()) if head_only else list(model.parameters())
    optimizer = torch.optim.Adam(trained, lr=lr)
    generator = torch.Generator().manual_seed(seed)
    steps = math.ceil(len(idx) / batch_size)
    clock = _Clock(total=steps * epochs)
    with _frozen_except(model, trained):
        for epoch in range(epochs):
            _set_repair_mode(model, head_only)
            running, seen = 0.0, 0
            for step, batch in enumerate(iterate_batches(idx, batch_size, generator), 1):
                _raise_if_stopped(should_stop, "repair")
                running += _adam_step(model, optimizer, data, batch) * len(batch)
                seen += len(batch)
                if on_progress is not None:
                    on_progress(ProgressEvent(
                        phase="repair", epoch=epoch + 1, epochs=epochs, step=step, steps=steps,
                        message=f"repair: epoch {epoch + 1}/{epochs}", metrics={"loss": running / seen},
                        **clock.tick(),
                    ))
    return model.eval()


def _adam_step(model: Classifier, optimizer: torch.optim.Optimizer, data: ImageSet, batch: np.ndarray) -> float:
    """One cross-entropy step on ``batch``; returns the batch loss."""
    device = next(model.parameters()).device
    logits = model(to_pixels(data.images[batch], device))
    loss = nn.functional.cross_entropy(logits, data.labels[batch].to(device))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


class _Clock:
    """Fraction done and ETA for ``total`` equal steps."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.started = max(total, 1), 0, time.perf_counter()

    def tick(self) -> dict[str, float]:
        self.done += 1
        elapsed = time.perf_counter() - self.started
        return {"fraction": self.done / self.total,
                "eta_seconds": elapsed / self.done * (self.total - self.done)}


@contextmanager
def _frozen_except(model: nn.Module, trained: list[nn.Parameter]):
    """Switch off gradients of parameters that are not trained (no backward pass through a frozen
    body: faster), restoring each flag afterwards."""
    keep = {id(p) for p in trained}
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, flag in flags:
        p.requires_grad_(flag and id(p) in keep)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def _set_repair_mode(model: Classifier, head_only: bool) -> None:
    """Train mode, except a frozen body stays in eval mode so its BatchNorm stats do not move."""
    model.train()
    if head_only:
        model.body.eval()


def _nonempty(indices: Sequence[int] | np.ndarray, what: str) -> np.ndarray:
    idx = np.asarray(indices, dtype=np.int64)
    if len(idx) == 0:
        raise UserError(f"Cannot {what}: the remain set is empty.")
    return idx


def _raise_if_stopped(should_stop: StopCheck | None, what: str) -> None:
    if should_stop is not None and should_stop():
        raise Cancelled(f"{what} cancelled")


# --- several forget sets -------------------------------------------------------------------
def union_split(splits: Sequence[ForgetSplit]) -> ForgetSplit:
    """One split whose forget sets are the union of ``splits``' forget sets (same ImageSet).

    Why: a task-vector sum of runs that forgot different groups must forget all of them and
    keep only what none of them forgot, so the remain sets are the intersection.
    """
    if not splits:
        raise UserError("union_split needs at least one split.")

    def combine(key: str, op) -> np.ndarray:
        result = np.asarray(getattr(splits[0], key), dtype=np.int64)
        for split in splits[1:]:
            result = op(result, np.asarray(getattr(split, key), dtype=np.int64))
        return np.sort(result).astype(np.int64)

    return ForgetSplit(
        forget_train=combine("forget_train", np.union1d),
        remain_train=combine("remain_train", np.intersect1d),
        forget_test=combine("forget_test", np.union1d),
        remain_test=combine("remain_test", np.intersect1d),
    )


def forget_set_accuracies(
    model: Classifier, data: ImageSet, splits: Sequence[ForgetSplit], prefix: str = "run"
) -> dict[str, float]:
    """``forget_train_acc_run{i}`` and ``forget_test_acc_run{i}`` for each split's forget sets.

    Added to a candidate's metrics when it combines runs with different forget sets, so the
    reader sees whether every group was forgotten, not only the union on average.
    """
    labels = data.labels.numpy()
    result = {}
    for number, split in enumerate(splits):
        for key in ("forget_train", "forget_test"):
            idx = np.asarray(getattr(split, key), dtype=np.int64)
            result[f"{key}_acc_{prefix}{number}"] = _accuracy(model, data, idx, labels)
    return result


def _accuracy(model: Classifier, data: ImageSet, idx: np.ndarray, labels: np.ndarray) -> float:
    if len(idx) == 0:
        return float("nan")
    return float((predict_logits(model, data.images, idx).argmax(1) == labels[idx]).mean())


# --- candidates ----------------------------------------------------------------------------
@dataclass
class CompositionConfig:
    """How to compose runs into candidate models.

    Attributes:
        strategy: ``head_swap`` (body of the first run, head of the second), ``blockwise``
            (``block_choice``), ``interpolate`` (between the first two runs, one candidate per
            α in ``alphas``) or ``task_sum`` (original + scaled sum of every run's change, one
            candidate per value in ``scales``).
        alphas: interpolation weights of the second run; 0 is the first run, 1 the second.
        scales: task-vector scales; 1 adds each run's full change.
        block_choice: for ``blockwise``, block name (``body.block1``... ``head``) → run number
            (0-based); unnamed blocks come from run 0.
        recalibrate_bn: re-estimate BatchNorm statistics on ``D_r`` before scoring (mixed
            weights no longer match their stored statistics). Off by default: it changes the
            endpoints too (α = 1 is then no longer run B) and can undo forgetting that a method
            keeps in those statistics (PSG on digits class 3: 0 % → 78–89 % forget accuracy).
        bn_batches: batches of ``D_r`` used for that estimate.
        repair_epochs: Adam fine-tuning epochs on ``D_r`` after composing (0 = none; the
            reference uses 5).
        repair_lr: Adam learning rate for the repair (the reference uses 1e-4).
        repair_head_only: fine-tune only the classifier head during repair.
        batch_size: images per batch for recalibration and repair.
        seed: seeds batch order and metric randomness, so candidates can be reproduced.
    """

    strategy: str = "interpolate"
    alphas: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    scales: tuple[float, ...] = (1.0,)
    block_choice: dict[str, int] = field(default_factory=dict)
    recalibrate_bn: bool = False
    bn_batches: int = 20
    repair_epochs: int = 0
    repair_lr: float = 1e-4
    repair_head_only: bool = False
    batch_size: int = 64
    seed: int = 0

    def validate(self, n_models: int) -> None:
        """Raise :class:`UserError` if this config cannot run with ``n_models`` runs."""
        if self.strategy not in STRATEGIES:
            raise UserError(f"Unknown composition strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}.")
        low, high = STRATEGY_RUNS[self.strategy]
        if not low <= n_models <= high:
            needed = f"exactly {low}" if low == high else f"{low} to {high}"
            raise UserError(f"{self.strategy} needs {needed} run(s), got {n_models}.")
        if self.strategy == "interpolate" and not self.alphas:
            raise UserError("Give at least one α for the interpolation sweep.")
        if self.strategy == "task_sum" and not self.scales:
            raise UserError("Give at least one scale for the task-vector sum.")
        if self.repair_epochs < 0 or self.bn_batches < 1 or self.batch_size < 1:
            raise UserError("repair_epochs must be ≥ 0, bn_batches and batch_size ≥ 1.")
        if self.repair_epochs > 1000 or self.bn_batches > 100_000 or self.batch_size > 4096:
            raise UserError("repair_epochs must be at most 1000, bn_batches at most 100000 and "
                            "batch_size at most 4096.")
        weights = list(self.alphas) + list(self.scales) + [self.repair_lr]
        if not all(math.isfinite(float(v)) for v in weights) or self.repair_lr <= 0:
            raise UserError("Every α and scale must be a finite number and repair_lr a finite "
                            f"number above 0; got alphas={list(self.alphas)}, "
                            f"scales={list(self.scales)}, repair_lr={self.repair_lr}.")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> CompositionConfig:
        """Rebuild from :meth:`to_dict` output (e.g. JSON in the run registry)."""
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        for key in ("alphas", "scales"):
            if key in known:
                known[key] = tuple(float(v) for v in known[key])
        if "block_choice" in known:
            known["block_choice"] = {str(k): int(v) for k, v in known["block_choice"].items()}
        return cls(**known)


#: How far (accuracy, 0..1) a candidate's forget accuracy may rise above the highest of its
#: inputs' before it is flagged: one or two images of a small forget set move it by a point.
FORGET_TOLERANCE = 0.02
#: The forget accuracies compared with the inputs' (the images asked to forget, and unseen ones like them).
FORGET_KEYS = ("forget_train_acc", "forget_test_acc")


@dataclass
class Candidate:
    """One composed model with its scores.

    ``params`` says exactly how it was made (strategy, α or scale, blocks, recalibration,
    repair), so choosing it can be saved as a reproducible run. ``forgetting_lost`` names the
    forget accuracies on which it is worse (higher) than every input run: composing undid what
    the inputs forgot (see :func:`forgetting_lost`), so it is never saved without being asked for.
    """

    label: str
    model: Classifier
    metrics: dict
    params: dict
    forgetting_lost: tuple[str, ...] = ()
    forgetting_note: str = ""

    def summary(self) -> dict:
        """Label, params, metrics and the forgetting flag without the model (JSON-ready)."""
        return {"label": self.label, "params": self.params, "metrics": self.metrics,
                "forgetting_lost": bool(self.forgetting_lost), "forgetting_note": self.forgetting_note}


def input_forget_accuracies(models: Sequence[Classifier], data: ImageSet, split: ForgetSplit) -> list[dict]:
    """Each input model's accuracy on the composition's ``D_f`` and ``T_f`` (as the runs saved them)."""
    return [{"forget_train_acc": accuracy_on(model, data, split.forget_train),
             "forget_test_acc": accuracy_on(model, data, split.forget_test)} for model in models]


def forgetting_lost(metrics: Mapping[str, float], inputs: Sequence[Mapping[str, float]],
                    tolerance: float = FORGET_TOLERANCE) -> tuple[tuple[str, ...], str]:
    """The forget accuracies on which a candidate is worse than every input, and a sentence why.

    Why: composition must keep what its inputs forgot. A blend whose forget accuracy is above
    all its inputs' (for instance PSG's forgetting held in BatchNorm statistics, undone by
    recalibration) is a model that remembers more than anything it was made from.
    """
    lost, parts = [], []
    for key in FORGET_KEYS:
        value = metrics.get(key)
        known = [i[key] for i in inputs if i.get(key) is not None and not math.isnan(i[key])]
        if value is None or math.isnan(value) or not known:
            continue
        if value > max(known) + tolerance:
            lost.append(key)
            what = "the images asked to forget" if key == "forget_train_acc" else "unseen images like them"
            parts.append(f"{value:.1%} on {what}, where the inputs had at most {max(known):.1%}")
    if not lost:
        return (), ""
    return tuple(lost), ("Forgets less than every input run: accuracy " + "; ".join(parts)
                         + ". Composing undid forgetting, so this candidate is not saved automatically.")


#: The chart's axes, on which a candidate is compared with the runs it was made from.
KEEP_KEY, FORGET_KEY = "remain_test_acc", "forget_test_acc"


def _forget_gap(metrics: Mapping[str, float], retrain_forget: float | None) -> float | None:
    """How far forgetting is from the ideal: |F − F_retrain|, or F itself without a retrain."""
    value = metrics.get(FORGET_KEY)
    if value is None or math.isnan(value):
        return None
    return abs(value - retrain_forget) if retrain_forget is not None else value


def compare_with_parents(metrics: Mapping[str, float], parents: Mapping[str, Mapping[str, float]],
                         retrain: Mapping[str, float] | None = None) -> dict[str, str]:
    """Is a candidate worse than, or the same as, one of the runs it was made from?

    A parent *beats* the candidate when it keeps at least as much (remain test accuracy) and
    its forgetting is at least as close to the ideal (the retrained model's forget test
    accuracy, or 0 without one), and is strictly better on one of the two. ``parents`` maps
    a parent's name (run id) to its recorded scores on the same sets. Returns
    ``{"beaten_by": name}``, ``{"same_as": name}`` or ``{}``.
    """
    retrain_forget = (retrain or {}).get(FORGET_KEY)
    keep, gap = metrics.get(KEEP_KEY), _forget_gap(metrics, retrain_forget)
    if keep is None or gap is None or math.isnan(keep):
        return {}
    same = None
    for name, block in parents.items():
        p_keep, p_gap = block.get(KEEP_KEY), _forget_gap(block, retrain_forget)
        if p_keep is None or p_gap is None or math.isnan(p_keep):
            continue
        eps = 1e-9
        if p_keep >= keep - eps and p_gap <= gap + eps:
            if p_keep > keep + eps or p_gap < gap - eps:
                return {"beaten_by": name}
            same = same or name
    return {"same_as": same} if same else {}


def parents_warning(candidates: Sequence[Mapping]) -> str | None:
    """A warning when no candidate improves on the runs composed (``beaten_by``/``same_as``)."""
    if not candidates or not all(c.get("beaten_by") or c.get("same_as") for c in candidates):
        return None
    if all(c.get("beaten_by") for c in candidates):
        return ("Every candidate is worse than one of the runs it was made from (it keeps less, or forgets "
                "further from the retrained model, and is better on neither): composing made things worse. "
                "Keep the input run itself, or compose without BatchNorm recalibration and repair.")
    return ("No candidate improves on the runs it was made from: each is one of them unchanged, or worse than "
            "one of them on both forgetting and kept accuracy. Saving one gains nothing over the input run.")


def compose_candidates(
    config: CompositionConfig,
    original: Classifier | None,
    models: Sequence[Classifier],
    data: ImageSet,
    split: ForgetSplit,
    on_progress: ProgressCallback | None = None,
    should_stop: StopCheck | None = None,
    *,
    forget_splits: Sequence[ForgetSplit] | None = None,
    base_hashes: Sequence[str | None] | None = None,
    names: Sequence[str] | None = None,
) -> list[Candidate]:
    """Build, fix (recalibrate, repair) and score every candidate of ``config``.

    Every candidate is scored with :func:`~unlearn_core.evaluate.evaluate_model` on ``split``;
    for runs with different forget sets pass ``split=union_split(forget_splits)`` and
    ``forget_splits`` to add per-run forget accuracies (``forget_test_acc_run0``...).
    ``base_hashes``/``names`` are checked and quoted by :func:`check_compatible`. Progress
    events have phase ``"compose"`` (repair events are forwarded with the overall fraction).
    """
    config.validate(len(models))
    names = list(names) if names is not None else [f"run {i}" for i in range(len(models))]
    check_compatible(models, base_hashes, names)
    if original is not None:
        check_compatible([models[0], original], names=[names[0], "the original model"])
    elif config.strategy == "task_sum":
        raise UserError("A task-vector sum needs the original model the runs started from.")
    recipes = _recipes(config, original, list(models))
    candidates = []
    for number, (label, params, build) in enumerate(recipes):
        _raise_if_stopped(should_stop, "composition")
        report = _Stage(on_progress, number, len(recipes), label)
        report("building")
        model = _finish(build(), config, data, split, report, should_stop)
        report("evaluating")
        metrics = evaluate_model(model, data, split, seed=config.seed)
        if forget_splits:
            metrics.update(forget_set_accuracies(model, data, forget_splits))
        candidates.append(Candidate(label, model, metrics, {**params, **_fix_params(config)}))
    inputs = input_forget_accuracies(models, data, split)
    for candidate in candidates:
        candidate.forgetting_lost, candidate.forgetting_note = forgetting_lost(candidate.metrics, inputs)
    if on_progress is not None:
        on_progress(ProgressEvent(phase="done", fraction=1.0, message=f"{len(candidates)} candidates"))
    return candidates


Recipe = tuple[str, dict, Callable[[], Classifier]]


def _recipes(config: CompositionConfig, original: Classifier | None, models: list[Classifier]) -> list[Recipe]:
    """(label, params, builder) per candidate; builders run lazily so memory holds one at a time."""
    strategy = config.strategy
    if strategy == "head_swap":
        return [("head swap", {"strategy": strategy, "body_from": 0, "head_from": 1},
                 lambda: head_swap(models[0], models[1]))]
    if strategy == "blockwise":
        choice = dict(config.block_choice)
        return [(_choice_text(choice), {"strategy": strategy, "block_choice": choice},
                 lambda: blockwise(models, choice))]
    if strategy == "interpolate":
        return [(f"α={alpha:g}", {"strategy": strategy, "alpha": float(alpha)},
                 lambda alpha=alpha: interpolate(models[0], models[1], alpha)) for alpha in config.alphas]
    return [(f"scale={scale:g}", {"strategy": strategy, "scale": float(scale)},
             lambda scale=scale: task_sum(original, models, scale)) for scale in config.scales]


def _choice_text(choice: Mapping[str, int]) -> str:
    """``"blocks: head←1, body.block3←2"`` (blocks not listed come from run 0)."""
    moved = [f"{block}←{source}" for block, source in choice.items() if int(source) != 0]
    return "blocks: " + (", ".join(moved) if moved else "all from run 0")


def _fix_params(config: CompositionConfig) -> dict:
    return {
        "recalibrate_bn": config.recalibrate_bn,
        "repair_epochs": config.repair_epochs,
        "repair_head_only": config.repair_head_only,
        "repair_lr": config.repair_lr,
        "seed": config.seed,
    }


def _finish(model: Classifier, config: CompositionConfig, data: ImageSet, split: ForgetSplit,
            report: _Stage, should_stop: StopCheck | None) -> Classifier:
    """Recalibrate and repair a freshly built candidate as the config asks."""
    if config.recalibrate_bn:
        report("recalibrating BatchNorm")
        model = recalibrate_batchnorm(model, data, split.remain_train, batches=config.bn_batches,
                                      batch_size=config.batch_size, seed=config.seed,
                                      should_stop=should_stop)
    if config.repair_epochs > 0:
        model = repair(model, data, split.remain_train, epochs=config.repair_epochs, lr=config.repair_lr,
                       head_only=config.repair_head_only, batch_size=config.batch_size, seed=config.seed,
                       on_progress=report.forward, should_stop=should_stop)
    return model


class _Stage:
    """Progress of candidate ``number`` of ``total``: its own messages and forwarded repair events."""

    def __init__(self, on_progress: ProgressCallback | None, number: int, total: int, label: str) -> None:
        self.on_progress, self.number, self.total, self.label = on_progress, number, total, label

    def __call__(self, what: str) -> None:
        if self.on_progress is not None:
            self.on_progress(ProgressEvent(
                phase="compose", step=self.number + 1, steps=self.total,
                fraction=self.number / self.total, message=f"{self.label}: {what}",
            ))

    def forward(self, event: ProgressEvent) -> None:
        """A repair event re-based onto the whole composition's fraction."""
        if self.on_progress is not None:
            within = event.fraction or 0.0
            self.on_progress(replace(event, fraction=(self.number + within) / self.total,
                                     message=f"{self.label}: {event.message}"))
