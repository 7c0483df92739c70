"""The unlearning pipeline shared by the command line, background jobs and the benchmark.

One function, :func:`run_unlearning`, goes from an :class:`UnlearnRequest` plus the loaded data
and model to models and a :class:`~unlearn_core.runs.result.RunResult`. Keeping it here (not in
the CLI) means the dashboard's background job, the benchmark and the tests measure exactly the
same thing a user types. Saving and recording are :mod:`unlearn_core.runs.workflows`' job.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from unlearn_core.assets import DEMO_RECIPES
from unlearn_core.data.criteria import ForgetCriteria, ForgetSplit, split_sets
from unlearn_core.data.imageset import ImageSet
from unlearn_core.evaluate import compare_blocks, evaluate_model
from unlearn_core.methods.base import UnlearnData, UnlearnResult, get_method
from unlearn_core.models.architectures import Classifier
from unlearn_core.models.weights import state_hash
from unlearn_core.runs.requests import UnlearnRequest
from unlearn_core.runs.result import Comparison, RunResult, Timing
from unlearn_core.training import TrainConfig


@dataclass
class UnlearnOutcome:
    """Models, split and result of one unlearning run (not yet saved anywhere)."""

    original: Classifier
    unlearned: Classifier
    retrain: Classifier | None
    split: ForgetSplit
    criteria: ForgetCriteria
    method_result: UnlearnResult
    result: RunResult
    config: dict[str, Any]
    history: list[dict[str, Any]]
    data_fingerprint: str
    base_model_hash: str


def retrain_recipe(data: ImageSet, model: Classifier, seed: int, device: str) -> TrainConfig:
    """The recipe of the original model (the shipped recipe for built-in sets), on ``D_r``."""
    base = DEMO_RECIPES.get(data.name, TrainConfig())
    return TrainConfig(arch=model.spec.arch, epochs=base.epochs, batch_size=base.batch_size, lr=base.lr,
                       momentum=base.momentum, weight_decay=base.weight_decay, seed=seed, device=device)


def train_retrain(data: ImageSet, split: ForgetSplit, recipe: TrainConfig, on_progress=None,
                  should_stop=None) -> tuple[Classifier, float]:
    """Train the gold-standard reference on the remain set only; returns (model, seconds)."""
    from unlearn_core.training import train_model

    trained = train_model(data, split.remain_train, recipe, on_progress=on_progress,
                          should_stop=should_stop, phase="retrain")
    return trained.model, trained.seconds


def run_unlearning(
    data: ImageSet,
    model: Classifier,
    request: UnlearnRequest,
    *,
    on_progress=None,
    should_stop=None,
    retrain_model: Classifier | None = None,
    retrain_seconds: float | None = None,
) -> UnlearnOutcome:
    """Split, unlearn, optionally retrain, and score original / unlearned / retrain.

    ``retrain_model`` lets a caller pass a reused reference (with the seconds it originally
    took); otherwise one is trained when ``request.retrain`` is set.
    """
    criteria = ForgetCriteria.parse(request.forget)
    split = split_sets(data, criteria)
    method = get_method(request.method)
    overrides = dict(request.overrides)
    overrides.setdefault("seed", request.seed)
    overrides.setdefault("device", request.device)
    config = method.make_config(overrides, preset=request.preset)
    result = method.run(model, UnlearnData(data, split), config, on_progress=on_progress,
                        should_stop=should_stop)
    if request.retrain and retrain_model is None:
        recipe = retrain_recipe(data, model, request.seed, request.device)
        retrain_model, retrain_seconds = train_retrain(data, split, recipe, on_progress, should_stop)
    scored = build_result(data, split, criteria, request, model, result, retrain_model, retrain_seconds)
    return UnlearnOutcome(model, result.model, retrain_model, split, criteria, result, scored,
                          _plain(vars(config)), _plain(result.history), data.fingerprint(), state_hash(model))


def build_result(data: ImageSet, split: ForgetSplit, criteria: ForgetCriteria, request: UnlearnRequest,
                 original: Classifier, result: UnlearnResult, retrain_model: Classifier | None,
                 retrain_seconds: float | None) -> RunResult:
    """Score original / unlearned / retrain on the four sets and compare them."""
    started = time.perf_counter()
    blocks = {"original": evaluate_model(original, data, split, seed=request.seed),
              "unlearned": evaluate_model(result.model, data, split, seed=request.seed)}
    if retrain_model is not None:
        blocks["retrain"] = evaluate_model(retrain_model, data, split, seed=request.seed)
    comparison = Comparison(**compare_blocks(blocks["original"], blocks["unlearned"], blocks.get("retrain")))
    diagnostics = _plain(result.diagnostics)
    forget_classes = Counter(data.classes[i] for i in data.labels.numpy()[split.forget_train])
    return RunResult(
        blocks=blocks, comparison=comparison, sizes=split.sizes(), forget_classes=dict(forget_classes),
        diagnostics=diagnostics, criteria_description=criteria.describe(data.classes, data.units),
        timing=Timing(unlearn=result.seconds, retrain=retrain_seconds, evaluate=time.perf_counter() - started))


def _plain(value: Any) -> Any:
    """Make configs/diagnostics JSON-ready (numpy scalars, tuples, tensors)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    return value
