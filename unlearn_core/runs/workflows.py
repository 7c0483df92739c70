"""What a recorded run does, start to end: load, run, save artifacts, record the result.

The command line and the dashboard are two faces over these functions: the CLI parses argv
into a request (:mod:`unlearn_core.runs.requests`) and calls one of them; the dashboard builds
the same request and :func:`submit` starts the same command in a background job, which calls
the same function. So a run started from either face is recorded the same way.

Each workflow takes a request and either a workspace (record the run; ``run_id`` continues a
queued background job) or ``None`` (work only, progress on stderr). It returns a JSON-ready
summary: ``run_id`` (when recorded), the run's facts, and ``result`` (a
:class:`~unlearn_core.runs.result.RunResult` as a dict).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from unlearn_core.errors import UserError
from unlearn_core.runs import artifacts
from unlearn_core.runs.jobs import RunContext, command_run
from unlearn_core.runs.registry import RunRecord, Workspace, cli_command, command_argv, recipe_hash
from unlearn_core.runs.requests import (
    ComposeRequest,
    DemoModelsRequest,
    SaveCandidateRequest,
    TrainRequest,
    UnlearnRequest,
)
from unlearn_core.runs.result import Comparison, RunResult, Timing

if TYPE_CHECKING:
    from unlearn_core.data.imageset import ImageSet
    from unlearn_core.models.architectures import Classifier
    from unlearn_core.pipeline import OriginalRecipe


def submit(workspace: Workspace, request: UnlearnRequest | TrainRequest | ComposeRequest | DemoModelsRequest,
           **fields: Any) -> RunRecord:
    """Start ``request`` as a background job (or queue it); the record's facts come from it."""
    from unlearn_core.runs import jobs

    return jobs.submit(workspace, request.to_argv(), request.kind, **{**request.record_fields(), **fields})


@contextlib.contextmanager
def _opened(workspace: Workspace | None, run_id: str | None, request, **fields: Any) -> Iterator[RunContext | None]:
    """The run's context when recording, else None (and progress goes to stderr)."""
    if workspace is None:
        yield None
        return
    fields = {**request.record_fields(), **fields}
    with command_run(workspace, run_id, kind=request.kind, command=cli_command(request.to_argv()),
                     **fields) as context:
        yield context


def _hooks(context: RunContext | None):
    from unlearn_core.distributed import world

    if context is None and not world().is_main:  # under torchrun rank 0 alone reports progress
        return None, None
    if context is None:
        from unlearn_core.progress import StderrReporter

        return StderrReporter(), None
    return context.reporter, context.should_stop


# ---------------------------------------------------------------------- demo models

def make_demo_models(request: DemoModelsRequest, workspace: Workspace | None = None,
                     run_id: str | None = None) -> list[dict]:
    """Retrain the demo models of the built-in sets ``request.only`` names (all by default).

    As a dashboard job (``run_id`` of a queued ``train`` run) progress and cancel go through
    that run; otherwise progress goes to stderr and nothing is recorded. Returns one summary a
    set: name, generation and training seconds, test accuracy and the file written.
    """
    import time

    from unlearn_core.assets import DEMO_RECIPES, make_demo_model
    from unlearn_core.data.builtin import load_builtin

    def make_all(on_progress, should_stop) -> list[dict]:
        summaries = []
        for name in request.only or tuple(DEMO_RECIPES):
            started = time.perf_counter()
            data = load_builtin(name)
            generated = time.perf_counter() - started
            trained, path = make_demo_model(data, request.out, on_progress=on_progress, should_stop=should_stop)
            summaries.append({"name": name, "generated_seconds": generated, "train_seconds": trained.seconds,
                              "test_acc": trained.test_acc, "path": str(path)})
        return summaries

    if run_id is None:
        return make_all(*_hooks(None))
    with command_run(workspace or Workspace(), run_id, kind="train", command=[]) as context:
        summaries = make_all(context.reporter, context.should_stop)
        context.finish(metrics=RunResult(blocks={s["name"]: {"test_acc": s["test_acc"]} for s in summaries}).to_dict())
    return summaries


# ---------------------------------------------------------------------- unlearn

def unlearn(request: UnlearnRequest, workspace: Workspace | None = None, run_id: str | None = None) -> dict:
    """Load, unlearn (reusing a recorded retrain reference when possible), score, record."""
    from unlearn_core.data.catalog import load_dataset
    from unlearn_core.pipeline import original_recipe, recorded_recipe, run_unlearning

    from unlearn_core.distributed import world

    w = world()
    with _opened(workspace, run_id, request, **_world_fields(w)) as context:
        on_progress, should_stop = _hooks(context)
        with w.main_first():  # a data cache rank 0 fills is only read by the others
            data = load_dataset(request.dataset)
        model = artifacts.load_model_for(data, request.weights, request.arch)
        if request.retrain:
            recipe = original_recipe(data.name, request.weights, request.recipe)
        else:  # only passed on to the saved model's header: a garbled one must not stop the run
            try:
                recipe = recorded_recipe(data.name, request.weights)
            except UserError:
                recipe = None
        retrain_model = retrain_seconds = None
        retrain_run: dict[str, Any] | None = None
        if context is not None:  # one bar over the whole run, its stages planned like the page's estimate
            from unlearn_core.progress import OverallReporter

            try:
                estimate = unlearn_estimate(context.workspace, request, data, model, recipe)
            except Exception as error:  # noqa: BLE001 - an estimate must never cost the run
                context.log(f"no time estimate: {type(error).__name__}: {error}")
            else:
                context.log(f"estimate: {estimate.text()}")
                on_progress = OverallReporter(on_progress, estimate.stages())
        if request.retrain and w.from_main(lambda: context is not None):  # recorded: every rank agrees
            retrain_model, retrain_seconds, retrain_run = _reuse_or_train_retrain(
                context.workspace if context is not None else None, data, model, request, on_progress, should_stop,
                recipe)
        outcome = run_unlearning(data, model, request, on_progress=on_progress, should_stop=should_stop,
                                 retrain_model=retrain_model, retrain_seconds=retrain_seconds,
                                 recipe=recipe if request.retrain else None,
                                 stop_targets=stop_targets_of(context.workspace) if context is not None else None)
        if not w.is_main:  # the other ranks helped train and score; rank 0 records
            return {}
        result = outcome.result
        if retrain_run is not None:
            result.retrain_reused = retrain_run["reused"]
        summary = {"dataset": data.name, "method": request.method, "preset": request.preset,
                   "criteria": outcome.criteria.to_text(), "config": outcome.config,
                   "retrain_run": retrain_run["id"] if retrain_run else None, "result": result.to_dict()}
        if context is None:
            return summary
        ws = context.workspace
        ws.save_weights(context.run_id, outcome.unlearned.state_dict(), artifacts.model_metadata(
            outcome.unlearned, outcome.data_fingerprint, outcome.base_model_hash, request.method,
            outcome.criteria.to_text(), recipe.recipe.with_arch(model.spec.arch).to_text() if recipe else ""))
        ws.save_json(context.run_id, artifacts.SPLIT_ARTIFACT, {k: v.tolist() for k, v in vars(outcome.split).items()})
        ws.save_json(context.run_id, "history.json", outcome.history)
        context.finish(metrics=result.to_dict(), dataset_fingerprint=outcome.data_fingerprint,
                       base_model_hash=outcome.base_model_hash, criteria=outcome.criteria.to_dict(),
                       criteria_text=outcome.criteria.to_text(), config=outcome.config,
                       device=str(next(outcome.unlearned.parameters()).device),
                       retrain_run=retrain_run["id"] if retrain_run else "",
                       parents=[retrain_run["id"]] if retrain_run else [])
        summary["run_id"] = context.run_id
    return summary


def stop_targets_of(workspace: Workspace):
    """The workspace's kept automatic stop targets (shared by the page's estimate and the run)."""
    from unlearn_core.stop_target_cache import StopTargetCache

    return StopTargetCache.in_workspace(workspace.path)


def unlearn_estimate(workspace: Workspace, request: UnlearnRequest, data: ImageSet, model: Classifier,
                     recipe: OriginalRecipe | None = None, split=None, stop_seconds: float | None = None):
    """How long ``request`` will take, stage by stage (:class:`~unlearn_core.run_estimate.RunEstimate`).

    The same plan the run follows: the retrain reference only when it will be trained (not
    reused), the stop estimate when the method stops automatically, unlearning, scoring.
    Rates come from the workspace's recorded runs. ``split`` saves re-splitting when the caller
    has it; ``stop_seconds`` is the stop estimate's own time when it was measured already.
    """
    from unlearn_core.methods.base import UnlearnData, get_method
    from unlearn_core.pipeline import original_recipe, retrain_recipe
    from unlearn_core.evaluate import scored_split
    from unlearn_core.run_estimate import RunPlan, estimate_run

    split = split if split is not None else artifacts.criteria_split(data, request.forget)
    method = get_method(request.method)
    overrides = {"seed": request.seed, "device": request.device, **dict(request.overrides)}
    config = method.make_config(overrides, preset=request.preset)
    retrain_images, reused = 0, False
    if request.retrain:
        try:
            recipe = recipe or original_recipe(data.name, request.weights, request.recipe)
            found = _recorded_reference(workspace, data, model, request, recipe)[1]
        except UserError:  # no recipe yet: the page asks for it; count the demo-sized training
            recipe, found = None, None
        if found is not None:
            reused = True
        else:
            epochs = (retrain_recipe(data, model, request.seed, request.device, recipe.recipe).epochs
                      if recipe is not None else 8)
            retrain_images = epochs * len(split.remain_train)
    sizes = split.sizes()
    plan = RunPlan(dataset=request.dataset, method=request.method,
                   image_pixels=data.channels * data.image_size * data.image_size,
                   forget_images=sizes["forget_train"], remain_images=sizes["remain_train"],
                   scored_images=sum(scored_split(split, request.seed).sizes().values()),
                   retrain_images=retrain_images, retrain_reused=reused,
                   stop_target=getattr(config, "stop_at", None) == "auto" and not stop_targets_of(workspace).has(
                       model, UnlearnData(data, split), overrides["seed"]),
                   models_scored=3 if request.retrain else 2, method_title=method.title,
                   passes=getattr(config, "epochs", None))
    return estimate_run(plan, workspace.list_runs(), stop_seconds=stop_seconds)


def _recorded_reference(workspace: Workspace, data: ImageSet, model: Classifier, request: UnlearnRequest,
                        recipe: OriginalRecipe) -> tuple[Any, RunRecord | None]:
    """The retrain config for ``request`` and a recorded reference made the same way (or None)."""
    from unlearn_core.data.criteria import ForgetCriteria

    criteria = ForgetCriteria.parse(request.forget)
    config = _recorded_reference_config(data, model, request, recipe)
    found = workspace.find_reusable("retrain", dataset_fingerprint=data.fingerprint(),
                                    criteria_text=criteria.to_text(), seed=request.seed,
                                    recipe_hash=recipe_hash(config.recipe_key()))
    return config, found


def _reuse_or_train_retrain(workspace: Workspace | None, data: ImageSet, model: Classifier, request: UnlearnRequest,
                            on_progress, should_stop,
                            recipe: OriginalRecipe) -> tuple[Classifier, float | None, dict[str, Any]]:
    """A recorded retrain reference for the same data, criteria, seed and recipe, or a new one.

    The recipe is the original model's own (``recipe``), so a reference trained another way
    (another number of epochs, learning rate...) is never reused for it.

    Under torchrun every rank calls this (``workspace`` is rank 0's, ``None`` elsewhere): rank 0
    looks for a recorded reference and hands its weights to the others, or all ranks train a
    new one together (DistributedDataParallel) and rank 0 records it.
    """
    from unlearn_core.data.criteria import ForgetCriteria
    from unlearn_core.distributed import world
    from unlearn_core.models.architectures import build_model
    from unlearn_core.models.weights import load_state_into
    from unlearn_core.pipeline import train_retrain

    w = world()

    def look() -> tuple[str, float | None, dict | None]:
        assert workspace is not None
        found = _recorded_reference(workspace, data, model, request, recipe)[1]
        if found is None:
            return "", None, None
        return found.id, RunResult.of(found).timing.retrain, workspace.load_weights(found.id)

    found_id, seconds, state = w.from_main(look)  # one process: look() itself
    if found_id:
        return load_state_into(build_model(model.spec), state).eval(), seconds, {"id": found_id, "reused": True}
    config = _recorded_reference_config(data, model, request, recipe)
    split = artifacts.criteria_split(data, ForgetCriteria.parse(request.forget).to_text())
    retrained, seconds = train_retrain(data, split, config, on_progress, should_stop)
    record = _record_retrain(workspace, data, model, request, config, split, retrained, seconds) if w.is_main else None
    return retrained, seconds, {"id": record, "reused": False}


def _recorded_reference_config(data: ImageSet, model: Classifier, request: UnlearnRequest, recipe: OriginalRecipe):
    """The retrain config for ``request`` (what :func:`_recorded_reference` looks for)."""
    from unlearn_core.pipeline import retrain_recipe

    return retrain_recipe(data, model, request.seed, request.device, recipe.recipe)


def _record_retrain(workspace: Workspace | None, data: ImageSet, model: Classifier, request: UnlearnRequest,
                    config, split, retrained: Classifier, seconds: float) -> str:
    """Record a newly trained retrain reference as a run of its own (its weights and scores); its id."""
    from unlearn_core.data.criteria import ForgetCriteria
    from unlearn_core.evaluate import evaluate_model, scored_split
    from unlearn_core.models.weights import state_hash

    assert workspace is not None
    criteria = ForgetCriteria.parse(request.forget)
    key = recipe_hash(config.recipe_key())
    train_request = TrainRequest(dataset=request.dataset, arch=config.arch, epochs=config.epochs,
                                 batch_size=config.batch_size, lr=config.lr, momentum=config.momentum,
                                 weight_decay=config.weight_decay, seed=request.seed,
                                 retrain=True, forget=criteria.to_text())
    record = workspace.create_run(
        "retrain", status="running", dataset=request.dataset, dataset_fingerprint=data.fingerprint(),
        criteria_text=criteria.to_text(), criteria=criteria.to_dict(), method="retrain",
        config=config.to_dict(), recipe_hash=key, seed=request.seed, base_arch=config.arch,
        command=cli_command(train_request.to_argv()),
    )
    workspace.save_weights(record.id, retrained.state_dict(), artifacts.model_metadata(
        retrained, data.fingerprint(), state_hash(model), "retrain", criteria.to_text(), config.recipe_key()))
    scored = scored_split(split, seed=0)  # what evaluate_model scores with the same seed, said in the record
    result = RunResult(blocks={"retrain": evaluate_model(retrained, data, split, seed=0)},
                       timing=Timing(retrain=seconds), sizes=split.sizes(),
                       scored_sizes=scored.sizes() if scored is not split else {})
    workspace.set_status(record.id, "done", metrics=result.to_dict())
    return record.id


def _world_fields(w) -> dict[str, Any]:
    """Registry fields of a torchrun run: how many processes did the work."""
    return {"processes": w.size} if w.active else {}


# ---------------------------------------------------------------------- train

def train_config(request: TrainRequest):
    """The training recipe a :class:`TrainRequest` asks for."""
    from unlearn_core.training import TrainConfig

    return TrainConfig(arch=request.arch, epochs=request.epochs, batch_size=request.batch_size,
                       lr=request.lr, momentum=request.momentum, weight_decay=request.weight_decay,
                       seed=request.seed, device=request.device)


def train(request: TrainRequest, workspace: Workspace | None = None, run_id: str | None = None) -> dict:
    """Train an original model (or the retrain reference), save it, record the run."""
    from unlearn_core.data.catalog import load_dataset
    from unlearn_core.models.weights import save_model, state_hash
    from unlearn_core.training import train_model

    from unlearn_core.distributed import world

    w = world()
    with _opened(workspace, run_id, request, **_world_fields(w)) as context:
        on_progress, should_stop = _hooks(context)
        with w.main_first():  # a data cache rank 0 fills is only read by the others
            data = load_dataset(request.dataset)
        config = train_config(request)
        indices = data.train_indices
        criteria = None
        if request.retrain:
            from unlearn_core.data.criteria import ForgetCriteria

            criteria = ForgetCriteria.parse(request.forget)
            indices = artifacts.criteria_split(data, request.forget).remain_train
        trained = train_model(data, indices, config, on_progress=on_progress, should_stop=should_stop,
                              phase=request.kind)
        if not w.is_main:  # the other ranks helped train; rank 0 saves and records
            return {}
        if request.out:
            save_model(trained.model, request.out, {"data_fingerprint": data.fingerprint(), "dataset": data.name,
                                                    "recipe": config.recipe_key(), "forget": request.forget})
        result = RunResult(blocks={request.kind: {"test_acc": trained.test_acc}},
                           timing=Timing(**{request.kind: trained.seconds}))
        summary = {"dataset": data.name, "n_train": int(len(indices)), "test_acc": trained.test_acc,
                   "seconds": trained.seconds, "out": request.out, "config": config.to_dict(),
                   "model_hash": state_hash(trained.model), "result": result.to_dict()}
        if context is None:
            return summary
        context.workspace.save_weights(context.run_id, trained.model.state_dict(), artifacts.model_metadata(
            trained.model, data.fingerprint(), "", request.kind, request.forget, config.recipe_key()))
        context.workspace.save_json(context.run_id, "history.json", trained.history)
        context.finish(metrics=result.to_dict(), dataset_fingerprint=data.fingerprint(), config=config.to_dict(),
                       recipe_hash=recipe_hash(config.recipe_key()),
                       criteria=criteria.to_dict() if criteria else {},
                       device=str(next(trained.model.parameters()).device))
        summary["run_id"] = context.run_id
    return summary


# ---------------------------------------------------------------------- compose

def compose(request: ComposeRequest, workspace: Workspace, run_id: str | None = None) -> dict:
    """Load the runs, build and score the candidates, keep each one's weights; save one if asked.

    Every candidate's weights become an artifact of this run (``candidate-N.safetensors``,
    named in its summary as ``weights``), so picking one later (:func:`save_candidate`) copies
    it instead of composing again. A model is saved as this run's own only for
    ``request.select``; otherwise nothing is chosen. Each candidate is also compared with the
    runs composed (``beaten_by`` / ``same_as``, see :func:`unlearn_core.compose.compare_with_parents`).
    """
    from unlearn_core.compose import CompositionConfig, compare_with_parents, compose_candidates, union_split
    from unlearn_core.evaluate import compare_blocks, evaluate_model

    config = CompositionConfig(
        strategy=request.strategy, block_choice=dict(request.blocks), recalibrate_bn=request.recalibrate,
        repair_epochs=request.repair_epochs, repair_head_only=request.repair_head_only, seed=request.seed,
        **({"alphas": tuple(request.alphas)} if request.alphas else {}),
        **({"scales": tuple(request.scales)} if request.scales else {}),
    )
    if run_id is None:  # before recording anything (a job's run records its own failure)
        from unlearn_core.preflight import check_compose

        check_compose(workspace, list(request.runs), config)
    with _opened(workspace, run_id, request, config=config.to_dict()) as context:
        records = [workspace.get(run) for run in request.runs]
        for record in records:
            if record.status != "done" or record.kind not in ("unlearn", "compose"):
                raise UserError(f"Run {record.id} is a {record.status} {record.kind} run; "
                                "compose finished unlearning runs.")
        first = records[0]
        data = artifacts.run_data(workspace, records)
        original = artifacts.base_model(first, data)
        models = [artifacts.load_run_model(workspace, record.id) for record in records]
        splits = [artifacts.criteria_split(data, record.criteria_text) for record in records]
        same_criteria = len({r.criteria_text for r in records}) == 1
        split = splits[0] if same_criteria else union_split(splits)
        first_result = RunResult.of(first)
        retrain_block = first_result.retrain if same_criteria else None
        context.update(dataset=first.dataset, dataset_fingerprint=first.dataset_fingerprint,
                       base_model_hash=first.base_model_hash, base_weights=first.base_weights,
                       base_arch=first.base_arch, retrain_run=first.retrain_run if retrain_block else "",
                       criteria_text=" | ".join(dict.fromkeys(r.criteria_text for r in records)))
        candidates = compose_candidates(
            config, original, models, data, split, context.reporter, context.should_stop,
            forget_splits=None if same_criteria else splits, base_hashes=[r.base_model_hash for r in records],
            names=list(request.runs))
        original_block = evaluate_model(original, data, split, seed=config.seed)
        # the inputs' own scores are on the same sets only when they forgot the same images
        parent_blocks = {r.id: RunResult.of(r).unlearned for r in records} if same_criteria else {}
        parent_blocks = {name: block for name, block in parent_blocks.items() if block}
        metadata = artifacts.model_metadata  # the same header as any run's model file
        recipe = artifacts.recorded_run_recipe(workspace, first.id)
        criteria_text = " | ".join(r.criteria_text for r in records)
        summaries = []
        for number, candidate in enumerate(candidates):
            summary = candidate.summary()
            summary.update(compare_blocks(original_block, candidate.metrics, retrain_block))
            summary.update(compare_with_parents(candidate.metrics, parent_blocks, retrain_block))
            summary["weights"] = candidate_file(number)
            workspace.save_weights(context.run_id, candidate.model.state_dict(), metadata(
                candidate.model, first.dataset_fingerprint, first.base_model_hash, f"compose:{config.strategy}",
                criteria_text, recipe), name=summary["weights"])
            summaries.append(summary)
        chosen = choose(summaries, request.select)
        blocks = {"original": original_block}
        if chosen is not None:  # only a candidate asked for by name is saved as this run's model
            model = next(c.model for c in candidates if c.label == chosen["label"])
            workspace.save_weights(context.run_id, model.state_dict(), metadata(
                model, first.dataset_fingerprint, first.base_model_hash, f"compose:{config.strategy}",
                criteria_text, recipe))
            blocks["unlearned"] = chosen["metrics"]
        if retrain_block is not None:
            blocks["retrain"] = retrain_block
        result = RunResult(
            blocks=blocks, sizes=split.sizes(), candidates=summaries, chosen=chosen["label"] if chosen else None,
            comparison=_comparison(chosen or {}),
            criteria_description=" | ".join(dict.fromkeys(
                RunResult.of(r).criteria_description or r.criteria_text for r in records)))
        context.finish(metrics=result.to_dict())
        return {"run_id": context.run_id, "dataset": first.dataset, "strategy": config.strategy,
                "config": config.to_dict(), "criteria": [r.criteria_text for r in records],
                "result": result.to_dict()}


def candidate_file(number: int) -> str:
    """The artifact name of a composition's candidate ``number`` (0-based)."""
    return f"candidate-{number}.safetensors"


def _comparison(summary: dict) -> Comparison:
    return Comparison(**{k: summary.get(k) for k in ("distance_to_retrain", "original_distance_to_retrain",
                                                      "avg_gap", "collapsed")})


def choose(summaries: list[dict], select: str | None) -> dict | None:
    """The candidate named ``select``, else ``None``: a composition saves a model only when asked.

    Why no automatic choice: an automatic "closest to the retrained model" pick was saved
    without the user seeing it, and was not always what its name said (see :func:`suggest`).
    """
    if select is None:
        return None
    for summary in summaries:
        if summary["label"] == select:
            return summary
    raise UserError(f"No candidate {select!r}; candidates: {', '.join(s['label'] for s in summaries)}.")


def suggest(summaries: list[dict]) -> tuple[str, str] | None:
    """A candidate to preselect and why, in words, or ``None``: nothing is saved by it.

    The one closest to the retrained model among those that keep their inputs' forgetting
    (``forgetting_lost`` unset) and are neither worse than an input run nor one of them
    unchanged (saving an input run again gains nothing); without a retrained model, none (no
    honest single score), and none when every candidate is ruled out.
    """
    fair = [s for s in summaries if not (s.get("forgetting_lost") or s.get("beaten_by") or s.get("same_as"))]
    if not fair or not all(s.get("distance_to_retrain") is not None for s in fair):
        return None
    best = min(fair, key=lambda s: s["distance_to_retrain"])
    return best["label"], (f"closest to the retrained model (distance {best['distance_to_retrain']:.3f}) among "
                           "the candidates that keep their inputs' forgetting and improve on the input runs")


def save_candidate(request: SaveCandidateRequest, workspace: Workspace) -> dict:
    """Save a composition's candidate as a new run from the weights the composition kept.

    Nothing is recomputed: the candidate's file is copied (its content hash checked) and its
    recorded scores become the new run's. The new run's command is the composition's with
    ``--select``, which rebuilds the same model; its parents are the composition's inputs and
    the composition itself. Saving the same candidate twice returns the run saved first.
    """
    record = workspace.get(request.run)
    if record.kind != "compose" or record.status != "done":
        raise UserError(f"Run {record.id} is a {record.status} {record.kind} run; save candidates of a finished "
                        "composition.")
    result = RunResult.of(record)
    summary = next((c for c in result.candidates if c.get("label") == request.candidate), None)
    if summary is None:
        raise UserError(f"Composition {record.id} has no candidate {request.candidate!r}; candidates: "
                        f"{', '.join(c.get('label', '?') for c in result.candidates) or 'none'}.")
    compose_request = ComposeRequest.from_argv(command_argv(record.command)).with_select(request.candidate)
    name = summary.get("weights")
    if not name or not workspace.artifact_path(record.id, name).is_file():
        raise UserError(f"Composition {record.id} did not keep the weights of {request.candidate!r} (it was "
                        "made by an older version, or its files were removed); build it again with "
                        f"`{compose_request.command_text}`.")
    for other in workspace.list_runs(kind="compose", status="done"):
        if record.id in other.parents and RunResult.of(other).chosen == request.candidate:
            return {"run_id": other.id, "composition": record.id, "candidate": request.candidate, "new": False,
                    "result": RunResult.of(other).to_dict()}
    state, metadata = workspace.load_weights(record.id, name), workspace.weights_metadata(record.id, name)
    saved = RunResult(
        blocks={**{k: v for k, v in result.blocks.items() if k != "unlearned"}, "unlearned": summary["metrics"]},
        comparison=_comparison(summary), sizes=result.sizes, criteria_description=result.criteria_description,
        candidates=result.candidates, chosen=request.candidate)
    new = workspace.create_run(
        "compose", status="running", dataset=record.dataset, dataset_fingerprint=record.dataset_fingerprint,
        base_model_hash=record.base_model_hash, base_weights=record.base_weights, base_arch=record.base_arch,
        retrain_run=record.retrain_run, criteria_text=record.criteria_text, criteria=record.criteria,
        method=record.method, config=record.config, seed=record.seed, device=record.device,
        label=request.label or f"{record.label or 'composition ' + record.id} · {request.candidate}",
        command=cli_command(compose_request.to_argv()), parents=[*record.parents, record.id])
    try:
        workspace.save_weights(new.id, state, metadata)
        workspace.set_status(new.id, "done", metrics=saved.to_dict())
    except BaseException:  # never leave a half-saved run behind
        workspace.delete(new.id, force=True)
        raise
    return {"run_id": new.id, "composition": record.id, "candidate": request.candidate, "new": True,
            "result": saved.to_dict()}
