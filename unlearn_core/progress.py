"""Progress reporting and cancellation hooks shared by training, unlearning and composition.

Why one small module: every long-running routine takes the same two hooks,
``on_progress(event)`` and ``should_stop() -> bool``, so the command line, a background job and
a test can all drive the same code. The routine never knows where its progress goes (a
terminal, the run registry, nowhere) or how a cancel is requested (Ctrl-C, the dashboard's
Cancel button, SIGTERM).

Example (inside a training loop)::

    def train(model, data, epochs, on_progress=NullReporter(), should_stop=never_stop):
        for epoch in range(epochs):
            for step, batch in enumerate(data):
                if should_stop():
                    raise Cancelled("training cancelled")
                ...
                on_progress(ProgressEvent(phase="train", epoch=epoch + 1, epochs=epochs,
                                          step=step + 1, steps=len(data),
                                          fraction=(epoch + (step + 1) / len(data)) / epochs,
                                          metrics={"loss": loss}))
"""

from __future__ import annotations

import contextlib
import math
import sys
import threading
import time
from collections.abc import Callable
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol, TextIO, runtime_checkable

from unlearn_core.errors import UserError

if TYPE_CHECKING:  # runs imports nothing from here at runtime either; no import cycle.
    from unlearn_core.runs.registry import Workspace


class Cancelled(KeyboardInterrupt):
    """Raised by long-running code once ``should_stop()`` says the user asked to stop.

    Why a ``KeyboardInterrupt``: a cancel *is* a user interrupt. Broad ``except Exception``
    blocks in user-facing code do not swallow it, and the command line already turns it into
    the message ``cancelled`` and exit code 130.
    """


@dataclass
class ProgressEvent:
    """One progress update from a long-running routine.

    Attributes:
        phase: what is happening now (``"train"``, ``"retrain"``, ``"unlearn"``, ``"evaluate"``,
            ``"done"``...). A change of phase is always recorded, never throttled away.
        epoch, epochs: 1-based current epoch and total, when the phase has epochs.
        step, steps: 1-based current step within the epoch and total steps per epoch.
        fraction: overall completion of the whole run in ``[0, 1]`` (clamped).
        eta_seconds: estimated seconds left, if the routine can tell.
        message: one short human sentence (``"searching boundary samples"``).
        metrics: live numbers to plot, e.g. ``{"forget_acc": 0.41, "remain_acc": 0.97}``.

    Set by :class:`OverallReporter` (one bar over every stage of a run; ``None`` otherwise):
        stage, stages: 1-based stage of the whole run and their count; ``stage_text`` names it.
        stage_fraction: the routine's own completion of this stage (``None``: it reports none).
        elapsed: seconds since the run's first stage began; ``emitted``: Unix time of the event.
        stage_end: the overall fraction at which this stage is expected to end.
        later_seconds: expected seconds of the stages after this one.
    With these, a page can move the bar and count the ETA down between events
    (:func:`unlearn_core.run_estimate.live_progress`).
    """

    phase: str
    epoch: int | None = None
    epochs: int | None = None
    step: int | None = None
    steps: int | None = None
    fraction: float | None = None
    eta_seconds: float | None = None
    message: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    stage: int | None = None
    stages: int | None = None
    stage_text: str = ""
    stage_fraction: float | None = None
    elapsed: float | None = None
    emitted: float | None = None
    stage_end: float | None = None
    later_seconds: float | None = None

    def __post_init__(self) -> None:
        if self.fraction is not None:
            value = float(self.fraction)
            self.fraction = 0.0 if math.isnan(value) else min(1.0, max(0.0, value))
        self.metrics = {str(key): _plain_number(value) for key, value in self.metrics.items()}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (what the registry stores and the dashboard reads)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProgressEvent:
        """Rebuild an event from :meth:`to_dict` output, ignoring unknown keys (``seq``, ``at``)."""
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        return cls(**known)

    @property
    def is_final(self) -> bool:
        """True for the last event of a run; such events are never throttled away."""
        return self.phase == "done" or (self.fraction is not None and self.fraction >= 1.0)


def _plain_number(value: Any) -> Any:
    """Turn tensors and numpy scalars into plain floats so events stay JSON-serialisable."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    return float(value)


@runtime_checkable
class ProgressReporter(Protocol):
    """Anything called with each :class:`ProgressEvent` (a plain function works too)."""

    def __call__(self, event: ProgressEvent) -> None: ...


#: The ``on_progress`` hook as a plain type (any :class:`ProgressReporter` matches it).
ProgressCallback = Callable[[ProgressEvent], None]
#: The ``should_stop`` hook: returns True once the routine should stop as soon as it safely can.
StopCheck = Callable[[], bool]


def never_stop() -> bool:
    """Default ``should_stop`` for code run outside any job."""
    return False


class NullReporter:
    """Discards every event (the default when nobody watches)."""

    def __call__(self, event: ProgressEvent) -> None:
        return None

    def flush(self) -> None:
        return None


class _Throttle:
    """Lets an event through at most every ``interval`` seconds, except phase changes and finals.

    Why: training loops report every step; writing each one to SQLite or the terminal would cost
    more than the step. The newest held-back event is kept so :meth:`take_pending` can flush it.
    """

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self._last_time = -math.inf
        self._last_phase: str | None = None
        self._pending: ProgressEvent | None = None

    def admit(self, event: ProgressEvent) -> bool:
        now = self.clock()
        due = now - self._last_time >= self.interval
        if due or event.phase != self._last_phase or event.is_final:
            self._last_time = now
            self._last_phase = event.phase
            self._pending = None
            return True
        self._pending = event
        return False

    def take_pending(self) -> ProgressEvent | None:
        event, self._pending = self._pending, None
        return event


class RegistryReporter:
    """Records events in the run registry so the dashboard can poll and draw live curves.

    At most ``max_per_second`` writes per second; phase changes and the final event are always
    written, and :meth:`flush` (called by the job context at exit) writes the last held-back one.
    A registry that is briefly locked costs a progress point (with one warning on stderr), never
    the training that reports it.
    """

    def __init__(self, workspace: Workspace, run_id: str, max_per_second: float = 5.0) -> None:
        self.workspace = workspace
        self.run_id = run_id
        self._throttle = _Throttle(1.0 / max_per_second)
        self._lock = threading.Lock()
        self._warned = False

    def __call__(self, event: ProgressEvent) -> None:
        with self._lock:
            if self._throttle.admit(event):
                self._write(event)

    def flush(self) -> None:
        with self._lock:
            pending = self._throttle.take_pending()
            if pending is not None:
                self._write(pending)

    def _write(self, event: ProgressEvent) -> None:
        try:
            self.workspace.record_progress(self.run_id, event)
        except UserError as error:
            if not self._warned:
                print(f"warning: progress not recorded: {error}", file=sys.stderr)
                self._warned = True


class StderrReporter:
    """A one-line progress bar on a terminal; plain, throttled lines in a log file.

    Why both: the same command runs in a terminal (redrawn line with ``\\r``) and as a background
    job whose stderr is the run's log (one line every few seconds, readable afterwards).
    """

    def __init__(
        self, stream: TextIO | None = None, width: int = 24, log_interval: float = 5.0
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._throttle = _Throttle(0.1 if self.tty else log_interval)
        self._last_phase: str | None = None

    def __call__(self, event: ProgressEvent) -> None:
        if self._throttle.admit(event):
            self._write(event)

    def _write(self, event: ProgressEvent) -> None:
        line = format_event(event, self.width)
        if self.tty:
            newline = self._last_phase is not None and event.phase != self._last_phase
            prefix = "\n" if newline else ""
            suffix = "\n" if event.is_final else ""
            self.stream.write(f"{prefix}\r{line:<100}{suffix}")
        else:
            self.stream.write(line + "\n")
        self._last_phase = event.phase
        self.stream.flush()

    def flush(self) -> None:
        pending = self._throttle.take_pending()
        if pending is not None:
            self._write(pending)
        if self.tty and self._last_phase is not None:
            self.stream.write("\n")
            self.stream.flush()
            self._last_phase = None


class MultiReporter:
    """Sends each event to several reporters (registry and log, for a background job)."""

    def __init__(self, *reporters: ProgressReporter) -> None:
        self.reporters = reporters

    def __call__(self, event: ProgressEvent) -> None:
        for reporter in self.reporters:
            reporter(event)

    def flush(self) -> None:
        for reporter in self.reporters:
            flush = getattr(reporter, "flush", None)
            if flush is not None:
                flush()


def format_event(event: ProgressEvent, width: int = 24) -> str:
    """One readable line: ``[#####-----]  45% train epoch 2/5 step 10/50 eta 0:12 loss=0.31``."""
    parts: list[str] = []
    if event.fraction is not None:
        filled = round(event.fraction * width)
        parts.append(f"[{'#' * filled}{'-' * (width - filled)}] {event.fraction * 100:3.0f}%")
    parts.append(event.phase)
    if event.epoch is not None:
        parts.append(f"epoch {event.epoch}/{event.epochs or '?'}")
    if event.step is not None:
        parts.append(f"step {event.step}/{event.steps or '?'}")
    if event.eta_seconds is not None:
        minutes, seconds = divmod(int(event.eta_seconds), 60)
        parts.append(f"eta {minutes}:{seconds:02d}")
    parts.extend(
        f"{key}={value:.3f}" if isinstance(value, float) else f"{key}={value}"
        for key, value in event.metrics.items()
    )
    if event.message:
        parts.append(event.message)
    return " ".join(parts)


#: The stage of a whole run each phase belongs to; every other phase (a method's name) is unlearning.
STAGE_OF_PHASE = {"retrain": "retrain", "stop_target": "stop_target", "evaluate": "evaluate"}
UNLEARN_STAGE = "unlearn"
#: How far the observed pace may rescale the later stages' expected seconds (slower or faster).
PACE_LIMITS = (0.25, 4.0)


def stage_of(phase: str) -> str | None:
    """The stage a phase belongs to (``None`` for ``done``)."""
    if phase == "done":
        return None
    return STAGE_OF_PHASE.get(phase, UNLEARN_STAGE)


@dataclass(frozen=True)
class Stage:
    """One planned stage of a run: its key (see :func:`stage_of`), its name in words, and the
    seconds it is expected to take (:mod:`unlearn_core.run_estimate` plans them)."""

    key: str
    text: str
    seconds: float


class OverallReporter:
    """One bar and one ETA over every stage of a run (reference, stop target, unlearning, scoring).

    Each routine reports its own phase from 0 to 1 (training restarts at 0, so does the
    method); this wraps the run's reporter and rewrites each event's ``fraction`` and
    ``eta_seconds`` into the whole run's, adding the stage (``2 of 4``) and its name. The
    fraction is time-based: elapsed / (elapsed + what is left), where what is left is the
    current stage's remainder (from its own fraction when it reports one, else its expected
    seconds) plus the later stages' expected seconds, rescaled by how the finished stages went
    against their estimates. Within a stage the bar also moves with the routine's own fraction
    over the stage's planned share (a method whose fraction counts its most passes, and which
    stops early, would otherwise hold the time-based bar still). It never goes back.
    """

    def __init__(self, inner: ProgressCallback, stages: Sequence[Stage],
                 clock: Callable[[], float] = time.time, started: float | None = None) -> None:
        self.inner = inner
        self.stages = list(stages)
        self.clock = clock
        self._run_started = started
        self._index: int | None = None
        self._stage_started = 0.0
        self._stage_from = 0.0
        self._stage_share = 0.0
        self._actual: dict[int, float] = {}
        self._last_fraction = 0.0

    def _find(self, phase: str) -> int | None:
        key = stage_of(phase)
        return next((i for i, stage in enumerate(self.stages) if stage.key == key), None)

    def _pace(self) -> float:
        """Actual / expected seconds of the finished stages (1 before any finished)."""
        expected = sum(self.stages[i].seconds for i in self._actual)
        if expected <= 0:
            return 1.0
        low, high = PACE_LIMITS
        return min(high, max(low, sum(self._actual.values()) / expected))

    def __call__(self, event: ProgressEvent) -> None:
        now = self.clock()
        if self._run_started is None:
            self._run_started = now
        index = self._find(event.phase)
        if index is None:
            if event.phase == "done":
                event = replace(event, fraction=1.0, eta_seconds=0.0, emitted=now)
            self.inner(event)
            return
        if index != self._index:
            if self._index is not None:
                self._actual[self._index] = now - self._stage_started
            for skipped in range(0 if self._index is None else self._index + 1, index):
                self._actual.setdefault(skipped, 0.0)  # planned but not run (e.g. no stop estimate)
            self._index, self._stage_started = index, now
            pace = self._pace()
            elapsed = now - self._run_started
            here = self.stages[index].seconds * pace
            planned = elapsed + here + sum(stage.seconds for stage in self.stages[index + 1:]) * pace
            self._stage_from = max(self._last_fraction, elapsed / planned if planned > 0 else 0.0)
            self._stage_share = max(0.0, min(1.0 - self._stage_from, here / planned if planned > 0 else 0.0))
        pace = self._pace()
        in_stage = event.fraction
        spent = now - self._stage_started
        if in_stage is not None and in_stage >= 1.0:
            left_here = 0.0
        elif in_stage is not None and in_stage > 0.0 and spent > 0.0:
            left_here = spent / in_stage * (1.0 - in_stage)
        else:
            left_here = max(self.stages[index].seconds * pace - spent, 0.0)
        later = sum(stage.seconds for stage in self.stages[index + 1:]) * pace
        elapsed = now - self._run_started
        total = elapsed + left_here + later
        by_time = elapsed / total if total > 0 else 0.0
        by_share = self._stage_from + (in_stage or 0.0) * self._stage_share
        fraction = min(1.0, max(self._last_fraction, by_time, by_share))
        self._last_fraction = fraction
        stage_end = max(fraction, (elapsed + left_here) / total if total > 0 else 1.0)
        self.inner(replace(
            event, fraction=fraction, eta_seconds=left_here + later, stage=index + 1, stages=len(self.stages),
            stage_text=self.stages[index].text, stage_fraction=in_stage, elapsed=elapsed, emitted=now,
            stage_end=min(1.0, stage_end), later_seconds=later))

    def flush(self) -> None:
        flush = getattr(self.inner, "flush", None)
        if flush is not None:
            flush()


class CancelToken:
    """The ``should_stop`` hook of a run: true once a cancel was requested.

    A cancel can arrive three ways: :meth:`cancel` in the same process, a signal handler calling
    :meth:`cancel` (SIGTERM from :func:`unlearn_core.runs.jobs.cancel`), or the run's
    ``cancel_requested`` flag in the registry (set by another process). The registry is read at
    most every ``interval`` seconds, so calling the token every step stays cheap.
    """

    def __init__(
        self,
        workspace: Workspace | None = None,
        run_id: str | None = None,
        interval: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.workspace = workspace
        self.run_id = run_id
        self.interval = interval
        self.clock = clock
        self._cancelled = threading.Event()
        self._next_check = -math.inf

    def cancel(self) -> None:
        """Request a stop (safe from signal handlers and other threads)."""
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        """Whether a stop was requested, re-reading the registry now if it is due."""
        return self()

    def __call__(self) -> bool:
        if self._cancelled.is_set():
            return True
        if self.workspace is None or self.run_id is None:
            return False
        now = self.clock()
        if now < self._next_check:
            return False
        self._next_check = now + self.interval
        with contextlib.suppress(UserError):  # a locked registry: ask again next time
            if self.workspace.cancel_requested(self.run_id):
                self._cancelled.set()
        return self._cancelled.is_set()

    def raise_if_cancelled(self, what: str = "run") -> None:
        """Raise :class:`Cancelled` if a stop was requested (a one-liner for loops)."""
        if self():
            raise Cancelled(f"{what} cancelled")
