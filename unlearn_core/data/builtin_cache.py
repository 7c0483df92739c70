"""A disk cache for the generated built-in sets, so a process makes each one once per machine.

Why: generating the oculoplastic or fundus set takes 17–25 s on a 2-core CPU, and every process
that needs one paid it again: the dashboard's server, each background run (before its first
step) and each command-line call. Reading the cached copy takes well under a second.

What keeps it honest:
    * The key is a hash of the code that makes the data (every module under ``data/`` that the
      generators use) and of the numpy, pandas and torch versions, so changed code or libraries
      make a new entry instead of reusing an old one.
    * A read is checked against the fingerprint recorded at write time (images, labels and
      split: what a model's provenance is checked against); anything unreadable or different
      counts as a miss and the set is generated again.
    * Plain arrays only (``np.load(allow_pickle=False)``); written whole or not at all
      (:func:`unlearn_core.files.atomic_write`); a failed write never fails the caller.

Where: ``$UNLEARN_STUDIO_DATA_CACHE`` if set (``off`` turns the cache off: the portability tests
regenerate on purpose), else ``$XDG_CACHE_HOME/unlearn-studio/builtin`` (``~/.cache/...``).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import zipfile
from collections.abc import Callable
from importlib import metadata as package_metadata
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from unlearn_core.data.imageset import ImageSet

log = logging.getLogger(__name__)

CACHE_ENV = "UNLEARN_STUDIO_DATA_CACHE"
#: The code whose output is cached: the generators, the split and the ImageSet type.
_SOURCES = ("builtin.py", "imageset.py", "synthetic")
_LIBRARIES = ("numpy", "pandas", "torch", "scikit-learn")


def cache_dir() -> Path | None:
    """The folder of cached sets, or None when the cache is turned off."""
    chosen = os.environ.get(CACHE_ENV)
    if chosen is not None:
        return None if chosen.strip().lower() in ("", "off", "0", "false", "no") else Path(chosen).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "unlearn-studio" / "builtin"


def code_version() -> str:
    """Hash of the generating code and library versions (part of every cache file's name)."""
    digest = hashlib.sha256()
    root = Path(__file__).resolve().parent
    for source in _SOURCES:
        path = root / source
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(file.name.encode())
            digest.update(file.read_bytes())
    for library in _LIBRARIES:
        try:
            digest.update(f"{library}={package_metadata.version(library)}".encode())
        except package_metadata.PackageNotFoundError:
            digest.update(f"{library}=absent".encode())
    return digest.hexdigest()[:16]


def load_or_make(name: str, make: Callable[[], ImageSet]) -> ImageSet:
    """The cached copy of built-in set ``name`` when there is a good one, else ``make()`` (kept)."""
    folder = cache_dir()
    if folder is None:
        return make()
    path = folder / f"{name}-{code_version()}.npz"
    cached = _read(path)
    if cached is not None:
        return cached
    made = make()
    _write(path, made)
    return made


def _read(path: Path) -> ImageSet | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as arrays:
            info = json.loads(str(arrays["info"]))
            metadata = pd.DataFrame({column: pd.Series(arrays[f"column.{column}"]).astype(dtype)
                                     for column, dtype in info["columns"].items()})
            data = ImageSet(name=info["name"], images=torch.from_numpy(arrays["images"].copy()), metadata=metadata,
                            classes=info["classes"], units=info["units"], description=info["description"])
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as error:
        log.warning("ignoring the unreadable cached data set %s: %s", path, error)
        return None
    if data.fingerprint() != info["fingerprint"]:
        log.warning("ignoring the cached data set %s: its content does not match its fingerprint", path)
        return None
    return data


def _write(path: Path, data: ImageSet) -> None:
    from unlearn_core.files import atomic_write

    columns = {column: str(dtype) for column, dtype in data.metadata.dtypes.items()}
    info = {"name": data.name, "classes": list(data.classes), "units": dict(data.units),
            "description": data.description, "columns": columns, "fingerprint": data.fingerprint()}
    arrays = {f"column.{column}": data.metadata[column].to_numpy(dtype=str if dtype in ("str", "object") else None)
              for column, dtype in columns.items()}
    buffer = io.BytesIO()
    np.savez(buffer, images=data.images.numpy(), info=np.array(json.dumps(info)), **arrays)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, buffer.getvalue())
    except OSError as error:
        log.warning("could not keep the generated data set in %s: %s", path, error)
