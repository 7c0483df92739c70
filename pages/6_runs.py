"""Step 6 · Runs: the history of every model revision; compare, re-run, delete, download."""

import functools
import math

import pandas as pd
import streamlit as st

from unlearn_core.errors import UserError
from unlearn_core.exports import export_bytes, export_filename
from unlearn_core.labels import METRIC_DEFINITIONS, dataset_name
from unlearn_core.runs.registry import ACTIVE_STATUSES, KINDS, STATUSES
from unlearn_core.runs.result import RunResult
from unlearn_core.ui import background, cache, state, widgets

widgets.page_header(
    "Runs & export",
    "Every training, unlearning and composition run is recorded here with what it forgot, how, and "
    "the result. Tick runs in the table to compare them; pick one below to re-run it, delete it, or "
    "download its model, scores and a report for the audit trail.",
)

workspace = cache.workspace()
try:
    from unlearn_core.runs import jobs

    jobs.poll_queue(workspace)
    runs = workspace.list_runs()
except UserError as error:
    widgets.show_error(error, "The run history could not be read")
    st.stop()
if not runs:
    st.info("No runs yet. Start one on the Unlearn page (or train a model on Data & model).",
            icon=":material/info:")
    widgets.link(widgets.UNLEARN, "Go to Unlearn")
    st.stop()

# --- filters ---------------------------------------------------------------------------------------
cols = st.columns([1, 1, 2])
kinds = cols[0].multiselect("Kind", list(KINDS), key="rn_kinds", placeholder="all kinds")
statuses = cols[1].multiselect("Status", list(STATUSES), key="rn_status", placeholder="all statuses")
search = cols[2].text_input("Search", key="rn_search", placeholder="method, data set, criteria, label or id")


def _num(value):
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _shown(value, pattern: str) -> str:
    """A number as people read it (``81.5%``, ``0.042``); "–" when there is none."""
    value = _num(value)
    return "–" if value is None else pattern.format(value)


def _fit(rows: int) -> int:
    """A table height that shows every row (no inner scroll that hides some)."""
    return 38 + 35 * rows


rows = []
for r in runs:
    text = " ".join([r.id, r.kind, r.method, r.dataset, r.criteria_text, r.label]).lower()
    if (kinds and r.kind not in kinds) or (statuses and r.status not in statuses) or \
            (search and search.lower() not in text):
        continue
    result = RunResult.of(r)
    _, block = result.main_block()
    rows.append({
        # key columns only, so the table fits the page; the rest is in "Side by side" below
        "id": r.id, "kind": r.kind, "status": r.status, "method": r.method or "–",
        "data set": dataset_name(r.dataset) if r.dataset else "–",
        "forget criteria": r.criteria_text or "–",
        "forget (test)": _num(block.get("forget_test_acc")),
        "remain (test)": _num(block.get("remain_test_acc")),
        "distance": _num(result.comparison.distance_to_retrain),
        "created": (r.created_at or "")[5:16].replace("T", " "),
    })
if not rows:
    st.info("No run matches these filters.", icon=":material/filter_alt_off:")
    st.stop()
table = pd.DataFrame(rows)
event = st.dataframe(
    table, key="rn_table", on_select="rerun", selection_mode="multi-row", hide_index=True, width="stretch",
    column_config={
        "forget (test)": st.column_config.NumberColumn(format="percent",
                                                       help=METRIC_DEFINITIONS["forget_test_acc"]),
        "remain (test)": st.column_config.NumberColumn(format="percent",
                                                       help=METRIC_DEFINITIONS["remain_test_acc"]),
        "distance": st.column_config.NumberColumn(format="%.3f",
                                                  help="Distance to retrain. "
                                                       + METRIC_DEFINITIONS["distance_to_retrain"]),
        "created": st.column_config.TextColumn(help="Month-day and time the run started."),
    },
)
st.caption(f"{len(rows)} of {len(runs)} runs. Click a column name to sort; tick two or more rows to "
           "compare them side by side (with data set, label, time taken and settings).")
selected_rows = list(getattr(getattr(event, "selection", None), "rows", []) or [])
selected_ids = [table.iloc[i]["id"] for i in selected_rows if i < len(table)]
by_id = {r.id: r for r in runs}

# --- compare ---------------------------------------------------------------------------------------
if len(selected_ids) >= 2:
    st.subheader("Side by side")
    compare = {}
    for run_id in selected_ids:
        result = RunResult.of(by_id[run_id])
        _, block = result.main_block()
        compare[run_id] = {
            "kind": by_id[run_id].kind, "method": by_id[run_id].method,
            "data set": dataset_name(by_id[run_id].dataset), "label": by_id[run_id].label,
            "created": (by_id[run_id].created_at or "")[:19].replace("T", " "),
            "forget criteria": by_id[run_id].criteria_text,
            **{name: _shown(block.get(key), "{:.1%}") for key, name in (
                ("forget_train_acc", "forget acc. (train)"), ("remain_train_acc", "remain acc. (train)"),
                ("forget_test_acc", "forget acc. (test)"), ("remain_test_acc", "remain acc. (test)"))},
            "membership AUC": _shown(block.get("mia_membership_auc"), "{:.3f}"),
            "distance to retrain": _shown(result.comparison.distance_to_retrain, "{:.3f}"),
            "seconds": _shown(result.timing.unlearn, "{:.1f}"),
            "settings": ", ".join(f"{k}={v}" for k, v in sorted((by_id[run_id].config or {}).items())
                                  if k not in ("device", "amp", "channels_last")),
        }
    side_by_side = pd.DataFrame(compare).astype(str)
    st.dataframe(side_by_side, width="stretch", height=_fit(len(side_by_side)))

# --- one run ---------------------------------------------------------------------------------------
st.subheader("One run")
choices = selected_ids or [row["id"] for row in rows]
if st.session_state.get("rn_run") not in choices:
    # the run chosen elsewhere in the session (Unlearn, Results), else the newest
    current = state.selection().run_id or state.unlearn_run()
    st.session_state["rn_run"] = current if current in choices else choices[0]
run_id = st.selectbox("Run", choices, key="rn_run",
                      format_func=lambda i: f"{i} · {by_id[i].kind} · {by_id[i].method or ''} · {by_id[i].status}")
record = by_id[run_id]
st.markdown(f"**Status:** {record.status} · **kind:** {record.kind} · **data set:** {record.dataset} · "
            f"**forget:** `{record.criteria_text or '–'}`")
if record.error:
    st.error(record.error, icon=":material/error:")
if record.command:
    st.code(record.command_text, language="bash", wrap_lines=True)
    st.caption("The exact command that reproduces this run.")

can_show = record.kind in ("unlearn", "compose") and record.status == "done"
usable_model = record.id in {r.id for r in cache.trained_models()}  # a finished training run with weights
action_cols = iter(st.columns(3 + can_show + usable_model))
if record.status in ACTIVE_STATUSES:
    if next(action_cols).button("Cancel", key="rn_cancel", icon=":material/stop_circle:"):
        try:
            background.cancel(run_id)
            st.rerun()
        except UserError as error:
            widgets.show_error(error)
else:
    if next(action_cols).button("Run again", key="rn_rerun", icon=":material/replay:",
                             help="Start the same command as a new run."):
        try:
            from unlearn_core.runs import jobs

            new = jobs.rerun(workspace, run_id)
            if new.kind == "unlearn":
                state.set_unlearn_run(new.id)
            state.flash(f"Started run {new.id} with the same command.")
            st.rerun()
        except UserError as error:
            widgets.show_error(error, "Could not run it again")
    if can_show:
        if next(action_cols).button("Show results", key="rn_show", icon=":material/insights:"):
            state.set_run(run_id)
            st.session_state["rs_run"] = run_id
            st.switch_page(widgets.RESULTS.path)
    if usable_model:
        if next(action_cols).button("Use this model", key="rn_use_model", icon=":material/model_training:",
                                    help="Make this trained model the one to unlearn from (with its data set)."):
            state.use_trained_run(record, cache.weights_of(run_id))
            state.flash(f"Using the model of training run {run_id}.")
            st.switch_page(widgets.DATA.path)
    with next(action_cols).popover("Delete", icon=":material/delete:"):
        dependants = workspace.dependants(run_id)
        st.markdown(f"Delete run `{run_id}` and its files? This can't be undone.")
        if dependants:
            st.warning(f"Runs {', '.join(dependants)} used this one; they will name a run that no longer exists.")
        if st.button("Yes, delete", key="rn_delete", type="primary"):
            try:
                workspace.delete(run_id, force=bool(dependants))
                if state.selection().run_id == run_id:
                    state.set_run(None)
                state.flash(f"Deleted run {run_id}.")
                st.rerun()
            except UserError as error:
                widgets.show_error(error)


def _export_payload(run: str, fmt: str) -> bytes:
    """The export's bytes, for a download button that builds its file when clicked (Streamlit
    calls this on its own thread, after the page has drawn)."""
    return export_bytes(workspace, run, fmt)[0]


st.markdown("**Downloads**")
download_cols = st.columns(4)
for col, (fmt, label, mime) in zip(download_cols, [
    ("weights", "Model (.safetensors)", "application/octet-stream"),
    ("csv", "Scores (.csv)", "text/csv"),
    ("json", "Everything recorded (.json)", "application/json"),
    ("html", "Report (.html)", "text/html"),
]):
    if fmt == "html":  # the report takes a second or more to render: build it only when clicked
        payload, filename = functools.partial(_export_payload, run_id, fmt), export_filename(run_id, fmt)
    else:
        try:
            payload, filename = export_bytes(workspace, run_id, fmt)
        except UserError as error:
            col.caption(f"{label}: not available for this run", help=str(error))
            continue
    col.download_button(label, payload, file_name=filename, mime=mime, key=f"rn_download_{fmt}",
                        icon=":material/download:")
