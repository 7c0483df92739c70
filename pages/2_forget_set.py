"""Step 2 · Forget set: choose which images the model must forget, and see exactly which."""

import numbers

import numpy as np
import streamlit as st

from unlearn_core import plots
from unlearn_core.data.criteria import ForgetCriteria, clause_counts
from unlearn_core.errors import UserError
from unlearn_core.labels import SETS
from unlearn_core.ui import cache, state, widgets
from unlearn_core.ui import forget_controls as fc

TINY = 10
THUMBNAILS = 16

widgets.page_header(
    "Forget set",
    "Choose which images the model must forget. Set the controls on the left; the counts, charts "
    "and example images on the right update at once. Conditions combine with **and**; a control "
    "left at its full range, or with nothing picked, does not restrict anything.",
)
sel, data = widgets.require_dataset("choose a forget set")
controls = fc.build_controls(data)
fc.sync(sel.dataset, data, controls)
changed = dict(on_change=fc.on_controls_changed, args=(controls, data.classes, sel.dataset))

left, right = st.columns([1, 2], gap="large")

# --- controls ------------------------------------------------------------------------------------
with left:
    st.subheader("Choose")
    st.multiselect("Class", data.classes, key=fc.CLASS_KEY, placeholder="any class", **changed,
                   help="Forget only images of these classes. Leave empty for every class.")
    for control in controls:
        if control.kind == "range":
            st.slider(control.label, control.lo, control.hi, step=control.step, key=control.key,
                      format="%d" if control.integer else f"%.{control.decimals}f", **changed,
                      help=f"Forget images whose {control.column} lies in this range. Leave both ends "
                           "at the edges for no restriction; move one end for 'at least' or 'at most'.")
        else:
            st.multiselect(control.label, list(control.options), key=control.key, placeholder="any value",
                           **changed, help=f"Forget only images with these {control.column} values. "
                                       "Leave empty for every value.")
    st.toggle("Only a random share", key=fc.FRACTION_ON_KEY, **changed,
              help="Forget a seeded random sample of what the conditions above match, e.g. 10% of "
                   "all images (random forgetting), drawn separately from training and test images.")
    if st.session_state.get(fc.FRACTION_ON_KEY):
        cols = st.columns([2, 1])
        cols[0].slider("Share to forget", 1, 100, step=1, key=fc.FRACTION_KEY, format="%d%%", **changed)
        cols[1].number_input("Seed", 0, 2**31 - 1, step=1, key=fc.SEED_KEY, **changed,
                             help="Same seed, same random sample.")
    st.button("Clear all conditions", key="fs_clear", on_click=fc.on_clear, icon=":material/restart_alt:")

# --- the criteria as text ------------------------------------------------------------------------
sel = state.selection()
with right:
    st.subheader("Forget criteria")
    cols = st.columns([5, 1], vertical_alignment="bottom")
    cols[0].text_input("As text (you can also type here)", key=fc.TEXT_KEY,
                       placeholder=fc.example_criteria(controls, data.classes),
                       on_change=fc.on_text_applied, args=(sel.dataset,),
                       help="Conditions joined with 'and': column >= number, column == \"text\", "
                            "column in (\"a\", \"b\"), 12 <= column <= 14, label == \"class name\", "
                            "fraction(0.1, seed=0). Press Enter or Apply.")
    cols[1].button("Apply", key="fs_apply_text", on_click=fc.on_text_applied, args=(sel.dataset,))
    st.caption(f"Names to type: {fc.typed_names(controls)}.")
    if fc.text_error():
        st.error(fc.text_error(), icon=":material/error:")

    criteria = None
    mask = np.zeros(len(data.metadata), dtype=bool)
    if sel.criteria:
        try:
            criteria = ForgetCriteria.parse(sel.criteria)
            mask = cache.forget_mask(sel.dataset, sel.criteria)
        except UserError as error:
            widgets.show_error(error, "These criteria do not fit this data set")
            criteria = None
    if criteria is not None:
        st.markdown(f"**Forget:** {criteria.describe(data.classes, data.units)}")
        if not fc.shown_exactly():
            st.info("The controls on the left can't show these criteria exactly (for example `!=` on a "
                    "number or a strict `>`); the counts below follow the text. Moving a control "
                    "replaces the text.", icon=":material/info:")
    else:
        st.info("Nothing is selected yet: set a control on the left or type criteria above.",
                icon=":material/info:")

    # --- counts ---------------------------------------------------------------------------------
    table = cache.split_counts(data, mask)
    sizes = table.sum()
    st.subheader("How many images")
    metric_cols = st.columns(4)
    for col, one in zip(metric_cols, SETS):
        col.metric(one.name, f"{int(sizes[one.key]):,}", help=f"{one.symbol}: {one.meaning}.")

    n_forget, n_remain = int(sizes["forget_train"]), int(sizes["remain_train"])
    ready = False
    if criteria is not None:
        if n_forget == 0:
            st.warning("No training image matches these criteria, so there is nothing to forget. Widen a "
                       f"range or pick other values. {clause_counts(criteria, data)}", icon=":material/warning:")
        elif n_remain == 0:
            st.error("These criteria select every training image, so nothing would remain to learn from. "
                     "Add a condition or use a random share.", icon=":material/error:")
        else:
            ready = True
            if n_forget < TINY:
                st.warning(f"Only {n_forget} training image(s) match. Unlearning works, but the scores "
                           "(especially the membership attacks) will be noisy with so few.",
                           icon=":material/warning:")
            train_per_class = table["forget_train"] + table["remain_train"]
            whole = [c for c in table.index if table.loc[c, "forget_train"] > 0
                     and table.loc[c, "forget_train"] == train_per_class[c]]
            for name in whole:
                st.warning(f"All {int(train_per_class[name])} training images of class **{name}** are selected: "
                           "the model will forget this class entirely and stop predicting it. That is "
                           "right for class unlearning; otherwise narrow the criteria.",
                           icon=":material/warning:")
            if int(sizes["forget_test"]) == 0:
                st.info("No test image matches, so forgetting can't be checked on held-out images "
                        "(the 'forget (test)' scores will be empty).", icon=":material/info:")

    with st.expander("Per class", expanded=criteria is not None):
        shown = table.rename(columns={k: plots.SET_SHORT[k] for k in table.columns})
        st.dataframe(shown, width="stretch")
        if criteria is not None:
            st.plotly_chart(plots.split_per_class(table), key="fs_per_class_chart")

    # --- charts ---------------------------------------------------------------------------------
    if criteria is not None:
        st.subheader("Where the selection lies")
        used = [c for c in controls if c.column in criteria.columns]
        if not used:
            st.caption("The criteria use only the class or a random share; the first charts show how "
                       "the selection spreads over the metadata.")
            used = controls[:2]
        chart_cols = st.columns(2) if len(used) > 1 else [st.container()]  # one chart: full width
        for i, control in enumerate(used):
            series = data.metadata[control.column]
            if control.kind == "range":
                fig = plots.metadata_histogram(series, control.column, control.unit, selected=mask,
                                               shade=fc.range_of(criteria, control.column))
            else:
                fig = plots.metadata_bars(series, control.column, selected=mask,
                                          chosen_values=fc.values_of(criteria, control.column, control.options))
            chart_cols[i % len(chart_cols)].plotly_chart(fig, key=f"fs_chart_{control.column}")

        if n_forget:
            st.subheader("Examples of images to forget")
            forget_idx = np.flatnonzero(mask & (data.metadata["split"].to_numpy() == "train"))
            rng = np.random.default_rng(0)
            pick = np.sort(rng.choice(forget_idx, size=min(THUMBNAILS, len(forget_idx)), replace=False))
            meta = data.metadata.iloc[pick]
            shown_cols = [c for c in criteria.columns if c != "label"][:1]
            if shown_cols:  # caption each image with the value it was selected by
                col = shown_cols[0]
                unit = data.units.get(col, "")
                captions = [f"{v:g} {unit}".strip() if isinstance(v, numbers.Number) else str(v)
                            for v in meta[col]]
            else:
                captions = [data.classes[int(i)] for i in meta["label"]]
            st.plotly_chart(plots.image_grid(
                data.images[pick].numpy(), hover=plots.hover_text(meta, data.classes, data.units),
                captions=captions, columns=8, tile_px=80), key="fs_thumbnails")
            st.caption(f"{len(pick)} of the {n_forget:,} training images to forget. Hover for metadata.")

# --- the same from the command line --------------------------------------------------------------
if criteria is not None:
    st.divider()
    st.markdown("**The same from the command line** (unlearning with the default method):")
    st.code(state.selection().unlearn_request().command_text, language="bash", wrap_lines=True)

if ready:
    widgets.next_step(widgets.UNLEARN, "choose a method and start unlearning.")
