"""Home: what this tool is, what is selected so far, the one-click demo, and the next step."""

import streamlit as st

from unlearn_core.errors import UserError
from unlearn_core.ui import cache, demo_model, state, widgets

widgets.page_header(
    "Unlearning Studio",
    "Make an image classifier **forget** what it learned from a group of training images "
    "(a retired camera, a measurement range a new policy excludes, one diagnosis, patients who "
    "withdrew consent) without training it again from scratch. Then **check that it worked** by "
    "comparing it with a model retrained without those images.",
)

left, right = st.columns([3, 2], gap="large")

with right:
    with st.container(border=True):
        st.subheader("Try the demo")
        choice = st.container()  # filled below, once the list of built-in sets is imported
        clicked = st.button("Load the demo", key="load_demo", type="primary",
                            icon=":material/play_arrow:", width="stretch")
    # Why here and not at the top: unlearn_core.data imports torch (~3 s the first time in a new
    # server), and the page above, the button included, should not wait for it. A click meanwhile
    # simply reruns the page once the import is done, with the picker's (default) choice.
    from unlearn_core.data.builtin import BUILTIN_SETS

    with choice:
        names = list(BUILTIN_SETS)
        demo_name = st.selectbox("Demo", names, key=widgets.sticky("home_demo_set", state.DEMO_DATASET),
                                 format_func=lambda n: BUILTIN_SETS[n].title,
                                 help="Each built-in set comes with its model and a forget scenario.")
        demo = BUILTIN_SETS[demo_name]
        st.markdown(
            f"**{demo.title}**, its shipped model, and this forget set: `{demo.demo_forget}`. "
            f"{demo.demo_story}"
        )
    if clicked:
        state.load_demo(demo_name)
        try:
            with st.spinner("Preparing the demo data and checking its model (a few seconds the first time)…"):
                cache.dataset(demo_name)
                check = demo_model.demo_model_check(demo_name)
            if check.usable:
                st.success("Demo loaded: data set, model and forget set are selected.")
        except UserError as error:
            widgets.show_error(error, "The demo data could not be prepared")
        except Exception as error:  # noqa: BLE001 - a generator still being built must not crash home
            widgets.show_error(error, "The demo data could not be prepared")
    selected = state.selection()
    if selected.dataset in BUILTIN_SETS and selected.model is not None and selected.model.kind == "shipped":
        demo_model.demo_model_panel(selected.dataset, key="home_demo")

with left:
    st.subheader("Selected so far")
    sel = state.selection()
    widgets.status_panel(sel)
    if sel.dataset and sel.model is None:
        st.caption("No model yet: use the shipped one, upload weights, or train one on the Data & model page.")

st.divider()
st.subheader("How it works")
st.markdown(
    "1. **Data & model**: pick a built-in data set or upload your own images, and the model to change.\n"
    "2. **Forget set**: choose the images to forget with sliders and pickers; see how many and which.\n"
    "3. **Unlearn**: pick a method and start; it runs in the background with live progress.\n"
    "4. **Results**: compare original, unlearned and retrained models, and see the decision regions.\n"
    "5. **Compose** (optional): blend unlearned models to trade forgetting against accuracy.\n"
    "6. **Runs**: every run is recorded; compare, re-run, download the model and a report."
)

sel = state.selection()
if not sel.dataset:
    widgets.next_step(widgets.DATA, "choose a data set and a model, or press **Load the demo** above.")
elif sel.model is None:
    widgets.next_step(widgets.DATA, "choose the model to change (shipped, uploaded or trained here).")
elif not sel.criteria:
    widgets.next_step(widgets.FORGET, "choose which images the model must forget.")
elif not sel.run_id:
    widgets.next_step(widgets.FORGET, "check which images will be forgotten, then start unlearning.",
                      "Review the forget set")
else:
    widgets.next_step(widgets.RESULTS, "see whether the model forgot, and what it kept.")
