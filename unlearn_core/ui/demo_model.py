"""The demo model panel: say whether a built-in set's demo model fits today's data, and when it
does not, offer the one button that retrains it in the background.

Why a panel of its own: the same situation (a demo model that is missing, damaged, or made for
other data) can meet the user on Home right after **Load the demo** and on Data & model, and it
must never be a dead end on either.  The check itself is :func:`unlearn_core.assets.check_demo_model`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import streamlit as st

from unlearn_core.errors import UserError
from unlearn_core.runs.requests import DemoModelsRequest
from unlearn_core.ui import background, cache, state, widgets

if TYPE_CHECKING:  # assets imports the model zoo (torchvision, ~3 s): Home imports this module first
    from unlearn_core.assets import DemoModelCheck


def demo_model_check(name: str) -> DemoModelCheck:
    """The check for built-in set ``name`` (memoized by the library on the file and the data)."""
    from unlearn_core.assets import check_demo_model

    return check_demo_model(cache.dataset(name))


def demo_model_panel(name: str, key: str) -> DemoModelCheck:
    """Show how the demo model of ``name`` fits the data; offer retraining when it does not.

    Returns the check as it stands after this render (callers select the model when usable).
    """
    from unlearn_core.assets import DEMO_RECIPES, DemoModelCheck

    run_id = state.demo_retrain_run(name)
    record = _record(run_id)
    if record is not None and record.is_active:
        background.progress_panel(record.id, "Retraining the demo model", key=f"{key}_progress",
                                  show_curves=False)
        return DemoModelCheck(name, None, False, "The demo model is being retrained.")
    if record is not None and record.status != "done":
        background.finished_message(record, "Retraining the demo model")
    if record is not None and record.status == "done":
        cache.model.clear()  # a cached refusal or an older file must not outlive the new model
    check = demo_model_check(name)
    if check.exact:
        return check
    if check.usable:
        st.info(f"About the demo model: {check.message}", icon=":material/info:")
        return check
    st.error(f"The demo model can't be used. {check.message}", icon=":material/error:")
    epochs = DEMO_RECIPES[name].epochs
    st.markdown(
        f"Retrain it on this computer ({epochs} passes over the training images, a minute or two "
        "on a laptop). It runs in the background and replaces nothing that was shipped: the new model "
        "is kept in your workspace and used from then on. The same from a terminal:")
    st.code(check.fix, language="bash")
    if st.button("Retrain the demo model", key=f"{key}_start", type="primary", icon=":material/model_training:"):
        try:
            started = background.start(DemoModelsRequest(only=(name,)))
            state.set_demo_retrain_run(name, started.id)
            st.rerun()
        except UserError as error:
            widgets.show_error(error, "Retraining could not start")
    return check


def _record(run_id: str | None):
    if not run_id:
        return None
    try:
        return cache.workspace().get(run_id)
    except UserError:
        return None
