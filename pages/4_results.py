"""Step 4 · Results: did the model forget, what did it keep, and how close is it to retraining?"""

import math

import numpy as np
import pandas as pd
import streamlit as st

from unlearn_core import advice, plots, privacy
from unlearn_core.errors import UserError
from unlearn_core.labels import METRIC_DEFINITIONS, METRIC_SHORT, MODEL_SHORT, NOTHING_SAVED, dataset_name
from unlearn_core.runs.result import RunResult
from unlearn_core.ui import cache, state, stop_text, widgets

MAX_POINTS = 2000
ACCURACIES = [(key, METRIC_SHORT[key]) for key in
              ("forget_train_acc", "remain_train_acc", "forget_test_acc", "remain_test_acc", "test_acc")]
ATTACKS = [(key, METRIC_SHORT[key]) for key in ("mia_loss_lr", "mia_svc_efficacy", "mia_membership_auc")]

widgets.page_header(
    "Results",
    "Compare the original model, the unlearned one and, when computed, a model retrained without "
    "the forget images (the gold standard). Good unlearning means behaving like the retrained "
    "model: close to its accuracy on the forgotten images (low when the group is something only "
    "those images taught; it can stay high when the rest of the data teaches it too), and "
    "unchanged accuracy on the rest.",
)

workspace = cache.workspace()
try:
    runs = [r for r in workspace.list_runs(status="done") if r.kind in ("unlearn", "compose")]
except UserError as error:
    widgets.show_error(error, "The run history could not be read")
    st.stop()
if not runs:
    st.info("No finished unlearning run yet. Start one on the Unlearn page; it appears here when done.",
            icon=":material/info:")
    widgets.link(widgets.UNLEARN, "Go to Unlearn")
    st.stop()

sel = state.selection()
ids = [r.id for r in runs]
by_id = {r.id: r for r in runs}
if st.session_state.get("rs_run") not in ids:
    st.session_state["rs_run"] = sel.run_id if sel.run_id in ids else ids[0]


def _run_label(run_id: str) -> str:
    r = by_id[run_id]
    label = f" “{r.label}”" if r.label else ""
    return f"{r.id}{label} · {r.method or r.kind} · {dataset_name(r.dataset)} · {r.criteria_text}"


run_id = st.selectbox("Run", ids, key="rs_run", format_func=_run_label,
                      on_change=lambda: state.set_run(st.session_state["rs_run"]),
                      help="Finished unlearning and composition runs, newest first.")
record = by_id[run_id]
if sel.run_id != run_id:
    state.set_run(run_id)
result = RunResult.of(record)
blocks = result.ordered_blocks()
if result.unlearned is None:
    if record.kind == "compose" and result.candidates and result.chosen is None:
        st.warning(NOTHING_SAVED + " The Compose page lists the candidates.", icon=":material/warning:")
    else:
        st.warning("This run has no recorded scores for an unlearned model.", icon=":material/warning:")
    st.stop()
st.markdown(f"**Forgot:** {result.criteria_description or record.criteria_text} · "
            f"**method:** {record.method} · **data:** {dataset_name(record.dataset)}")
if result.retrain is None:
    st.info("This run has no retrained reference, so 'distance to retrain' is missing. Tick **Also train "
            "the retrain reference** on the Unlearn page to get it.", icon=":material/info:")
reference = result.reference()
if reference is not None:
    st.markdown(reference.sentence())
    if reference.warning():
        st.warning(reference.warning(), icon=":material/warning:")
stop_check = stop_text.target_vs_retrain(result)
if stop_check is not None:
    st.markdown(stop_check.text())

# --- at a glance ---------------------------------------------------------------------------------


def _fmt(value, pattern: str = "{:.3f}") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return pattern.format(value)


def _points(difference: float) -> str:
    """A difference of two accuracies in percentage points ("-12.3 pts"), not in "%"."""
    return _fmt(100 * difference, "{:+.1f} pts")


u, o = result.unlearned, result.original
cols = st.columns(4)
cols[0].metric("Forget accuracy (test)", _fmt(u.get("forget_test_acc"), "{:.1%}"),
               delta=_points((u.get("forget_test_acc") or 0) - (o.get("forget_test_acc") or 0)) + " vs original", delta_color="off", help=METRIC_DEFINITIONS["forget_test_acc"])
cols[1].metric("Remain accuracy (test)", _fmt(u.get("remain_test_acc"), "{:.1%}"),
               delta=_points((u.get("remain_test_acc") or 0) - (o.get("remain_test_acc") or 0)) + " vs original", delta_color="off", help=METRIC_DEFINITIONS["remain_test_acc"])
comparison = result.comparison
cols[2].metric("Distance to retrain", _fmt(comparison.distance_to_retrain),
               delta=(f"original: {_fmt(comparison.original_distance_to_retrain)}"
                      if comparison.original_distance_to_retrain is not None else None),
               delta_color="off", delta_arrow="off", help=METRIC_DEFINITIONS["distance_to_retrain"])
seconds = result.timing.unlearn
speed = result.timing.speedup
cols[3].metric("Time to unlearn", _fmt(seconds, "{:.1f} s"),
               delta=f"{speed:.1f}× faster than retraining" if speed else None, delta_color="off",
               delta_arrow="off",
               help="Wall-clock time of the unlearning itself; the speed-up compares it with "
                    "training the retrain reference.")
if comparison.collapsed:
    st.error("The unlearned model **collapsed**: it lost more than 10 points of remain accuracy, so it forgot "
             f"by breaking rather than by unlearning. {advice.collapse_advice(record.method, record.config or {})}",
             icon=":material/error:")
weak = advice.weak_original_warning(o.get("test_acc"))
if weak:
    st.warning(weak, icon=":material/warning:")

# --- the table -------------------------------------------------------------------------------------
st.subheader("Scores")
verdict = privacy.privacy_verdict(u.get("mia_membership_auc"),
                                  (result.retrain or {}).get("mia_membership_auc"))
{True: st.success, False: st.warning, None: st.info}[verdict.ok](verdict.text, icon=":material/shield:")


def _score_table(columns: list[tuple[str, str]], number_format: str | None) -> None:
    rows = [{"model": MODEL_SHORT.get(name, name), **{label: block.get(key) for key, label in columns}}
            for name, block in blocks.items()]
    config = {label: st.column_config.NumberColumn(label, help=METRIC_DEFINITIONS[key], format=number_format)
              for key, label in columns}
    st.dataframe(pd.DataFrame(rows).set_index("model"), column_config=config, width="stretch")


_score_table(ACCURACIES, "percent")
st.caption("Accuracies on the images to forget and to keep, in training and test. Hover over a column "
           "name for its definition. For every score the ideal is the retrained model's value.")
with st.expander("Membership-attack scores in detail"):
    _score_table(ATTACKS, "%.3f")
    st.caption("Three attacks that try to tell whether an image was in training; the line above uses "
               "the membership AUC. For each, the ideal is the retrained model's value, not 0.5.")

# --- charts ----------------------------------------------------------------------------------------
try:
    data = cache.dataset(record.dataset)
except Exception as error:  # noqa: BLE001 - the run's data file may have been removed
    widgets.show_error(error, "The run's data set could not be loaded, so charts are not available")
    st.stop()

left, right = st.columns(2)
with left:
    per_class = {name: block["per_class_test_acc"] for name, block in blocks.items()
                 if block.get("per_class_test_acc")}
    if per_class:
        st.plotly_chart(plots.per_class_accuracy(per_class, data.classes), key="rs_per_class")
        st.caption("**Did forgetting harm other classes?** Compare each class's bars with the "
                   "retrained model's (black, when computed): similar heights mean no harm.")
with right:
    try:
        with st.spinner("Computing per-image losses…"):
            losses = cache.run_losses(run_id)
        st.plotly_chart(plots.loss_histograms(losses), key="rs_losses")
        st.caption("**Can an attacker tell the forgotten images were trained on?** Compare the unlearned "
                   "model's picture with the retrained model's: the more alike, the less an attacker "
                   "learns. (For a whole forgotten class the retrained model's forget losses are high, "
                   "since it never learned the class; that picture is the target.)")
        if "retrain" in losses and "unlearned" in losses:
            epsilon = privacy.epsilon_score(losses["unlearned"]["forget"], losses["retrain"]["forget"])
            st.metric("ε: how far the forget losses give the unlearned model away", _fmt(epsilon, "{:.2f}"),
                      help="0 = an attacker who sees one forget image's loss cannot tell the unlearned from "
                           "the retrained model; larger is worse. Worst case over loss thresholds, as in "
                           "the NeurIPS 2023 unlearning challenge (docs/method.md, Metrics).")
    except UserError as error:
        widgets.show_error(error, "Losses could not be computed")

# --- where forgetting lives -----------------------------------------------------------------------
if result.retrain:
    st.subheader("Where the forgetting lives")
    try:
        with st.spinner("Comparing each block with the retrained model…"):
            similarity = cache.run_block_similarity(run_id)
    except UserError as error:
        widgets.show_error(error, "The per-block comparison could not be computed")
        similarity = []
    if similarity:
        st.plotly_chart(plots.block_similarity(similarity), key="rs_cka")
        st.caption("How alike each block of the network sees the images, compared with the retrained model "
                   "(linear CKA: 1 = the same). Where the purple line rises above the dotted one, unlearning "
                   "moved that block towards a model that never saw the forget images; a change only at the "
                   "head means the earlier blocks still hold what they learned. The grey line should stay high.")

# --- decision regions ------------------------------------------------------------------------------
st.subheader("Decision regions")
st.markdown(
    "Each panel places the same test images on a 2-D map of what the model sees (t-SNE of its "
    "last-layer features). **Stars** are images like the forgotten ones, **circles** the rest; "
    "the **fill colour is the class the model predicts**; a larger marker with a thin **outline in "
    "another colour** is a wrong prediction, the outline being the **true class**. A forgotten "
    "image that now gets another label is a big star filled with the new class and outlined in "
    "its old one. The background shows which class the model predicts in that area."
)
try:
    with st.spinner("Computing the maps (a few seconds the first time)…"):
        panels = cache.run_panels(run_id, MAX_POINTS)
except UserError as error:
    widgets.show_error(error, "The maps could not be computed")
    st.stop()
first = next(iter(panels.values()))
meta = data.metadata.iloc[first.indices]
hover = dict(zip(first.indices.tolist(), plots.hover_text(meta, data.classes, data.units)))
fig = plots.tsne_panels(panels, data.classes, hover=hover,
                        titles=MODEL_SHORT)
event = st.plotly_chart(fig, key="rs_tsne", on_select="rerun", selection_mode=("points", "box", "lasso"))
st.caption("The maps are an approximation: t-SNE keeps neighbours together but distorts distances, and "
           "the background is a vote of nearby points, not the model's exact boundary. Click or lasso "
           "points to see their images.")

points = []
selection = getattr(event, "selection", None) or {}
for point in (selection.get("points", []) if isinstance(selection, dict) else getattr(selection, "points", [])):
    value = point.get("customdata")
    if isinstance(value, list):
        value = value[0] if value else None
    if value is not None:
        points.append(int(value))
if points:
    chosen = np.array(sorted(set(points)))[:48]
    st.markdown(f"**{len(set(points))} selected image(s)**" + (" (first 48 shown)" if len(set(points)) > 48 else ""))
    chosen_meta = data.metadata.iloc[chosen]
    st.plotly_chart(plots.image_grid(
        data.images[chosen].numpy(), hover=plots.hover_text(chosen_meta, data.classes, data.units),
        captions=[data.classes[int(i)] for i in chosen_meta["label"]], columns=12, tile_px=72),
        key="rs_selected_images")
    predictions = {f"{MODEL_SHORT.get(name, name)} predicts": [
        data.classes[int(by_index[i])] if i in by_index else "–" for i in chosen.tolist()]
        for name, by_index in ((name, dict(zip(p.indices.tolist(), p.predicted.tolist())))
                               for name, p in panels.items())}
    st.dataframe(chosen_meta.assign(label=[data.classes[int(i)] for i in chosen_meta["label"]], **predictions),
                 hide_index=True, width="stretch")

widgets.next_step(widgets.COMPOSE, "optionally blend runs to trade forgetting against accuracy, or go to "
                  "**Runs** to download the model and a report.")
