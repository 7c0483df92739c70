"""A finished run read back: its base model, its own model, its split, its t-SNE panels.

Why here and not in the dashboard: the Results page, the composition workflow, the HTML report
and ``runs embed`` all need the same facts of a recorded run, and they are read from the
record's own fields (``base_weights``, ``base_arch``, ``retrain_run``), never from its command
line. The dashboard only wraps these functions in its caches.
"""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING

import numpy as np

from unlearn_core.errors import UserError
from unlearn_core.runs.registry import WEIGHTS_NAME, RunRecord, Workspace

if TYPE_CHECKING:
    from unlearn_core.data.criteria import ForgetSplit
    from unlearn_core.data.imageset import ImageSet
    from unlearn_core.embedding import EmbeddingPanel
    from unlearn_core.models.architectures import Classifier

#: The run's default t-SNE panels (:func:`run_panels`), shown by the Results page and the report.
EMBEDDING_ARTIFACT = "embedding.npz"
#: Per-block CKA to the retrained model, saved with a finished run (Results computes it, the report shows it).
BLOCK_SIMILARITY_ARTIFACT = "block_similarity.json"
#: The default sample of the panels that are saved with the run.
DEFAULT_POINTS, DEFAULT_SEED = 2000, 0
SPLIT_ARTIFACT = "split.json"


def load_model_for(data: ImageSet, weights: str | None, arch: str | None) -> Classifier:
    """The user's weights (checked against the data's shape and classes) or the demo model."""
    from unlearn_core.assets import load_demo_model
    from unlearn_core.models.weights import load_model_for_data

    if not weights:
        return load_demo_model(data)
    return load_model_for_data(data, weights, arch or None)


def base_model(record: RunRecord, data: ImageSet) -> Classifier:
    """The model the run started from, checked against the hash the run recorded."""
    from unlearn_core.models.weights import state_hash

    original = load_model_for(data, record.base_weights or None, record.base_arch or None)
    if record.base_model_hash and state_hash(original) != record.base_model_hash:
        raise UserError(f"The original model of run {record.id} is no longer available unchanged "
                        f"({record.base_weights or 'the shipped demo model'} changed).")
    return original.eval()


def load_run_model(workspace: Workspace, run_id: str) -> Classifier:
    """The model a run saved (its architecture is in the file's header)."""
    from unlearn_core.models.weights import load_model

    return load_model(workspace.artifact_path(run_id, WEIGHTS_NAME)).eval()


def run_data(workspace: Workspace, records: list[RunRecord]) -> ImageSet:
    """The data set of ``records`` (one set for all), unchanged since they ran."""
    from unlearn_core.data.catalog import load_dataset

    first = records[0]
    for record in records[1:]:
        if record.dataset_fingerprint != first.dataset_fingerprint:
            raise UserError(f"Runs {first.id} and {record.id} used different data; compose runs on the same data set.")
    data = load_dataset(first.dataset)
    if first.dataset_fingerprint and data.fingerprint() != first.dataset_fingerprint:
        raise UserError(f"The data set {first.dataset!r} has changed since run {first.id}; rerun it first.")
    return data


def criteria_split(data: ImageSet, criteria_text: str) -> ForgetSplit:
    from unlearn_core.data.criteria import ForgetCriteria, split_sets

    return split_sets(data, ForgetCriteria.parse(criteria_text))


def run_split(workspace: Workspace, record: RunRecord, data: ImageSet) -> ForgetSplit:
    """The run's D_f, D_r, T_f, T_r: its saved split, else recomputed from its criteria.

    A composition's split is its inputs' (their union when their criteria differ).
    """
    from unlearn_core.data.criteria import ForgetSplit

    if record.kind == "compose" and record.parents:
        from unlearn_core.compose import union_split

        parents = [workspace.get(p) for p in record.parents if workspace.exists(p)]
        splits = [run_split(workspace, parent, data) for parent in parents]
        if len({parent.criteria_text for parent in parents}) <= 1 and splits:
            return splits[0]
        return union_split(splits)
    try:
        saved = workspace.load_json(record.id, SPLIT_ARTIFACT)
        return ForgetSplit(**{k: np.asarray(v, dtype=np.int64) for k, v in saved.items()})
    except (UserError, TypeError, OSError):
        return criteria_split(data, record.criteria_text)


def run_models(workspace: Workspace, record: RunRecord, original: Classifier) -> dict[str, Classifier]:
    """``{"original", "retrain"?, "unlearned"}`` models of a finished run."""
    from unlearn_core.models.architectures import build_model
    from unlearn_core.models.weights import load_state_into

    models = {"original": original}
    if record.retrain_run and workspace.exists(record.retrain_run):
        weights = workspace.load_weights(record.retrain_run)
        models["retrain"] = load_state_into(build_model(original.spec), weights).eval()
    models["unlearned"] = load_run_model(workspace, record.id)
    return models


def run_panels(workspace: Workspace, record: RunRecord, data: ImageSet, models: dict[str, Classifier],
               split: ForgetSplit, max_points: int = DEFAULT_POINTS,
               seed: int = DEFAULT_SEED) -> dict[str, EmbeddingPanel]:
    """The t-SNE decision-region panels of the run's models on a sample of test images.

    The default panels are saved in the run's folder (:data:`EMBEDDING_ARTIFACT`): they survive
    an app restart, and the run's HTML report includes them.
    """
    from unlearn_core.embedding import compute_panels, load_panels, sample_points, save_panels

    saved = workspace.artifact_path(record.id, EMBEDDING_ARTIFACT)
    default = (max_points, seed) == (DEFAULT_POINTS, DEFAULT_SEED)
    if default and saved.is_file():
        try:
            return load_panels(saved)
        except (UserError, OSError, KeyError, ValueError):
            pass  # damaged or from an older version: compute again
    indices = sample_points(data, split, max_points=max_points, seed=seed)
    panels = compute_panels(models, data, indices, seed=seed, split=split)
    if default and record.status == "done":
        try:
            save_panels(panels, saved)
        except OSError:
            pass  # a read-only workspace still shows the panels
    return panels


def run_block_similarity(workspace: Workspace, record: RunRecord, data: ImageSet, models: dict[str, Classifier],
                         split: ForgetSplit) -> list:
    """Per-block CKA of the run's models to its retrained model (empty without a retrain).

    Saved in the run's folder (:data:`BLOCK_SIMILARITY_ARTIFACT`) once the run is done, so it
    is computed once and the run's HTML report can show it (:func:`load_block_similarity`).
    """
    from unlearn_core.cka import per_block_similarity

    saved = load_block_similarity(workspace, record.id)
    if saved:
        return saved
    if "retrain" not in models:
        return []
    rows = per_block_similarity(models["original"], models["unlearned"], models["retrain"], data,
                                split.forget_train, split.remain_train)
    if record.status == "done":
        try:
            workspace.save_json(record.id, BLOCK_SIMILARITY_ARTIFACT, [dataclasses.asdict(r) for r in rows])
        except (OSError, UserError):
            pass  # a read-only workspace still shows the comparison on the page
    return rows


def load_block_similarity(workspace: Workspace, run_id: str) -> list:
    """The run's saved per-block CKA rows (:class:`~unlearn_core.cka.BlockSimilarity`); empty when
    none was saved or the file cannot be read."""
    from unlearn_core.cka import BlockSimilarity

    path = workspace.artifact_path(run_id, BLOCK_SIMILARITY_ARTIFACT)
    try:
        return [BlockSimilarity(**row) for row in json.loads(path.read_text())]
    except (OSError, ValueError, TypeError):
        return []


def embed_run(workspace: Workspace, run_id: str) -> dict[str, EmbeddingPanel]:
    """Compute (or read) and save a finished run's default t-SNE panels (``runs embed ID``)."""
    record = workspace.get(run_id)
    if record.status != "done" or record.kind not in ("unlearn", "compose"):
        raise UserError(f"Run {run_id} is a {record.status} {record.kind} run; "
                        "decision regions are drawn for finished unlearning and composition runs.")
    data = run_data(workspace, [record])
    models = run_models(workspace, record, base_model(record, data))
    return run_panels(workspace, record, data, models, run_split(workspace, record, data))


def model_metadata(model: Classifier, data_fingerprint: str, base_model_hash: str, method: str,
                   criteria: str, recipe: str = "") -> dict[str, str]:
    """Provenance stored in a run's safetensors header, so the file explains itself.

    ``recipe`` is how the model's original was trained (``Recipe`` text, or a ``TrainConfig``
    recipe key): a file used later as an original then brings its own recipe for the retrain
    reference instead of the user having to remember it.
    """
    from unlearn_core.models.weights import SPEC_KEY
    from unlearn_core.runs.recipe import METADATA_KEY

    meta = {SPEC_KEY: json.dumps(model.spec.to_dict()), "data_fingerprint": data_fingerprint,
            "base_model_hash": base_model_hash, "method": method, "criteria": criteria}
    if recipe:
        meta[METADATA_KEY] = recipe
    return meta


def recorded_run_recipe(workspace: Workspace, run_id: str) -> str:
    """The recipe text a run's saved model records ("" when none, or unreadable)."""
    from unlearn_core.models.weights import file_metadata
    from unlearn_core.runs.recipe import METADATA_KEY

    try:
        return file_metadata(workspace.artifact_path(run_id, WEIGHTS_NAME)).get(METADATA_KEY, "")
    except (UserError, OSError):
        return ""
