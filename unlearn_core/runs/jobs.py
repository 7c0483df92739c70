"""Background jobs: a run is the command line itself, executed in a detached subprocess.

Why a subprocess running ``python -m unlearn_core ...``: the dashboard stays responsive, a crash
or out-of-memory in training cannot take it down, Cancel can always end the work (by killing
the process group if need be), progress survives page reloads (it lives in the registry), and
what ran in the background is exactly the command a user could type to reproduce it.

Life of a background run::

    submit(ws, argv, kind=...)      creates a queued record with command = python -m unlearn_core argv
      └ start_job / poll_queue      claims it when a slot is free (UNLEARN_STUDIO_MAX_JOBS, default 1)
          └ subprocess              python -m unlearn_core <argv> --run-id <id>, log -> runs/<id>/log.txt
              └ run_context         running + pid; reporter/should_stop; done | failed | cancelled
    cancel(ws, id)                  flag + SIGTERM to the process group, SIGKILL after a grace
    reconcile(ws)                   running runs whose process is gone become "interrupted"

How a command uses it (the same code runs in a terminal and as a background job)::

    from unlearn_core.runs.jobs import add_run_id_argument, command_run
    from unlearn_core.runs.registry import Workspace, cli_command

    def register(subparsers):
        parser = subparsers.add_parser("train", help="train the original model")
        ...
        add_run_id_argument(parser)          # hidden --run-id, passed by start_job
        parser.set_defaults(func=run_train)

    def run_train(args) -> int:
        workspace = Workspace()
        # started by start_job: continues that record; typed in a terminal: creates one.
        with command_run(workspace, args.run_id, kind="train",
                         command=cli_command(sys.argv[1:]),
                         dataset=args.dataset, seed=args.seed, config=config) as ctx:
            ctx.update(dataset_fingerprint=data.fingerprint())     # known once data is loaded
            model = train(data, config, on_progress=ctx.reporter, should_stop=ctx.should_stop)
            ctx.workspace.save_weights(ctx.run_id, model.state_dict(), {"architecture": arch})
            ctx.finish(metrics={"original": evaluate(model, data)})
        return 0

On leaving the block the run is ``done``; a :class:`UserError` or any other exception marks it
``failed`` with the message (and is re-raised, so the command line prints it); Ctrl-C, a Cancel
or :class:`~unlearn_core.progress.Cancelled` mark it ``cancelled``. Long loops should call
``ctx.should_stop()`` (cheap) and raise ``Cancelled`` when it is true.

A page starts work with ``submit(ws, ["train", "--dataset", "fundus"], kind="train", ...)``,
polls ``poll_queue(ws)`` and ``ws.get(run_id)`` / ``ws.progress_events(run_id, since_seq)``, and
stops it with ``cancel(ws, run_id)``.

Process checks use ``/proc`` (Linux); elsewhere a pid is trusted while it exists. The workspace
is assumed to be used from one machine.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import unlearn_core
from unlearn_core.errors import UserError
from unlearn_core.progress import (
    CancelToken,
    Cancelled,
    MultiReporter,
    RegistryReporter,
    StderrReporter,
)
from unlearn_core.runs.registry import (
    ACTIVE_STATUSES,
    HOME_ENV,
    RunRecord,
    Workspace,
    cli_command,
    command_argv,
)

MAX_JOBS_ENV = "UNLEARN_STUDIO_MAX_JOBS"
#: One job at a time by default: on a CPU, two trainings at once are each slower than in turn.
DEFAULT_MAX_JOBS = 1
#: CPU threads a background job's torch may use (default: all cores but one).
JOB_THREADS_ENV = "UNLEARN_STUDIO_JOB_THREADS"
#: The workspace file holding the threads chosen on the Unlearn page (the variable overrides it).
JOB_THREADS_FILE = "job_threads.txt"
#: Seconds a job gets to stop by itself after SIGTERM before it is killed.
CANCEL_GRACE_S = 3.0
#: A claimed run gets its pid within this time; after it, a pid-less running run is interrupted.
PIDLESS_GRACE_S = 30.0

#: Job processes started by this process, so their exit is reaped (no zombies that look alive).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
_CHILDREN_LOCK = threading.Lock()


# ---------------------------------------------------------------------- processes


def process_start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (``/proc/<pid>/stat`` field 22).

    Why: pids are reused; a stored (pid, start time) pair identifies one process for good.
    Returns "" where ``/proc`` is unavailable or the process is gone.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    # The command name (field 2) is in parentheses and may contain spaces: split after it.
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else ""


def _process_state(pid: int) -> str:
    """The one-letter state from ``/proc/<pid>/stat`` ("Z" = zombie), or "" if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat[stat.rfind(")") + 2 :].split()[0]


def _reap(pid: int) -> bool:
    """If ``pid`` is our child and has exited, collect it; True when it has exited."""
    with _CHILDREN_LOCK:
        child = _CHILDREN.get(pid)
        if child is None or child.poll() is None:
            return False
        del _CHILDREN[pid]
        return True


def _reap_finished() -> None:
    """Collect every job process of ours that has ended, so none lingers as a zombie."""
    with _CHILDREN_LOCK:
        pids = list(_CHILDREN)
    for pid in pids:
        _reap(pid)


def process_alive(pid: int, start_time: str = "") -> bool:
    """Whether ``pid`` is a live process and, if ``start_time`` is given, still the same one."""
    if pid <= 0 or _reap(pid):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    if _process_state(pid) in ("Z", "X"):
        return False
    current = process_start_time(pid)
    return not (start_time and current and current != start_time)


def _signal_job(pid: int, sig: signal.Signals) -> None:
    """Signal a job's whole process group (its data-loader workers too), or just the process."""
    try:
        group = os.getpgid(pid)
        if group == pid and group != os.getpgrp():
            os.killpg(group, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        return
    except PermissionError as error:
        raise UserError(f"Cannot stop process {pid}: it belongs to another user.") from error


def _wait_exit(pid: int, start_time: str, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for the process to end; True if it did."""
    with _CHILDREN_LOCK:
        child = _CHILDREN.get(pid)
    if child is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout)
    deadline = time.monotonic() + timeout
    while process_alive(pid, start_time):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _descendants(pid: int) -> list[tuple[int, str]]:
    """Every process below ``pid`` (children, their children...) with its start time, from ``/proc``.

    Why: torchrun starts each rank in a session of its own, so signalling the job's process
    group does not reach them; a cancel signals each of them too, and must list them before
    torchrun exits (its children are then re-parented and can no longer be found this way).
    """
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 1:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], list(children.get(pid, []))
    while todo:
        child = todo.pop()
        found.append((child, process_start_time(child)))
        todo.extend(children.get(child, []))
    return found


def _terminate(pid: int, start_time: str, grace: float) -> None:
    """SIGTERM (the job stops cleanly and records ``cancelled``), then SIGKILL after ``grace``.

    The job's descendants in sessions of their own (torchrun's ranks) get the same signals,
    so no rank is left running.
    """
    workers = [(child, started) for child, started in _descendants(pid) if _own_group(child)]
    _signal_job(pid, signal.SIGTERM)
    for child, _started in workers:
        _signal_job(child, signal.SIGTERM)
    if not _wait_exit(pid, start_time, grace):
        _signal_job(pid, signal.SIGKILL)
        _wait_exit(pid, start_time, 2.0)
    for child, started in workers:
        if process_alive(child, started) and not _wait_exit(child, started, 1.0):
            _signal_job(child, signal.SIGKILL)
            _wait_exit(child, started, 2.0)


def _own_group(pid: int) -> bool:
    """Whether ``pid`` leads a process group of its own (a signal to its parent's group misses it)."""
    try:
        return os.getpgid(pid) == pid
    except OSError:
        return False


# ---------------------------------------------------------------------- queue


def _count_from_env(name: str) -> int | None:
    """A whole number ≥ 1 from environment variable ``name``; None when it is unset or empty."""
    text = os.environ.get(name, "").strip()
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise UserError(f"{name} must be a whole number of at least 1, not {text!r}.")
    return value


def job_limit(value: int | None = None) -> int:
    """The concurrency limit: ``value``, else ``$UNLEARN_STUDIO_MAX_JOBS``, else 1."""
    if value is None:
        from_env = _count_from_env(MAX_JOBS_ENV)
        return DEFAULT_MAX_JOBS if from_env is None else from_env
    if value < 1:
        raise UserError(f"{MAX_JOBS_ENV} must be a whole number of at least 1, not {value!r}.")
    return value


def cpu_cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def job_threads(workspace: Workspace | None = None) -> int:
    """Threads for a background job: ``$UNLEARN_STUDIO_JOB_THREADS``, else the workspace's
    choice (:func:`set_job_threads`, the Unlearn page), else one fewer than the cores.

    Why: a job that takes every core leaves the dashboard that started it waiting 8-18 s for
    each page on a 2-core machine; one core kept free keeps the pages quick, at the cost of
    some run time.
    """
    from_env = _count_from_env(JOB_THREADS_ENV)
    if from_env is not None:
        return from_env
    chosen = chosen_job_threads(workspace) if workspace is not None else None
    return chosen if chosen is not None else max(1, cpu_cores() - 1)


def chosen_job_threads(workspace: Workspace) -> int | None:
    """The threads chosen for this workspace's jobs (``None``: not chosen, or unreadable)."""
    try:
        value = int((workspace.path / JOB_THREADS_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
    return value if value >= 1 else None


def set_job_threads(workspace: Workspace, threads: int | None) -> None:
    """Choose the threads of this workspace's background jobs (``None``: back to the default).

    Applies to jobs started from now on; ``$UNLEARN_STUDIO_JOB_THREADS`` still overrides it.
    """
    from unlearn_core.files import atomic_write

    path = workspace.path / JOB_THREADS_FILE
    if threads is None:
        path.unlink(missing_ok=True)
        return
    if not isinstance(threads, int) or threads < 1:
        raise UserError(f"Threads for background runs must be a whole number of at least 1, not {threads!r}.")
    atomic_write(path, f"{threads}\n".encode())


def job_command(argv: list[str], run_id: str, processes: int = 1) -> list[str]:
    """The process a job runs: this interpreter, the command line, and the run to continue.

    With ``processes`` above 1 the same command runs under torchrun
    (``python -m torch.distributed.run --nproc_per_node N --master_port FREE -m unlearn_core ...``):
    one process per rank, data-parallel (:mod:`unlearn_core.distributed`).
    """
    if processes > 1:
        from unlearn_core.distributed import launch_prefix

        return [*launch_prefix(processes), "-m", "unlearn_core", *argv, "--run-id", run_id]
    return [sys.executable, "-m", "unlearn_core", *argv, "--run-id", run_id]


def _job_env(workspace: Workspace, limit: int, processes: int = 1) -> dict[str, str]:
    """The job's environment: same workspace, same limit, and this package importable.

    The job's CPU threads are shared by its processes (at least one each), so a torchrun job
    leaves the dashboard the same cores as a one-process job.
    """
    env = dict(os.environ)
    env[HOME_ENV] = str(workspace.path)
    env[MAX_JOBS_ENV] = str(limit)
    package_root = str(Path(unlearn_core.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"  # the log shows output as it happens
    # torch's CPU threads (leave the dashboard a core), split among a torchrun job's processes
    env["OMP_NUM_THREADS"] = str(max(1, job_threads(workspace) // max(1, processes)))
    return env


def _launch(workspace: Workspace, record: RunRecord, limit: int) -> RunRecord:
    """Start the process for a claimed run and store its pid; a failed start fails the run."""
    argv = command_argv(record.command)
    if not argv:
        workspace.set_status(record.id, "failed", error=(
            "This run has no recorded `python -m unlearn_core ...` command to execute."))
        return workspace.get(record.id)
    workspace.append_log(record.id, f"starting: {record.command_text}")
    try:
        with open(workspace.log_path(record.id), "ab") as log:
            process = subprocess.Popen(
                job_command(argv, record.id, record.processes),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=_job_env(workspace, limit, record.processes),
            )
    except OSError as error:
        workspace.set_status(record.id, "failed", error=f"Could not start the job: {error}.")
        return workspace.get(record.id)
    with _CHILDREN_LOCK:
        _CHILDREN[process.pid] = process
    return workspace.update(
        record.id, pid=process.pid, process_start=process_start_time(process.pid)
    )


def poll_queue(workspace: Workspace, max_jobs: int | None = None) -> list[RunRecord]:
    """Mark dead runs interrupted, then start queued runs while slots are free; returns started.

    Called by pages and ``runs list`` whenever they poll, and by a job when it ends, so the
    queue moves on without a scheduler process.
    """
    limit = job_limit(max_jobs)
    _reap_finished()
    reconcile(workspace)
    started = []
    while (record := workspace.claim_next_queued(limit)) is not None:
        started.append(_launch(workspace, record, limit))
    return started


def start_job(
    workspace: Workspace, argv: list[str], run_id: str, max_jobs: int | None = None
) -> RunRecord:
    """Run ``python -m unlearn_core *argv --run-id run_id`` in the background for a queued run.

    The command is recorded on the run (without ``--run-id``: that is plumbing, not part of
    reproducing it). If the concurrency limit is reached the run stays ``queued`` and a later
    :func:`poll_queue` starts it. Returns the run's record after the attempt.
    """
    if "--run-id" in argv:
        raise ValueError("argv must not contain --run-id; start_job adds it")
    record = workspace.get(run_id)
    if record.status != "queued":
        raise UserError(
            f"Run {run_id} is already {record.status}; start it again as a new run with "
            f"`python -m unlearn_core runs rerun {run_id}`."
        )
    if not workspace.set_status(run_id, "queued", expect=("queued",), command=cli_command(argv)):
        raise UserError(f"Run {run_id} was started or cancelled meanwhile; see `runs show {run_id}`.")
    poll_queue(workspace, max_jobs)
    return workspace.get(run_id)


def submit(
    workspace: Workspace, argv: list[str], kind: str, max_jobs: int | None = None, **fields: Any
) -> RunRecord:
    """Create a run for ``argv`` and start it in the background (or queue it).

    The concurrency limit is checked first: a bad ``UNLEARN_STUDIO_MAX_JOBS`` must not leave a
    run queued that no poll could ever start.
    """
    job_limit(max_jobs)
    job_threads()  # a bad setting is refused before a run is recorded
    check_processes(int(fields.get("processes", 1)), argv)
    record = workspace.create_run(kind, command=cli_command(argv), **fields)
    return start_job(workspace, argv, record.id, max_jobs)


def check_processes(processes: int, argv: list[str]) -> None:
    """Refuse, before anything is recorded, a process count the job could not start with.

    Under 1, a command torchrun does not run, or, on a CUDA machine, more processes than GPUs
    (each rank needs a GPU of its own): said plainly here rather than as a failed run.
    """
    if processes == 1:
        return
    if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
        raise UserError(f"processes must be a whole number of at least 1, got {processes!r}.")
    from unlearn_core.distributed import TORCHRUN_COMMANDS

    if not argv or argv[0] not in TORCHRUN_COMMANDS:
        raise UserError(f"Only {', '.join(TORCHRUN_COMMANDS)} run in several processes; run "
                        f"`{argv[0] if argv else '?'}` with processes = 1.")
    device = argv[argv.index("--device") + 1] if "--device" in argv[:-1] else "auto"
    if device in ("auto", "cuda"):
        from unlearn_core.distributed import check_gpu_count

        check_gpu_count(processes)


#: What a rerun copies from the original: everything that describes what to do.
_RERUN_FIELDS = ("dataset", "dataset_fingerprint", "base_model_hash", "base_weights", "base_arch",
                 "criteria_text", "criteria", "method", "config", "recipe_hash", "seed", "device", "label",
                 "processes")


def rerun(workspace: Workspace, run_id: str, max_jobs: int | None = None) -> RunRecord:
    """Start a run's recorded command again as a new run (same parents, where they still exist)."""
    original = workspace.get(run_id)
    argv = command_argv(original.command)
    if not argv:
        raise UserError(f"Run {run_id} has no recorded command to run again.")
    fields = {name: getattr(original, name) for name in _RERUN_FIELDS}
    parents = [parent for parent in original.parents if workspace.exists(parent)]
    return submit(workspace, argv, original.kind, max_jobs, parents=parents, **fields)


def runs_ahead(workspace: Workspace, run_id: str) -> list[RunRecord]:
    """What a queued run waits for: the runs running now, then those queued before it (oldest first).

    Why: "waiting for another run" leaves the user guessing which; the page names these.
    """
    record = workspace.get(run_id)
    running = sorted(workspace.list_runs(status="running"), key=lambda r: (r.created_at, r.id))
    earlier = [r for r in workspace.list_runs(status="queued")
               if r.id != run_id and (r.created_at, r.id) < (record.created_at, record.id)]
    return [*running, *sorted(earlier, key=lambda r: (r.created_at, r.id))]


def _age_seconds(iso_time: str | None) -> float:
    if not iso_time:
        return float("inf")
    return time.time() - datetime.fromisoformat(iso_time).timestamp()


def _process_gone(record: RunRecord) -> bool:
    if record.pid is None:  # claimed; the starter has not stored the pid yet (or crashed)
        return _age_seconds(record.started_at) > PIDLESS_GRACE_S
    return not process_alive(record.pid, record.process_start)


def reconcile(workspace: Workspace) -> list[str]:
    """Mark ``interrupted`` every running run whose process is gone or was replaced.

    Why: a killed job, a crash or a reboot cannot report its own end; without this the run
    would show "running" forever. Returns the ids it marked.
    """
    marked = []
    for record in workspace.list_runs(status="running"):
        if not _process_gone(record):
            continue
        error = (
            f"The process (pid {record.pid}) ended without recording a result (killed, crashed "
            f"or the machine restarted); see its log at {workspace.log_path(record.id)}."
        )
        if record.processes > 1:
            error = _torchrun_failure(workspace, record) or error
        if workspace.set_status(record.id, "interrupted", error=error, expect=("running",)):
            marked.append(record.id)
    return marked


def _torchrun_failure(workspace: Workspace, record: RunRecord) -> str:
    """Why a torchrun job ended before its rank 0 could record anything, read from its log ("" if unknown).

    Why: a taken rendezvous port or a process count the GPUs cannot serve stops torchrun or
    every rank before the run is opened; the log has the cause, the record should say it.
    """
    try:
        text = workspace.log_path(record.id).read_text(errors="replace")[-20000:]
    except OSError:
        return ""
    if "EADDRINUSE" in text or "address already in use" in text:
        return ("torchrun could not start: its rendezvous port was already in use. Start the run again (a new "
                "free port is picked), or stop the program holding the port.")
    errors = [line.split("error: ", 1)[1] for line in text.splitlines() if "error: " in line]
    return f"A process of this torchrun run stopped: {errors[-1]}" if errors else ""


def cancel(workspace: Workspace, run_id: str, grace: float = CANCEL_GRACE_S) -> RunRecord:
    """Stop a run: a queued one is cancelled at once; a running one is asked, then killed.

    The ``cancel_requested`` flag and SIGTERM let the job stop cleanly (it records
    ``cancelled`` itself); after ``grace`` seconds its process group gets SIGKILL. A run of this
    very process is only flagged (its ``should_stop`` turns true; it ends itself).
    """
    if workspace.set_status(
        run_id, "cancelled", expect=("queued",), cancel_requested=True,
        error="Cancelled before it started.",
    ):
        return workspace.get(run_id)
    record = workspace.get(run_id)
    if record.status not in ACTIVE_STATUSES:
        raise UserError(f"Run {run_id} already ended ({record.status}); nothing to cancel.")
    workspace.request_cancel(run_id)
    if record.pid == os.getpid():  # our own run (in-process): its should_stop sees the flag
        return workspace.get(run_id)
    if record.pid is not None and process_alive(record.pid, record.process_start):
        _terminate(record.pid, record.process_start, grace)
    workspace.set_status(run_id, "cancelled", expect=("running",), error="Cancelled by the user.")
    with contextlib.suppress(UserError):
        poll_queue(workspace)
    return workspace.get(run_id)


# ---------------------------------------------------------------------- the job's side


@dataclass
class RunContext:
    """What a command gets while its run is open.

    Attributes:
        workspace, run_id: where to save artifacts (``workspace.save_weights(run_id, ...)``).
        reporter: pass as ``on_progress``; writes to the registry (throttled) and the log.
        should_stop: pass as ``should_stop``; true once a cancel was requested.
    """

    workspace: Workspace
    run_id: str
    reporter: MultiReporter
    should_stop: CancelToken

    def record(self) -> RunRecord:
        """The run's current record."""
        return self.workspace.get(self.run_id)

    def update(self, **fields: Any) -> RunRecord:
        """Record facts learned while working (dataset fingerprint, device, parents...)."""
        return self.workspace.update(self.run_id, **fields)

    def log(self, text: str) -> None:
        """Add a line to the run's log."""
        self.workspace.append_log(self.run_id, text)

    def finish(self, metrics: dict[str, Any] | None = None, **fields: Any) -> RunRecord:
        """Store the results now; the run becomes ``done`` when the ``with`` block ends cleanly."""
        if metrics is not None:
            fields["metrics"] = metrics
        return self.workspace.update(self.run_id, **fields)


#: Set once this process received SIGTERM (see :func:`_peer_stopped`).
_SIGTERM_SEEN = threading.Event()


@contextlib.contextmanager
def _cancel_on_sigterm(token: CancelToken) -> Iterator[None]:
    """Turn SIGTERM into a cancel request the work sees through ``should_stop``.

    Only possible in the main thread (Python's rule); elsewhere cancellation still works
    through the registry flag, and by killing the process.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    def on_sigterm(_signum, _frame) -> None:
        _SIGTERM_SEEN.set()
        token.cancel()

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _end_run(workspace: Workspace, run_id: str, status: str, error: str = "") -> None:
    """Record how the run ended; a registry failure here is logged, not raised over the cause."""
    try:
        workspace.set_status(run_id, status, error=error, expect=("running",))
    except UserError as failure:
        print(f"error: could not record the end of run {run_id}: {failure}", file=sys.stderr)


@contextlib.contextmanager
def run_context(workspace: Workspace, run_id: str) -> Iterator[RunContext]:
    """Execute the body as run ``run_id``: running with this pid, then done/failed/cancelled.

    The run must be queued or running (a job started by :func:`start_job`). On exit the
    reporter is flushed, the status recorded, and queued runs get the freed slot.
    """
    record = workspace.get(run_id)
    if record.status not in ACTIVE_STATUSES:
        raise UserError(
            f"Run {run_id} is already {record.status}; start it again with "
            f"`python -m unlearn_core runs rerun {run_id}`."
        )
    from unlearn_core.distributed import launcher_pid

    pid = launcher_pid()  # torchrun's under torchrun: a cancel then reaches every rank
    if not workspace.set_status(run_id, "running", pid=pid, process_start=process_start_time(pid)):
        raise UserError(f"Run {run_id} ended before it could start ({workspace.get(run_id).status}).")
    token = CancelToken(workspace, run_id)
    reporter = MultiReporter(RegistryReporter(workspace, run_id), StderrReporter())
    context = RunContext(workspace, run_id, reporter, token)
    try:
        with _cancel_on_sigterm(token):
            yield context
        if token() or workspace.cancel_requested(run_id):
            raise Cancelled("cancel requested")
    except KeyboardInterrupt:  # Ctrl-C, Cancelled
        if _peer_stopped(workspace, run_id):
            _end_run(workspace, run_id, "failed", PEER_STOPPED)
        else:
            _end_run(workspace, run_id, "cancelled", "Cancelled by the user.")
        raise
    except UserError as error:
        _end_run(workspace, run_id, "failed", str(error))
        raise
    except BaseException as error:
        with contextlib.suppress(Exception):
            workspace.append_log(run_id, traceback.format_exc())
        if _cancel_asked(workspace, run_id):  # a cancel stopped another rank first: this rank saw it fail
            _end_run(workspace, run_id, "cancelled", "Cancelled by the user.")
        elif _lost_a_peer(error):
            _end_run(workspace, run_id, "failed", f"{PEER_STOPPED} ({type(error).__name__}: "
                                                  f"{str(error).splitlines()[0][:300] if str(error) else ''})")
        else:
            _end_run(workspace, run_id, "failed", f"{type(error).__name__}: {error}")
        raise
    else:
        _end_run(workspace, run_id, "done")
    finally:
        with contextlib.suppress(Exception):
            reporter.flush()
        _start_next(workspace)


#: Why a torchrun run ended when torchrun stopped rank 0 without a cancel from the user.
PEER_STOPPED = ("Another process of this torchrun run ended first (it failed, was killed, or torchrun was "
                "stopped), so torchrun stopped this one; that process's error is in the run's log.")


def _peer_stopped(workspace: Workspace, run_id: str) -> bool:
    """Whether torchrun's SIGTERM (not the user's cancel) stopped this rank: another rank ended first.

    Why: under torchrun a SIGTERM reaches rank 0 when any other rank dies; recording that as
    "cancelled" would hide a failure.
    """
    from unlearn_core.distributed import under_torchrun

    return under_torchrun() and _SIGTERM_SEEN.is_set() and not _cancel_asked(workspace, run_id)


def _lost_a_peer(error: BaseException) -> bool:
    """Whether a collective failed because another rank of this torchrun run went away."""
    from unlearn_core.distributed import under_torchrun

    text = str(error).lower()
    return under_torchrun() and any(sign in text for sign in ("closed by peer", "connection reset", "broken pipe",
                                                             "nccl communicator was aborted"))


def _cancel_asked(workspace: Workspace, run_id: str) -> bool:
    """Whether the user cancelled this run (read from the registry; False if it cannot be read)."""
    try:
        return workspace.cancel_requested(run_id)
    except Exception:  # noqa: BLE001 - the run's end is recorded either way
        return False


def _start_next(workspace: Workspace) -> None:
    """Give the freed slot to a queued run; never let that hide how this run ended."""
    try:
        poll_queue(workspace)
    except Exception as error:  # noqa: BLE001 - best effort; the run's own status is recorded
        print(f"warning: could not start queued runs: {error}", file=sys.stderr)


@contextlib.contextmanager
def open_run(workspace: Workspace, kind: str, command: list[str], **fields: Any) -> Iterator[RunContext]:
    """Create a run for work done in this process (a command typed in a terminal) and open it.

    Foreground runs do not wait for the background queue: the user chose to run it now. The
    record is created ``running`` with this pid, so no background poller can claim it meanwhile.
    """
    pid = os.getpid()
    record = workspace.create_run(kind, status="running", command=command, pid=pid,
                                  process_start=process_start_time(pid), **fields)
    with run_context(workspace, record.id) as context:
        yield context


@contextlib.contextmanager
def command_run(
    workspace: Workspace, run_id: str | None, *, kind: str, command: list[str], **fields: Any
) -> Iterator[RunContext]:
    """The one context every command uses: continue job ``run_id``, or create a run if None.

    For a job, ``fields`` are recorded on the existing run and its command is kept (it is the
    recorded one without ``--run-id``).
    """
    if run_id is None:
        with open_run(workspace, kind, command, **fields) as context:
            yield context
        return
    record = workspace.get(run_id)
    if record.kind != kind:
        raise UserError(f"Run {run_id} is a {record.kind} run; this command makes {kind} runs.")
    with run_context(workspace, run_id) as context:
        if fields:
            context.update(**fields)
        yield context


def add_run_id_argument(parser: argparse.ArgumentParser) -> None:
    """Add the hidden ``--run-id`` option :func:`start_job` passes to the commands it runs."""
    parser.add_argument("--run-id", default=None, help=argparse.SUPPRESS)


__all__ = [
    "CANCEL_GRACE_S", "DEFAULT_MAX_JOBS", "MAX_JOBS_ENV", "RunContext", "add_run_id_argument",
    "cancel", "command_run", "job_command", "job_limit", "open_run", "poll_queue",
    "process_alive", "process_start_time", "reconcile", "rerun", "run_context", "runs_ahead", "start_job",
    "submit",
]
