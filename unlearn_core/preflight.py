"""Checks made before any work starts: before a run is recorded, queued or detached.

Why a module of its own: a problem that can be seen from the command's inputs alone (an
unknown method, a setting out of range, criteria that do not parse, a damaged weight file, a
data file that is not a readable archive) must be refused with a clear message and exit code
2, leaving the run registry untouched, instead of surfacing minutes later as a failed
background job or as a misleading error from deep inside training.

What needs the data itself (does the model have as many classes as the data? do the
criteria's columns exist, and do they leave something to forget and to keep?) is checked by
loading the data here too, also before ``--detach``; the run then reuses the loaded data
(:func:`~unlearn_core.data.catalog.load_dataset` keeps the last user file; built-in sets are
cached), so nothing is decoded twice.

Each function takes plain values (not parsed arguments), so the command line and the
dashboard can both call them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from unlearn_core.errors import UserError


def check_dataset(name_or_path: str) -> None:
    """A built-in set's name, a folder, or a data file whose archive headers are sane."""
    from unlearn_core.data.builtin import BUILTIN_SETS

    if name_or_path in BUILTIN_SETS:
        return
    path = Path(name_or_path)
    if not path.exists():
        raise UserError(
            f"Unknown data set {name_or_path!r}: it is neither a built-in set "
            f"({', '.join(BUILTIN_SETS)}) nor an existing file or folder."
        )
    from unlearn_core.data.loaders import check_upload

    check_upload(path.name, path)


def check_weights(path: str | None, arch: str | None) -> None:
    """A weight file that reads, matches its recorded hash, holds finite values, and whose
    recorded spec (used when ``arch`` is not given) is valid JSON and sane."""
    if path is None:
        return
    from unlearn_core.models.weights import SPEC_KEY, check_values, read_weights, spec_from_metadata

    state, metadata = read_weights(path)
    name = f"The weights {Path(path).name}"
    check_values(state, name)
    if arch is None and SPEC_KEY in metadata:
        spec_from_metadata(metadata, name)


def check_criteria(text: str | None) -> None:
    if text is not None:
        from unlearn_core.data.criteria import ForgetCriteria

        ForgetCriteria.parse(text)


def check_device(device: str) -> None:
    from unlearn_core.device import resolve_device

    resolve_device(device)


def check_unlearn(*, dataset: str, forget: str, method: str, overrides: Mapping[str, Any],
                  preset: str | None, seed: int, device: str, weights: str | None,
                  arch: str | None, retrain: bool = False, recipe: Any = None) -> None:
    """Everything ``unlearn`` can check before the work: settings, criteria, files, then the
    data (criteria columns, a non-empty forget and remain set) and the model's fit to it; with
    ``retrain``, that the original's training recipe is known (recorded, or ``recipe``, a
    :class:`~unlearn_core.runs.recipe.Recipe`) and usable."""
    from unlearn_core.methods.base import get_method

    settings = dict(overrides)
    settings.setdefault("seed", seed)
    settings.setdefault("device", device)
    get_method(method).make_config(settings, preset=preset)
    check_criteria(forget)
    check_device(device)
    check_dataset(dataset)
    check_weights(weights, arch)
    data = _load(dataset)
    _check_forget_split(data, forget)
    from unlearn_core.runs.artifacts import load_model_for

    model = load_model_for(data, weights, arch)  # classes and channels must match the data
    if retrain:
        from unlearn_core.pipeline import original_recipe, retrain_recipe

        retrain_recipe(data, model, seed, device, original_recipe(data.name, weights, recipe).recipe)


def _load(dataset: str):
    from unlearn_core.data.catalog import load_dataset

    return load_dataset(dataset)


def _check_forget_split(data, forget: str):
    """The criteria's columns exist, and they leave something to forget and something to keep."""
    from unlearn_core.data.criteria import ForgetCriteria, split_sets
    from unlearn_core.methods.base import UnlearnData, check_split

    split = split_sets(data, ForgetCriteria.parse(forget))
    check_split(UnlearnData(data, split))
    return split


def check_train(*, dataset: str, config: Any, retrain: bool, forget: str | None,
                out: str | None) -> None:
    """Everything ``train`` can check before the work (``config`` is a TrainConfig)."""
    config.validate()
    if retrain and not forget:
        raise UserError("--retrain needs --forget CRITERIA: the retrain reference learns the remain set only.")
    check_criteria(forget)
    check_device(config.device)
    if out is not None and Path(out).is_dir():
        raise UserError(f"--out {out} is a folder; give a file name such as {Path(out) / 'model.safetensors'}.")
    check_dataset(dataset)
    data = _load(dataset)
    if retrain:
        _check_forget_split(data, forget)


def check_compose(workspace: Any, run_ids: list[str], config: Any) -> None:
    """The runs exist, are finished unlearning runs with intact models; the settings are usable."""
    config.validate(len(run_ids))
    for run_id in run_ids:
        record = workspace.get(run_id)
        if record.status != "done" or record.kind not in ("unlearn", "compose"):
            raise UserError(f"Run {record.id} is a {record.status} {record.kind} run; compose "
                            "finished unlearning runs.")
        workspace.load_weights(run_id)  # present, intact (hash recorded at save) and readable
