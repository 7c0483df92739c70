"""Resolve what a user names (built-in set or a file/folder path) into an :class:`ImageSet`."""

from __future__ import annotations

from pathlib import Path

from unlearn_core.data.builtin import BUILTIN_SETS, load_builtin
from unlearn_core.data.imageset import ImageSet
from unlearn_core.errors import UserError


def load_dataset(name_or_path: str) -> ImageSet:
    """A built-in set by name, or a user's ``.npz``, ``.zip`` or image folder (with its CSV)."""
    if name_or_path in BUILTIN_SETS:
        return load_builtin(name_or_path)
    path = Path(name_or_path)
    if not path.exists():
        raise UserError(
            f"Unknown data set {name_or_path!r}: it is neither a built-in set "
            f"({', '.join(BUILTIN_SETS)}) nor an existing file or folder."
        )
    from unlearn_core.data.loaders import load_image_folder, load_npz

    if path.suffix.lower() == ".npz":
        return load_npz(path)
    return load_image_folder(path)


def describe_dataset(data: ImageSet) -> dict:
    """The JSON summary ``datasets --json`` prints (and the dashboard shows)."""
    return {
        "name": data.name,
        "n_train": int(len(data.train_indices)),
        "n_test": int(len(data.test_indices)),
        "classes": list(data.classes),
        "metadata_columns": [c for c in data.metadata.columns if c not in ("sample_id", "split", "label")],
        "image_shape": [data.channels, data.image_size, data.image_size],
        "description": data.description,
    }
