"""Decision-boundary panels as data: penultimate features → PCA → t-SNE → k-NN regions.

The Results page shows the original, retrained and unlearned models side by side as 2-D maps
of the same test samples (stars = forget, circles = remain, colour = predicted class, background
= the class a k-NN vote predicts there). This module computes those maps and nothing visual,
so the dashboard, a report and a test all use the same numbers, and a run can store them.

Why these choices:
    * PCA to 50 dimensions first: t-SNE's neighbour search and affinities are then cheap and
      dominated by the informative directions (the usual openTSNE/sklearn recipe).
    * openTSNE (Barnes–Hut below 10,000 points): several times faster than sklearn's t-SNE at
      equal quality, deterministic with a seed and one thread, and it accepts a precomputed
      initial layout, which is what makes panels comparable (``layout="shared_init"``).
    * A short schedule (125 exaggerated + 250 normal iterations instead of 250 + 500; 200
      normal ones for a panel that starts from the first panel's settled map) and exact
      neighbours up to 5,000 points (faster than an approximate index at that size): the
      panels are a visual aid, the layout is settled by then (KL within ~3 % of the full
      schedule on digits), and three panels of 2,000 points take seconds on a laptop CPU.
    * Above :data:`LAYOUT_POINTS_MAX` points, t-SNE lays out a seeded sample of that many (the
      same sample in every panel) and every other point is added to that map with openTSNE's
      ``transform`` (placed at the median of its nearest laid-out neighbours in feature space,
      then a short optimization against the fixed map). t-SNE's own cost grows faster than the
      number of points; with this, three panels of 10,000 points stay within seconds
      (``docs/performance.md``) and a map of 2,000 is computed exactly as before.
    * Regions come from a k-NN vote over each panel's *own predicted* labels, so the background
      shows where that model's decisions change, not where the true classes lie.
    * Features at display precision: bf16 on a CPU with AMX or AVX-512 BF16 (1.4-3× faster
      there; positions move by a fraction of a percent), from a copy of the model with its
      BatchNorms folded into the convolutions (``_folded_copy``), with every point near a
      decision boundary recomputed by the model itself in float32, so each point's class is the
      model's own (``_exact_near_ties``). GPUs run every forward in bf16 already (``amp``).
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from threadpoolctl import threadpool_limits

from unlearn_core.data.criteria import ForgetSplit
from unlearn_core.data.imageset import ImageSet
from unlearn_core.device import display_bf16
from unlearn_core.errors import UserError
from unlearn_core.models.architectures import Classifier
from unlearn_core.models.batchnorm import batchnorms, fold_into_convolutions
from unlearn_core.models.inference import embeddings

LAYOUTS = ("shared_init", "independent")
#: Bump when the recipe below changes, so cached panels computed the old way are not reused.
EMBEDDING_VERSION = 2
PCA_DIMENSIONS = 50
#: (exaggerated, normal) iterations from a PCA start, and from another panel's layout.
FRESH_SCHEDULE = (125, 250)
FOLLOW_SCHEDULE = (0, 200)
#: Up to this many points, exact nearest neighbours beat building an approximate index.
EXACT_NEIGHBORS_MAX = 5000
KNN_NEIGHBORS = 5
#: Most points t-SNE lays out itself (the Results page's default sample); the rest join that map
#: through openTSNE's ``transform``.
LAYOUT_POINTS_MAX = 2000
#: Optimization steps for the points added to a laid-out map (openTSNE's default is 250).
ADDED_POINTS_ITERATIONS = 50
GRID_MARGIN = 0.05
#: Points computed in both precisions to measure how far bf16 display features move the logits.
CALIBRATION_POINTS = 64
#: A point is recomputed in float32 when its top-two logit margin is within this many times
#: the largest logit difference seen on the calibration points.
NEAR_TIE_FACTOR = 4.0
#: Above this relative feature difference bf16 is not trusted for the model at all.
BF16_FEATURE_TOLERANCE = 0.02
_ARRAY_FIELDS = ("coords", "predicted", "true", "is_forget", "sample_ids", "indices",
                 "grid_x", "grid_y", "region_labels")


@dataclass
class EmbeddingPanel:
    """One model's 2-D map of the sampled points and its k-NN decision regions.

    Attributes:
        coords: ``float32 [n, 2]`` t-SNE coordinates.
        predicted: ``int64 [n]`` the model's predicted class per point.
        true: ``int64 [n]`` the true class per point.
        is_forget: ``bool [n]`` whether the point belongs to the forget set (``D_f`` or ``T_f``).
        sample_ids: ``str [n]`` the ImageSet's ``sample_id`` of each point (to merge metadata).
        indices: ``int64 [n]`` row index of each point in the ImageSet (to show thumbnails).
        grid_x, grid_y: ``float32 [G]`` grid coordinates spanning the points plus a margin.
        region_labels: ``int64 [G, G]`` k-NN class at ``(grid_x[j], grid_y[i])`` stored at
            ``[i, j]`` (rows follow y), the layout ``plotly``'s ``Heatmap(x, y, z)`` expects.
        model_label: which model this is (``"original"``, ``"retrain"``, ``"unlearned"``...).
    """

    coords: np.ndarray
    predicted: np.ndarray
    true: np.ndarray
    is_forget: np.ndarray
    sample_ids: np.ndarray
    indices: np.ndarray
    grid_x: np.ndarray
    grid_y: np.ndarray
    region_labels: np.ndarray
    model_label: str

    def to_frame(self) -> pd.DataFrame:
        """One row per point (``x, y, predicted, true, forget, sample_id, index, correct``).

        Why a frame: plotting code merges it with ``ImageSet.metadata`` on ``sample_id`` for
        hover text, and filters it by ``forget``/``correct`` for markers and outlines.
        """
        return pd.DataFrame({
            "x": self.coords[:, 0],
            "y": self.coords[:, 1],
            "predicted": self.predicted,
            "true": self.true,
            "forget": self.is_forget,
            "sample_id": self.sample_ids.astype(str),
            "index": self.indices,
            "correct": self.predicted == self.true,
        })


# --- which points --------------------------------------------------------------------------
def sample_points(
    data: ImageSet, split: ForgetSplit, max_points: int = 2000, seed: int = 0
) -> np.ndarray:
    """Seeded sample of the test points ``T_f ∪ T_r`` to embed, sorted row indices.

    All of ``T_f`` is kept when it fits, because the forget points are what the panels are
    about; at least a quarter of ``max_points`` (or all of ``T_r`` if smaller) stays reserved
    for remain points, so the regions around the forget points are always visible too.
    """
    if max_points < 1:
        raise UserError(f"max_points must be at least 1, got {max_points}.")
    forget = np.asarray(split.forget_test, dtype=np.int64)
    remain = np.asarray(split.remain_test, dtype=np.int64)
    if len(forget) + len(remain) == 0:
        raise UserError("There are no test images to plot: the test split is empty.")
    reserve = min(len(remain), max_points // 4)
    n_forget = min(len(forget), max_points - reserve)
    n_remain = min(len(remain), max_points - n_forget)
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(forget, n_forget, replace=False), rng.choice(remain, n_remain, replace=False)]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


# --- panels --------------------------------------------------------------------------------
def compute_panels(
    models: Mapping[str, Classifier],
    data: ImageSet,
    indices: Sequence[int] | np.ndarray,
    seed: int = 0,
    layout: str = "shared_init",
    grid_size: int = 80,
    perplexity: float = 30.0,
    *,
    split: ForgetSplit | None = None,
    n_jobs: int | None = None,
) -> dict[str, EmbeddingPanel]:
    """One :class:`EmbeddingPanel` per model, in the order of ``models``, for ``indices``.

    ``layout="shared_init"`` embeds the first model normally and starts every later panel from
    the first panel's coordinates, so the same sample sits in roughly the same place in every
    panel and a reader can see what moved. ``"independent"`` embeds each model on its own (each
    map is then only meaningful internally). ``split`` marks forget points (``D_f ∪ T_f``);
    without it no point is marked. ``n_jobs`` threads for t-SNE's gradient (default: the
    CPUs this process may use, at most 4; openTSNE's maps are bit-identical for any count).
    """
    if not models:
        raise UserError("Pick at least one model to embed.")
    if layout not in LAYOUTS:
        raise UserError(f"Unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}.")
    if grid_size < 2:
        raise UserError(f"grid_size must be at least 2, got {grid_size}.")
    idx = np.asarray(indices, dtype=np.int64)
    if len(idx) < 2:
        raise UserError(f"At least 2 points are needed for a t-SNE map, got {len(idx)}.")
    true = data.labels.numpy()[idx]
    is_forget = _forget_mask(idx, split)
    sample_ids = data.metadata["sample_id"].to_numpy(dtype=str)[idx]
    panels: dict[str, EmbeddingPanel] = {}
    first_coords: np.ndarray | None = None
    for label, model in models.items():
        features, predicted = features_and_predictions(model, data, idx)
        init = first_coords if layout == "shared_init" else None
        coords = tsne_coordinates(features, seed=seed, perplexity=perplexity, init=init, n_jobs=n_jobs)
        first_coords = coords if first_coords is None else first_coords
        grid_x, grid_y, regions = knn_regions(coords, predicted, grid_size)
        panels[label] = EmbeddingPanel(
            coords=coords, predicted=predicted, true=true, is_forget=is_forget,
            sample_ids=sample_ids, indices=idx, grid_x=grid_x, grid_y=grid_y,
            region_labels=regions, model_label=str(label),
        )
    return panels


def _forget_mask(indices: np.ndarray, split: ForgetSplit | None) -> np.ndarray:
    if split is None:
        return np.zeros(len(indices), dtype=bool)
    forget = np.union1d(split.forget_train, split.forget_test)
    return np.isin(indices, forget)


@torch.no_grad()
def features_and_predictions(
    model: Classifier, data: ImageSet, indices: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Penultimate features and predicted classes from one forward pass (the head is linear).

    The features are computed at display precision (bf16 on a CPU with AMX or AVX-512 BF16,
    :func:`unlearn_core.device.display_bf16`): 1.4-3× faster there, and a map's
    positions do not need the last bits. The predicted classes colour the points and the
    regions and are read as the model's decisions, so they must equal the float32 ones:
    :func:`_exact_near_ties` recomputes in float32 every point close enough to a boundary for
    the rounding to matter.
    """
    display_model = _folded_copy(model)
    features = embeddings(display_model, data.images, indices, display=True)
    device = next(model.parameters()).device
    if display_bf16(device) or display_model is not model:
        features = _exact_near_ties(model, data, indices, features)
    return features, _head_logits(model, features).argmax(1).numpy().astype(np.int64)


def _folded_copy(model: Classifier) -> Classifier:
    """A copy with each BatchNorm folded into the convolution before it, or ``model`` itself
    when there is none to fold.

    Why: the drawn features need the eval-mode map, not its layers; folded, it is the same map
    to float rounding (1e-7 relative on the oculoplastic model) with one pass over the
    activations less per block: 15-18 % off the features of the 64-px model on the CPU
    (docs/performance.md). The caller's model is never changed; near ties are still decided by
    it in float32 (:func:`_exact_near_ties`).
    """
    if not batchnorms(model):
        return model
    copy_ = copy.deepcopy(model).eval()
    return copy_ if fold_into_convolutions(copy_) else model


def _head_logits(model: Classifier, features: np.ndarray) -> torch.Tensor:
    head = model.head
    weight = head.weight.detach().float().cpu()
    bias = head.bias.detach().float().cpu() if head.bias is not None else None
    return torch.nn.functional.linear(torch.from_numpy(features), weight, bias)


def _exact_near_ties(model: Classifier, data: ImageSet, indices: np.ndarray, features: np.ndarray) -> np.ndarray:
    """``features`` with every point whose class the display features' rounding (bf16, folded
    BatchNorms) could change recomputed by ``model`` in float32.

    How: a calibration sample (the first :data:`CALIBRATION_POINTS`) is computed in both
    precisions; the largest logit difference there, times :data:`NEAR_TIE_FACTOR`, is the
    margin under which a point's top two logits count as a near tie. On the built-in models
    the difference was at most 0.03-0.09 logits and flipped about 1 point in 3,000; the
    re-check costs a few percent of the points. A model whose features differ by more than
    :data:`BF16_FEATURE_TOLERANCE` (relative) is recomputed whole in float32.
    """
    calibration = indices[:CALIBRATION_POINTS]
    exact = embeddings(model, data.images, calibration)
    approx = features[: len(calibration)]
    relative = float(np.linalg.norm(exact - approx) / max(float(np.linalg.norm(exact)), 1e-12))
    if relative > BF16_FEATURE_TOLERANCE:
        return embeddings(model, data.images, indices)
    error = float((_head_logits(model, exact) - _head_logits(model, approx)).abs().max())
    top_two = _head_logits(model, features).topk(min(2, model.head.out_features), dim=1).values
    margin = (top_two[:, 0] - top_two[:, -1]).numpy()
    near = np.flatnonzero(margin <= NEAR_TIE_FACTOR * error + 1e-6)
    near = near[near >= len(calibration)]
    features = features.copy()
    features[: len(calibration)] = exact
    if len(near):
        features[near] = embeddings(model, data.images, indices[near])
    return features


def tsne_coordinates(
    features: np.ndarray,
    seed: int = 0,
    perplexity: float = 30.0,
    init: np.ndarray | None = None,
    n_jobs: int | None = None,
) -> np.ndarray:
    """``float32 [n, 2]`` t-SNE map of ``features`` (PCA to 50 dimensions first).

    ``init`` (another map of the same points) is the starting layout, kept at its own scale and
    optimized without early exaggeration, so points only move where this model's
    neighbourhoods differ (on digits the maps then stay aligned: mean shift ~0.2 of the spread
    against ~1.5 for independent maps, at the same KL divergence). Otherwise the start is the
    PCA layout (openTSNE's default), which makes the result deterministic given ``seed``.
    openTSNE's gradient runs on ``n_jobs`` threads (default :func:`tsne_threads`): 2 threads halve
    a map of 2,000 points on 2 cores (3.7 → 1.8 s) and give the same coordinates to the last bit.
    BLAS stays on one thread: these matrices are small, and a multi-threaded BLAS on a busy CPU
    (a server running other jobs) was measured to turn a 2 ms SVD into 2 s.
    """
    n_jobs = n_jobs or tsne_threads()
    with threadpool_limits(limits=1):
        reduced = _pca(features, seed)
        if len(reduced) <= LAYOUT_POINTS_MAX:
            return np.asarray(_tsne(reduced, seed, perplexity, init, n_jobs), dtype=np.float32)
        laid_out = np.sort(np.random.default_rng(seed).choice(len(reduced), LAYOUT_POINTS_MAX, replace=False))
        added = np.setdiff1d(np.arange(len(reduced)), laid_out)
        embedding = _tsne(reduced[laid_out], seed, perplexity, None if init is None else init[laid_out], n_jobs)
        coords = np.empty((len(reduced), 2), dtype=np.float32)
        coords[added] = embedding.transform(reduced[added], n_iter=ADDED_POINTS_ITERATIONS)
        coords[laid_out] = embedding  # after transform, which centres the map it adds points to
        return coords


def tsne_threads() -> int:
    """Threads for openTSNE: the CPUs this process may use (its affinity), at most 4."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity call
        usable = os.cpu_count() or 1
    return max(1, min(4, usable))


def _tsne(reduced: np.ndarray, seed: int, perplexity: float, init: np.ndarray | None, n_jobs: int):
    """openTSNE's embedding of ``reduced`` (an array that can also ``transform`` new points)."""
    from openTSNE import TSNE  # imported here: only the Results page pays for loading it
    from openTSNE.initialization import pca as pca_init

    _quiet_known_init_warning()
    if init is None:
        start, (exaggerated, normal) = pca_init(reduced, random_state=seed), FRESH_SCHEDULE
    else:
        start, (exaggerated, normal) = np.array(init, dtype=np.float64), FOLLOW_SCHEDULE
    tsne = TSNE(
        perplexity=_usable_perplexity(perplexity, len(reduced)),
        early_exaggeration_iter=exaggerated,
        n_iter=normal,
        initialization=start,
        neighbors="exact" if len(reduced) <= EXACT_NEIGHBORS_MAX else "auto",
        n_jobs=n_jobs,
        random_state=seed,
        verbose=False,
    )
    return tsne.fit(reduced)


class _WideInitFilter(logging.Filter):
    """Drops openTSNE's warning about a wide initial layout: we pass a settled map on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Standard deviation of embedding" not in record.getMessage()


def _quiet_known_init_warning() -> None:
    logger = logging.getLogger("openTSNE.tsne")
    if not any(isinstance(f, _WideInitFilter) for f in logger.filters):
        logger.addFilter(_WideInitFilter())


def _pca(features: np.ndarray, seed: int) -> np.ndarray:
    """At most 50 principal components (fewer when there are fewer samples or features)."""
    from sklearn.decomposition import PCA

    features = np.asarray(features, dtype=np.float64)
    components = min(PCA_DIMENSIONS, features.shape[0], features.shape[1])
    if components == features.shape[1]:
        return features - features.mean(axis=0)
    return PCA(n_components=components, random_state=seed).fit_transform(features)


def _usable_perplexity(perplexity: float, n: int) -> float:
    """t-SNE needs more than 3 × perplexity points; shrink it for small selections."""
    if perplexity <= 0:
        raise UserError(f"perplexity must be positive, got {perplexity}.")
    return float(max(1.0, min(perplexity, (n - 1) / 3.0)))


def knn_regions(
    coords: np.ndarray, predicted: np.ndarray, grid_size: int = 80, k: int = KNN_NEIGHBORS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``grid_x [G]``, ``grid_y [G]`` and the k-NN predicted class ``[G, G]`` (rows follow y)."""
    from sklearn.neighbors import KNeighborsClassifier

    grid_x = _axis(coords[:, 0], grid_size)
    grid_y = _axis(coords[:, 1], grid_size)
    knn = KNeighborsClassifier(n_neighbors=min(k, len(coords))).fit(coords, predicted)
    xx, yy = np.meshgrid(grid_x, grid_y)
    regions = knn.predict(np.column_stack([xx.ravel(), yy.ravel()]))
    return grid_x, grid_y, regions.reshape(grid_size, grid_size).astype(np.int64)


def _axis(values: np.ndarray, grid_size: int) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    margin = max(high - low, 1e-6) * GRID_MARGIN
    return np.linspace(low - margin, high + margin, grid_size, dtype=np.float32)


# --- caching and storage -------------------------------------------------------------------
def cache_key(
    model_hashes: Mapping[str, str] | Sequence[str],
    sample_ids: Sequence[str] | np.ndarray,
    seed: int,
    layout: str,
    **settings: float | int | str,
) -> str:
    """Content hash of everything the panels depend on (for ``st.cache_data`` and run files).

    ``model_hashes`` are :func:`~unlearn_core.models.weights.state_hash` values, with their
    panel names when given as a mapping (the order decides which panel leads a shared layout).
    Extra ``settings`` (``grid_size``, ``perplexity``...) enter the key too.
    """
    models = list(model_hashes.items()) if isinstance(model_hashes, Mapping) else list(model_hashes)
    payload = {
        "version": EMBEDDING_VERSION,
        "models": models,
        "seed": int(seed),
        "layout": layout,
        "settings": {key: settings[key] for key in sorted(settings)},
    }
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode())
    digest.update("\x1f".join(str(s) for s in sample_ids).encode())
    return digest.hexdigest()[:16]


def save_panels(panels: Mapping[str, EmbeddingPanel], path: str | Path, key: str | None = None) -> Path:
    """Write ``panels`` to ``path`` (``.npz``, no pickle) plus a ``.json`` index beside it.

    The JSON names the panels in order and records ``key`` (from :func:`cache_key`), so a run
    folder shows what the arrays are without loading them. Both files are written atomically.
    """
    path = _npz_path(path)
    arrays = {}
    for number, panel in enumerate(panels.values()):
        for name in _ARRAY_FIELDS:
            value = getattr(panel, name)
            arrays[f"{number}.{name}"] = value.astype(str) if name == "sample_ids" else value
    index = {"version": EMBEDDING_VERSION, "key": key, "panels": [p.model_label for p in panels.values()],
             "names": list(panels)}
    _atomic_write(path, lambda handle: np.savez_compressed(handle, **arrays))
    _atomic_write(path.with_suffix(".json"), lambda handle: handle.write(json.dumps(index, indent=2).encode()))
    return path


def load_panels(path: str | Path) -> dict[str, EmbeddingPanel]:
    """Read panels written by :func:`save_panels`, in their saved order."""
    path = _npz_path(path)
    index_path = path.with_suffix(".json")
    if not path.is_file() or not index_path.is_file():
        raise UserError(f"No saved embedding at {path} (needs {path.name} and {index_path.name}).")
    index = json.loads(index_path.read_text())
    panels = {}
    with np.load(path, allow_pickle=False) as arrays:
        for number, (name, label) in enumerate(zip(index["names"], index["panels"])):
            fields = {field: arrays[f"{number}.{field}"] for field in _ARRAY_FIELDS}
            panels[name] = EmbeddingPanel(model_label=label, **fields)
    return panels


def _npz_path(path: str | Path) -> Path:
    path = Path(path)
    return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")


def _atomic_write(path: Path, write) -> None:
    """``write(handle)`` into memory, then :func:`unlearn_core.files.atomic_write` it."""
    from unlearn_core.files import atomic_write

    buffer = io.BytesIO()
    write(buffer)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, buffer.getvalue())
