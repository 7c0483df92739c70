"""Shipped demo models (``assets/``): where they live and how they are checked and made.

Each built-in set has a small CNN trained by ``python -m unlearn_core make-demo-models``.
The file records the data fingerprint it was trained on; loading it against different data
is refused, because a model that never saw the data would make every result meaningless.
"""

from __future__ import annotations

from pathlib import Path

import torch

from unlearn_core.data.imageset import ImageSet
from unlearn_core.errors import UserError
from unlearn_core.models.architectures import Classifier
from unlearn_core.models.weights import file_metadata, load_model, save_model
from unlearn_core.training import TrainConfig, TrainResult, train_model

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"

#: Recipe per built-in set for the shipped model (small CNN, a few epochs on a CPU).
DEMO_RECIPES: dict[str, TrainConfig] = {
    "oculoplastic": TrainConfig(arch="small_cnn", epochs=8, seed=0),
    "fundus": TrainConfig(arch="small_cnn", epochs=8, seed=0),
    "digits": TrainConfig(arch="small_cnn", epochs=10, seed=0),
}


def demo_model_path(name: str) -> Path:
    return ASSETS_DIR / f"{name}_small_cnn.safetensors"


def has_demo_model(name: str) -> bool:
    return demo_model_path(name).is_file()


def load_demo_model(data: ImageSet) -> Classifier:
    """The shipped model for a built-in set, after checking it matches the data exactly."""
    path = demo_model_path(data.name)
    if not path.is_file():
        raise UserError(
            f"No shipped model for {data.name!r}. Train one on the Data & model page, or run "
            "`python -m unlearn_core make-demo-models`."
        )
    trained_on = file_metadata(path).get("data_fingerprint")
    if trained_on != data.fingerprint():
        raise UserError(
            f"The shipped {data.name} model was trained on different data (fingerprint {trained_on}, "
            f"data now {data.fingerprint()}). Regenerate it with `python -m unlearn_core make-demo-models`."
        )
    return load_model(path)


def make_demo_model(data: ImageSet, **train_kwargs) -> TrainResult:
    """Train and save the shipped model for ``data`` (a built-in set)."""
    config = DEMO_RECIPES[data.name]
    result = train_model(data, data.train_indices, config, **train_kwargs)
    save_model(result.model, demo_model_path(data.name), {
        "data_fingerprint": data.fingerprint(), "dataset": data.name,
        "recipe": config.recipe_key(), "test_acc": f"{result.test_acc:.4f}",
        "train_seconds": f"{result.seconds:.1f}", "train_threads": str(torch.get_num_threads()),
    })
    return result
