"""Plotly figures: each is built from plain data and shows what its docstring promises."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from unlearn_core import plots


def _bars(fig: go.Figure) -> list:
    return [t for t in fig.data if t.type == "bar"]


def test_histogram_stacks_the_selection_and_shades_the_range():
    values = pd.Series(np.linspace(5, 16, 200))
    selected = values.to_numpy() >= 12
    fig = plots.metadata_histogram(values, "vpf_mm", "mm", selected=selected, shade=(12, None))
    keep, forget = _bars(fig)
    assert keep.name == "keep" and forget.name == "forget"
    assert int(np.sum(forget.y)) == int(selected.sum())
    assert int(np.sum(keep.y) + np.sum(forget.y)) == len(values)
    rects = [s for s in fig.layout.shapes if s.type == "rect"]
    assert len(rects) == 1 and rects[0].x0 == 12 and rects[0].x1 == pytest.approx(16)
    assert fig.layout.xaxis.title.text == "Vertical palpebral fissure (VPF), mm"
    assert plots.column_label("exam_year", "year") == "Exam year (year)"
    assert plots.column_label("tear_break_up_s") == "Tear break up"  # fallback: humanized


def test_histogram_counts_missing_values_and_integer_bins():
    values = pd.Series([1.0, 2.0, np.nan, 2.0])
    fig = plots.metadata_histogram(values, "x")
    assert "1 missing" in fig.layout.title.text
    ints = plots.metadata_histogram(pd.Series([2020, 2021, 2021, 2023]), "exam_year")
    assert list(_bars(ints)[0].y) == [1, 2, 0, 1]  # one bar per year


def test_bars_for_categories_outline_the_chosen_values():
    values = pd.Series(["Topcon", "Cirrus 800 FA", "Cirrus 800 FA", "Spectralis"])
    fig = plots.metadata_chart(values, "device", chosen_values=["Cirrus 800 FA"])
    bar = _bars(fig)[0]
    assert list(bar.x)[0] == "Cirrus 800 FA" and list(bar.y)[0] == 2
    assert list(bar.marker.line.width)[0] == 2
    split = plots.metadata_bars(values, "device", selected=np.array([False, True, True, False]))
    assert [b.name for b in _bars(split)] == ["keep", "forget"]


def test_class_counts_and_split_per_class():
    table = pd.DataFrame({"train": [10, 5], "test": [3, 2]}, index=["healthy", "ptosis"])
    fig = plots.class_counts(table)
    assert [b.name for b in _bars(fig)] == ["train", "test"]
    per_class = pd.DataFrame({"forget_train": [4, 0], "remain_train": [6, 5], "forget_test": [1, 0],
                              "remain_test": [2, 2]}, index=["healthy", "ptosis"])
    fig = plots.split_per_class(per_class)
    assert len(_bars(fig)) == 4 and "D_f" in _bars(fig)[0].name


def test_confusion_matrix_counts_and_shares():
    true = np.array([0, 0, 1, 1, 1])
    pred = np.array([0, 1, 1, 1, 0])
    fig = plots.confusion_matrix(true, pred, ["a", "b"])
    heat = fig.data[0]
    assert np.asarray(heat.text).tolist() == [[1, 1], [1, 2]]
    assert np.asarray(heat.z)[1].tolist() == pytest.approx([1 / 3, 2 / 3])


def test_image_grid_has_one_hover_point_per_image():
    images = np.random.default_rng(0).integers(0, 255, size=(10, 1, 8, 8), dtype=np.uint8)
    fig = plots.image_grid(images, hover=[f"img {i}" for i in range(10)], captions=list("abcdefghij"),
                           columns=4, border=["#ff0000"] + [None] * 9)
    image, points, captions = fig.data
    assert image.type == "image" and np.asarray(image.z).shape[2] == 3
    assert len(points.x) == 10 and list(points.hovertext)[3] == "img 3"
    assert list(captions.text) == list("abcdefghij")
    assert plots.image_grid(images[:0]).layout.annotations[0].text == "no images"


def test_hover_text_names_class_and_units():
    meta = pd.DataFrame({"label": [1], "vpf_mm": [12.345], "camera": ["iPhone"]})
    (text,) = plots.hover_text(meta, ["healthy", "ptosis"], {"vpf_mm": "mm"})
    assert text == "<b>ptosis</b><br>vpf_mm: 12.35 mm<br>camera: iPhone"


def test_result_figures():
    fig = plots.per_class_accuracy({"original": [1.0, 0.9], "unlearned": [0.0, float("nan")]}, ["a", "b"])
    assert [b.name for b in _bars(fig)] == ["Original", "Unlearned"] and list(_bars(fig)[1].y)[1] is None
    losses = {name: {"forget": np.full(20, 0.1), "test": np.full(30, 2.0)} for name in ("original", "unlearned")}
    fig = plots.loss_histograms(losses)
    assert len(_bars(fig)) == 4 and sum(_bars(fig)[1].y) == pytest.approx(1.0)
    events = [{"phase": "retrain", "fraction": 0.5, "metrics": {"loss": 2.3}},
              {"phase": "psg", "fraction": 0.5, "metrics": {"forget_acc": 0.8, "remain_acc": 0.99}},
              {"phase": "psg", "fraction": 1.0, "metrics": {"forget_acc": 0.1, "remain_acc": 0.98, "loss": 0.2}}]
    fig = plots.progress_curves(events)
    assert {t.name for t in fig.data} == {"psg: forget", "psg: remain"} and list(fig.data[0].x) == [50, 100]
    fig = plots.tradeoff([{"label": "α=0", "metrics": {"remain_test_acc": 0.9, "forget_test_acc": 0.8}},
                          {"label": "α=1", "metrics": {"remain_test_acc": 0.8, "forget_test_acc": 0.1}}],
                         original={"remain_test_acc": 0.95, "forget_test_acc": 0.9},
                         retrain={"remain_test_acc": 0.94, "forget_test_acc": 0.0}, highlight="α=1",
                         parents=[{"label": "psg 1a2b", "metrics": {"remain_test_acc": 0.8, "forget_test_acc": 0.0}}])
    assert [t.name for t in fig.data] == ["candidates", "saved", "runs composed", "Original", "Retrained"]
    assert list(fig.data[2].text) == ["psg 1a2b"]
    assert set(fig.data[0].textposition) <= set(plots.LABEL_PLACES)  # placed apart: test_compose_defaults.py


def test_tsne_panels_marks_forget_stars_and_wrong_predictions():
    from unlearn_core.embedding import EmbeddingPanel

    rng = np.random.default_rng(0)
    n = 40
    true = rng.integers(0, 3, n)
    predicted = true.copy()
    predicted[:5] = (true[:5] + 1) % 3
    forget = np.arange(n) % 4 == 0
    panel = EmbeddingPanel(
        coords=rng.normal(size=(n, 2)).astype(np.float32), predicted=predicted, true=true, is_forget=forget,
        sample_ids=np.array([f"s{i}" for i in range(n)]), indices=np.arange(n) + 100,
        grid_x=np.linspace(-3, 3, 10), grid_y=np.linspace(-3, 3, 10),
        region_labels=rng.integers(0, 3, (10, 10)), model_label="original")
    fig = plots.tsne_panels({"original": panel, "unlearned": panel}, ["a", "b", "c"],
                            hover={100 + i: f"sample {i}" for i in range(n)})
    heatmaps = [t for t in fig.data if t.type == "heatmap"]
    points = [t for t in fig.data if t.type == "scatter" and t.customdata is not None]
    assert len(heatmaps) == 2
    assert sum(len(t.x) for t in points) == 2 * n
    stars = [t for t in points if t.marker.symbol == "star"]
    assert sum(len(t.x) for t in stars) == 2 * forget.sum()
    first_panel = [t for t in points if t.xaxis == "x"]
    outlined = [t for t in first_panel if t.marker.line.width == 1.5]
    assert sum(len(t.x) for t in outlined) == 5  # the five misclassified points are outlined
    for t in outlined:  # thin outline on a bigger marker: the fill (predicted class) stays visible
        assert t.marker.size > (14 if t.marker.symbol == "star" else 7)
    for t in outlined:  # in the colour of their true class
        assert all(int(c) == true[int(i) - 100] for c, i in zip(t.marker.line.color, t.customdata))
    assert all(int(i) >= 100 for t in points for i in t.customdata)
    assert [a.text for a in fig.layout.annotations] == ["Original", "Unlearned"]


def test_role_colours_are_not_class_colours():
    roles = {plots.FORGET_COLOR, plots.FORGET_LIGHT, plots.KEEP_COLOR, plots.KEEP_LIGHT,
             *plots.MODEL_COLORS.values()}
    assert not roles & {c.upper() for c in plots.CLASS_COLORS}
    assert not {r.upper() for r in roles} & {c.upper() for c in plots.CLASS_COLORS}


def test_report_figures_use_the_dashboard_palette_and_vocabulary():
    blocks = {"original": {"forget_train_acc": 1.0, "remain_test_acc": 0.9, "test_acc": float("nan")},
              "unlearned": {"forget_train_acc": 0.1}}
    fig = plots.set_accuracy(blocks)
    assert [(b.name, b.marker.color) for b in _bars(fig)] == [
        ("Original", plots.MODEL_COLORS["original"]), ("Unlearned", plots.MODEL_COLORS["unlearned"])]
    assert list(_bars(fig)[0].x) == ["D_f<br>Forget (training)", "T_r<br>Remain (test)"]
    assert not plots.set_accuracy({"original": {}}).data
    history = [{"epoch": 1, "forget_acc": 0.8, "remain_acc": 0.99, "loss": 1.0},
               {"epoch": 2, "forget_acc": 0.2, "remain_acc": 0.98, "loss": 0.5}]
    fig = plots.epoch_history(history, retrain_forget_acc=0.1)
    lines = {t.name: t.line.color for t in fig.data}
    assert lines["Forget (training) accuracy"] == plots.FORGET_COLOR
    assert lines["Remain (training) accuracy"] == plots.KEEP_COLOR
    assert fig.layout.shapes[0].y0 == 0.1
    assert not plots.epoch_history([{"epoch": 1}]).data


def test_tsne_legend_names_a_forgotten_class_no_model_predicts():
    """Class "c" exists only as forget images predicted as something else (a forgotten class):
    its colour is still in the legend, and its stars say their true class instead of "wrong"."""
    from unlearn_core.embedding import EmbeddingPanel

    true = np.array([0, 0, 1, 1, 2, 2])
    predicted = np.array([0, 0, 1, 1, 0, 1])
    forget = true == 2
    panel = EmbeddingPanel(
        coords=np.arange(12, dtype=np.float32).reshape(6, 2), predicted=predicted, true=true, is_forget=forget,
        sample_ids=np.array([f"s{i}" for i in range(6)]), indices=np.arange(6),
        grid_x=np.linspace(0, 1, 4), grid_y=np.linspace(0, 1, 4), region_labels=np.zeros((4, 4), int),
        model_label="unlearned")
    fig = plots.tsne_panels({"unlearned": panel}, ["a", "b", "c"], hover={i: f"sample {i}" for i in range(6)})
    legend = [t.name for t in fig.data if t.showlegend is not False and t.type == "scatter"]
    assert legend[:3] == ["a", "b", "c"] and "forget image" in legend
    star_texts = [text for t in fig.data if t.type == "scatter" and t.marker.symbol == "star" and t.hovertext
                  for text in t.hovertext]
    assert star_texts and all("(true class: c)" in text and "wrong" not in text for text in star_texts)


def test_block_similarity_plots_three_lines_over_the_blocks():
    from unlearn_core.cka import BlockSimilarity

    rows = [BlockSimilarity("body.block1", 0.99, 0.99, 0.98), BlockSimilarity("head", 0.4, 0.97, 0.2)]
    fig = plots.block_similarity(rows)
    assert [list(t.x) for t in fig.data] == [["block1", "head"]] * 3
    assert list(fig.data[0].y) == [0.99, 0.4] and list(fig.data[2].y) == [0.98, 0.2]
