"""Which run in progress a dashboard page may take up after a reload, and which it only mentions.

Why: a reloaded page is a new session that knows no run. Taking up *any* active run of the
workspace handed one browser tab the progress panel, the Cancel button and then the results of a
run another tab had started on other data. A run started for the same data set, model and forget
criteria is the run this page would have started, so showing it again is safe; every other run in
progress is only named, without a Cancel button (it can be opened on purpose from Runs).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from unlearn_core.data.criteria import ForgetCriteria
from unlearn_core.errors import UserError
from unlearn_core.labels import dataset_name
from unlearn_core.runs.registry import RunRecord
from unlearn_core.runs.result import RunResult


@dataclass(frozen=True)
class RunsInProgress:
    """Active runs of one kind, split by whether they belong to the page's current selection."""

    mine: RunRecord | None
    others: tuple[RunRecord, ...]


def same_criteria(a: str, b: str) -> bool:
    """Whether two criteria texts select the same images (compared in their normalized wording)."""
    def normal(text: str) -> str:
        try:
            return ForgetCriteria.parse(text).to_text()
        except UserError:
            return text.strip()

    return normal(a) == normal(b)


def unlearn_runs_in_progress(records: Iterable[RunRecord], dataset: str, criteria: str,
                             weights: str = "") -> RunsInProgress:
    """Active runs, the newest one for this data set, model (``weights``; empty: the demo model)
    and criteria first.

    ``records`` are the workspace's runs of one kind, newest first (``Workspace.list_runs``).
    """
    active = [r for r in records if r.is_active]
    mine = next((r for r in active if r.dataset == dataset and r.base_weights == (weights or "")
                 and same_criteria(r.criteria_text, criteria)), None)
    return RunsInProgress(mine, tuple(r for r in active if r is not mine))


def compose_runs_in_progress(records: Iterable[RunRecord], parents: Iterable[str]) -> RunsInProgress:
    """Active compositions, the newest one of exactly these input runs first."""
    active = [r for r in records if r.is_active]
    wanted = set(parents)
    mine = next((r for r in active if wanted and set(r.parents) == wanted), None)
    return RunsInProgress(mine, tuple(r for r in active if r is not mine))


def describe_other(record: RunRecord) -> str:
    """One line naming a run in progress that is not this page's (no way to cancel it here)."""
    what = record.label or record.method or record.kind
    on = f" on {dataset_name(record.dataset)}" if record.dataset else ""  # an upload by its file name
    forgetting = f", forgetting {record.criteria_text}" if record.criteria_text else ""
    return (f"Another run is in progress: {what}{on}{forgetting} (run {record.id}, {record.status}). "
            "It was started elsewhere (another tab or another selection); open it from 6 · Runs & export.")


def trained_models(records: Iterable[RunRecord], weights_exist, dataset: str | None = None) -> list[RunRecord]:
    """Finished training runs whose weights are on disk, newest first: the models a user can pick.

    Why: a model trained from the dashboard (or the command line) outlives the browser session
    that started it; after a reload, or days later, it must be choosable without downloading its
    weights and uploading them again. ``weights_exist(record)`` says whether the run's weights
    file is there (a run whose folder was cleaned up is left out); ``dataset`` keeps the runs
    trained on that data set only, since a model is only usable with the data it learned.
    """
    found = [r for r in records if r.kind == "train" and r.status == "done"
             and (dataset is None or r.dataset == dataset) and weights_exist(r)]
    return sorted(found, key=lambda r: r.created_at or "", reverse=True)


def trained_model_label(record: RunRecord) -> str:
    """How a training run is named in a model picker: id, architecture, epochs, test accuracy, date."""
    config = record.config or {}
    parts = [f"run {record.id}"]
    if config.get("arch"):
        parts.append(str(config["arch"]))
    if config.get("epochs"):
        parts.append(f"{config['epochs']} epochs")
    test_acc = _test_accuracy(record)
    if test_acc is not None:
        parts.append(f"test accuracy {test_acc:.0%}")
    if record.created_at:
        parts.append(f"trained {record.created_at[:16].replace('T', ' ')}")
    return " · ".join(parts)


def _test_accuracy(record: RunRecord) -> float | None:
    """The training run's recorded test accuracy, when its metrics hold one."""
    try:
        _, block = RunResult.of(record).main_block()
    except (UserError, ValueError, KeyError, TypeError):
        return None
    value = block.get("test_acc")
    return float(value) if isinstance(value, (int, float)) else None
