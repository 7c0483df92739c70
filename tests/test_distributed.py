"""Data-parallel runs under torchrun (issue 12, part 2): two CPU processes on the gloo backend.

The end-to-end test runs ``python -m torch.distributed.run --nproc_per_node 2 -m unlearn_core
unlearn ...`` on the digits set with short PSG settings in a temporary workspace, next to the
same command in one process, and checks that only rank 0 wrote (one run, its artifacts, one
JSON summary) and that the two runs' (F, R) agree within 0.02. F and R are the forget and
remain accuracies as the metrics code defines them (``forget_test_acc``/``remain_test_acc``,
the plane of the distance to retrain); the training-set pair is checked the same way.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from unlearn_core import distributed
from unlearn_core.errors import UserError
from unlearn_core.runs import jobs
from unlearn_core.runs.registry import HOME_ENV, Workspace
from unlearn_core.runs.requests import UnlearnRequest

#: Short PSG settings: four passes over the forget set, no automatic stop (no proxy trainings).
SHORT = ["--set", "epochs=4", "--set", "stop_at=passes"]
ARGV = ["unlearn", "--dataset", "digits", "--forget", 'label == "3"', "--device", "cpu", *SHORT, "--json"]
ROOT = Path(__file__).resolve().parents[1]


def _env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env[HOME_ENV] = str(home)
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    for name in distributed.TORCHRUN_ENV:  # never inherit a surrounding torchrun's world
        env.pop(name, None)
    return env


def _pairs(summary: dict) -> dict[str, tuple[float, float]]:
    block = summary["result"]["blocks"]["unlearned"]
    return {"test": (block["forget_test_acc"], block["remain_test_acc"]),
            "train": (block["forget_train_acc"], block["remain_train_acc"])}


def test_one_process_world_is_a_no_op(monkeypatch):
    for name in distributed.TORCHRUN_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(distributed, "_WORLD", None)
    w = distributed.world()
    assert w is distributed.SINGLE and not w.active and w.is_main
    model = torch.nn.Linear(2, 2)
    items = np.arange(5)
    assert w.wrap(model) is model and w.shard(items) is items
    assert w.from_main(lambda: 7) == 7 and w.gather(3) == [3] and w.device_name("auto") == "auto"
    assert distributed.launcher_pid() == os.getpid()


def test_shards_interleave_and_never_leave_a_rank_empty():
    first, second = distributed.World(0, 2), distributed.World(1, 2)
    items = np.arange(5)
    assert first.shard(items).tolist() == [0, 2, 4] and second.shard(items).tolist() == [1, 3]
    assert distributed.World(2, 3).shard(np.array([7, 8])).tolist() == [7]  # padded like DistributedSampler


def test_a_port_in_use_and_a_bad_process_count_are_refused_plainly():
    with socket.socket() as taken:
        taken.bind(("", 0))
        taken.listen()
        with pytest.raises(UserError, match=f"Port {taken.getsockname()[1]} is already in use.*--master_port"):
            distributed.check_port_free(taken.getsockname()[1])
    with pytest.raises(UserError, match="Only train, unlearn, bench run in several processes"):
        jobs.check_processes(2, ["compose", "--runs", "a", "b"])
    with pytest.raises(UserError, match="at least 1"):
        jobs.check_processes(0, ["unlearn"])
    if not torch.cuda.is_available():  # N above the GPUs is only checked on a CUDA machine
        jobs.check_processes(64, ["unlearn", "--device", "auto"])


def test_a_job_with_processes_runs_under_torchrun():
    command = jobs.job_command(["unlearn", "--dataset", "digits"], "run-1", processes=3)
    assert command[1:5] == ["-m", "torch.distributed.run", "--nproc_per_node", "3"]
    assert "--master_port" in command and command[-6:] == ["-m", "unlearn_core", "unlearn", "--dataset", "digits",
                                                              "--run-id", "run-1"][-6:]
    assert jobs.job_command(["train"], "r")[1:3] == ["-m", "unlearn_core"]
    request = UnlearnRequest(dataset="digits", forget='label == "3"', processes=2)
    assert request.record_fields()["processes"] == 2 and "--processes" not in request.to_argv()


@pytest.mark.slow
def test_two_gloo_processes_match_one_and_only_rank_0_writes(tmp_path):
    """``torchrun --nproc_per_node 2 -m unlearn_core unlearn`` on CPU: same (F, R), one writer."""
    from unlearn_core.cli import main

    home = tmp_path / "workspace"
    port = distributed.free_port()
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", str(port), "-m", "unlearn_core", *ARGV],
                         capture_output=True, text=True, env=_env(home), cwd=tmp_path, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    summary = json.loads(two.stdout)  # one JSON object: rank 1 printed nothing
    runs = Workspace(home).list_runs()
    assert [(r.kind, r.status, r.processes) for r in runs] == [("unlearn", "done", 2)]
    assert summary["run_id"] == runs[0].id
    files = sorted(p.relative_to(home).as_posix() for p in home.rglob("*") if p.is_file())
    in_run = [f for f in files if f.startswith("runs/")]
    assert all(f.startswith(f"runs/{runs[0].id}/") for f in in_run), in_run  # no second run folder
    assert not any(p.name != "workspace" for p in tmp_path.iterdir())  # nothing written beside the workspace

    import contextlib
    import io

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each rank above (OMP_NUM_THREADS=1)
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            assert main([*ARGV, "--no-record"]) == 0
    finally:
        torch.set_num_threads(threads)
    one = json.loads(out.getvalue())
    for plane, (f2, r2) in _pairs(summary).items():
        f1, r1 = _pairs(one)[plane]
        assert math.hypot(f1 - f2, r1 - r2) <= 0.02, (plane, (f1, r1), (f2, r2))
    diagnostics = summary["result"]["diagnostics"]
    assert diagnostics["trained_images"] == one["result"]["diagnostics"]["trained_images"]  # same global steps


def _rank_pids(launcher: int) -> dict[int, int]:
    """rank -> pid of torchrun's workers (read from their environment)."""
    ranks = {}
    for pid, _ in jobs._descendants(launcher):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        for item in environ:
            if item.startswith(b"RANK="):
                ranks[int(item[5:])] = pid
    return ranks


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the ranks through /proc (Linux)")
def test_a_rank_dying_mid_run_fails_the_job_and_cancel_stops_every_rank(tmp_path, monkeypatch):
    """The dashboard path: a job with processes=2 starts under torchrun; killing rank 1 ends the
    run failed or interrupted (never running), and a cancel leaves no rank alive."""
    from unlearn_core.runs import workflows

    home = tmp_path / "workspace"
    monkeypatch.setenv(HOME_ENV, str(home))
    monkeypatch.setenv(jobs.JOB_THREADS_ENV, "1")
    monkeypatch.setenv(jobs.MAX_JOBS_ENV, "2")
    ws = Workspace(home)
    long = {"epochs": "200", "stop_at": "passes"}
    request = UnlearnRequest(dataset="digits", forget='label == "3"', device="cpu", overrides=long, processes=2)

    def running_with_ranks(run_id: str):
        record = ws.get(run_id)
        ranks = _rank_pids(record.pid) if record.status == "running" and record.pid else {}
        return ranks if len(ranks) == 2 and record.progress.get("phase") == "psg" else None

    killed = workflows.submit(ws, request)
    cancelled = workflows.submit(ws, request)
    ranks = _wait(lambda: running_with_ranks(killed.id), 120, "the first run's two ranks at work")
    os.kill(ranks[1], signal.SIGKILL)
    others = _wait(lambda: running_with_ranks(cancelled.id), 120, "the second run's two ranks at work")
    jobs.cancel(ws, cancelled.id)
    assert ws.get(cancelled.id).status == "cancelled"
    _wait(lambda: not any(jobs.process_alive(pid) for pid in others.values()), 10, "every rank to stop")

    def ended():
        jobs.poll_queue(ws)
        return ws.get(killed.id).status not in ("queued", "running")

    _wait(ended, 90, "the run with a dead rank to end")
    record = ws.get(killed.id)
    assert record.status in ("failed", "interrupted"), record.status
    assert record.status == "interrupted" or "Another process of this torchrun run ended first" in record.error
    assert not any(jobs.process_alive(pid) for pid in ranks.values())


@pytest.mark.slow
def test_the_unlearn_page_starts_a_run_in_two_processes(tmp_path, monkeypatch):
    """The Unlearn page's "Processes / GPUs" travels as the request's ``processes`` into the job."""
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    if distributed.max_processes("cpu") < 2:
        pytest.skip("the field offers one process per core; this machine has one")

    from unlearn_core.ui import stop_text
    from unlearn_core.ui.state import ModelChoice

    monkeypatch.setenv(HOME_ENV, str(tmp_path / "workspace"))
    monkeypatch.setattr(stop_text, "estimate", lambda model, data, split, seed=0, device="cpu", cache=None: {
        "value": 0.0, "estimator": "proxy_retrain", "original_forget_acc": 1.0, "keep_case": False,
        "explanation": "a stand-in estimate for this test"})
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    for key, value in {"us.dataset": "digits", "us.dataset_label": "Handwritten digits",
                       "us.model": ModelChoice("shipped"), "us.criteria": 'label == "3"'}.items():
        at.session_state[key] = value
    at.switch_page("pages/3_unlearn.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.number_input(key="ul_processes").value == 1
    at.selectbox(key="ul_device").set_value("cpu").run()
    at.number_input(key="ul_processes").set_value(2).run()
    at.checkbox(key="ul_retrain").uncheck().run()
    assert at.code[0].value.startswith("torchrun --nproc_per_node 2 -m unlearn_core unlearn")
    _started_in_two_processes_then_cancelled(at, "ul_start", "us.unlearn_run_id")


def _started_in_two_processes_then_cancelled(at, button: str, run_key: str) -> None:
    """Press a page's start button: its run is recorded with 2 processes, and cancel ends it."""
    at.button(key=button).click().run()
    assert not at.exception, [e.value for e in at.exception]
    ws = Workspace()
    run_id = at.session_state[run_key]
    assert ws.get(run_id).processes == 2
    jobs.cancel(ws, run_id, grace=1.0)
    assert ws.get(run_id).status == "cancelled"


@pytest.mark.parametrize("log, says", [
    ("torch.distributed.DistNetworkError: ... code: -98, name: EADDRINUSE, message: address already in use",
     "rendezvous port was already in use"),
    ("error: 4 processes per node were asked for, but this machine has 1 CUDA GPU(s); use --nproc_per_node 1",
     "4 processes per node were asked for"),
])
def test_a_torchrun_job_that_never_started_says_why(tmp_path, log, says):
    ws = Workspace(tmp_path / "workspace")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    record = ws.create_run("unlearn", status="running", processes=2, pid=gone.pid)
    ws.append_log(record.id, log)
    assert jobs.reconcile(ws) == [record.id]
    ended = ws.get(record.id)
    assert ended.status == "interrupted" and says in ended.error


def test_a_launch_on_a_taken_port_is_refused_before_it_starts():
    with socket.socket() as taken:
        taken.bind(("", 0))
        taken.listen()
        with pytest.raises(UserError, match="already in use"):
            distributed.launch_prefix(2, port=taken.getsockname()[1])
    assert distributed.launch_prefix(2)[:5] == [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]


def test_a_torchrun_job_shares_its_cpu_threads_among_its_processes(tmp_path, monkeypatch):
    ws = Workspace(tmp_path / "workspace")
    monkeypatch.setenv(jobs.JOB_THREADS_ENV, "4")
    assert jobs._job_env(ws, 1, processes=2)["OMP_NUM_THREADS"] == "2"
    assert jobs._job_env(ws, 1, processes=8)["OMP_NUM_THREADS"] == "1"  # at least one each
    assert jobs._job_env(ws, 1)["OMP_NUM_THREADS"] == "4"


def test_the_data_and_model_page_trains_in_two_processes(tmp_path, monkeypatch):
    """The Data & model page's "Processes / GPUs" travels as TrainRequest.processes into the job."""
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    if distributed.max_processes("auto") < 2:
        pytest.skip("the field offers one process per core; this machine has one")

    monkeypatch.setenv(HOME_ENV, str(tmp_path / "workspace"))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.session_state["us.dataset"] = "digits"
    at.session_state["us.dataset_label"] = "Handwritten digits"
    at.session_state["dm_model_source"] = "run"
    at.switch_page("pages/1_data_model.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.number_input(key="dm_train_processes").value == 1
    at.number_input(key="dm_train_processes").set_value(2).run()
    _started_in_two_processes_then_cancelled(at, "dm_train", "us.train_run_id")
