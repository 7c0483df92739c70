"""Background runs from the dashboard: start one, show its progress, cancel it.

The work itself is the command line in a subprocess (:mod:`unlearn_core.runs.jobs`); this module
only starts it and polls the registry with ``st.fragment(run_every=...)``, so the page stays
responsive, and leaving and coming back shows the same run.
"""

from __future__ import annotations

import time

import streamlit as st

from unlearn_core import plots
from unlearn_core.errors import UserError
from unlearn_core.ui import cache

POLL_SECONDS = 1.0


def start(request, **fields):
    """Start ``request`` (an Unlearn/Train/ComposeRequest) as a background run (or queue it)."""
    from unlearn_core.runs import workflows

    return workflows.submit(cache.workspace(), request, **fields)


def cancel(run_id: str) -> None:
    from unlearn_core.runs import jobs

    jobs.cancel(cache.workspace(), run_id)


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = max(0, int(round(seconds)))
    return f"about {seconds // 60} min {seconds % 60:02d} s left" if seconds >= 60 else f"about {seconds} s left"


PHASES = {
    "train": "Training", "retrain": "Training the retrain reference (on the kept images only)",
    "evaluate": "Scoring the models", "compose": "Building and scoring candidates", "done": "Finishing",
}


def phase_text(phase: str | None) -> str:
    """A phase name in words; a method's own phase (``psg``, ``finetune``...) is unlearning."""
    if not phase:
        return "Working"
    return PHASES.get(phase, f"Unlearning ({phase})")


def describe_event(event: dict) -> str:
    """``Training · epoch 3/8 · step 12/40 · about 20 s left`` from a progress event."""
    parts = [phase_text(event.get("phase"))]
    if event.get("epoch") and event.get("epochs"):
        parts.append(f"epoch {event['epoch']}/{event['epochs']}")
    if event.get("step") and event.get("steps"):
        parts.append(f"step {event['step']}/{event['steps']}")
    eta = _eta(event.get("eta_seconds"))
    if eta:
        parts.append(eta)
    return " · ".join(parts)


def progress_panel(run_id: str, what: str, key: str, show_curves: bool = True) -> None:
    """Live progress of an active run with a Cancel button; reruns the page when it ends."""

    @st.fragment(run_every=POLL_SECONDS)
    def panel() -> None:
        from unlearn_core.runs import jobs

        workspace = cache.workspace()
        try:
            jobs.poll_queue(workspace)
            record = workspace.get(run_id)
        except UserError as error:
            st.error(str(error))
            return
        if not record.is_active:
            st.rerun(scope="app")
        event = record.progress or {}
        fraction = float(event.get("fraction") or 0.0)
        if record.status == "queued":
            text = "Waiting for another run to finish…"
        else:
            text = describe_event(event) if event else "Starting (loading data and model)…"
        started = record.started_at or record.created_at
        elapsed = ""
        if started:
            from datetime import datetime

            elapsed = f" · running for {int(time.time() - datetime.fromisoformat(started).timestamp())} s"
        st.markdown(f"**{what}** (run `{run_id}`){elapsed}")
        st.progress(fraction, text=text)
        if event.get("message"):
            st.caption(event["message"])
        if show_curves:
            events = [e for e in workspace.progress_events(run_id)
                      if any(k.endswith("_acc") for k in (e.get("metrics") or {}))]
            if events:
                st.plotly_chart(plots.progress_curves(events), key=f"{key}_curves")
        if st.button("Cancel", key=f"{key}_cancel", icon=":material/stop_circle:"):
            try:
                cancel(run_id)
            except UserError as error:
                st.warning(str(error))
            st.rerun(scope="app")

    panel()


def finished_message(record, what: str) -> None:
    """One line saying how a run ended, with the reason when it did not succeed."""
    if record.status == "done":
        st.success(f"{what} finished (run `{record.id}`).", icon=":material/check_circle:")
    elif record.status == "cancelled":
        st.warning(f"{what} was cancelled (run `{record.id}`).", icon=":material/stop_circle:")
    elif record.status in ("failed", "interrupted"):
        reason = record.error or "no reason was recorded"
        st.error(f"{what} {record.status} (run `{record.id}`): {reason}", icon=":material/error:")
