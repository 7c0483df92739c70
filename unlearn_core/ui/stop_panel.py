"""The Unlearn page's "where will this run stop" line: computed once per model, forget set and
seed and kept in the workspace (:mod:`unlearn_core.stop_target_cache`: a reload, another tab and
the run itself reuse it), with a spinner while it computes; worded by :mod:`unlearn_core.ui.stop_text`."""

from __future__ import annotations

import streamlit as st

from unlearn_core.errors import UserError
from unlearn_core.stop_target_cache import StopTargetCache
from unlearn_core.ui import cache, stop_text

_SESSION_KEY = "ul_stop_targets"


def show_stop_target(dataset: str, model_key: str, criteria: str, split, seed: int,
                     holds: bool = False) -> dict | None:
    """Show where the run will stop; returns the estimate (``None`` when it could not be made).

    ``holds``: the method confirms the stop on a briefly fine-tuned copy (said in the text).
    """
    known = st.session_state.setdefault(_SESSION_KEY, {})
    key = f"{dataset}|{model_key}|{criteria}|{seed}"
    if key not in known:
        try:
            with st.spinner("Estimating where the run will stop (no retraining needed)…"):
                known[key] = stop_text.estimate(cache.model(dataset, model_key), cache.dataset(dataset), split,
                                                seed=seed, cache=StopTargetCache.in_workspace(cache.workspace().path))
        except (UserError, ValueError) as error:
            st.caption(f"Where the run will stop could not be estimated: {error}")
            return None
    target = known[key]
    st.info(stop_text.before_run_text(target, holds), icon=":material/flag:")
    return target


def measured_seconds(dataset: str, model_key: str, criteria: str, seed: int) -> float | None:
    """How long this session's stop estimate for the same model, forget set and seed took
    (the run repeats it), or ``None`` when it has not been made yet."""
    target = st.session_state.get(_SESSION_KEY, {}).get(f"{dataset}|{model_key}|{criteria}|{seed}")
    seconds = target.get("seconds") if isinstance(target, dict) else None
    return float(seconds) if isinstance(seconds, (int, float)) and seconds > 0 else None
