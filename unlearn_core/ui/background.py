"""Background runs from the dashboard: start one, show its progress, cancel it.

The work itself is the command line in a subprocess (:mod:`unlearn_core.runs.jobs`); this module
only starts it and polls the registry with ``st.fragment(run_every=...)``, so the page stays
responsive, and leaving and coming back shows the same run.
"""

from __future__ import annotations

import time

import streamlit as st

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


def _details(event: dict) -> list[str]:
    parts = []
    if event.get("epoch") and event.get("epochs"):
        parts.append(f"epoch {event['epoch']}/{event['epochs']}")
    if event.get("step") and event.get("steps"):
        parts.append(f"step {event['step']}/{event['steps']}")
    return parts


def describe_event(event: dict) -> str:
    """``Training · epoch 3/8 · step 12/40 · about 20 s left`` from a progress event."""
    parts = [phase_text(event.get("phase")), *_details(event)]
    eta = _eta(event.get("eta_seconds"))
    if eta:
        parts.append(eta)
    return " · ".join(parts)


def progress_line(record, event: dict, now: float, ahead: list | None = None) -> tuple[float, str]:
    """The bar's fraction and the line under it, for an active run at time ``now``.

    Queued: which run it waits for (``ahead``, see :func:`unlearn_core.runs.jobs.runs_ahead`).
    A run with stages (one bar over the whole run): the stage as text, ``Training the retrain
    reference (1 of 4)… · epoch 3/10 · about 2 min 05 s left``, moving on between events.
    """
    from unlearn_core.run_estimate import live_progress

    if record.status == "queued":
        return 0.0, waiting_text(ahead or [])
    if not event:
        return 0.0, "Starting (loading data and model)…"
    if event.get("stage"):
        live = live_progress(event, now, " · ".join(_details(event)))
        return live.fraction, live.text
    return float(event.get("fraction") or 0.0), describe_event(event)


_KIND_WORDS = {"train": "training a model", "retrain": "training a retrain reference", "compose": "composing runs"}


def describe_run(record) -> str:
    """``run `20261202-1201-ab12` (unlearning with PSG boundary unlearning on digits)``."""
    from pathlib import Path

    if record.kind == "unlearn":
        from unlearn_core.methods import METHODS  # imports every method module

        title = METHODS[record.method].title if record.method in METHODS else record.method or "a method"
        what = f"unlearning with {title}"
    else:
        what = _KIND_WORDS.get(record.kind, record.kind)
    on = f" on {Path(record.dataset).name}" if record.dataset else ""
    return f"run `{record.id}` ({what}{on})"


def waiting_text(ahead: list) -> str:
    """``Queued: waiting for run `…` (…) to finish…``, naming the run it waits for."""
    if not ahead:
        return "Queued: it starts as soon as a slot is free…"
    text = f"Queued: waiting for {describe_run(ahead[0])} to finish"
    if len(ahead) > 1:
        more = len(ahead) - 1
        text += f", then {more} more run{'s' if more > 1 else ''} queued before this one"
    return text + "…"


def elapsed_text(record, now: float) -> str:
    """`` · queued for 12 s`` while queued, `` · running for 1 min 05 s`` once it started."""
    from datetime import datetime

    from unlearn_core.run_estimate import duration

    if record.status == "queued":
        since, word = record.created_at, "queued"
    else:
        since, word = record.started_at, "running"
    if not since:
        return ""
    return f" · {word} for {duration(max(0.0, now - datetime.fromisoformat(since).timestamp()))}"


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
        now = time.time()
        ahead = jobs.runs_ahead(workspace, run_id) if record.status == "queued" else None
        fraction, text = progress_line(record, event, now, ahead)
        st.markdown(f"**{what}** (run `{run_id}`){elapsed_text(record, now)}")
        st.progress(fraction, text=text)
        if event.get("message") and record.status != "queued":
            st.caption(event["message"])
        if show_curves:
            events = [e for e in workspace.progress_events(run_id)
                      if any(k.endswith("_acc") for k in (e.get("metrics") or {}))]
            if events:
                from unlearn_core import plots  # plotly: only once there are curves to draw

                st.plotly_chart(plots.progress_curves(events), key=f"{key}_curves")
        if st.button("Cancel", key=f"{key}_cancel", icon=":material/stop_circle:"):
            try:
                cancel(run_id)
            except UserError as error:
                st.warning(str(error))
            st.rerun(scope="app")

    panel()


def show_estimate(request, sel, data, split, stop_seconds: float | None = None) -> None:
    """Before Start: how long the whole run should take, and what that rests on."""
    from unlearn_core.runs import workflows

    try:
        estimate = workflows.unlearn_estimate(cache.workspace(), request, data, cache.model(sel.dataset, sel.model.key),
                                              split=split, stop_seconds=stop_seconds)
    except UserError as error:
        st.caption(f"How long the run takes could not be estimated: {error}")
        return
    st.info(estimate.text(), icon=":material/schedule:")


def threads_control(container=None) -> int:
    """"CPU threads for background runs": the workspace's choice, shown with what it leaves the
    dashboard; ``$UNLEARN_STUDIO_JOB_THREADS`` (when set) overrides it and the field is locked."""
    import os

    from unlearn_core.runs import jobs

    where = container or st
    workspace = cache.workspace()
    cores = jobs.cpu_cores()
    try:
        threads = jobs.job_threads(workspace)
    except UserError as error:
        where.caption(str(error))
        return 1
    locked = bool(os.environ.get(jobs.JOB_THREADS_ENV, "").strip())

    def save() -> None:
        jobs.set_job_threads(workspace, int(st.session_state["ul_job_threads"]))

    st.session_state["ul_job_threads"] = threads
    where.number_input("CPU threads for background runs", min_value=1, max_value=max(cores, threads), step=1,
                       key="ul_job_threads", on_change=save, disabled=locked,
                       help=(f"Set by {jobs.JOB_THREADS_ENV} when the studio was started." if locked else
                             "Fewer threads leave the dashboard responsive while a run works; more make the "
                             "run faster. Applies to runs started from now on, for everyone using this "
                             "workspace."))
    left = cores - threads
    where.caption(f"Background runs use {threads} of this computer's {cores} CPU cores"
                  + (f", leaving {left} for the dashboard." if left > 0 else
                     "; pages may be slow while a run works."))
    return threads


def finished_message(record, what: str) -> None:
    """One line saying how a run ended, with the reason when it did not succeed."""
    if record.status == "done":
        st.success(f"{what} finished (run `{record.id}`).", icon=":material/check_circle:")
    elif record.status == "cancelled":
        st.warning(f"{what} was cancelled (run `{record.id}`).", icon=":material/stop_circle:")
    elif record.status in ("failed", "interrupted"):
        reason = record.error or "no reason was recorded"
        st.error(f"{what} {record.status} (run `{record.id}`): {reason}", icon=":material/error:")
