"""Step 3 · Unlearn: pick a method and its settings, start it in the background, watch it."""

import dataclasses

import streamlit as st

from unlearn_core.data.criteria import ForgetCriteria, split_sets
from unlearn_core.device import describe_devices
from unlearn_core.errors import UserError
from unlearn_core.labels import MODEL_SHORT
from unlearn_core.runs import attach
from unlearn_core.runs.result import RunResult
from unlearn_core.ui import background, cache, recipe_form, state, stop_panel, stop_text, widgets
from unlearn_core.ui import method_settings as ms

DEFAULT_METHOD = "psg"

widgets.page_header(
    "Unlearn",
    "Pick how to make the model forget, then start. The work runs in the background: you can "
    "leave this page and come back, and the progress is still here.",
)
sel, data = widgets.require_dataset("unlearn")
widgets.require_model(sel, "unlearn")
widgets.require_criteria(sel, "unlearn")
try:
    split = split_sets(data, ForgetCriteria.parse(sel.criteria))
except UserError as error:
    widgets.show_error(error, "The forget set can't be used")
    widgets.link(widgets.FORGET, "Change the forget set")
    st.stop()
sizes = split.sizes()
st.markdown(
    f"**Forgetting:** {ForgetCriteria.parse(sel.criteria).describe(data.classes, data.units)} "
    f"({sizes['forget_train']:,} training images; {sizes['remain_train']:,} are kept) from "
    f"{sel.model.describe()}."
)

# --- a run in progress? --------------------------------------------------------------------------
run_id = state.unlearn_run()
if not run_id:  # after a reload the session is new: take up only a run of this very selection
    in_progress = attach.unlearn_runs_in_progress(
        cache.workspace().list_runs(kind="unlearn"), sel.dataset, sel.criteria,
        sel.model.path if sel.model.kind != "shipped" else "")
    if in_progress.mine is not None:
        run_id = in_progress.mine.id
        state.set_unlearn_run(run_id)
    for other in in_progress.others:
        st.info(attach.describe_other(other), icon=":material/hourglass_top:")
record = None
if run_id:
    try:
        record = cache.workspace().get(run_id)
    except UserError:
        state.set_unlearn_run(None)
if record is not None and record.is_active:
    from unlearn_core.methods import METHODS  # noqa: E402 - imports every method module

    title = METHODS[record.method].title if record.method in METHODS else "the method"
    background.progress_panel(run_id, f"Unlearning with {title}", key="ul_progress")
    st.caption("Cancel stops the run; nothing is saved from a cancelled run.")
    st.stop()
if record is not None:
    background.finished_message(record, "Unlearning")
    if record.status == "done":
        result = RunResult.of(record)
        cols = st.columns(4)
        for col, name in zip(cols, ("original", "unlearned", "retrain")):
            block = result.blocks.get(name)
            if block:
                col.metric(f"{MODEL_SHORT[name]}: forget / remain test acc.",
                           f"{block['forget_test_acc']:.0%} / {block['remain_test_acc']:.0%}")
        if result.comparison.distance_to_retrain is not None:
            cols[3].metric("Distance to retrain", f"{result.comparison.distance_to_retrain:.3f}",
                           help="0 = behaves like a model retrained without the forget set.")
        widgets.next_step(widgets.RESULTS, "see the full comparison and the decision regions.",
                          "See the results")
        st.divider()

# --- method and settings ---------------------------------------------------------------------------
from unlearn_core.methods import list_methods  # noqa: E402 - imports every method module

methods = {m.name: m for m in list_methods() if m.name != "retrain"}
order = sorted(methods, key=lambda n: (n != DEFAULT_METHOD, n != "boundary_shrink", methods[n].title))
st.subheader("Method" if record is None or record.status != "done" else "Run again with other settings")
method_key = widgets.sticky("ul_method", DEFAULT_METHOD if DEFAULT_METHOD in methods else order[0])
method_name = st.selectbox("Method", order, key=method_key, format_func=lambda n: methods[n].title,
                           help="PSG is the default: it moves each forget image across the nearest "
                                "decision boundary and teaches the model that label. The others are "
                                "baselines from the literature.")
method = methods[method_name]
st.markdown(method.summary + (f"  \n_{method.citation}_" if method.citation else ""))

preset_key = f"ul_preset_{method_name}"
preset = None
options = [ms.NO_PRESET, *sorted(method.presets or {})]
if len(options) > 1:
    if st.session_state.get(preset_key) not in options:
        st.session_state[preset_key] = options[0]
    choice = st.selectbox("Preset", options, key=preset_key, on_change=ms.apply_preset, args=(method, preset_key),
                          help="A named set of settings of the method (for example the published "
                               "recipe). The page starts on the method's defaults.")
    preset = None if choice == ms.NO_PRESET else choice

st.subheader("Settings (the defaults work well)")
st.caption("The method's defaults are filled in: you can start as they are. "
           "Hover over the ? next to a setting to see what it does.")
values = ms.settings_form(method, preset)

st.subheader("Where and how")
devices = describe_devices()
gpu_note = (f"GPU found: {devices['cuda_name']}." if devices["cuda"]
            else "Apple GPU (MPS) found." if devices["mps"] else "No GPU found: runs on the CPU.")
cols = st.columns(3)
device = cols[0].selectbox("Device", ["auto", "cpu", "cuda", "mps"], key=widgets.sticky("ul_device", "auto"),
                           help=f"auto uses a GPU when there is one. {gpu_note}")
cols[0].caption(gpu_note)
background.threads_control(cols[1])
seed = cols[1].number_input("Seed", 0, 2**31 - 1, step=1, key=widgets.sticky("ul_seed", 0),
                            help="Same seed, same result.")
processes = widgets.processes_input(cols[0], "ul_processes", device, "run")
retrain = cols[2].checkbox("Also train the retrain reference", key=widgets.sticky("ul_retrain", True),
                           help="Trains a model on the kept images only: the gold standard the "
                                "unlearned model is compared with. Reused when it exists already; "
                                "otherwise it takes about as long as the original training.")

# Where the run will stop is shown here, but estimated last (below): the estimate trains small
# proxy models for some seconds, and the Start button must not wait for it.
stop_slot = st.empty() if stop_text.stops_automatically(values) else None

recipe = None
if retrain:
    try:
        known = cache.recorded_recipe(sel.dataset, sel.model.key)
        model_arch = cache.model(sel.dataset, sel.model.key).spec.arch
    except UserError as error:
        widgets.show_error(error, "The model's training recipe could not be read")
        st.stop()
    if known is None:
        st.markdown("**How was this model trained?** Its file does not record it, and the retrain reference "
                    "must be trained the same way (only on the kept images), or every comparison with it "
                    "misleads. Fill in the recipe the original model was trained with.")
        recipe = recipe_form.recipe_fields(model_arch)
    else:
        st.caption(f"The retrain reference is trained like the original: {known.recipe.describe()} "
                   f"({known.source_text}).")

settings = ms.changed_settings(method, preset, values)
request = dataclasses.replace(
    sel.unlearn_request(method_name, settings, retrain=retrain, seed=int(seed), device=device, preset=preset,
                        recipe=recipe), processes=int(processes))
with st.expander("The same from the command line"):
    st.code(request.command_text, language="bash", wrap_lines=True)

background.show_estimate(request, sel, data, split,
                         stop_panel.measured_seconds(sel.dataset, sel.model.key, sel.criteria, int(seed))
                         if stop_slot is not None else None)

if st.button("Start unlearning", key="ul_start", type="primary", icon=":material/play_arrow:"):
    try:
        started = background.start(request)
    except UserError as error:
        widgets.show_error(error, "Unlearning could not start")
    else:
        state.set_unlearn_run(started.id)
        state.set_run(started.id)
        st.rerun()

if stop_slot is not None:
    with stop_slot.container():
        stop_panel.show_stop_target(sel.dataset, sel.model.key, sel.criteria, split, int(seed),
                                    stop_text.checks_hold(values), stop_text.retires_classes(values))
