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
from pathlib import Path
from typing import Any

from unlearn_core.assets import DEMO_RECIPES
from unlearn_core.data.criteria import ForgetCriteria, ForgetSplit, split_sets
from unlearn_core.data.imageset import ImageSet
from unlearn_core.errors import UserError
from unlearn_core.evaluate import compare_blocks, scored_split, split_outputs
from unlearn_core.methods.base import UnlearnData, UnlearnResult, get_method
from unlearn_core.metrics import metric_block
from unlearn_core.models.architectures import Classifier
from unlearn_core.models.weights import file_metadata, state_hash
from unlearn_core.progress import ProgressEvent
from unlearn_core.runs.recipe import EXAMPLE, Recipe
from unlearn_core.runs.requests import UnlearnRequest
from unlearn_core.runs.result import RECIPE_SOURCE_WORDS, Comparison, RunResult, Timing
from unlearn_core.stop_target_cache import StopTargetCache
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


@dataclass(frozen=True)
class OriginalRecipe:
    """How the original model was trained, and where it was found (a key of ``RECIPE_SOURCE_WORDS``)."""

    recipe: Recipe
    source: str

    @property
    def source_text(self) -> str:
        return RECIPE_SOURCE_WORDS.get(self.source, self.source)


def recipe_of_config(config: TrainConfig) -> Recipe:
    return Recipe(arch=config.arch, epochs=config.epochs, batch_size=config.batch_size, lr=config.lr,
                  momentum=config.momentum, weight_decay=config.weight_decay)


def recorded_recipe(dataset_name: str, weights: str | None) -> OriginalRecipe | None:
    """The recipe the original model carries: its weights file's, or the built-in demo model's.

    ``None`` when a user's file records none (then the user has to give it). Why not guess the
    ``train`` defaults: a retrain made another way than the original (8 epochs against 30) is no
    reference, and every distance to it would mislead.
    """
    if not weights:
        config = DEMO_RECIPES.get(dataset_name)
        return OriginalRecipe(recipe_of_config(config), "demo") if config is not None else None
    recipe = Recipe.from_metadata(file_metadata(weights), Path(weights).name)
    return OriginalRecipe(recipe, "file") if recipe is not None else None


def missing_recipe_message(weights: str | None) -> str:
    what = f"The weights file {Path(weights).name}" if weights else "Nothing"
    return (f"{what} does not record how the original model was trained, so the retrain "
            f"reference cannot be trained the same way (a reference trained another way makes every "
            f"distance to it meaningless). Give the original's training recipe: --recipe \"{EXAMPLE}\" "
            f"(settings left out take the train command's defaults); on the dashboard, fill in the recipe "
            f"fields under \"Also train the retrain reference\".")


def original_recipe(dataset_name: str, weights: str | None, given: Recipe | None) -> OriginalRecipe:
    """The original model's recipe for its retrain reference: the recorded one, else ``given``.

    Refused (:class:`UserError`) when neither exists, or when ``given`` contradicts the
    recipe the file records (one of the two is wrong, and the file is the fact).
    """
    recorded = recorded_recipe(dataset_name, weights)
    if recorded is not None:
        if given is not None and not given.same_training(recorded.recipe):
            raise UserError(f"--recipe {given.to_text()!r} differs from the recipe the original model records "
                            f"({recorded.recipe.to_text()}, {recorded.source_text}). Leave --recipe out to use "
                            "the recorded one.")
        return recorded
    if given is None:
        raise UserError(missing_recipe_message(weights))
    return OriginalRecipe(given, "given")


def retrain_recipe(data: ImageSet, model: Classifier, seed: int, device: str,
                   recipe: Recipe | None = None) -> TrainConfig:
    """The training config of the retrain reference: the original's ``recipe`` on ``D_r``.

    ``recipe`` defaults to the shipped demo recipe of a built-in set; any other data set needs
    one (see :func:`original_recipe`). The architecture is always the model's own.
    """
    if recipe is None:
        if data.name not in DEMO_RECIPES:
            raise UserError(missing_recipe_message(None))
        recipe = recipe_of_config(DEMO_RECIPES[data.name])
    recipe = recipe.with_arch(model.spec.arch)
    config = TrainConfig(arch=model.spec.arch, epochs=recipe.epochs, batch_size=recipe.batch_size, lr=recipe.lr,
                         momentum=recipe.momentum, weight_decay=recipe.weight_decay, seed=seed, device=device)
    try:
        return config.validate()
    except UserError as error:
        raise UserError(f"The original model's training recipe cannot be used for the retrain reference: "
                        f"{error}") from error


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
    recipe: OriginalRecipe | None = None,
    stop_targets: StopTargetCache | None = None,
) -> UnlearnOutcome:
    """Split, unlearn, optionally retrain, and score original / unlearned / retrain.

    ``retrain_model`` lets a caller pass a reused reference (with the seconds it originally
    took); otherwise one is trained when ``request.retrain`` is set, with the original's own
    recipe (``recipe``, else found by :func:`original_recipe` before any work starts).
    ``stop_targets`` keeps automatic stop targets (the workspace's), so the run reuses the one
    its page already made for this model, forget set and seed.
    """
    if request.retrain and recipe is None:
        recipe = original_recipe(data.name, request.weights, request.recipe)
    train_config = (retrain_recipe(data, model, request.seed, request.device, recipe.recipe)
                    if request.retrain and recipe is not None else None)
    criteria = ForgetCriteria.parse(request.forget)
    split = split_sets(data, criteria)
    method = get_method(request.method)
    overrides = dict(request.overrides)
    overrides.setdefault("seed", request.seed)
    overrides.setdefault("device", request.device)
    config = method.make_config(overrides, preset=request.preset)
    result = method.run(model, UnlearnData(data, split, stop_targets), config, on_progress=on_progress,
                        should_stop=should_stop)
    if train_config is not None and retrain_model is None:
        retrain_model, retrain_seconds = train_retrain(data, split, train_config, on_progress, should_stop)
    scored = build_result(data, split, criteria, request, model, result, retrain_model, retrain_seconds,
                          on_progress=on_progress)
    if scored is not None and retrain_model is not None and train_config is not None and recipe is not None:
        scored.retrain_recipe = recipe_of_config(train_config).to_text()
        scored.retrain_recipe_source = recipe.source
    return UnlearnOutcome(model, result.model, retrain_model, split, criteria, result, scored,
                          _plain(vars(config)), _plain(result.history), data.fingerprint(), state_hash(model))


def build_result(data: ImageSet, split: ForgetSplit, criteria: ForgetCriteria, request: UnlearnRequest,
                 original: Classifier, result: UnlearnResult, retrain_model: Classifier | None,
                 retrain_seconds: float | None, on_progress=None) -> RunResult:
    """Score original / unlearned / retrain on the four sets and compare them.

    Progress (phase ``evaluate``) is reported per model and step: its predictions on the four
    sets, then its metrics (accuracies and the membership-inference attacks).
    """
    started = time.perf_counter()
    models = {"original": original, "unlearned": result.model}
    if retrain_model is not None:
        models["retrain"] = retrain_model
    blocks = score_models(models, data, split, request.seed, on_progress)
    if blocks is None:  # another rank of a torchrun run: rank 0 has the scores
        return None
    scored = scored_split(split, request.seed)
    comparison = Comparison(**compare_blocks(blocks["original"], blocks["unlearned"], blocks.get("retrain")))
    diagnostics = _plain(result.diagnostics)
    forget_classes = Counter(data.classes[i] for i in data.labels.numpy()[split.forget_train])
    return RunResult(
        blocks=blocks, comparison=comparison, sizes=split.sizes(), forget_classes=dict(forget_classes),
        diagnostics=diagnostics, criteria_description=criteria.describe(data.classes, data.units),
        timing=Timing(unlearn=result.seconds, retrain=retrain_seconds, evaluate=time.perf_counter() - started),
        scored_sizes=scored.sizes() if scored is not split else {})


#: How the scoring steps are named in the progress line.
_SCORED_AS = {"original": "the original model", "unlearned": "the unlearned model", "retrain": "the retrain reference"}


def score_models(models: dict[str, Classifier], data: ImageSet, split: ForgetSplit, seed: int,
                 on_progress=None) -> dict[str, dict]:
    """:func:`~unlearn_core.evaluate.evaluate_model` for each model, reporting each step.

    Every model is scored on the same :func:`~unlearn_core.evaluate.scored_split` (the kept sets
    capped by a sample seeded with ``seed``), the MIA features included.
    """
    split = scored_split(split, seed)
    steps = 2 * len(models)

    def report(done: int, message: str) -> None:
        if on_progress is not None:
            on_progress(ProgressEvent(phase="evaluate", step=min(done + 1, steps), steps=steps,
                                      fraction=done / steps, message=message))

    blocks = {}
    for index, (name, model) in enumerate(models.items()):
        who = _SCORED_AS.get(name, name)
        report(2 * index, f"scoring {who}: predictions on the four sets")
        outputs = split_outputs(model, data, split, sharded=True)  # under torchrun: gathered on rank 0
        if outputs is None:
            continue
        report(2 * index + 1, f"scoring {who}: accuracies and membership-inference attacks")
        blocks[name] = metric_block(outputs, data.num_classes, seed=seed)
    if not blocks and models:  # another rank of a torchrun run
        return None
    report(steps, "scoring done")
    return blocks


def _plain(value: Any) -> Any:
    """Make configs/diagnostics JSON-ready (numpy scalars, tuples, tensors)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    return value
