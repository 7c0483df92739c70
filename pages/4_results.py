"""Step 4 · Results: did the model forget, what did it keep, and how close is it to retraining?"""

import functools
import math

import numpy as np
import pandas as pd
import streamlit as st

from unlearn_core import advice, map_selection, plots, privacy
from unlearn_core.data.builtin import BUILTIN_SETS
from unlearn_core.errors import UserError
from unlearn_core.labels import METRIC_DEFINITIONS, METRIC_SHORT, MODEL_SHORT, NOTHING_SAVED, dataset_name
from unlearn_core.runs.result import RunResult
from unlearn_core.ui import cache, state, stop_text, widgets

MAX_POINTS = 2000
#: Session key of the images selected on the map: {"run": run id, "pick": map_selection.MapPick}.
PICK_KEY = "rs_map_pick"
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
retired = result.diagnostics.get("retired_classes")
if retired:
    st.markdown(stop_text.retired_text(retired, done=True))

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
if result.scored_note():
    st.caption(result.scored_note())
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
    per_class = cache.run_per_class_figure(run_id)
    if per_class is not None:
        st.plotly_chart(per_class, key="rs_per_class")
        st.caption("**Did forgetting harm other classes?** Compare each class's bars with the "
                   "retrained model's (black, when computed): similar heights mean no harm.")
with right:
    try:
        with st.spinner("Computing per-image losses…"):
            losses = cache.run_losses(run_id)
            loss_figure = cache.run_loss_figure(run_id)
        st.plotly_chart(loss_figure, key="rs_losses")
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
            similarity = cache.run_block_similarity_figure(run_id)
    except UserError as error:
        widgets.show_error(error, "The per-block comparison could not be computed")
        similarity = None
    if similarity is not None:
        st.plotly_chart(similarity, key="rs_cka")
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
stored = st.session_state.get(PICK_KEY) or {}
pick = stored.get("pick") if stored.get("run") == run_id else None
fig = cache.run_map_figure(run_id, MAX_POINTS, tuple(int(i) for i in pick.indices) if pick else None)


def _on_map_select(run: str, owners: list) -> None:
    """A click, box or lasso on the map: remember its images (the chart forgets them when the
    figure changes to show the highlight)."""
    new = map_selection.pick_from_event(st.session_state.get("rs_tsne"), owners)
    st.session_state[PICK_KEY] = {"run": run, "pick": new} if new else None


st.plotly_chart(fig, key="rs_tsne", on_select=functools.partial(_on_map_select, run_id, plots.trace_panels(fig, list(panels))),
                selection_mode=("points", "box", "lasso"))
st.caption("**Click a point** to select it, or pick **Lasso Select** in the chart's toolbar (top right) and draw "
           "around points; the same images light up in all three panels, and their pictures and predictions "
           "appear below. The maps are an approximation: t-SNE keeps neighbours together but distorts "
           "distances, and the background is a vote of nearby points, not the model's exact boundary.")


def _forget_on_forget_page(text: str, how: str) -> None:
    """Make ``text`` the session's forget criteria (on the run's data set) and open the Forget set page."""
    if state.selection().dataset != record.dataset:
        if record.dataset in BUILTIN_SETS:
            state.select_builtin(record.dataset)
        else:
            state.set_dataset(record.dataset, dataset_name(record.dataset))
    state.set_criteria(text)
    state.flash(f"Forget set drawn on the Results map ({how}): `{text if len(text) < 200 else text[:200] + '…'}`. "
                "Check the counts below, then go on to Unlearn.", "success")
    st.switch_page(widgets.FORGET.path)


if pick:
    chosen = np.array(pick.indices)[:48]
    st.markdown(f"**{len(pick)} selected image(s)**, highlighted in every panel"
                + (" (first 48 shown)" if len(pick) > 48 else ""))
    chosen_meta = data.metadata.iloc[chosen]
    st.plotly_chart(plots.image_grid(
        data.images[chosen].numpy(), hover=plots.hover_text(chosen_meta, data.classes, data.units),
        captions=[data.classes[int(i)] for i in chosen_meta["label"]], columns=12, tile_px=72),
        key="rs_selected_images")
    st.dataframe(map_selection.prediction_table(data.metadata, chosen, panels, data.classes,
                                                forget_rows=first.indices[np.asarray(first.is_forget, dtype=bool)]),
                 hide_index=True, width="stretch")
    st.button("Clear the selection", key="rs_clear_pick", icon=":material/deselect:",
              on_click=lambda: st.session_state.pop(PICK_KEY, None))

    # --- a forget set drawn on the map -------------------------------------------------------------
    st.markdown("##### Forget these images?")
    if pick.panel != "original":
        st.info("To turn a selection into a forget set, draw it on the **Original** panel: the map of the model "
                "in use today.", icon=":material/info:")
    else:
        proposal = map_selection.criterion_for(data.metadata, first.indices, pick.indices, data.classes)
        picked_train = int((data.metadata["split"].iloc[list(pick.indices)] == "train").sum())
        if proposal.kind == map_selection.EXACT:
            counts = map_selection.forget_counts(proposal.criteria, data.metadata, data.classes)
            st.markdown(f"Among the {proposal.shown} test images on the map, this condition picks exactly the "
                        f"{proposal.picked} you selected:")
            st.code(proposal.text, language=None, wrap_lines=True)
            st.markdown(f"As a forget set it is a rule for every image: it picks **{counts['train']} training images** "
                        f"(the model forgets these) and {counts['test']} test images (to check the forgetting).")
            if st.button("Forget these images", key="rs_forget_pick", type="primary", icon=":material/filter_alt:"):
                _forget_on_forget_page(proposal.text, "a condition that picks exactly the selection")
        elif picked_train and proposal.fits_text_limit:
            st.markdown("No simple condition on the metadata picks exactly these images, so the forget set lists "
                        f"them by id; {picked_train} of them are training images, which the model will forget:")
            st.code(proposal.text, language=None, wrap_lines=True)
            if st.button("Forget these images", key="rs_forget_pick", type="primary", icon=":material/filter_alt:"):
                _forget_on_forget_page(proposal.text, "the selected images by id")
        else:
            why = ("They are test images (the map shows held-out images) and a forget set is made of training "
                   "images, so a list of their ids would forget nothing." if not picked_train else
                   "They are too many to list by id in the criteria text; draw a smaller group.")
            st.info(f"No simple condition on the metadata picks exactly these {proposal.picked} images among the "
                    f"{proposal.shown} on the map. {why}", icon=":material/info:")
            closest = map_selection.closest_criterion(data.metadata, first.indices, pick.indices, data.classes)
            if closest is not None:
                counts = map_selection.forget_counts(closest.criteria, data.metadata, data.classes)
                others = f"{closest.others} other image" + ("" if closest.others == 1 else "s")
                st.markdown(f"The closest condition picks {closest.matched} of your {closest.picked} images and "
                            f"{others} on the map; as a forget set it picks **{counts['train']} training images** "
                            f"(and {counts['test']} test images):")
                st.code(closest.text, language=None, wrap_lines=True)
                if st.button("Forget with the closest condition", key="rs_forget_closest",
                             icon=":material/filter_alt:"):
                    _forget_on_forget_page(closest.text, "the condition closest to the selection")
            else:
                st.caption("Draw around a group that shares a class or a metadata value (for example the stars "
                           "of one class) to get a condition.")

widgets.next_step(widgets.COMPOSE, "optionally blend runs to trade forgetting against accuracy, or go to "
                  "**Runs** to download the model and a report.")
