"""Cached loaders for the dashboard, keyed by content.

Why here: pages rerun top to bottom on every click, so anything heavy (generating a data set,
loading a model, predicting the test set) must be computed once and reused. Keys are content
identifiers: a built-in set's name (its data are generated from a fixed seed), an upload's
path (which contains the file's SHA-256) and a model key (``ModelChoice.key``: the weights'
path or run id). Uploads are written to the workspace so background jobs and the command
line can read exactly the same file (``--dataset PATH`` / ``--weights PATH``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import zipfile
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import numpy as np
import streamlit as st

from unlearn_core.errors import UserError
from unlearn_core.ui.state import ModelChoice

if TYPE_CHECKING:  # torch (~3 s to import), pandas (~0.7 s): every page imports this module before it can draw
    import pandas as pd

    from unlearn_core.data.imageset import ImageSet

UPLOADS = "uploads"


# --- workspace ---------------------------------------------------------------------------------
@st.cache_resource(show_spinner=False)
def _workspace(path: str):
    from unlearn_core.runs.registry import Workspace

    return Workspace(path)


def trained_models(dataset: str | None = None) -> list:
    """Finished training runs of the workspace with their weights on disk (on ``dataset`` if given)."""
    from unlearn_core.runs.attach import trained_models as finished
    from unlearn_core.runs.registry import WEIGHTS_NAME

    ws = workspace()
    return finished(ws.list_runs(kind="train", status="done"),
                    lambda r: ws.artifact_path(r.id, WEIGHTS_NAME).is_file(), dataset)


def weights_of(run_id: str) -> str:
    """Path of a run's saved weights."""
    from unlearn_core.runs.registry import WEIGHTS_NAME

    return str(workspace().artifact_path(run_id, WEIGHTS_NAME))


def workspace():
    """The run registry of ``$UNLEARN_STUDIO_HOME`` (or ``./workspace``), opened once."""
    from unlearn_core.runs.registry import default_home

    return _workspace(str(default_home().resolve()))


# --- data ----------------------------------------------------------------------------------------
@st.cache_resource(show_spinner=False, max_entries=4)
def dataset(ref: str) -> ImageSet:
    """A built-in set by name or a stored upload by path (what ``--dataset`` accepts)."""
    from unlearn_core.data.catalog import load_dataset

    return load_dataset(ref)


@st.cache_data(show_spinner=False, max_entries=8)
def fingerprint(ref: str) -> str:
    return dataset(ref).fingerprint()


@st.cache_data(show_spinner=False, max_entries=128)
def forget_mask(ref: str, criteria_text: str) -> np.ndarray:
    """Boolean mask of the samples the criteria select (raises ``UserError`` for bad text)."""
    from unlearn_core.data.criteria import ForgetCriteria

    data = dataset(ref)
    return ForgetCriteria.parse(criteria_text).mask(data.metadata, data.classes)


def split_counts(data: ImageSet, mask: np.ndarray) -> pd.DataFrame:
    """Per-class counts of forget/keep × train/test for a selection mask (cheap: bincounts)."""
    import pandas as pd

    labels = data.metadata["label"].to_numpy(dtype=np.int64)
    train = data.metadata["split"].to_numpy() == "train"
    k = data.num_classes
    table = {
        "forget_train": np.bincount(labels[mask & train], minlength=k)[:k],
        "remain_train": np.bincount(labels[~mask & train], minlength=k)[:k],
        "forget_test": np.bincount(labels[mask & ~train], minlength=k)[:k],
        "remain_test": np.bincount(labels[~mask & ~train], minlength=k)[:k],
    }
    return pd.DataFrame(table, index=pd.Index(list(data.classes), name="class"))


# --- models -------------------------------------------------------------------------------------
@st.cache_resource(show_spinner=False, max_entries=6)
def model(ref: str, model_key: str):
    """The selected model, checked against the data set (shape, classes, shipped fingerprint)."""
    from unlearn_core.runs.artifacts import load_model_for

    data = dataset(ref)
    choice = ModelChoice.from_key(model_key)
    loaded = load_model_for(data, None if choice.kind == "shipped" else choice.path, choice.arch or None)
    spec = loaded.spec
    if spec.num_classes != data.num_classes or spec.in_channels != data.channels:
        raise UserError(
            f"The model predicts {spec.num_classes} classes from {spec.in_channels}-channel images, "
            f"but the data set has {data.num_classes} classes and {data.channels}-channel images. "
            "Choose weights trained on this data set."
        )
    return loaded.eval()


@st.cache_data(show_spinner=False, max_entries=16)
def recorded_recipe(ref: str, model_key: str):
    """The training recipe the selected model records (its file's, or the demo model's), or None."""
    from unlearn_core.pipeline import recorded_recipe as find

    choice = ModelChoice.from_key(model_key)
    return find(dataset(ref).name, None if choice.kind == "shipped" else choice.path)


@st.cache_data(show_spinner=False, max_entries=8)
def test_logits(ref: str, model_key: str) -> tuple[np.ndarray, np.ndarray]:
    """The model's logits on the test split and the true labels."""
    from unlearn_core.models.inference import predict_logits

    data = dataset(ref)
    indices = data.test_indices
    logits = predict_logits(model(ref, model_key), data.images, indices)
    return logits, data.labels.numpy()[indices]


# --- uploads ----------------------------------------------------------------------------------------
def _uploads_dir(digest: str) -> Path:
    return Path(workspace().path) / UPLOADS / digest


def _safe_name(name: str, default: str) -> str:
    stem = Path(name or default).name
    cleaned = "".join(c if c.isalnum() or c in "._-" else "_" for c in stem).lstrip(".")
    return cleaned or default


def store_data_upload(name: str, data: bytes, csv: bytes | None = None, csv_name: str = "",
                      file_column: str = "file", label_column: str = "label", image_size: int | None = None) -> str:
    """Write an uploaded data file into the workspace, load it, and return the path ``--dataset`` takes.

    A ZIP with a separate CSV becomes one ZIP: the images plus the CSV at its root (any CSV
    the ZIP already had is left out so there is exactly one), because the command line takes
    a single file. When the user picked other columns for the file names and classes
    (``file_column``, ``label_column``), the stored CSV has them renamed to ``file`` and
    ``label``, in the CSV's own folder, so every later load reads it without options. Images keep
    their native size; when the user chose to resize (``image_size``, ZIPs only), the stored ZIP
    holds the resized images (lossless PNG), so every later load reads the same pixels without
    options. The folder name is the content hash, so the same upload is stored once.
    The upload gets the command line's checks: headers first (a zip bomb or a forged
    ``.npz`` is refused before anything is written), then the full load; a refused upload
    leaves nothing behind, and a stored one is never half-written (temporary file, rename).
    """
    from unlearn_core.data.archive import BoundedZip
    from unlearn_core.data.loaders import check_upload

    check_upload(name, data)
    csv_folder = ""
    if (file_column, label_column) != ("file", "label") and name.lower().endswith(".zip"):
        from unlearn_core.data.loaders import upload_csv, with_standard_columns

        raw, found_name, csv_folder = upload_csv(data, csv)
        csv = with_standard_columns(raw, found_name, file_column, label_column)
        csv_name = csv_name or PurePosixPath(found_name).name
    resize = image_size is not None and name.lower().endswith(".zip")
    digest = hashlib.sha256(data + (csv or b"") + (f"|{image_size}".encode() if resize else b"")).hexdigest()[:16]
    folder = _uploads_dir(digest)
    target = folder / _safe_name(name, "upload.zip")
    if target.exists():
        return str(target)
    folder.mkdir(parents=True, exist_ok=True)
    temporary = folder / f".{target.name}.{secrets.token_hex(3)}.tmp"
    try:
        if (csv is not None or resize) and target.suffix.lower() == ".zip":
            from unlearn_core.data.loaders import resized_image_file

            with BoundedZip(data) as source, zipfile.ZipFile(temporary, "w") as out:
                for info in source.members():  # bounded: checked against declared sizes
                    is_csv = info.filename.lower().endswith(".csv")
                    if is_csv and csv is not None:
                        continue
                    raw = source.read(info)
                    if resize and not is_csv and not info.is_dir():
                        with contextlib.suppress(Exception):  # not an image: the load names it
                            raw = resized_image_file(raw, image_size)
                    out.writestr(info, raw)
                if csv is not None:
                    out.writestr(csv_folder + _safe_name(csv_name, "labels.csv"), csv)
        else:
            temporary.write_bytes(data)
        os.replace(temporary, target)
        dataset(str(target))  # the full load (cached for the page that asked)
    except BaseException:
        temporary.unlink(missing_ok=True)
        target.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            folder.rmdir()
        raise
    return str(target)


@st.cache_data(show_spinner=False, max_entries=8)
def upload_image_size(data: bytes, csv: bytes | None = None, file_column: str = "file") -> tuple[int, int]:
    """``(width, height)`` of an uploaded ZIP's first listed image (what the page says it keeps)."""
    from unlearn_core.data.loaders import first_image_size

    return first_image_size(data, csv, file_column)


def store_weights_upload(name: str, data: bytes) -> str:
    """Write uploaded weights into the workspace; returns the path ``--weights`` takes."""
    digest = hashlib.sha256(data).hexdigest()[:16]
    folder = _uploads_dir(digest)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / _safe_name(name, "weights.safetensors")
    if not target.exists():
        target.write_bytes(data)
    return str(target)


# --- runs ---------------------------------------------------------------------------------------
def base_model_choice(record) -> ModelChoice:
    """The model a run started from (its recorded ``base_weights``/``base_arch``)."""
    if not record.base_weights:
        return ModelChoice("shipped")
    return ModelChoice("file", record.base_weights, arch=record.base_arch)


@st.cache_resource(show_spinner=False, max_entries=6)
def run_models(run_id: str) -> dict:
    """``{"original", "unlearned", "retrain"?}`` models of a finished run (runs never change)."""
    from unlearn_core.runs import artifacts

    record = workspace().get(run_id)
    return artifacts.run_models(workspace(), record, model(record.dataset, base_model_choice(record).key))


@st.cache_data(show_spinner=False, max_entries=16)
def run_split(run_id: str):
    """The run's D_f, D_r, T_f, T_r."""
    from unlearn_core.runs import artifacts

    record = workspace().get(run_id)
    return artifacts.run_split(workspace(), record, dataset(record.dataset))


#: A finished run's per-image losses (:func:`run_losses`), kept in its folder.
LOSSES_ARTIFACT = "losses.json"


@st.cache_data(show_spinner=False, max_entries=16)
def run_losses(run_id: str) -> dict:
    """Per-sample loss of each model on the forget-train set and on the whole test set.

    Saved in the run's folder once the run is done: the forwards of its two or three models take
    a second or more on a CPU (more while a job runs) and a finished run's models never change, so
    a restarted app reads them instead of computing them again.
    """
    record = workspace().get(run_id)
    models = {"original", "unlearned"} | ({"retrain"} if record.retrain_run
                                         and workspace().exists(record.retrain_run) else set())
    with contextlib.suppress(UserError, OSError, ValueError, TypeError, AttributeError):
        saved = workspace().load_json(run_id, LOSSES_ARTIFACT)
        if set(saved) == models:  # not a file from before the retrained model was deleted
            return {name: {part: np.asarray(saved[name][part], dtype=np.float64) for part in ("forget", "test")}
                    for name in saved}
    out = _compute_losses(run_id)
    if record.status == "done":
        with contextlib.suppress(OSError, UserError):  # a read-only workspace still shows them
            workspace().save_json(run_id, LOSSES_ARTIFACT, {name: {part: values.tolist() for part, values in parts.items()}
                                                           for name, parts in out.items()})
    return out


def _compute_losses(run_id: str) -> dict:
    from unlearn_core.metrics import per_sample_loss
    from unlearn_core.models.inference import predict_logits

    record = workspace().get(run_id)
    data = dataset(record.dataset)
    split = run_split(run_id)
    labels = data.labels.numpy()
    test = np.concatenate([split.forget_test, split.remain_test])
    out = {}
    for name, net in run_models(run_id).items():
        out[name] = {part: per_sample_loss(predict_logits(net, data.images, idx), labels[idx])
                     for part, idx in (("forget", split.forget_train), ("test", test))}
    return out


@st.cache_data(show_spinner=False, max_entries=16)
def run_block_similarity(run_id: str) -> list:
    """Per-block CKA of the run's models to its retrained model (empty without a retrain)."""
    from unlearn_core.runs import artifacts

    record = workspace().get(run_id)
    saved = artifacts.load_block_similarity(workspace(), run_id)
    if saved:
        return saved
    return artifacts.run_block_similarity(workspace(), record, dataset(record.dataset), run_models(run_id),
                                          run_split(run_id))


@st.cache_data(show_spinner=False, max_entries=8)
def run_panels(run_id: str, max_points: int = 2000, seed: int = 0) -> dict:
    """The t-SNE decision-region panels of the run's models (the default ones are saved with it)."""
    from unlearn_core.runs import artifacts

    record = workspace().get(run_id)
    return artifacts.run_panels(workspace(), record, dataset(record.dataset), run_models(run_id),
                                run_split(run_id), max_points=max_points, seed=seed)


# Figures of a finished run. Why st.cache_resource: building a plotly figure validates every
# property (the three decision-region panels take ~0.4 s of each Results rerun, the loss
# histograms ~0.15 s), and st.cache_data's copy would unpickle them through the same validation.
# The figures are shared, so callers only read them (st.plotly_chart does).


@st.cache_resource(show_spinner=False, max_entries=8)
def run_map_figure(run_id: str, max_points: int = 2000, selected: tuple[int, ...] | None = None):
    """The decision-region panels of the run as one figure, ``selected`` test images highlighted."""
    from unlearn_core import plots
    from unlearn_core.labels import MODEL_SHORT

    data = dataset(workspace().get(run_id).dataset)
    panels = run_panels(run_id, max_points)
    first = next(iter(panels.values()))
    hover = dict(zip(first.indices.tolist(),
                     plots.hover_text(data.metadata.iloc[first.indices], data.classes, data.units)))
    return plots.tsne_panels(panels, data.classes, hover=hover, titles=MODEL_SHORT,
                             selected=list(selected) if selected is not None else None)


@st.cache_resource(show_spinner=False, max_entries=8)
def run_loss_figure(run_id: str):
    """Histograms of the run's per-image losses (:func:`run_losses`)."""
    from unlearn_core import plots

    return plots.loss_histograms(run_losses(run_id))


@st.cache_resource(show_spinner=False, max_entries=8)
def run_per_class_figure(run_id: str):
    """Bars of each model's test accuracy per class, from the run's recorded scores (``None``
    when the run recorded none)."""
    from unlearn_core import plots
    from unlearn_core.runs.result import RunResult

    record = workspace().get(run_id)
    per_class = {name: block["per_class_test_acc"] for name, block in RunResult.of(record).ordered_blocks().items()
                 if block.get("per_class_test_acc")}
    return plots.per_class_accuracy(per_class, dataset(record.dataset).classes) if per_class else None


@st.cache_resource(show_spinner=False, max_entries=8)
def run_block_similarity_figure(run_id: str):
    """The per-block CKA lines of the run (:func:`run_block_similarity`); ``None`` without any."""
    from unlearn_core import plots

    rows = run_block_similarity(run_id)
    return plots.block_similarity(rows) if rows else None
