"""Background jobs: real subprocesses running ``python -m unlearn_core runs _selftest-job``.

Starting a job process costs seconds (the command line imports its libraries), so the jobs are
started together by one module fixture and each test then checks its own run. In-process behaviour of ``run_context`` is tested without subprocesses.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from unlearn_core.runs import jobs
from unlearn_core.cli import main
from unlearn_core.errors import UserError
from unlearn_core.progress import Cancelled, ProgressEvent
from unlearn_core.runs.registry import RunRecord, Workspace, cli_command

SELFTEST = ["runs", "_selftest-job"]


def wait_for(condition: Callable[[], bool], timeout: float = 25.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(0.05)


def wait_status(ws: Workspace, run_id: str, statuses: tuple[str, ...], timeout: float = 25.0) -> RunRecord:
    wait_for(lambda: ws.get(run_id).status in statuses, timeout,
             f"run {run_id} to be {statuses} (log: {_log(ws, run_id)})")
    return ws.get(run_id)


def wait_working(ws: Workspace, run_id: str) -> RunRecord:
    """Until the job process has started its loop (it has reported progress)."""
    wait_for(lambda: bool(ws.progress_events(run_id)), what=f"progress from {run_id}")
    return ws.get(run_id)


def _log(ws: Workspace, run_id: str) -> str:
    path = ws.log_path(run_id)
    return path.read_text() if path.exists() else ""


def _selftest(steps: int, delay: float, *extra: str) -> list[str]:
    return [*SELFTEST, "--steps", str(steps), "--delay", str(delay), *extra]


def _stop_leftovers(ws: Workspace) -> None:
    for record in ws.list_runs():
        if record.is_active:
            jobs.cancel(ws, record.id, grace=0.5)


@pytest.fixture(scope="module")
def started(tmp_path_factory) -> Iterator[dict[str, tuple[Workspace, RunRecord]]]:
    """All job processes, started together.

    * ``stress`` workspace, limit 2: two jobs writing every event as fast as they can, and a
      rerun of the first that waits in the queue until one of them hands over its slot.
    * ``lifecycle`` workspace: one long job, to kill.
    """
    root = tmp_path_factory.mktemp("jobs")
    stress, lifecycle = Workspace(root / "stress"), Workspace(root / "lifecycle")
    runs = {name: (stress, jobs.submit(stress, STRESS, kind="train", max_jobs=2, label=name))
            for name in ("stress_a", "stress_b")}
    runs["again"] = (stress, jobs.rerun(stress, runs["stress_a"][1].id, max_jobs=2))
    runs["long"] = (lifecycle, jobs.submit(lifecycle, _selftest(3000, 0.05), kind="train"))
    yield runs
    for ws in (stress, lifecycle):
        _stop_leftovers(ws)


STRESS = _selftest(400, 0.01, "--every-event")


def test_jobs_start_up_to_the_limit_and_record_their_command(started):
    for name in ("stress_a", "stress_b", "long"):
        ws, record = started[name]
        assert record.status == "running" and record.pid and record.pid != os.getpid()
        assert record.process_start == jobs.process_start_time(record.pid)
    ws, again = started["again"]
    assert again.status == "queued" and again.pid is None and again.label == "stress_a"
    assert again.command == cli_command(STRESS) and "--run-id" not in again.command
    assert jobs.poll_queue(ws, max_jobs=2) == [] and ws.get(again.id).status == "queued"


def test_killed_job_is_marked_interrupted_by_reconcile(started):
    ws, long = started["long"]
    long = wait_working(ws, long.id)
    os.kill(long.pid, signal.SIGKILL)
    wait_for(lambda: not jobs.process_alive(long.pid, long.process_start), 5, "the kill")
    assert ws.get(long.id).status == "running"  # the job could not record its end...
    assert jobs.reconcile(ws) == [long.id]       # ...so the next reader does
    interrupted = ws.get(long.id)
    assert interrupted.status == "interrupted" and str(long.pid) in interrupted.error
    assert interrupted.finished_at and jobs.reconcile(ws) == []


def test_concurrent_jobs_complete_and_keep_the_database_intact(started):
    spans = []
    for name in ("stress_a", "stress_b"):
        ws, record = started[name]
        record = wait_status(ws, record.id, ("done", "failed", "interrupted"), timeout=40)
        assert record.status == "done", _log(ws, record.id)
        assert record.metrics == {"selftest": {"steps": 400}} and record.error == ""
        assert record.started_at <= record.finished_at
        assert ws.load_json(record.id, "selftest") == {"steps": 400}
        events = ws.progress_events(record.id)
        assert [event["seq"] for event in events] == list(range(1, 401))
        assert [event["step"] for event in events] == list(range(1, 401))
        assert events[-1]["fraction"] == 1.0 and record.progress["step"] == 400
        assert "starting: python -m unlearn_core runs _selftest-job" in _log(ws, record.id)
        spans.append((events[0]["at"], events[-1]["at"]))
    (start_a, end_a), (start_b, end_b) = spans
    assert start_a < end_b and start_b < end_a, "the two jobs did not overlap"
    with sqlite3.connect(ws.db_path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_finishing_job_starts_the_queued_one_which_cancels_promptly(started):
    ws, again = started["again"]
    again = wait_working(ws, again.id)  # nobody but a finishing job could have started it
    first_end = min(ws.get(started[name][1].id).finished_at for name in ("stress_a", "stress_b"))
    assert again.status == "running" and again.started_at >= first_end
    began = time.monotonic()
    cancelled = jobs.cancel(ws, again.id)
    assert time.monotonic() - began < 5.0
    assert cancelled.status == "cancelled" and cancelled.cancel_requested
    assert not jobs.process_alive(again.pid, again.process_start)
    assert cancelled.progress["step"] < 400
    assert _log(ws, again.id).splitlines()[-1] == "cancelled"  # the job stopped by itself
    with pytest.raises(UserError, match="already ended"):
        jobs.cancel(ws, again.id)


# ---------------------------------------------------------------------- without subprocesses


@pytest.fixture()
def ws(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path / "ws")


def test_run_context_success_records_pid_progress_and_done(ws):
    record = ws.create_run("train")
    with jobs.run_context(ws, record.id) as ctx:
        running = ctx.record()
        assert running.status == "running" and running.pid == os.getpid()
        ctx.reporter(ProgressEvent(phase="train", fraction=0.5))
        ctx.finish(metrics={"original": {"test_acc": 0.9}})
        assert ctx.record().status == "running"  # done only once the block ends cleanly
    finished = ws.get(record.id)
    assert finished.status == "done" and finished.metrics["original"]["test_acc"] == 0.9
    assert finished.progress["fraction"] == 0.5
    with pytest.raises(UserError, match="already done"):
        with jobs.run_context(ws, record.id):
            pass


@pytest.mark.parametrize(
    ("raised", "status", "error"),
    [
        (UserError("the forget set is empty"), "failed", "the forget set is empty"),
        (ValueError("bad shape"), "failed", "ValueError: bad shape"),
        (Cancelled("stop"), "cancelled", "Cancelled by the user."),
        (KeyboardInterrupt(), "cancelled", "Cancelled by the user."),
    ],
)
def test_run_context_records_how_a_run_ended(ws, raised, status, error):
    record = ws.create_run("unlearn")
    with pytest.raises(type(raised)):
        with jobs.run_context(ws, record.id):
            raise raised
    ended = ws.get(record.id)
    assert (ended.status, ended.error) == (status, error)
    assert ended.finished_at


def test_bug_tracebacks_go_to_the_log(ws):
    record = ws.create_run("unlearn")
    with pytest.raises(ZeroDivisionError):
        with jobs.run_context(ws, record.id):
            1 / 0  # noqa: B018
    assert "Traceback" in _log(ws, record.id) and "ZeroDivisionError" in _log(ws, record.id)


def test_sigterm_and_registry_flag_reach_should_stop(ws):
    record = ws.create_run("train")
    with pytest.raises(Cancelled):
        with jobs.run_context(ws, record.id) as ctx:
            assert not ctx.should_stop()
            os.kill(os.getpid(), signal.SIGTERM)  # what cancel() sends
            wait_for(ctx.should_stop, 2, "SIGTERM to set the token")
    assert ws.get(record.id).status == "cancelled"
    assert signal.getsignal(signal.SIGTERM) is not None  # handler restored, process alive

    flagged = ws.create_run("train")
    with pytest.raises(Cancelled):
        with jobs.run_context(ws, flagged.id):
            ws.request_cancel(flagged.id)  # a Cancel from another process; the work ignores it
    assert ws.get(flagged.id).status == "cancelled"


def test_open_run_and_command_run_create_or_continue_records(ws):
    command = cli_command(["train", "--dataset", "digits"])
    with jobs.command_run(ws, None, kind="train", command=command, dataset="digits") as ctx:
        created = ctx.record()
    assert created.command == command and created.dataset == "digits"
    assert ws.get(created.id).status == "done"

    queued = ws.create_run("retrain", command=command)
    with jobs.command_run(ws, queued.id, kind="retrain", command=["ignored"], seed=4) as ctx:
        assert ctx.run_id == queued.id
    continued = ws.get(queued.id)
    assert continued.status == "done" and continued.seed == 4 and continued.command == command


def test_cli_rerun_queues_behind_a_busy_slot_then_cli_cancel(ws, capsys, monkeypatch):
    monkeypatch.setenv(jobs.MAX_JOBS_ENV, "1")
    busy = ws.create_run("train")  # this process holds the only slot
    ws.set_status(busy.id, "running", pid=os.getpid(),
                  process_start=jobs.process_start_time(os.getpid()))
    original = ws.create_run("unlearn", command=cli_command(_selftest(1, 0)), method="psg",
                             seed=7, parents=[busy.id])
    ws.set_status(original.id, "failed", error="x")
    assert main(["runs", "rerun", original.id, "--workspace", str(ws.path)]) == 0
    out, err = capsys.readouterr()
    again = ws.get(out.strip())
    assert again.id != original.id and f"repeats {original.id}" in err
    assert (again.status, again.kind, again.method, again.seed, again.parents) == (
        "queued", "unlearn", "psg", 7, [busy.id])
    assert again.command == original.command
    assert main(["runs", "cancel", again.id, "--workspace", str(ws.path)]) == 0
    assert capsys.readouterr().out.strip() == f"run {again.id}: cancelled"
    assert ws.get(again.id).pid is None


def test_cli_cancel_of_a_queued_run_needs_no_process(ws, capsys):
    record = ws.create_run("retrain", command=cli_command(_selftest(1, 0)))
    assert main(["runs", "cancel", record.id, "--workspace", str(ws.path)]) == 0
    assert capsys.readouterr().out.strip() == f"run {record.id}: cancelled"
    cancelled = ws.get(record.id)
    assert cancelled.status == "cancelled" and cancelled.pid is None


def test_reconcile_detects_reused_pids_and_lost_starts(ws):
    me = os.getpid()
    alive = ws.create_run("train")
    ws.set_status(alive.id, "running", pid=me, process_start=jobs.process_start_time(me))
    reused = ws.create_run("train")
    ws.set_status(reused.id, "running", pid=me, process_start="1")  # same pid, other process
    fresh_claim = ws.create_run("train")
    ws.set_status(fresh_claim.id, "running")  # claimed, pid not stored yet
    lost_claim = ws.create_run("train")
    ws.set_status(lost_claim.id, "running")
    ws.update(lost_claim.id, started_at="2000-01-01T00:00:00.000+00:00")
    assert jobs.process_start_time(me) not in ("", "1")
    assert sorted(jobs.reconcile(ws)) == sorted([reused.id, lost_claim.id])
    assert ws.get(alive.id).status == "running" and ws.get(fresh_claim.id).status == "running"


def test_job_limit_from_argument_or_environment(monkeypatch):
    monkeypatch.delenv(jobs.MAX_JOBS_ENV, raising=False)
    assert jobs.job_limit() == jobs.DEFAULT_MAX_JOBS == 1
    monkeypatch.setenv(jobs.MAX_JOBS_ENV, "3")
    assert jobs.job_limit() == 3 and jobs.job_limit(2) == 2
    monkeypatch.setenv(jobs.MAX_JOBS_ENV, "many")
    with pytest.raises(UserError, match=jobs.MAX_JOBS_ENV):
        jobs.job_limit()


def test_cancel_of_a_run_in_this_process_only_flags_it(ws):
    record = ws.create_run("train")
    with pytest.raises(Cancelled):
        with jobs.run_context(ws, record.id) as ctx:
            assert jobs.cancel(ws, record.id).status == "running"  # no signal to ourselves
            wait_for(ctx.should_stop, 2, "the flag to reach should_stop")
            ctx.should_stop.raise_if_cancelled()
    assert ws.get(record.id).status == "cancelled"


def test_a_job_leaves_the_dashboard_a_core_unless_told_otherwise(ws, monkeypatch):
    monkeypatch.delenv(jobs.JOB_THREADS_ENV, raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert jobs.job_threads() == 1
    assert jobs._job_env(ws, 1)["OMP_NUM_THREADS"] == "1"
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert jobs.job_threads() == 1  # never zero
    monkeypatch.setenv(jobs.JOB_THREADS_ENV, "2")
    assert jobs._job_env(ws, 1)["OMP_NUM_THREADS"] == "2"
    monkeypatch.setenv(jobs.JOB_THREADS_ENV, "zero")
    with pytest.raises(UserError, match=jobs.JOB_THREADS_ENV):
        jobs.submit(ws, ["runs", "list"], "train")
    assert ws.list_runs() == []  # refused before anything was recorded


def test_the_threads_chosen_for_a_workspace_reach_its_jobs_unless_the_variable_says_otherwise(ws, monkeypatch):
    monkeypatch.delenv(jobs.JOB_THREADS_ENV, raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert jobs.job_threads(ws) == 3 and jobs.chosen_job_threads(ws) is None
    jobs.set_job_threads(ws, 2)
    assert jobs.job_threads(ws) == 2 and jobs._job_env(ws, 1)["OMP_NUM_THREADS"] == "2"
    monkeypatch.setenv(jobs.JOB_THREADS_ENV, "4")
    assert jobs._job_env(ws, 1)["OMP_NUM_THREADS"] == "4"  # the variable overrides the page's choice
    monkeypatch.delenv(jobs.JOB_THREADS_ENV)
    with pytest.raises(UserError, match="at least 1"):
        jobs.set_job_threads(ws, 0)
    jobs.set_job_threads(ws, None)
    assert jobs.job_threads(ws) == 3
