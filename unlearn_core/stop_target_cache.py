"""Automatic stop targets kept in the workspace: made once per model, forget set and seed.

Why: the automatic target (:mod:`unlearn_core.stop_target`) trains three small proxy models,
tens of seconds on a CPU and over two minutes on a busy 2-core machine. The Unlearn page makes
it to say where a run will stop, then the run made it again, and a reload or a second tab made
it once more, each time with the page's script busy. The estimate depends only on the model's
weights, the data, the split, the seed and how the estimate is made; all of them are in the
key, so a kept figure is what a new estimate would compute, and a change to the procedure's
settings (more proxies, another estimator) never gets an old figure. The one thing left out is
the device: proxies trained on a GPU read within float noise of CPU ones.

Kept as one small JSON file per key under ``<workspace>/stop_targets/``; a file that cannot be
read is a miss, and a failure to write one never fails a run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from unlearn_core import stop_target
from unlearn_core.models.weights import state_hash
from unlearn_core.stop_target import DEFAULT_ESTIMATOR, StopTarget, estimate_stop_target

#: Folder of the kept estimates inside a workspace.
FOLDER_NAME = "stop_targets"


def _procedure() -> str:
    """The settings of the estimate itself, read when a key is made (a change is a new key)."""
    names = ("PROXY_WIDTH", "PROXY_MAX_SIZE", "PROXY_IMAGES", "PROXY_EPOCHS", "PROXY_BATCH", "PROXY_REPEATS",
             "PROBE_REMAIN_SAMPLE", "PROBE_FORGET_SAMPLE", "KNN_NEIGHBOURS", "KEEP_MARGIN")
    return ";".join(f"{name}={getattr(stop_target, name)}" for name in names)


@dataclass(frozen=True)
class StopTargetCache:
    """Estimates already made, one JSON file per (weights, data, split, seed, estimator, procedure)."""

    folder: Path

    @classmethod
    def in_workspace(cls, workspace_path: str | os.PathLike[str]) -> StopTargetCache:
        return cls(Path(workspace_path) / FOLDER_NAME)

    def key(self, model: torch.nn.Module, data, seed: int, estimator: str = DEFAULT_ESTIMATOR) -> str:
        """Content key of an estimate; ``data`` is an :class:`~unlearn_core.methods.base.UnlearnData`."""
        digest = hashlib.sha256()
        split = data.split
        for part in (_procedure(), estimator, str(int(seed)), state_hash(model), data.imageset.fingerprint()):
            digest.update(part.encode())
            digest.update(b"\0")
        for indices in (split.forget_train, split.remain_train, split.forget_test, split.remain_test):
            digest.update(np.asarray(indices, dtype=np.int64).tobytes())
            digest.update(b"\0")
        return digest.hexdigest()[:32]

    def _path(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def get(self, key: str) -> StopTarget | None:
        """The kept estimate (marked ``reused``), or ``None`` when there is none or it is unreadable."""
        try:
            stored = json.loads(self._path(key).read_text())
            fields = {f.name for f in dataclasses.fields(StopTarget)}
            target = StopTarget(**{k: v for k, v in stored.items() if k in fields})
        except (OSError, ValueError, TypeError):
            return None
        return dataclasses.replace(target, reused=True)

    def put(self, key: str, target: StopTarget) -> None:
        """Keep ``target`` (written whole or not at all; a read-only workspace is not an error)."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile("w", dir=self.folder, suffix=".tmp", delete=False) as handle:
                json.dump(dataclasses.replace(target, reused=False).to_dict(), handle)
            os.replace(handle.name, self._path(key))
        except OSError:
            return

    def has(self, model: torch.nn.Module, data, seed: int, estimator: str = DEFAULT_ESTIMATOR) -> bool:
        return self.get(self.key(model, data, seed, estimator)) is not None


def estimate_or_reuse(model: torch.nn.Module, data, device: torch.device | str = "cpu", seed: int = 0,
                      cache: StopTargetCache | None = None, estimator: str = DEFAULT_ESTIMATOR,
                      before_new: Callable[[], None] | None = None) -> StopTarget:
    """The kept estimate for this model, forget set and seed, else a new one (kept for next time).

    ``before_new`` is called just before a new estimate is made (e.g. to announce a stage).
    """
    key = cache.key(model, data, seed, estimator) if cache is not None else ""
    found = cache.get(key) if cache is not None else None
    if found is not None:
        return found
    if before_new is not None:
        before_new()
    target = estimate_stop_target(model, data, device, seed=seed, estimator=estimator)
    if cache is not None:
        cache.put(key, target)
    return target
