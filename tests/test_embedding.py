"""t-SNE decision-boundary panels: sampling, shapes, determinism, k-NN regions, aligned layouts,
storage and cache keys. Small untrained models on real digits keep each t-SNE under a second."""

from __future__ import annotations

import copy
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from sklearn.neighbors import KNeighborsClassifier

from unlearn_core.data.builtin import load_builtin
from unlearn_core.data.criteria import ForgetCriteria, ForgetSplit, split_sets
from unlearn_core.embedding import (
    EmbeddingPanel,
    cache_key,
    compute_panels,
    load_panels,
    sample_points,
    save_panels,
)
from unlearn_core.errors import UserError
from unlearn_core.training import TrainConfig, train_model

N_POINTS = 150


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data():
    return load_builtin("digits")


@pytest.fixture(scope="module")
def split(data) -> ForgetSplit:
    return split_sets(data, ForgetCriteria.parse("label == 3"))


@pytest.fixture(scope="module")
def models(data, split) -> dict:
    """An original and a retrained model, briefly trained on a few hundred digits (so both map
    digits into similar clusters, as real ones do), and a head-only "unlearned" variant."""
    rng = np.random.default_rng(0)
    config = TrainConfig(epochs=3, batch_size=16, lr=0.05, device="cpu")
    train = rng.choice(data.train_indices, 300, replace=False)
    remain = rng.choice(split.remain_train, 300, replace=False)
    built = {
        "original": train_model(data, train, replace(config, seed=0)).model.eval(),
        "retrain": train_model(data, remain, replace(config, seed=1)).model.eval(),
    }
    unlearned = copy.deepcopy(built["original"])
    with torch.no_grad():
        unlearned.head.bias[3] -= 100.0  # never predicts class 3 any more
    built["unlearned"] = unlearned
    return built


@pytest.fixture(scope="module")
def points(data, split) -> np.ndarray:
    return sample_points(data, split, max_points=N_POINTS, seed=0)


@pytest.fixture(scope="module")
def panels(models, data, points, split) -> dict[str, EmbeddingPanel]:
    return compute_panels(models, data, points, seed=0, grid_size=20, split=split)


# --- sampling ------------------------------------------------------------------------------
def test_sample_points_keeps_all_forget_test_points_and_fills_with_remain(data, split, points):
    assert len(points) == N_POINTS
    assert np.all(np.diff(points) > 0), "sorted and unique"
    assert set(split.forget_test) <= set(points.tolist())
    assert set(points.tolist()) <= set(split.forget_test.tolist()) | set(split.remain_test.tolist())


def test_sample_points_is_seeded(data, split):
    first = sample_points(data, split, max_points=N_POINTS, seed=0)
    again = sample_points(data, split, max_points=N_POINTS, seed=0)
    other = sample_points(data, split, max_points=N_POINTS, seed=1)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_sample_points_reserves_room_for_remain_points_when_forget_set_is_large(data, split):
    points = sample_points(data, split, max_points=20, seed=0)
    in_forget = np.isin(points, split.forget_test)
    assert len(points) == 20
    assert in_forget.sum() == 15 and (~in_forget).sum() == 5


def test_sample_points_takes_everything_when_it_fits(data, split):
    points = sample_points(data, split, max_points=10_000)
    assert np.array_equal(points, np.union1d(split.forget_test, split.remain_test))


# --- panels --------------------------------------------------------------------------------
def test_panel_shapes_labels_and_frame(panels, data, points, split, models):
    assert list(panels) == list(models)
    labels = data.labels.numpy()
    for name, panel in panels.items():
        n = len(points)
        assert panel.model_label == name
        assert panel.coords.shape == (n, 2) and np.isfinite(panel.coords).all()
        assert panel.predicted.shape == panel.true.shape == panel.is_forget.shape == (n,)
        assert np.array_equal(panel.true, labels[points])
        assert np.array_equal(panel.is_forget, np.isin(points, split.forget_test))
        assert list(panel.sample_ids) == list(data.metadata["sample_id"].iloc[points])
        assert panel.grid_x.shape == panel.grid_y.shape == (20,)
        assert panel.region_labels.shape == (20, 20)
        assert set(np.unique(panel.region_labels)) <= set(np.unique(panel.predicted))
        frame = panel.to_frame()
        assert list(frame.columns) == ["x", "y", "predicted", "true", "forget", "sample_id", "index", "correct"]
        assert np.array_equal(frame["correct"], panel.predicted == panel.true)


def test_predictions_are_the_models_own(panels, models, data, points):
    from unlearn_core.models.inference import predict_logits

    for name, model in models.items():
        expected = predict_logits(model, data.images, points).argmax(1)
        assert np.array_equal(panels[name].predicted, expected)
    assert 3 in panels["original"].predicted and 3 not in panels["unlearned"].predicted


def test_same_seed_gives_identical_coordinates(models, data, points, panels):
    subset = {"original": models["original"], "retrain": models["retrain"]}
    again = compute_panels(subset, data, points, seed=0, grid_size=20)
    for name in subset:
        assert np.array_equal(again[name].coords, panels[name].coords)


def test_region_grid_matches_a_hand_fitted_knn(panels):
    panel = panels["retrain"]
    knn = KNeighborsClassifier(n_neighbors=5).fit(panel.coords, panel.predicted)
    for i, j in [(0, 0), (3, 17), (10, 10), (19, 2), (19, 19)]:
        point = np.array([[panel.grid_x[j], panel.grid_y[i]]])
        assert panel.region_labels[i, j] == knn.predict(point)[0]
    assert panel.grid_x[0] < panel.coords[:, 0].min() and panel.grid_x[-1] > panel.coords[:, 0].max()
    assert panel.grid_y[0] < panel.coords[:, 1].min() and panel.grid_y[-1] > panel.coords[:, 1].max()


def _spread_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean distance between the same points in two maps, in units of the first map's spread."""
    return float(np.linalg.norm(a - b, axis=1).mean() / a.std())


def test_shared_init_panels_line_up_better_than_independent_ones(models, data, points, panels):
    subset = {"original": models["original"], "retrain": models["retrain"]}
    independent = compute_panels(subset, data, points, seed=0, layout="independent", grid_size=20)
    assert np.array_equal(independent["original"].coords, panels["original"].coords)
    shared = _spread_distance(panels["original"].coords, panels["retrain"].coords)
    separate = _spread_distance(independent["original"].coords, independent["retrain"].coords)
    assert shared < 0.5 * separate, (shared, separate)


def test_bad_layout_and_too_few_points_are_user_errors(models, data, points):
    with pytest.raises(UserError, match="layout"):
        compute_panels(models, data, points, layout="umap")
    with pytest.raises(UserError, match="2 points"):
        compute_panels(models, data, points[:1])


# --- storage and cache keys ----------------------------------------------------------------
def test_save_and_load_round_trip(panels, tmp_path):
    path = save_panels(panels, tmp_path / "run1" / "embedding", key="abc")
    assert path.suffix == ".npz"
    index = json.loads(path.with_suffix(".json").read_text())
    assert index["key"] == "abc" and index["names"] == list(panels)
    loaded = load_panels(path)
    assert list(loaded) == list(panels)
    for name, panel in panels.items():
        for field in ("coords", "predicted", "true", "is_forget", "sample_ids", "indices",
                      "grid_x", "grid_y", "region_labels"):
            saved, restored = getattr(panel, field), getattr(loaded[name], field)
            assert restored.dtype.kind == saved.dtype.kind and np.array_equal(restored, saved), field
        assert loaded[name].model_label == panel.model_label


def test_load_missing_embedding_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="No saved embedding"):
        load_panels(tmp_path / "nothing.npz")


def test_cache_key_depends_on_every_input():
    hashes = {"original": "aaa", "unlearned": "bbb"}
    ids = ["s1", "s2", "s3"]
    base = cache_key(hashes, ids, 0, "shared_init", grid_size=80)
    assert base == cache_key(dict(hashes), list(ids), 0, "shared_init", grid_size=80)
    variants = [
        cache_key(hashes, ids, 1, "shared_init", grid_size=80),
        cache_key(hashes, ["s1", "s2", "s4"], 0, "shared_init", grid_size=80),
        cache_key(hashes, ["s1", "s2"], 0, "shared_init", grid_size=80),
        cache_key(hashes, ids, 0, "independent", grid_size=80),
        cache_key({"original": "aaa", "unlearned": "ccc"}, ids, 0, "shared_init", grid_size=80),
        cache_key({"unlearned": "bbb", "original": "aaa"}, ids, 0, "shared_init", grid_size=80),
        cache_key(hashes, ids, 0, "shared_init", grid_size=40),
    ]
    assert len({base, *variants}) == len(variants) + 1


def test_points_beyond_the_laid_out_sample_join_the_map_next_to_their_kind(models, data, monkeypatch):
    """Above LAYOUT_POINTS_MAX, t-SNE lays out a seeded sample and the rest are added to that map:
    every point gets finite coordinates, and an added point lands among laid-out points of its
    own class (its nearest laid-out neighbour on the map mostly shares its true label)."""
    from unlearn_core import embedding

    monkeypatch.setattr(embedding, "LAYOUT_POINTS_MAX", 100)
    indices = np.random.default_rng(1).choice(data.test_indices, 300, replace=False)
    panel = compute_panels({"original": models["original"]}, data, indices, seed=0)["original"]
    assert panel.coords.shape == (300, 2) and np.isfinite(panel.coords).all()
    laid_out = np.sort(np.random.default_rng(0).choice(300, 100, replace=False))
    added = np.setdiff1d(np.arange(300), laid_out)
    nearest = KNeighborsClassifier(n_neighbors=1).fit(panel.coords[laid_out], panel.true[laid_out])
    same_kind = float((nearest.predict(panel.coords[added]) == panel.true[added]).mean())
    assert same_kind > 0.7, same_kind


def test_tsne_threads_do_not_change_the_map():
    """The panels use every usable CPU for t-SNE because the map is the same for any thread
    count: if openTSNE ever made it depend on threads, the default would stop being reproducible."""
    from unlearn_core.embedding import tsne_coordinates, tsne_threads

    rng = np.random.default_rng(0)
    centres = np.repeat(rng.normal(size=(4, 16)) * 4, 100, axis=0)
    features = (centres + rng.normal(size=centres.shape)).astype(np.float32)
    one = tsne_coordinates(features, seed=0, n_jobs=1)
    two = tsne_coordinates(features, seed=0, n_jobs=2)
    np.testing.assert_array_equal(one, two)
    assert 1 <= tsne_threads() <= 4


# --- display precision ---------------------------------------------------------------------
def _force_display_bf16(monkeypatch, on: bool) -> None:
    """Make both modules believe (or not) that this CPU has native bf16, whatever it has."""
    import unlearn_core.embedding as embedding_module
    import unlearn_core.models.inference as inference_module

    monkeypatch.setattr(embedding_module, "display_bf16", lambda device: on)
    monkeypatch.setattr(inference_module, "display_bf16", lambda device: on)


def test_bf16_display_features_keep_the_models_own_predictions(models, data, points, monkeypatch):
    from unlearn_core.embedding import features_and_predictions
    from unlearn_core.models.inference import embeddings, predict_logits

    _force_display_bf16(monkeypatch, True)
    for model in models.values():
        features, predicted = features_and_predictions(model, data, points)
        exact = embeddings(model, data.images, points)
        assert np.linalg.norm(features - exact) / np.linalg.norm(exact) < 0.02
        assert np.array_equal(predicted, predict_logits(model, data.images, points).argmax(1))


def test_display_features_come_from_a_folded_copy_and_leave_the_model_alone(models, data, points, monkeypatch):
    """Folding BatchNorm into the convolutions is the same map: features agree to float rounding,
    the classes are the model's own, and the caller's model keeps its BatchNorms and weights."""
    from unlearn_core.embedding import _folded_copy, features_and_predictions
    from unlearn_core.models.batchnorm import batchnorms
    from unlearn_core.models.inference import embeddings, predict_logits

    _force_display_bf16(monkeypatch, False)
    model = models["original"]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = _folded_copy(model)
    assert folded is not model and batchnorms(model) and not batchnorms(folded)
    features, predicted = features_and_predictions(model, data, points)
    exact = embeddings(model, data.images, points)
    assert np.linalg.norm(features - exact) / np.linalg.norm(exact) < 1e-5
    assert np.array_equal(predicted, predict_logits(model, data.images, points).argmax(1))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_near_ties_are_recomputed_in_float32(models, data, points, monkeypatch):
    """Display features that move the logits flip a near-tie point; the re-check puts it back."""
    import unlearn_core.embedding as embedding_module
    from unlearn_core.models.inference import embeddings, predict_logits

    model = copy.deepcopy(models["retrain"])
    top_two = torch.from_numpy(predict_logits(model, data.images, points)).topk(2, dim=1)
    tie = int((top_two.values[:, 0] - top_two.values[:, 1]).argmin())
    first, second = (int(c) for c in top_two.indices[tie])
    with torch.no_grad():  # make that point a near tie: margin 1e-4 between its two best classes
        model.head.bias[first] -= float(top_two.values[tie, 0] - top_two.values[tie, 1]) - 1e-4
    towards_second = (model.head.weight[second] - model.head.weight[first]).detach().numpy()
    rng = np.random.default_rng(0)
    noise = rng.normal(size=(len(points), model.head.in_features)).astype(np.float32)
    noise[tie] = 0.0  # the tie point gets only the push below, towards its second class

    def display_features(model_, images, indices, display=False, **kwargs):
        exact = embeddings(model_, images, indices, **kwargs)
        if not display:
            return exact
        moved = exact + 0.01 * np.abs(exact).mean() * noise[np.searchsorted(points, indices)]  # bf16-like error
        moved[np.asarray(indices) == points[tie]] += 3e-4 * towards_second / float(towards_second @ towards_second)
        return moved

    expected = predict_logits(model, data.images, points).argmax(1)
    displayed = embedding_module._head_logits(model, display_features(model, data.images, points, display=True))
    assert displayed.argmax(1)[tie] != expected[tie], "the test's error should flip the near tie"
    _force_display_bf16(monkeypatch, True)
    monkeypatch.setattr(embedding_module, "embeddings", display_features)
    _, predicted = embedding_module.features_and_predictions(model, data, points)
    assert np.array_equal(predicted, expected)


def test_cpu_bf16_can_be_switched_off(monkeypatch):
    from unlearn_core.device import CPU_BF16_ENV, cpu_bf16_native, display_bf16

    monkeypatch.setenv(CPU_BF16_ENV, "0")
    assert not cpu_bf16_native()
    assert not display_bf16(torch.device("cpu"))


@pytest.mark.parametrize(("amx", "avx512_bf16", "unit"), [
    (True, True, "AMX"), (False, True, "AVX-512 BF16"), (False, False, None)])
def test_cpu_bf16_unit_is_amx_or_avx512_bf16(monkeypatch, amx, avx512_bf16, unit):
    """Either native bf16 unit turns display precision on; a CPU with neither stays float32."""
    from unlearn_core.device import CPU_BF16_ENV, cpu_bf16_unit, display_bf16

    monkeypatch.delenv(CPU_BF16_ENV, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    assert cpu_bf16_unit() == unit
    assert display_bf16(torch.device("cpu")) == (unit is not None)
    assert not display_bf16(torch.device("cuda"))
