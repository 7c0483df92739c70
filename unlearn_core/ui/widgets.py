"""Shared dashboard widgets: page header, "selected so far" panel, guards, next step, errors.

A page reads like a short story: :func:`page_header` says what the page
is for, the ``require_*`` guards stop early with a plain message and a link when an earlier
step is missing, and :func:`next_step` ends the page by saying where to go.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import streamlit as st

from unlearn_core.errors import UserError
from unlearn_core.ui import cache, state


@dataclass(frozen=True)
class PageInfo:
    path: str
    title: str
    icon: str


HOME = PageInfo("pages/0_home.py", "Home", ":material/home:")
DATA = PageInfo("pages/1_data_model.py", "1 · Data & model", ":material/database:")
FORGET = PageInfo("pages/2_forget_set.py", "2 · Forget set", ":material/filter_alt:")
UNLEARN = PageInfo("pages/3_unlearn.py", "3 · Unlearn", ":material/auto_fix_high:")
RESULTS = PageInfo("pages/4_results.py", "4 · Results", ":material/insights:")
COMPOSE = PageInfo("pages/5_compose.py", "5 · Compose (optional)", ":material/tune:")
RUNS = PageInfo("pages/6_runs.py", "6 · Runs & export", ":material/history:")
STEPS = (DATA, FORGET, UNLEARN, RESULTS, COMPOSE, RUNS)


def page_header(title: str, purpose: str) -> None:
    """Title and one or two plain sentences: what this page shows and what to do here."""
    st.title(title)
    st.markdown(purpose)
    message = state.take_flash()
    if message:
        kind, text = message
        getattr(st, kind, st.info)(text)


def processes_input(where: Any, key: str, device: str, what: str) -> int:
    """The "Processes / GPUs" field of a run (``what``: "run" or "training"), in ``where``.

    One place for the field the Unlearn and Data & model pages share: at most one process per GPU
    on a CUDA machine, else per core (:func:`unlearn_core.distributed.max_processes`); a value
    kept from a machine with more is lowered to fit.
    """
    from unlearn_core.distributed import max_processes  # imports torch: not at the app's start

    cap = max_processes(device)
    sticky(key, 1)
    st.session_state[key] = min(int(st.session_state[key]), cap)
    return int(where.number_input(
        "Processes / GPUs", 1, cap, step=1, key=key,
        help=f"Above 1 the {what} starts under torchrun with this many data-parallel processes (one per GPU "
             "on a GPU machine; on the CPU they share the job's threads). Same result within noise, shorter on "
             "several GPUs. Several machines: see docs/distributed.md."))


def sticky(key: str, default: Any) -> str:
    """Hold widget ``key``'s value in Session State through the API on every run; returns ``key``.

    Why: a page that shows a progress panel stops before drawing its controls, and Streamlit
    then drops their state; when they come back the browser draws a box on its first option
    while the app may still hold the old value (a Method box that said PSG started Fine-tune).
    A value set through the API is kept and sent to the browser with the widget. The widget
    must then be created *without* its own default (no ``value=``/``index=``), or Streamlit
    warns that both set it.
    """
    st.session_state[key] = st.session_state.get(key, default)
    return key


def link(page: PageInfo, label: str | None = None, **kwargs) -> None:
    st.page_link(page.path, label=label or page.title, icon=page.icon, **kwargs)


def next_step(page: PageInfo, text: str, label: str | None = None) -> None:
    """A closing box: what to do next and a link to the page where it happens."""
    with st.container(border=True):
        st.markdown(f"**Next:** {text}")
        link(page, label or f"Go to {page.title}")


def show_error(error: Exception, what: str = "") -> None:
    """A user's mistake as a plain message (never a traceback)."""
    prefix = f"{what}: " if what else ""
    st.error(prefix + str(error), icon=":material/error:")


def status_items(sel: state.Selection | None = None) -> list[tuple[str, str | None, PageInfo]]:
    """``(what, chosen value or None, page where it is chosen)`` for the four selections."""
    sel = sel or state.selection()
    model = sel.model.describe() if sel.model is not None else None
    run = None
    if sel.run_id:
        run = sel.run_id
        try:
            record = cache.workspace().get(sel.run_id)
            run = f"{sel.run_id} ({record.method or record.kind}, {record.status})"
        except Exception:  # noqa: BLE001 - a deleted run or a missing registry: show the id only
            pass
    return [
        ("Data set", sel.dataset_label or sel.dataset, DATA),
        ("Model", model, DATA),
        ("Forget set", f"`{sel.criteria}`" if sel.criteria else None, FORGET),
        ("Latest run", run, UNLEARN),
    ]


def status_panel(sel: state.Selection | None = None, compact: bool = False) -> None:
    """What is selected so far, with a mark for each step (sidebar and home page)."""
    for what, value, page in status_items(sel):
        mark = ":material/check_circle:" if value else ":material/radio_button_unchecked:"
        shown = value if value else "_not chosen yet_"
        if compact:
            st.markdown(f"{mark} **{what}:** {shown}")
        else:
            cols = st.columns([3, 1])
            cols[0].markdown(f"{mark} **{what}:** {shown}")
            with cols[1]:
                link(page, "change" if value else "choose")


def sidebar_status() -> None:
    with st.sidebar:
        st.caption("Selected so far")
        status_panel(compact=True)


# --- guards ----------------------------------------------------------------------------------
def require_dataset(action: str = "continue"):
    """The selected data set, or a message with a link to pick one and ``st.stop()``."""
    sel = state.selection()
    if not sel.dataset:
        st.info(f"First choose a data set (or load the demo on the Home page) to {action}.",
                icon=":material/info:")
        link(DATA, "Choose data and a model")
        link(HOME, "Home: load the demo in one click")
        st.stop()
    try:
        with st.spinner(f"Loading {sel.dataset_label or sel.dataset}…"):
            return sel, cache.dataset(sel.dataset)
    except Exception as error:  # noqa: BLE001 - a bad file or generator must not crash the page
        show_error(error, "The selected data set could not be loaded")
        link(DATA, "Choose another data set")
        st.stop()


def require_model(sel: state.Selection, action: str = "continue"):
    """The selected model, or a message with a link to pick one and ``st.stop()``."""
    if sel.model is None:
        st.info(f"Choose a model first (shipped, uploaded or trained here) to {action}.",
                icon=":material/info:")
        link(DATA, "Choose a model")
        st.stop()
    try:
        with st.spinner("Loading the model…"):
            return cache.model(sel.dataset, sel.model.key)
    except UserError as error:
        show_error(error, "The selected model could not be loaded")
        link(DATA, "Choose another model")
        st.stop()


def require_criteria(sel: state.Selection, action: str = "continue") -> str:
    if not sel.criteria:
        st.info(f"Choose which samples to forget first to {action}.", icon=":material/info:")
        link(FORGET, "Choose the forget set")
        st.stop()
    return sel.criteria
