"""One overall progress bar and a whole-run estimate (issue 14, items 6 and 7).

The reporter and the estimate are pure: a fake clock and hand-made run records drive them, so
nothing here is timed. One test scores a tiny model (its scoring reports each step), one
renders the Unlearn page (the estimate before Start).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from unlearn_core.progress import OverallReporter, ProgressEvent, Stage
from unlearn_core.run_estimate import RunPlan, estimate_run, live_progress, rates_from_records
from unlearn_core.runs.registry import RunRecord
from unlearn_core.runs.result import RunResult, Timing

STAGES = [Stage("retrain", "Training the retrain reference", 100.0),
          Stage("stop_target", "Estimating where to stop", 20.0),
          Stage("unlearn", "Unlearning with PSG", 20.0),
          Stage("evaluate", "Scoring the models", 10.0)]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _drive(steps):
    """Feed ``(seconds since start, phase, own fraction)`` through an OverallReporter."""
    clock, seen = Clock(), []
    reporter = OverallReporter(seen.append, STAGES, clock=clock)
    for at, phase, fraction in steps:
        clock.now = 1000.0 + at
        reporter(ProgressEvent(phase=phase, fraction=fraction))
    return seen


RUN = [(0, "retrain", 0.0), (50, "retrain", 0.5), (100, "retrain", 1.0), (101, "stop_target", None),
       (120, "psg", 0.1), (130, "psg", 0.6), (140, "evaluate", 0.0), (145, "evaluate", 0.5),
       (150, "evaluate", 1.0), (150, "done", None)]


def test_the_bar_never_restarts_at_a_new_phase_and_ends_full():
    seen = _drive(RUN)
    fractions = [e.fraction for e in seen]
    assert fractions == sorted(fractions), fractions
    assert seen[3].fraction > 0.5  # the stop estimate starts where the reference ended, not at 0
    assert seen[4].fraction > seen[3].fraction  # the method's own 10 % is not the bar's 10 %
    assert seen[-1].fraction == 1.0 and seen[-1].eta_seconds == 0.0


def test_each_event_names_its_stage_and_counts_the_whole_run_down():
    seen = _drive(RUN)
    assert [(e.stage, e.stages) for e in seen[:9]] == [(1, 4)] * 3 + [(2, 4)] + [(3, 4)] * 2 + [(4, 4)] * 3
    assert seen[0].stage_text == "Training the retrain reference"
    assert seen[0].eta_seconds == pytest.approx(150.0)  # the plan before anything ran
    # half the reference in 50 s: 50 s left of it, then the later stages as planned
    assert seen[1].eta_seconds == pytest.approx(50.0 + 50.0)
    assert seen[7].eta_seconds < seen[6].eta_seconds < seen[2].eta_seconds


def test_a_method_slower_than_planned_still_moves_the_bar_with_its_own_passes():
    """PSG's own fraction counts its most passes; when the time-based figure would stall, the
    bar moves with the method's fraction over the stage's planned share."""
    seen = _drive([(0, "retrain", 0.0), (100, "retrain", 1.0), (101, "psg", 0.01), (111, "psg", 0.02),
                   (121, "psg", 0.03), (131, "psg", 0.04)])
    fractions = [e.fraction for e in seen[2:]]
    assert all(later > earlier for earlier, later in zip(fractions, fractions[1:])), fractions
    assert fractions[-1] < 1.0


def test_a_slow_first_stage_rescales_the_later_ones():
    slow = _drive([(0, "retrain", 0.0), (200, "retrain", 1.0), (201, "stop_target", None)])
    assert slow[-1].eta_seconds == pytest.approx(2 * 50.0, rel=0.05)  # 2x slower than planned


def test_between_events_the_bar_moves_and_the_eta_counts_down():
    event = _drive(RUN[:4])[-1].to_dict()  # the stop estimate began: no fraction of its own
    at = event["emitted"]
    first, later = live_progress(event, at), live_progress(event, at + 10)
    assert later.fraction > first.fraction
    assert later.eta_seconds == pytest.approx(first.eta_seconds - 10, abs=0.5)
    assert first.text.startswith("Estimating where to stop (2 of 4)…")
    assert "left" in first.text


def test_the_last_step_says_finishing_not_about_0_s_left():
    event = _drive(RUN[:9])[-1].to_dict()  # scoring reported 100 %
    assert live_progress(event, event["emitted"]).text == "Scoring the models (4 of 4)… · finishing"


def test_a_stage_past_its_estimate_says_so_instead_of_about_0_s_left():
    event = _drive(RUN[:8])[-1].to_dict()  # scoring at 50 %
    stuck = live_progress(event, event["emitted"] + 120)
    assert stuck.overdue
    assert "takes longer than estimated" in stuck.text
    assert "about 0 s left" not in stuck.text
    assert stuck.fraction < 1.0


# ---------------------------------------------------------------------- the estimate before Start

def _record(run_id, kind, dataset="digits", method="psg", **result) -> RunRecord:
    return RunRecord(id=run_id, kind=kind, status="done", dataset=dataset, method=method,
                     config={"epochs": 10} if kind == "retrain" else {},
                     metrics=RunResult(**result).to_dict())


SIZES = {"forget_train": 100, "remain_train": 1000, "forget_test": 20, "remain_test": 200}
RECORDS = [
    # 10 epochs x 1000 kept images in 50 s: 5 ms per training image
    _record("r1", "retrain", timing=Timing(retrain=50.0), sizes=SIZES),
    # 4000 work images in 10 s after a 6 s stop estimate: 1 ms each, 40 per forget image;
    # 2 models x 1320 images scored in 2.64 s: 1 ms each
    _record("u1", "unlearn", timing=Timing(unlearn=10.0, evaluate=2.64), sizes=SIZES,
            blocks={"original": {}, "unlearned": {}},
            diagnostics={"forward_images": 3000, "backward_images": 1000, "stop_target": {"seconds": 6.0}}),
]
PLAN = RunPlan(dataset="digits", method="psg", image_pixels=64, forget_images=200, remain_images=1000,
               scored_images=1320, retrain_images=20_000, stop_target=True, models_scored=3,
               method_title="PSG")


def test_rates_come_from_the_recorded_runs_and_their_cost_counters():
    rates = rates_from_records(RECORDS, "digits", "psg")
    assert rates.train == pytest.approx(0.005)
    assert rates.work == pytest.approx(0.001)
    assert rates.work_per_forget == pytest.approx(40.0)
    assert rates.score == pytest.approx(0.001)
    assert rates.stop_seconds == pytest.approx(6.0)
    assert rates.same_data and rates.runs == 2


def test_the_estimate_covers_every_stage_of_the_run():
    estimate = estimate_run(PLAN, RECORDS)
    seconds = {phase.key: phase.seconds for phase in estimate.phases}
    assert seconds == pytest.approx({"retrain": 100.0, "stop_target": 6.0, "unlearn": 8.0, "evaluate": 3.96})
    assert [s.key for s in estimate.stages()] == ["retrain", "stop_target", "unlearn", "evaluate"]
    text = estimate.text()
    assert text.startswith("The whole run should take about 1 min 58 s: training the retrain reference 1 min 40 s")
    assert "Based on the speed of 2 earlier runs on this data set on this computer" in text


def test_a_reused_reference_and_a_fixed_stop_leave_their_stages_out():
    plan = RunPlan(**{**vars(PLAN), "retrain_images": 0, "retrain_reused": True, "stop_target": False})
    estimate = estimate_run(plan, RECORDS)
    assert [p.key for p in estimate.phases] == ["unlearn", "evaluate"]
    assert "reused from an earlier run" in estimate.text()


def test_a_stop_estimate_measured_on_the_page_is_used():
    estimate = estimate_run(PLAN, RECORDS, stop_seconds=42.0)
    assert {p.key: p.seconds for p in estimate.phases}["stop_target"] == 42.0


def test_runs_on_other_data_count_only_when_none_match_and_the_text_says_so():
    other = rates_from_records(RECORDS, "fundus", "psg")
    assert not other.same_data and other.train == pytest.approx(0.005)
    assert "on other data sets" in estimate_run(PLAN, rates=other).text()


def test_the_first_time_estimate_says_it_is_a_rough_guess_and_grows_with_image_size():
    small = estimate_run(PLAN, [])
    big = estimate_run(RunPlan(**{**vars(PLAN), "image_pixels": 3 * 128 * 128}), [])
    assert "rough first guess" in small.text() and "no run has been recorded" in small.text()
    assert big.total_seconds > 2 * small.total_seconds


# ---------------------------------------------------------------------- scoring reports progress

def test_scoring_reports_each_model_and_step():
    from fixtures_small import tiny_digits, tiny_model, tiny_split

    from unlearn_core.pipeline import score_models

    events = []
    model = tiny_model()
    blocks = score_models({"original": model, "unlearned": model}, tiny_digits(), tiny_split(), 0, events.append)
    assert set(blocks) == {"original", "unlearned"} and "mia_loss_lr" in blocks["original"]
    assert [e.phase for e in events] == ["evaluate"] * 5
    assert [e.fraction for e in events] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert "the unlearned model: accuracies and membership-inference attacks" in events[3].message


# ---------------------------------------------------------------------- the queue names what it waits for

def test_a_queued_run_names_the_run_it_waits_for_and_is_not_running(tmp_path):
    pytest.importorskip("streamlit")
    from unlearn_core.runs import jobs
    from unlearn_core.runs.registry import Workspace
    from unlearn_core.ui import background

    ws = Workspace(tmp_path / "ws")
    busy = ws.create_run("unlearn", status="running", dataset="/x/uploads/abc/clinic.zip", method="finetune")
    waiting = ws.create_run("unlearn", method="psg", dataset="digits")
    ahead = jobs.runs_ahead(ws, waiting.id)
    assert [r.id for r in ahead] == [busy.id]
    record = ws.get(waiting.id)
    created = datetime.fromisoformat(record.created_at).timestamp()
    fraction, text = background.progress_line(record, {}, created + 6, ahead)
    assert fraction == 0.0
    assert text == f"Queued: waiting for run `{busy.id}` (unlearning with Fine-tune (FT) on clinic.zip) to finish…"
    assert background.elapsed_text(record, created + 6) == " · queued for 6 s"
    later = ws.create_run("unlearn", method="psg", dataset="digits")
    assert [r.id for r in jobs.runs_ahead(ws, later.id)] == [busy.id, waiting.id]
    assert "then 1 more run queued before this one" in background.waiting_text(jobs.runs_ahead(ws, later.id))


def test_a_running_run_counts_from_its_start():
    pytest.importorskip("streamlit")
    from unlearn_core.ui import background

    start = datetime(2026, 12, 2, 12, 0, tzinfo=timezone.utc)
    record = RunRecord(id="r", kind="unlearn", status="running", created_at=(start - timedelta(seconds=30)).isoformat(),
                       started_at=start.isoformat())
    assert background.elapsed_text(record, start.timestamp() + 65) == " · running for 1 min 05 s"


# ---------------------------------------------------------------------- the Unlearn page

def test_unlearn_page_shows_the_whole_run_estimate_before_start(workspace_home, monkeypatch):
    pytest.importorskip("streamlit")
    from unlearn_core.runs import jobs
    from unlearn_core.runs.registry import Workspace

    monkeypatch.delenv(jobs.JOB_THREADS_ENV, raising=False)
    monkeypatch.setattr(jobs, "cpu_cores", lambda: 4)
    at = _app("pages/3_unlearn.py", **DIGITS, us__criteria='label == "3"')
    estimates = [i.value for i in at.info if i.value.startswith("The whole run should take about")]
    assert len(estimates) == 1, [i.value for i in at.info]
    text = estimates[0]
    assert "training the retrain reference" in text  # the page's default trains the reference
    assert "scoring the models" in text
    assert "Background runs use" in " ".join(c.value for c in at.caption)
    assert "Background runs use 3 of this computer's 4 CPU cores, leaving 1 for the dashboard." in [
        c.value for c in at.caption]
    at.number_input(key="ul_job_threads").set_value(2).run()  # the user changes the job threads here
    assert jobs.chosen_job_threads(Workspace()) == 2
    assert "Background runs use 2 of this computer's 4 CPU cores, leaving 2 for the dashboard." in [
        c.value for c in at.caption]
    jobs.set_job_threads(Workspace(), None)
    at.checkbox(key="ul_retrain").uncheck().run()
    text = next(i.value for i in at.info if i.value.startswith("The whole run should take about"))
    assert "retrain reference" not in text.split(".")[0]


from test_pages import DIGITS, _app, quick_stop_estimate, workspace_home  # noqa: E402, F401 - shared fixtures


def test_the_progress_panel_shows_one_bar_with_the_stage_as_text(workspace_home):
    """A run in progress on the Unlearn page: the stage in words with its number, the epoch, the
    whole run's time left, and the step's own message under the bar."""
    import os

    from unlearn_core.runs.jobs import process_start_time
    from unlearn_core.runs.registry import Workspace

    ws = Workspace()
    record = ws.create_run("unlearn", status="running", dataset="digits", criteria_text='label == "3"',
                           method="psg", pid=os.getpid(), process_start=process_start_time(os.getpid()))
    import time

    clock = Clock()
    clock.now = time.time() - 30  # the panel moves the bar on by the real clock between events
    reporter = OverallReporter(lambda event: ws.record_progress(record.id, event), STAGES, clock=clock)
    reporter(ProgressEvent(phase="retrain", epoch=3, epochs=10, fraction=0.0, message="retrain: epoch 3/10"))
    clock.now += 30
    reporter(ProgressEvent(phase="retrain", epoch=3, epochs=10, fraction=0.25, message="retrain: epoch 3/10"))
    at = _app("pages/3_unlearn.py", **DIGITS, us__criteria='label == "3"', us__unlearn_run_id=record.id)
    bar = at.get("progress")[0]
    assert bar.proto.text.startswith("Training the retrain reference (1 of 4)… · epoch 3/10 · ")
    # the whole run's bar: it moves on with the clock, but never past the reference's expected end
    # (30 s done + 90 s left of 170 s), where the reference's own bar would restart for each phase
    assert 0 < bar.value <= 71
    assert "retrain: epoch 3/10" in [c.value for c in at.caption]
    ws.set_status(record.id, "cancelled", expect=("running",))


def test_the_estimate_grows_with_the_passes_asked_for():
    """Fine-tuning for 500 passes was priced as the recorded 10-pass run (2 s): work scales by passes."""
    recorded = [_record("u2", "unlearn", method="finetune", timing=Timing(unlearn=10.0, evaluate=2.64),
                        sizes=SIZES, blocks={"original": {}, "unlearned": {}},
                        diagnostics={"forward_images": 5000, "backward_images": 5000})]
    recorded[0].config = {"epochs": 10}
    rates = rates_from_records(recorded, "digits", "finetune")
    assert rates.work_per_forget_pass == pytest.approx(10.0)  # 10,000 images / (100 forget x 10 passes)
    plan = RunPlan(**{**vars(PLAN), "method": "finetune", "retrain_images": 0, "stop_target": False})
    ten = {p.key: p.seconds for p in estimate_run(RunPlan(**{**vars(plan), "passes": 10}), recorded).phases}
    many = {p.key: p.seconds for p in estimate_run(RunPlan(**{**vars(plan), "passes": 500}), recorded).phases}
    assert ten["unlearn"] == pytest.approx(200 * 10 * 10 * 0.001)
    assert many["unlearn"] == pytest.approx(50 * ten["unlearn"])
    first_time = {p.key: p.seconds for p in estimate_run(RunPlan(**{**vars(plan), "passes": 500}), []).phases}
    assert first_time["unlearn"] > 10 * {p.key: p.seconds for p in estimate_run(
        RunPlan(**{**vars(plan), "passes": 10}), []).phases}["unlearn"]


def test_the_page_estimate_prices_the_passes_the_user_asked_for(tmp_path):
    """The Unlearn page's estimate (workflows.unlearn_estimate) hands the method's passes to the
    plan: 500 passes of fine-tuning are estimated at 50 times the unlearning of 10."""
    from fixtures_small import tiny_digits, tiny_model

    from unlearn_core.runs.registry import Workspace
    from unlearn_core.runs.requests import UnlearnRequest
    from unlearn_core.runs.workflows import unlearn_estimate

    workspace = Workspace(tmp_path)
    data, model = tiny_digits(), tiny_model()

    def unlearning_seconds(epochs: int) -> float:
        request = UnlearnRequest(dataset="digits", forget="label == 1", method="finetune",
                                 overrides={"epochs": str(epochs)})
        return {p.key: p.seconds for p in unlearn_estimate(workspace, request, data, model).phases}["unlearn"]

    assert unlearning_seconds(500) == pytest.approx(50 * unlearning_seconds(10))


def test_the_scoring_rate_counts_the_images_a_sampled_run_really_scored():
    """A run that scored a sample of its kept sets is timed per image it read, not per image it has."""
    scored = {**SIZES, "remain_train": 500, "remain_test": 100}  # 720 of 1320 images read
    sampled = [_record("u3", "unlearn", timing=Timing(unlearn=10.0, evaluate=1.44), sizes=SIZES,
                       scored_sizes=scored, blocks={"original": {}, "unlearned": {}},
                       diagnostics={"forward_images": 3000, "backward_images": 1000})]
    assert rates_from_records(sampled, "digits", "psg").score == pytest.approx(0.001)  # 1.44 s / (2 x 720)
