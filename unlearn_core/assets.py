"""Demo models for the built-in sets: where they live, how they are checked, how they are made.

Each built-in set has a small CNN. The shipped one lives in ``assets/`` (made by
``python -m unlearn_core make-demo-models --out assets``); a user who retrains it (the
dashboard's button, or ``python -m unlearn_core make-demo-models --only NAME``) gets a copy in
the workspace (``$UNLEARN_STUDIO_HOME/demo_models``), which is preferred when it exists.

The check (:func:`check_demo_model`) is strict where a mismatch would make results
meaningless and measured where it would not:

* labels, metadata, split, image shape and classes must be exactly those the model was trained
  on (one structure hash);
* pixels should be identical (the generators give the same bits on every CPU), but if they ever
  differ the check counts how many images differ and measures the model's test accuracy on
  today's data against the recorded one: within :data:`ACCURACY_TOLERANCE` the model is used,
  with a note saying what was measured; below it the model is refused with the command that
  retrains it.

A missing, truncated or damaged file is reported in the same plain way, never as a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from unlearn_core.data.imageset import ImageSet
from unlearn_core.data.pixel_audit import (
    PixelDifference, compare_checksums, decode_checksums, encode_checksums, image_checksums,
    structure_fingerprint,
)
from unlearn_core.errors import UserError
from unlearn_core.models.architectures import Classifier
from unlearn_core.models.weights import file_metadata, load_model, save_model
from unlearn_core.training import TrainConfig, TrainResult, train_model

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"
#: Folder of the workspace that holds demo models retrained on this computer.
WORKSPACE_DEMO_DIR = "demo_models"
#: Largest drop in test accuracy (against the recorded one) at which a model whose pixels differ
#: slightly from today's data is still used.
ACCURACY_TOLERANCE = 0.02

#: Recipe per built-in set for the demo model (small CNN, a few epochs on a CPU).
DEMO_RECIPES: dict[str, TrainConfig] = {
    "oculoplastic": TrainConfig(arch="small_cnn", epochs=8, seed=0),
    "fundus": TrainConfig(arch="small_cnn", epochs=8, seed=0),
    "digits": TrainConfig(arch="small_cnn", epochs=10, seed=0),
}


def _file_name(name: str) -> str:
    return f"{name}_small_cnn.safetensors"


def demo_model_path(name: str) -> Path:
    """The shipped model's file in ``assets/``."""
    return ASSETS_DIR / _file_name(name)


def workspace_demo_path(name: str, home: Path | None = None) -> Path:
    """Where a demo model retrained on this computer is kept (preferred over the shipped one)."""
    from unlearn_core.runs.registry import default_home

    return Path(home or default_home()) / WORKSPACE_DEMO_DIR / _file_name(name)


def demo_model_candidates(name: str) -> list[Path]:
    """The demo model files that exist for ``name``, the retrained copy first."""
    return [p for p in (workspace_demo_path(name), demo_model_path(name)) if p.is_file()]


def retrain_command(name: str) -> str:
    """The command that retrains the demo model into the workspace."""
    return f"python -m unlearn_core make-demo-models --only {name}"


@dataclass(frozen=True)
class DemoModelCheck:
    """What checking a demo model against today's data found.

    Attributes:
        dataset: the built-in set's name.
        path: the file checked (``None`` when there is none).
        usable: whether the model may be used with this data.
        message: one or two plain sentences for the user; empty when the data is exactly
            the data the model was trained on.
        pixels: the pixel comparison, when one was made.
        recorded_accuracy, measured_accuracy: the model's test accuracy when it was saved and
            on today's data (measured only when the pixels differ).
    """

    dataset: str
    path: Path | None
    usable: bool
    message: str = ""
    pixels: PixelDifference | None = None
    recorded_accuracy: float | None = None
    measured_accuracy: float | None = None

    @property
    def exact(self) -> bool:
        return self.usable and not self.message

    @property
    def fix(self) -> str:
        return retrain_command(self.dataset)


def check_demo_model(data: ImageSet) -> DemoModelCheck:
    """Check the demo model files of ``data.name`` against ``data``; the first usable wins."""
    candidates = demo_model_candidates(data.name)
    if not candidates:
        return DemoModelCheck(data.name, None, False,
                              f"There is no demo model for {data.name!r} on this computer.")
    checks = [_check_file(data, path, *_stamp(path)) for path in candidates]
    usable = [c for c in checks if c.usable]
    return usable[0] if usable else checks[0]


def _stamp(path: Path) -> tuple[float, int]:
    stat = path.stat()
    return stat.st_mtime, stat.st_size


#: Checks already made in this process, keyed on the data's fingerprint and the file's identity
#: (path, modification time, size): measuring accuracy takes a second, and pages rerun often.
_CHECKS: dict[tuple, DemoModelCheck] = {}


def _check_file(data: ImageSet, path: Path, mtime: float, size: int) -> DemoModelCheck:
    key = (data.fingerprint(), str(path), mtime, size)
    if key not in _CHECKS:
        if len(_CHECKS) > 32:
            _CHECKS.clear()
        _CHECKS[key] = _check_file_uncached(data, path)
    return _CHECKS[key]


def _check_file_uncached(data: ImageSet, path: Path) -> DemoModelCheck:
    where = "retrained" if path.parent.name == WORKSPACE_DEMO_DIR else "shipped"
    try:
        meta = file_metadata(path)
    except UserError as error:
        return DemoModelCheck(data.name, path, False,
                              f"The {where} {data.name} model file is damaged and cannot be read ({error}).")
    if meta.get("data_fingerprint") == data.fingerprint():
        return DemoModelCheck(data.name, path, True)
    recorded_structure = meta.get("data_structure")
    if recorded_structure != structure_fingerprint(data.images, data.metadata, data.classes):
        return DemoModelCheck(
            data.name, path, False,
            f"The {where} {data.name} model was trained on a different version of this data set "
            "(its labels, metadata, split or image shape differ), so its results would mean nothing "
            "here.")
    try:
        pixels = compare_checksums(decode_checksums(meta.get("image_checksums", "")),
                                   image_checksums(data.images))
        model = load_model(path)
    except UserError as error:
        return DemoModelCheck(data.name, path, False,
                              f"The {where} {data.name} model file is damaged ({error}).")
    from unlearn_core.training import accuracy_on

    recorded = _float_or_none(meta.get("test_acc"))
    measured = accuracy_on(model, data, data.test_indices)
    facts = (f"On this computer {pixels.describe()}; the model's test accuracy is {measured:.1%} here "
             f"against {recorded:.1%} when it was made" if recorded is not None else
             f"On this computer {pixels.describe()}; the model's test accuracy is {measured:.1%} here")
    if recorded is not None and measured >= recorded - ACCURACY_TOLERANCE:
        return DemoModelCheck(data.name, path, True, facts + ", so it is used.", pixels, recorded, measured)
    return DemoModelCheck(data.name, path, False, facts + ", too far to trust its results.",
                          pixels, recorded, measured)


def _float_or_none(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def load_demo_model(data: ImageSet) -> Classifier:
    """The demo model for a built-in set, after :func:`check_demo_model` accepts it.

    Raises ``UserError`` saying what was found and the command that retrains the model.
    """
    check = check_demo_model(data)
    if not check.usable:
        raise UserError(f"{check.message} Retrain it (about a minute or two on a laptop) with "
                        f"`{check.fix}`, or with the button on the Data & model page.")
    try:
        return load_model(check.path)
    except UserError as error:  # changed on disk since it was checked
        raise UserError(f"The {data.name} demo model could not be read ({error}). Retrain it with "
                        f"`{check.fix}`.") from error


def demo_model_metadata(data: ImageSet, config: TrainConfig, result: TrainResult) -> dict[str, str]:
    """Provenance a demo model file records so that :func:`check_demo_model` can check it."""
    return {
        "data_fingerprint": data.fingerprint(),
        "data_structure": structure_fingerprint(data.images, data.metadata, data.classes),
        "image_checksums": encode_checksums(image_checksums(data.images)),
        "dataset": data.name, "recipe": config.recipe_key(), "test_acc": f"{result.test_acc:.4f}",
        "train_seconds": f"{result.seconds:.1f}", "train_threads": str(torch.get_num_threads()),
    }


def make_demo_model(data: ImageSet, out_dir: str | Path | None = None,
                    **train_kwargs) -> tuple[TrainResult, Path]:
    """Train the demo model for ``data`` (a built-in set) and save it.

    ``out_dir`` is the folder to write into; by default the workspace's (:func:`workspace_demo_path`),
    which is then preferred over the shipped model.  The file is written atomically, so a
    cancelled or failed run never leaves a half-written model behind.
    """
    if data.name not in DEMO_RECIPES:
        raise UserError(f"{data.name!r} has no demo model; built-in sets are: {', '.join(DEMO_RECIPES)}.")
    config = DEMO_RECIPES[data.name]
    result = train_model(data, data.train_indices, config, **train_kwargs)
    path = Path(out_dir) / _file_name(data.name) if out_dir is not None else workspace_demo_path(data.name)
    save_model(result.model, path, demo_model_metadata(data, config, result))
    _CHECKS.clear()
    return result, path
