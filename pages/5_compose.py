"""Step 5 · Compose (optional): blend finished runs to trade forgetting against kept accuracy."""

import dataclasses

import streamlit as st

from unlearn_core import plots
from unlearn_core.errors import UserError
from unlearn_core.labels import NOTHING_SAVED
from unlearn_core.compose import parents_warning
from unlearn_core.runs import attach, workflows
from unlearn_core.runs.requests import STRATEGY_RUNS, ComposeRequest, SaveCandidateRequest
from unlearn_core.runs.result import RunResult
from unlearn_core.ui import background, cache, state, widgets

STRATEGIES = {
    "interpolate": "Interpolate between two runs (α sweep)",
    "head_swap": "Head swap: body of run A, head of run B",
    "blockwise": "Block-wise: choose each block from a run",
    "task_sum": "Task-vector sum: add up what each run changed",
}

widgets.page_header(
    "Compose (optional)",
    "Unlearning methods trade forgetting against what the model keeps, and different runs land on "
    "different sides. Here you can build new models from finished runs (blend their weights, swap "
    "parts) and see every candidate on one forgetting-vs-keeping chart, next to the original and "
    "the retrained reference. Save the one you like as a new run.",
)

workspace = cache.workspace()
try:
    done = [r for r in workspace.list_runs(kind="unlearn", status="done")]
except UserError as error:
    widgets.show_error(error, "The run history could not be read")
    st.stop()
if not done:
    st.info("Composition needs finished unlearning runs. Run at least one (two for most strategies) on the "
            "Unlearn page first.", icon=":material/info:")
    widgets.link(widgets.UNLEARN, "Go to Unlearn")
    st.stop()

by_id = {r.id: r for r in done}
sel = state.selection()
# Runs can only be combined when they started from the same model on the same data.
groups: dict[tuple, list[str]] = {}
for r in done:
    groups.setdefault((r.dataset, r.base_model_hash), []).append(r.id)
start_run = sel.run_id if sel.run_id in by_id else done[0].id
if sel.run_id and sel.run_id not in by_id:  # a saved composition is selected: stay with its inputs
    try:
        start_run = next((p for p in workspace.get(sel.run_id).parents if p in by_id), start_run)
    except UserError:
        pass
group_key = (by_id[start_run].dataset, by_id[start_run].base_model_hash)
candidates_ids = groups[group_key]

st.subheader("Runs to combine")
st.caption(f"Finished unlearning runs on **{group_key[0]}** that started from the same model "
           f"({len(candidates_ids)} available). The order matters: A is the first picked.")
st.session_state.setdefault("cp_runs", candidates_ids[:2])
st.session_state["cp_runs"] = [i for i in st.session_state["cp_runs"] if i in candidates_ids]
picked = st.multiselect(
    "Runs", candidates_ids, key="cp_runs", max_selections=8,
    format_func=lambda i: f"{i} · {by_id[i].method} · {by_id[i].criteria_text}",
    help="Pick A first, then B (and more for block-wise or task-vector sums).")
strategy = st.radio("Strategy", list(STRATEGIES), format_func=STRATEGIES.get, key="cp_strategy")

cols = st.columns(3)
alphas = "0, 0.25, 0.5, 0.75, 1"
if strategy == "interpolate":
    alphas = cols[0].text_input("α values", alphas, key="cp_alphas",
                                help="Weights of run B: 0 is run A, 1 is run B; each α gives one candidate.")
scales = "1"
if strategy == "task_sum":
    scales = cols[0].text_input("Scales", scales, key="cp_scales",
                                help="Original + scale × the sum of what each run changed; one candidate per scale.")
recalibrate = cols[1].checkbox("Recalibrate BatchNorm on kept images", False, key="cp_bn",
                               help="Off by default, so that α = 0 and α = 1 are exactly the two runs. Mixed "
                                    "weights no longer match their stored normalization statistics, and "
                                    "re-estimating them on the kept training images can help a blend; but it "
                                    "also changes the endpoints and can undo forgetting that a method keeps "
                                    "in those statistics (PSG's, for example).")
repair = cols[2].number_input("Repair epochs", 0, 50, 0, key="cp_repair",
                              help="Short fine-tuning on the kept images after composing (0 = none; the "
                                   "reference uses 5).")

low, high = STRATEGY_RUNS[strategy]
problem = None
if not (low <= len(picked) <= high):
    problem = (f"{STRATEGIES[strategy].split(':')[0]} needs "
               + (f"exactly {low}" if low == high else f"at least {low}") + f" run(s); {len(picked)} picked.")
    if len(candidates_ids) < low:
        problem += (f" Only {len(candidates_ids)} suitable run(s) exist: run another unlearning on the Unlearn "
                    "page (another method or other settings) to combine them.")


def _numbers(text: str) -> tuple[float, ...]:
    return tuple(float(v.strip()) for v in text.replace(";", ",").split(",") if v.strip())


request = None
try:
    request = ComposeRequest(runs=tuple(picked), strategy=strategy, repair_epochs=int(repair),
                             recalibrate=recalibrate,
                             alphas=_numbers(alphas) if strategy == "interpolate" else None,
                             scales=_numbers(scales) if strategy == "task_sum" else None)
except ValueError:
    problem = "α values and scales must be numbers separated by commas, e.g. 0, 0.5, 1."
if strategy == "blockwise" and picked and not problem:
    try:
        blocks = cache.run_models(picked[0])["unlearned"].blocks()
    except Exception as error:  # noqa: BLE001 - a run whose weights are gone
        blocks = []
        problem = f"The model of run {picked[0]} could not be loaded: {error}"
    if blocks:
        st.markdown("**Which run each block comes from** (input side first)")
        block_cols = st.columns(min(len(blocks), 6))
        choice = {}
        for i, block in enumerate(blocks):
            source = block_cols[i % len(block_cols)].selectbox(
                block, list(range(len(picked))), key=f"cp_block_{block}",
                format_func=lambda n: f"{'ABCDEFGH'[n]}: {picked[n]}",
                index=min(len(picked) - 1, 1) if block == "head" else 0)
            if source:
                choice[block] = source
        request = dataclasses.replace(request, blocks=choice)

if problem:
    st.warning(problem, icon=":material/warning:")
else:
    with st.expander("The same from the command line"):
        st.code(request.command_text, language="bash", wrap_lines=True)

# --- a composition in progress or finished ----------------------------------------------------
run_key = "cp__run"
compose_id = st.session_state.get(run_key)
if not compose_id:  # after a reload: show a composition of these very runs that is still running
    in_progress = attach.compose_runs_in_progress(workspace.list_runs(kind="compose"),
                                                  request.runs if request is not None else ())
    if in_progress.mine is not None:
        compose_id = st.session_state[run_key] = in_progress.mine.id
    for other in in_progress.others:
        st.info(attach.describe_other(other), icon=":material/hourglass_top:")
if not compose_id and sel.run_id and sel.run_id not in by_id:
    # a reload (the run is in the address) or a candidate saved from a composition: show that composition
    try:
        selected = workspace.get(sel.run_id)
        if selected.kind == "compose" and selected.status == "done":
            source = [p for p in selected.parents if workspace.exists(p) and workspace.get(p).kind == "compose"]
            compose_id = st.session_state[run_key] = source[0] if source else selected.id
    except UserError:
        pass
record = None
if compose_id:
    try:
        record = workspace.get(compose_id)
    except UserError:
        st.session_state.pop(run_key, None)
if record is not None and record.is_active:
    background.progress_panel(compose_id, "Composing", key="cp_progress", show_curves=False)
    st.stop()

if st.button("Build and score candidates", key="cp_start", type="primary",
             disabled=problem is not None, icon=":material/play_arrow:"):
    try:
        started = background.start(request, dataset=group_key[0], base_model_hash=group_key[1])
        st.session_state[run_key] = started.id
        st.rerun()
    except UserError as error:
        widgets.show_error(error, "Composition could not start")

if record is None:
    st.stop()
background.finished_message(record, "Composition")
if record.status != "done":
    st.stop()

result = RunResult.of(record)
found = result.candidates
if not found:
    st.info("This composition recorded no candidate scores.", icon=":material/info:")
    st.stop()
parents = []
for parent_id in record.parents:
    try:
        parent = workspace.get(parent_id)
    except UserError:  # deleted since: nothing to plot
        continue
    block = RunResult.of(parent).unlearned if parent.status == "done" and parent.kind != "compose" else None
    if block:
        parents.append({"label": f"{parent.method} {parent.id[-4:]}", "metrics": block, "id": parent.id})
parent_names = {p["id"]: p["label"] for p in parents}
saved_runs = [r for r in workspace.list_runs(kind="compose", status="done") if record.id in r.parents]
saved_labels = {RunResult.of(r).chosen: r.id for r in saved_runs}
if sel.run_id not in (record.id, *saved_labels.values()):  # so a reload comes back to these candidates
    state.set_run(record.id)
if result.chosen is not None:  # a composition asked for one candidate by name (`--select`)
    saved_labels.setdefault(result.chosen, record.id)
st.plotly_chart(plots.tradeoff(found, result.original, result.retrain, saved=tuple(saved_labels), parents=parents),
                key="cp_tradeoff")
st.caption("Right is better (more kept accuracy); for forgetting, closer to the retrained model is better. "
           "Triangles are the runs composed, so you can see whether combining them improved on them"
           + ("; ringed candidates are saved as runs." if saved_labels else "."))


def _versus(candidate: dict) -> str:
    if candidate.get("beaten_by"):
        return f"worse than {parent_names.get(candidate['beaten_by'], candidate['beaten_by'])}"
    if candidate.get("same_as"):
        return f"same as {parent_names.get(candidate['same_as'], candidate['same_as'])}"
    return "—"


st.dataframe([{"candidate": c.get("label"),
               "forget acc. (test)": c.get("metrics", {}).get("forget_test_acc"),
               "remain acc. (test)": c.get("metrics", {}).get("remain_test_acc"),
               "membership AUC": c.get("metrics", {}).get("mia_membership_auc"),
               "distance to retrain": c.get("distance_to_retrain"),
               "vs the runs composed": _versus(c),
               "forgets less than its inputs": bool(c.get("forgetting_lost")),
               "saved as run": saved_labels.get(c.get("label"), "—")} for c in found],
             hide_index=True, width="stretch",
             column_config={"forget acc. (test)": st.column_config.NumberColumn(format="percent"),
                            "remain acc. (test)": st.column_config.NumberColumn(format="percent"),
                            "membership AUC": st.column_config.NumberColumn(format="%.3f"),
                            "distance to retrain": st.column_config.NumberColumn(format="%.3f")})
for candidate in found:
    if candidate.get("forgetting_lost"):
        st.warning(f"**{candidate.get('label')}**: {candidate.get('forgetting_note') or 'forgets less than its inputs.'}",
                   icon=":material/warning:")
no_gain = parents_warning(found)
if no_gain:
    st.warning(no_gain, icon=":material/warning:")

st.subheader("Save a candidate")
if saved_labels:
    st.success("Saved from this composition: " + ", ".join(f"**{label}** as run `{run}`"
                                                             for label, run in saved_labels.items()) + ".",
               icon=":material/check_circle:")
else:
    st.info(NOTHING_SAVED.replace("(on the Compose page, or ", "(below, or "), icon=":material/info:")
labels = [c["label"] for c in found]
suggestion = workflows.suggest(found)
cols = st.columns([2, 1], vertical_alignment="bottom")
pick = cols[0].selectbox("Candidate to save", labels, key="cp_pick",
                         index=labels.index(suggestion[0]) if suggestion else 0,
                         help="Saving copies the candidate already built (no recomputation) into a new run "
                              "you can open on Results and download from Runs.")
if suggestion:
    st.caption(f"Preselected: **{suggestion[0]}**, {suggestion[1]}. Nothing is saved until you click.")
if cols[1].button("Save this candidate as a run", key="cp_save", icon=":material/save:", type="primary"):
    try:
        saved = workflows.save_candidate(SaveCandidateRequest(run=record.id, candidate=pick), workspace)
        state.set_run(saved["run_id"])
        st.rerun()
    except UserError as error:
        widgets.show_error(error, "Could not save that candidate")
if saved_labels:
    widgets.next_step(widgets.RESULTS, "look at a saved composition like any run, or go to **Runs** to download it.",
                      "See its results")
