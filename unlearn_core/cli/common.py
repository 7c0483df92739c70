"""Arguments and output helpers shared by the subcommand modules."""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

from typing import TYPE_CHECKING

from unlearn_core.device import DEVICE_CHOICES

if TYPE_CHECKING:
    from unlearn_core.data.imageset import ImageSet
    from unlearn_core.models.architectures import Classifier

#: Names for argument help and choices. Kept here (checked against the library by a test) so
#: that building the parser does not import torch: ``runs list`` and job start-up stay fast.
BUILTIN_NAMES = ("oculoplastic", "fundus", "digits")
ARCHITECTURE_NAMES = ("small_cnn", "allcnn", "resnet18", "resnet50")


def add_dataset_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dataset", required=True, metavar="NAME_OR_PATH",
        help=f"built-in set ({', '.join(BUILTIN_NAMES)}) or a .npz / .zip / image folder with a CSV",
    )


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", metavar="FILE",
                        help="model weights (.safetensors, weights-only .pt or TorchScript); "
                             "default: the shipped demo model of a built-in set")
    parser.add_argument("--arch", choices=ARCHITECTURE_NAMES, default=None,
                        help="architecture of --weights when the file does not say (default small_cnn)")


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=DEVICE_CHOICES, default="auto",
                        help="where to compute (auto: CUDA, then Apple MPS, else CPU)")


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def load_model_for(data: ImageSet, weights: str | None, arch: str | None) -> Classifier:
    """The user's weights (checked against the data's shape and classes) or the shipped demo model."""
    from unlearn_core.models.weights import load_model_for_data

    return load_model_for_data(data, weights, arch)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item"):  # numpy scalars
        return _json_safe(value.item())
    return value


def print_json(obj: Any) -> None:
    """Strict JSON on stdout (NaN/inf become null so any JSON parser reads it)."""
    json.dump(_json_safe(obj), sys.stdout, indent=2)
    sys.stdout.write("\n")


def print_table(rows: list[dict], columns: list[str]) -> None:
    """A plain fixed-width table for terminals."""
    widths = {c: max([len(c)] + [len(str(r.get(c, ""))) for r in rows]) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns))
