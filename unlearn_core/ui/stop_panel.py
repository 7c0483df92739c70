"""The Unlearn page's "where will this run stop" line: computed once per model, forget set and
seed and kept in the workspace (:mod:`unlearn_core.stop_target_cache`: a reload, another tab and
the run itself reuse it), made in a background thread so the page stays usable meanwhile;
worded by :mod:`unlearn_core.ui.stop_text`."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import streamlit as st

from unlearn_core.errors import UserError
from unlearn_core.runs.workflows import stop_targets_of
from unlearn_core.ui import cache, stop_text

_SESSION_KEY = "ul_stop_targets"


#: How long a page waits for the estimate before drawing the rest and checking back (a kept
#: estimate or a quick one is shown at once; the proxies' training takes tens of seconds).
QUICK_WAIT_S = 1.0
#: How often the page checks whether a background estimate has finished.
POLL_S = 2.0


@st.cache_resource(show_spinner=False)
def _estimates() -> tuple[ThreadPoolExecutor, dict[str, Future]]:
    """One worker thread for every session's stop estimates, and the estimates in flight by key.

    Why a thread: the estimate trains three small proxy models (tens of seconds, minutes on a
    busy machine); made in the page's script it held every click on the page until it ended.
    One worker, because two estimates at once only slow each other on a small machine.
    """
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="stop-estimate"), {}


def show_stop_target(dataset: str, model_key: str, criteria: str, split, seed: int,
                     holds: bool = False, retires: bool = False) -> dict | None:
    """Show where the run will stop; returns the estimate (``None`` while it is being made or
    when it could not be made).

    ``holds``: the method confirms the stop on a briefly fine-tuned copy (said in the text).
    ``retires``: the method retires classes the forget set takes whole (named in the text).
    The estimate is made in a background thread and kept in the workspace; until it is ready
    the page says so and checks back every :data:`POLL_S` seconds, and the controls stay usable.
    """
    known = st.session_state.setdefault(_SESSION_KEY, {})
    key = f"{dataset}|{model_key}|{criteria}|{seed}"
    if key not in known:
        executor, pending = _estimates()
        future = pending.get(key)
        if future is None:
            try:
                model, data = cache.model(dataset, model_key), cache.dataset(dataset)
            except UserError as error:
                st.caption(f"Where the run will stop could not be estimated: {error}")
                return None
            future = executor.submit(stop_text.estimate, model, data, split, seed=seed,
                                     cache=stop_targets_of(cache.workspace()))
            pending[key] = future
        try:
            known[key] = future.result(timeout=QUICK_WAIT_S)
        except FutureTimeout:
            _wait_for(future)
            return None
        except (UserError, ValueError) as error:
            pending.pop(key, None)
            st.caption(f"Where the run will stop could not be estimated: {error}")
            return None
        pending.pop(key, None)
    target = known[key]
    retired, only_retired = stop_text.classes_taken_whole(cache.dataset(dataset), split) if retires else ([], False)
    if only_retired:
        holds = False  # retired classes cannot come back: PSG skips its hold check
    st.info(stop_text.before_run_text(target, holds, retired), icon=":material/flag:")
    return target


@st.fragment(run_every=POLL_S)
def _wait_for(future: Future) -> None:
    """Say that the estimate is on its way; redraw the whole page once it has arrived."""
    if future.done():
        st.rerun()
    st.caption(":material/hourglass_top: Estimating where the run will stop (small models trained on the kept "
               "images, no retraining; tens of seconds). You can change settings or start the run meanwhile.")


def measured_seconds(dataset: str, model_key: str, criteria: str, seed: int) -> float | None:
    """How long this session's stop estimate for the same model, forget set and seed took
    (the run repeats it), or ``None`` when it has not been made yet."""
    target = st.session_state.get(_SESSION_KEY, {}).get(f"{dataset}|{model_key}|{criteria}|{seed}")
    seconds = target.get("seconds") if isinstance(target, dict) else None
    return float(seconds) if isinstance(seconds, (int, float)) and seconds > 0 else None
