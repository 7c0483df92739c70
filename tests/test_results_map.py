"""The Results page's decision-region map: a click or a lasso selects images, the selection is
highlighted in every panel, the selected images' predictions read in neutral words, and a
selection drawn on the Original panel becomes a forget set on the Forget set page.

Library logic is tested on small hand-made panels and metadata; the page once under AppTest
with the finished digits runs of ``test_pages.py`` (the shipped model stands in for every model).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from unlearn_core import map_selection as ms
from unlearn_core import plots
from unlearn_core.data.criteria import parse_criteria
from unlearn_core.embedding import EmbeddingPanel

CLASSES = ["healthy", "ptosis", "thyroid"]


def _panel(n: int = 30, seed: int = 0, offset: int = 100) -> EmbeddingPanel:
    rng = np.random.default_rng(seed)
    true = np.arange(n) % 3
    predicted = true.copy()
    predicted[:4] = (true[:4] + 1) % 3
    return EmbeddingPanel(
        coords=rng.normal(size=(n, 2)).astype(np.float32), predicted=predicted, true=true,
        is_forget=true == 1, sample_ids=np.array([f"s{i}" for i in range(n)]), indices=np.arange(n) + offset,
        grid_x=np.linspace(-3, 3, 8), grid_y=np.linspace(-3, 3, 8), region_labels=rng.integers(0, 3, (8, 8)),
        model_label="x")


def _panels() -> dict:
    return {"original": _panel(seed=0), "retrain": _panel(seed=1), "unlearned": _panel(seed=2)}


def _point_traces(fig, axis: str) -> list:
    return [t for t in fig.data if t.type == "scatter" and t.customdata is not None and (t.xaxis or "x") == axis]


# --- clicking and selecting ------------------------------------------------------------------
def test_the_map_lets_a_click_select():
    """Streamlit turns plotly's click-selection off while the drag mode is lasso or box (the
    reason a click selected nothing): the map must open in another drag mode, with clicks
    selecting."""
    fig = plots.tsne_panels(_panels(), CLASSES)
    assert fig.layout.dragmode not in ("lasso", "select")
    assert "select" in fig.layout.clickmode.split("+")


def test_a_selection_event_names_images_and_the_panel_it_was_drawn_on():
    panels = _panels()
    fig = plots.tsne_panels(panels, CLASSES)
    owners = plots.trace_panels(fig, list(panels))
    original = [i for i, t in enumerate(fig.data) if t.type == "scatter" and t.customdata is not None
                and (t.xaxis or "x") == "x"]
    second = next(i for i, t in enumerate(fig.data) if t.type == "scatter" and t.xaxis == "x2")
    # what Streamlit hands over: points with customdata, curve_number, x/y ...; a click gives one point
    click = {"selection": {"points": [{"curve_number": original[0], "point_number": 0, "x": 0.1, "y": 0.2,
                                       "customdata": int(fig.data[original[0]].customdata[0])}],
                           "point_indices": [0], "box": [], "lasso": []}}
    pick = ms.pick_from_event(click, owners)
    assert pick == ms.MapPick((int(fig.data[original[0]].customdata[0]),), "original")
    lasso = {"selection": {"points": [
        {"curve_number": c, "customdata": [int(v)]} for c in original[:2] for v in fig.data[c].customdata
    ] + [{"curve_number": 0, "z": 1}],  # a background cell: no customdata, ignored
        "lasso": [{"xref": "x", "yref": "y", "x": [0, 1, 1], "y": [0, 0, 1]}]}}
    pick = ms.pick_from_event(lasso, owners)
    expected = sorted({int(v) for c in original[:2] for v in fig.data[c].customdata})
    assert list(pick.indices) == expected and pick.panel == "original"
    mixed = {"selection": {"points": [{"curve_number": original[0], "customdata": 100},
                                      {"curve_number": second, "customdata": 101}]}}
    assert ms.pick_from_event(mixed, owners) == ms.MapPick((100, 101), None)
    assert ms.pick_from_event({"selection": {"points": []}}, owners) is None
    assert ms.pick_from_event(None, owners) is None


def test_a_selection_is_highlighted_in_every_panel():
    panels = _panels()
    selected = [100, 103, 117, 129]
    fig = plots.tsne_panels(panels, CLASSES, selected=selected)
    for axis in ("x", "x2", "x3"):
        traces = _point_traces(fig, axis)
        lit = sorted(int(t.customdata[i]) for t in traces for i in t.selectedpoints)
        assert lit == selected, axis
        assert all(t.unselected.marker.opacity < 1 for t in traces)
    plain = plots.tsne_panels(panels, CLASSES)
    assert all(t.selectedpoints is None for t in _point_traces(plain, "x"))


# --- from a selection to forget criteria -----------------------------------------------------
@pytest.fixture(scope="module")
def metadata() -> pd.DataFrame:
    n = 60
    rng = np.random.default_rng(3)
    return pd.DataFrame({
        "sample_id": [f"img-{i:03d}" for i in range(n)],
        "label": np.arange(n) % 3,
        "device": np.where(np.arange(n) % 5 == 0, "Topcon", np.where(np.arange(n) % 2, "Cirrus", "Spectralis")),
        "vpf_mm": rng.uniform(6, 15, n).round(2),
        "age": rng.integers(20, 90, n),
        "split": np.where(np.arange(n) < 40, "train", "test"),
    })


def _shown(metadata):
    return np.flatnonzero(metadata["split"] == "test")  # the map shows test images


def _check_reproduces(proposal, metadata, shown, picked):
    criteria = parse_criteria(proposal.text)
    assert criteria == proposal.criteria  # round trip through the criteria language
    mask = criteria.mask(metadata.iloc[shown].reset_index(drop=True), CLASSES)
    assert sorted(np.asarray(shown)[mask].tolist()) == sorted(int(p) for p in picked)


def test_one_class_on_the_map_becomes_a_class_condition(metadata):
    shown = _shown(metadata)
    picked = shown[metadata["label"].iloc[shown].to_numpy() == 1]
    proposal = ms.criterion_for(metadata, shown, picked, CLASSES)
    assert proposal.kind == ms.EXACT and proposal.text == 'label == "ptosis"'
    assert (proposal.picked, proposal.matched, proposal.others, proposal.shown) == (len(picked), len(picked), 0, 20)
    _check_reproduces(proposal, metadata, shown, picked)
    # as a rule it picks training images too, which an id list of test images could not
    assert ms.forget_counts(proposal.criteria, metadata, CLASSES) == {"train": 13, "test": len(picked)}


def test_a_threshold_is_found_with_a_round_bound(metadata):
    shown = _shown(metadata)
    values = metadata["vpf_mm"].iloc[shown].to_numpy()
    cut = np.sort(values)[12]
    picked = shown[values >= cut]
    proposal = ms.criterion_for(metadata, shown, picked, CLASSES)
    assert proposal.kind == ms.EXACT
    clause = proposal.criteria.clauses[0]
    assert (clause.column, clause.op) == ("vpf_mm", ">=")
    below = values[values < cut].max()
    assert below < clause.value <= cut and len(repr(clause.value)) <= len(repr(float(cut)))
    _check_reproduces(proposal, metadata, shown, picked)


def test_two_conditions_when_one_is_not_enough(metadata):
    shown = _shown(metadata)
    meta = metadata.iloc[shown]
    picked = shown[(meta["device"] == "Cirrus").to_numpy() & (meta["label"] != 0).to_numpy()]
    proposal = ms.criterion_for(metadata, shown, picked, CLASSES)
    assert proposal.kind == ms.EXACT and len(proposal.criteria.clauses) == 2, proposal.text
    _check_reproduces(proposal, metadata, shown, picked)


def test_without_an_exact_condition_the_ids_are_listed(metadata):
    shown = _shown(metadata)
    picked = shown[[0, 7, 8, 13]]  # no class, device or range picks just these (and < 5 for numbers)
    proposal = ms.criterion_for(metadata, shown, picked, CLASSES)
    assert proposal.kind == ms.IDS
    assert proposal.text == 'sample_id in ("img-040", "img-047", "img-048", "img-053")'
    _check_reproduces(proposal, metadata, shown, picked)
    assert ms.forget_counts(proposal.criteria, metadata, CLASSES) == {"train": 0, "test": 4}
    one = ms.criterion_for(metadata, shown, picked[:1], CLASSES)
    assert one.text == 'sample_id == "img-040"'


def test_the_closest_condition_is_a_near_miss(metadata):
    shown = _shown(metadata)
    labels = metadata["label"].iloc[shown].to_numpy()
    thyroid = shown[labels == 2]
    picked = np.concatenate([thyroid[1:], shown[labels == 0][:1]])  # one missed, one extra
    assert ms.criterion_for(metadata, shown, picked, CLASSES).kind == ms.IDS
    closest = ms.closest_criterion(metadata, shown, picked, CLASSES)
    assert closest.kind == ms.CLOSEST and closest.text == 'label == "thyroid"'
    assert (closest.matched, closest.others) == (len(thyroid) - 1, 1)
    assert ms.closest_criterion(metadata, shown, shown[[0, 7]], CLASSES) is None


# --- what each model predicts ----------------------------------------------------------------
def test_predictions_side_by_side_in_neutral_words():
    classes = [str(d) for d in range(10)]
    metadata = pd.DataFrame({"sample_id": ["a", "b", "c"], "label": [3, 3, 5], "ink": [0.1, 0.2, 0.3],
                             "split": ["test"] * 3})

    def panel(predicted):
        return EmbeddingPanel(coords=np.zeros((3, 2)), predicted=np.array(predicted), true=np.array([3, 3, 5]),
                              is_forget=np.array([True, True, False]), sample_ids=np.array(["a", "b", "c"]),
                              indices=np.arange(3), grid_x=np.zeros(2), grid_y=np.zeros(2),
                              region_labels=np.zeros((2, 2), dtype=np.int64), model_label="x")

    table = ms.prediction_table(metadata, [0, 1, 2], {"original": panel([3, 3, 5]), "retrain": panel([9, 3, 5]),
                                                      "unlearned": panel([9, 8, 5])}, classes, forget_rows=[0, 1])
    assert list(table.columns) == ["image", "class", "group", "Original", "Retrained", "Unlearned", "ink"]
    assert table["Original"].tolist() == ["3", "3", "5"]
    assert table["Unlearned"].tolist() == ["now predicted as 9", "now predicted as 8", "same: 5"]
    assert table["Retrained"].tolist() == ["now predicted as 9", "same: 3", "same: 5"]
    assert table["group"].tolist() == ["to forget", "to forget", "kept"]
    assert not table.astype(str).apply(lambda col: col.str.contains("wrong")).any().any()


# --- the page ---------------------------------------------------------------------------------
from test_pages import DIGITS, _app, digits_runs, workspace_home  # noqa: E402,F401  (fixtures)


def test_results_page_map_to_forget_set(digits_runs):
    """A lasso of the class-3 test images on the Original panel: the map highlights them, the
    table shows every model's prediction, and "Forget these images" carries `label == "3"` to the
    Forget set page. (AppTest can't draw on a chart, so the page's selection key is set as the
    chart's on_select callback sets it; pick_from_event is tested above.)"""
    from unlearn_core.data.builtin import load_builtin
    from unlearn_core.runs.registry import Workspace

    run_id = digits_runs[0]
    at = _app("pages/4_results.py", us__run_id=run_id, **DIGITS)
    assert any(c.value.startswith("**Click a point** to select it") for c in at.caption)
    assert not [b for b in at.button if b.key == "rs_forget_pick"]  # nothing selected yet

    data = load_builtin("digits")
    split = Workspace().load_json(run_id, "split.json")
    threes = sorted(split["forget_test"])  # the forgotten class's test images, all on the map
    # a lasso that misses one 3 and catches one other digit: no exact condition, and the test
    # images' ids would forget nothing, so the closest condition is offered instead
    near = tuple(sorted(threes[1:] + sorted(split["remain_test"])[:1]))
    at.session_state["rs_map_pick"] = {"run": run_id, "pick": ms.MapPick(near, "original")}
    at.run()
    assert any("a list of their ids would forget nothing" in i.value for i in at.info)
    assert any(c.value == 'label == "3"' for c in at.code)
    assert [b.label for b in at.button if b.key == "rs_forget_closest"] == ["Forget with the closest condition"]
    assert not [b for b in at.button if b.key == "rs_forget_pick"]

    at.session_state["rs_map_pick"] = {"run": run_id, "pick": ms.MapPick(tuple(threes), "original")}
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(m.value.startswith(f"**{len(threes)} selected image(s)**") for m in at.markdown)
    table = at.dataframe[-1].value
    assert {"Original", "Retrained", "Unlearned"} <= set(table.columns)
    assert table["image"].tolist()[:3] == data.metadata["sample_id"].iloc[threes[:3]].tolist()
    assert any(c.value == 'label == "3"' for c in at.code)
    assert any("picks exactly the" in m.value for m in at.markdown)

    at.button(key="rs_forget_pick").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.session_state["us.criteria"] == 'label == "3"'
    assert at.text_input(key="fs_text").value == 'label == "3"'  # the Forget set page shows it
    assert any("Forget set drawn on the Results map" in s.value for s in at.success)


def test_results_page_selection_on_another_panel_is_not_a_forget_set(digits_runs):
    from unlearn_core.runs.registry import Workspace

    run_id = digits_runs[0]
    kept = tuple(sorted(Workspace().load_json(run_id, "split.json")["remain_test"])[:3])
    at = _app("pages/4_results.py", us__run_id=run_id, **DIGITS,
              rs_map_pick={"run": run_id, "pick": ms.MapPick(kept, "unlearned")})
    assert any("draw it on the **Original** panel" in i.value for i in at.info)
    assert not [b for b in at.button if b.key in ("rs_forget_pick", "rs_forget_closest")]
    at.button(key="rs_clear_pick").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert "rs_map_pick" not in at.session_state
    assert not any("selected image(s)" in m.value for m in at.markdown)
