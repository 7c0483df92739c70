"""Cached loaders for the dashboard, keyed by content.

Why here: pages rerun top to bottom on every click, so anything heavy (generating a data set,
loading a model, predicting the test set) must be computed once and reused. Keys are content
identifiers: a built-in set's name (its data are generated from a fixed seed), an upload's
path (which contains the file's SHA-256) and a model key (``ModelChoice.key``: the weights'
path or run id). Uploads are written to the workspace so background jobs and the command
line can read exactly the same file (``--dataset PATH`` / ``--weights PATH``).
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from unlearn_core.data.imageset import ImageSet
from unlearn_core.errors import UserError
from unlearn_core.ui.state import ModelChoice

UPLOADS = "uploads"


# --- workspace ---------------------------------------------------------------------------------
@st.cache_resource(show_spinner=False)
def _workspace(path: str):
    from unlearn_core.runs.registry import Workspace

    return Workspace(path)


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
    from unlearn_core.cli.common import load_model_for

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


def store_data_upload(name: str, data: bytes, csv: bytes | None = None, csv_name: str = "") -> str:
    """Write an uploaded data file into the workspace; returns the path ``--dataset`` takes.

    A ZIP with a separate CSV becomes one ZIP: the images plus the CSV at its root (any CSV
    the ZIP already had is left out so there is exactly one), because the command line takes
    a single file. The folder name is the content hash, so the same upload is stored once.
    """
    digest = hashlib.sha256(data + (csv or b"")).hexdigest()[:16]
    folder = _uploads_dir(digest)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / _safe_name(name, "upload.zip")
    if target.exists():
        return str(target)
    if csv is not None and target.suffix.lower() == ".zip":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(target, "w") as out:
                for info in source.infolist():
                    if not info.filename.lower().endswith(".csv"):
                        out.writestr(info, source.read(info))
                out.writestr(_safe_name(csv_name, "labels.csv"), csv)
        except zipfile.BadZipFile as error:
            target.unlink(missing_ok=True)
            raise UserError(f"{name} is not a readable ZIP file ({error}); upload a .zip of images.") from error
        return str(target)
    target.write_bytes(data)
    return str(target)


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
def _option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1] if name in command[:-1] else ""


def _first_parent(record):
    """A composition's first input run (it shares the original model and data)."""
    ws = workspace()
    for parent in record.parents or []:
        if ws.exists(parent):
            return ws.get(parent)
    return None


def base_model_choice(record) -> ModelChoice:
    """The model a run started from, read from its recorded command (``--weights``/``--arch``)."""
    if record.kind == "compose":
        parent = _first_parent(record)
        if parent is not None:
            return base_model_choice(parent)
    weights = _option(record.command, "--weights")
    if not weights:
        return ModelChoice("shipped")
    return ModelChoice("file", weights, arch=_option(record.command, "--arch"))


@st.cache_resource(show_spinner=False, max_entries=6)
def run_models(run_id: str) -> dict:
    """``{"original", "unlearned", "retrain"?}`` models of a finished run (runs never change)."""
    from unlearn_core.models.architectures import build_model
    from unlearn_core.models.weights import load_model, load_state_into
    from unlearn_core.runs.registry import WEIGHTS_NAME

    ws = workspace()
    record = ws.get(run_id)
    original = model(record.dataset, base_model_choice(record).key)
    models = {"original": original}
    retrain_id = (record.metrics or {}).get("retrain_run")
    if not retrain_id and record.kind == "compose" and (record.metrics or {}).get("retrain"):
        parent = _first_parent(record)
        retrain_id = (parent.metrics or {}).get("retrain_run") if parent is not None else None
    if retrain_id and ws.exists(retrain_id):
        models["retrain"] = load_state_into(build_model(original.spec), ws.load_weights(retrain_id)).eval()
    models["unlearned"] = load_model(ws.artifact_path(run_id, WEIGHTS_NAME)).eval()
    return models


@st.cache_data(show_spinner=False, max_entries=16)
def run_split(run_id: str):
    """The run's D_f, D_r, T_f, T_r (its saved split, else recomputed from its criteria)."""
    from unlearn_core.data.criteria import ForgetCriteria, ForgetSplit, split_sets

    ws = workspace()
    record = ws.get(run_id)
    if record.kind == "compose" and record.parents:
        from unlearn_core.compose import union_split

        parents = [p for p in record.parents if ws.exists(p)]
        splits = [run_split(p) for p in parents]
        if len({ws.get(p).criteria_text for p in parents}) <= 1 and splits:
            return splits[0]
        return union_split(splits)
    try:
        saved = ws.load_json(run_id, "split.json")
        return ForgetSplit(**{k: np.asarray(v, dtype=np.int64) for k, v in saved.items()})
    except (UserError, TypeError, OSError):
        return split_sets(dataset(record.dataset), ForgetCriteria.parse(record.criteria_text))


@st.cache_data(show_spinner=False, max_entries=16)
def run_losses(run_id: str) -> dict:
    """Per-sample loss of each model on the forget-train set and on the whole test set."""
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


@st.cache_data(show_spinner=False, max_entries=8)
def run_panels(run_id: str, max_points: int = 2000, seed: int = 0) -> dict:
    """The t-SNE decision-region panels of the run's models on a sample of test images.

    The default panels are saved in the run's folder (``embedding.npz``): they survive an app
    restart, and the run's HTML report includes them.
    """
    from unlearn_core.embedding import compute_panels, load_panels, sample_points, save_panels
    from unlearn_core.report import EMBEDDING_ARTIFACT

    ws = workspace()
    record = ws.get(run_id)
    saved = ws.artifact_path(run_id, EMBEDDING_ARTIFACT)
    default = (max_points, seed) == (2000, 0)
    if default and saved.is_file():
        try:
            return load_panels(saved)
        except (UserError, OSError, KeyError, ValueError):
            pass  # damaged or from an older version: compute again
    data = dataset(record.dataset)
    split = run_split(run_id)
    indices = sample_points(data, split, max_points=max_points, seed=seed)
    panels = compute_panels(run_models(run_id), data, indices, seed=seed, split=split)
    if default and record.status == "done":
        try:
            save_panels(panels, saved)
        except OSError:
            pass  # a read-only workspace still shows the panels
    return panels
