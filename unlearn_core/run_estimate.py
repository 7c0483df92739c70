"""How long a whole unlearning run will take, before it starts; and its one bar while it runs.

A run has up to four stages: training the retrain reference (unless a recorded one is reused),
estimating where to stop (small proxy models, for a method that stops automatically),
unlearning, and scoring the models. Before Start, :func:`estimate_run` says how long each will
take from what this workspace has recorded on this machine: seconds per image from past runs
(a training image = one forward and backward; the method's work = the images its models
forwarded plus back-propagated, the cost counters of :class:`~unlearn_core.methods.base.CostMeter`;
scoring = every image of the four sets through each model once), times the images this run
will process. Runs on the same data set come first (image size changes the cost per image);
with none recorded, a rough CPU guess stands in, and the text says so.

While the run goes, :class:`~unlearn_core.progress.OverallReporter` turns each routine's own
0-to-1 into one fraction and one ETA over the stages (planned by :func:`stages_of`), and
:func:`live_progress` moves them on between events, so the bar never restarts and never sits at
"about 0 s left".

Pure and torch-free: plain numbers in, plain numbers and sentences out (tested without a model).

Example::

    estimate = estimate_run(RunPlan(dataset="digits", method="psg", image_pixels=3 * 8 * 8,
                                    forget_images=146, remain_images=1300, scored_images=1797,
                                    retrain_images=13000, stop_target=True),
                            workspace.list_runs())
    estimate.text()   # "The whole run should take about 1 min 10 s: ..."
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from unlearn_core.progress import UNLEARN_STAGE, Stage
from unlearn_core.runs.result import RunResult

if TYPE_CHECKING:
    from unlearn_core.runs.registry import RunRecord

#: First-time guess (nothing recorded yet): seconds for one forward of one 64 × 64 RGB image
#: through the small CNN on a busy 2-core CPU; a training image (forward + backward) costs about
#: three (issue 14 measured 4.5 min for the oculoplastic reference, about 17 ms an image).
#: Rough on purpose: the first recorded run replaces it.
FALLBACK_FORWARD_S = 0.005
FALLBACK_PIXELS = 3 * 64 * 64
#: Tiny images do not get proportionally cheaper (per-batch and per-layer costs stay).
MIN_SCALE = 0.33
#: First-time guess of the method's work: images forwarded plus back-propagated per forget image
#: (per forget image and pass when the method runs in passes).
FALLBACK_WORK_PER_FORGET = 30.0
FALLBACK_WORK_PER_FORGET_PASS = 3.0
#: The stop estimate trains PROXY_REPEATS proxies of PROXY_EPOCHS epochs on at most
#: PROXY_IMAGES kept images pooled to ≤ PROXY_MAX_SIZE px (mirrors unlearn_core.stop_target).
PROXY_TRAINED_IMAGES = 3 * 3 * 2000
PROXY_PIXELS = 3 * 32 * 32
#: Scoring costs more than the forwards alone (the membership attacks are fitted on them).
SCORING_OVERHEAD = 1.5

STAGE_TEXT = {
    "retrain": "Training the retrain reference",
    "stop_target": "Estimating where to stop",
    UNLEARN_STAGE: "Unlearning",
    "evaluate": "Scoring the models",
}


@dataclass(frozen=True)
class RunPlan:
    """What a run will do, in images (all counts are of the four sets of its forget split).

    Attributes:
        dataset: the data set reference (runs on the same one give the best rates).
        method: the unlearning method's name.
        image_pixels: channels × height × width of one image (scales the first-time guess).
        forget_images, remain_images: training images to forget and to keep.
        scored_images: images of the four sets (each scored model sees them all once).
        retrain_images: images the retrain reference will train on (epochs × kept images); 0
            when none is trained (not asked for, or a recorded one is reused).
        retrain_reused: a recorded reference will be reused (said in the text).
        stop_target: the method estimates where to stop (proxy models) before unlearning.
        models_scored: models scored at the end (original, unlearned, and the reference).
        method_title: the method's name in words.
        passes: the passes the method is set to run (its ``epochs``); ``None`` for a method that
            does not run in passes. A recorded run's work is scaled by it: 500 passes of
            fine-tuning cost 50 times the work of a recorded 10.
    """

    dataset: str
    method: str
    image_pixels: int
    forget_images: int
    remain_images: int
    scored_images: int
    retrain_images: int = 0
    retrain_reused: bool = False
    stop_target: bool = False
    models_scored: int = 2
    method_title: str = ""
    passes: int | None = None


@dataclass(frozen=True)
class PhaseEstimate:
    """One stage: its key (see :func:`unlearn_core.progress.stage_of`), name and seconds."""

    key: str
    text: str
    seconds: float


@dataclass(frozen=True)
class RunEstimate:
    """The whole run's expected time, per stage, and what the figures rest on (in words)."""

    phases: tuple[PhaseEstimate, ...]
    basis: str
    retrain_reused: bool = False

    @property
    def total_seconds(self) -> float:
        return sum(phase.seconds for phase in self.phases)

    def stages(self) -> list[Stage]:
        """The stages :class:`~unlearn_core.progress.OverallReporter` tracks, in run order."""
        return [Stage(phase.key, phase.text, phase.seconds) for phase in self.phases]

    def text(self) -> str:
        """``The whole run should take about 5 min 40 s: training the retrain reference about …``."""
        parts = ", ".join(f"{phase.text[0].lower()}{phase.text[1:]} {duration(phase.seconds)}" for phase in self.phases)
        text = f"The whole run should take about {duration(self.total_seconds)}: {parts}."
        if self.retrain_reused:
            text += " The retrain reference is reused from an earlier run, so it is not trained again."
        return f"{text} {self.basis}"

    def to_dict(self) -> dict[str, Any]:
        return {"phases": [vars(phase) for phase in self.phases], "basis": self.basis,
                "retrain_reused": self.retrain_reused}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunEstimate:
        return cls(tuple(PhaseEstimate(**phase) for phase in data.get("phases", ())), str(data.get("basis", "")),
                   bool(data.get("retrain_reused", False)))


def duration(seconds: float) -> str:
    """``about``-free words: ``45 s``, ``3 min 05 s``, ``1 h 02 min``."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


# ---------------------------------------------------------------------- rates from recorded runs

@dataclass(frozen=True)
class Rates:
    """Seconds per image measured by the recorded runs (``None``: nothing to measure it by).

    ``train``: per image trained (forward + backward); ``work``: per image the method's models
    forwarded or back-propagated; ``score``: per image scored by one model;
    ``work_per_forget``: the method's work images per forget image, and ``work_per_forget_pass``
    the same per pass it was set to run (runs whose config records ``epochs``); ``stop_seconds``:
    one stop estimate. ``runs``: how many recorded runs gave figures; ``same_data``: they are on this
    run's data set.
    """

    train: float | None = None
    work: float | None = None
    score: float | None = None
    work_per_forget: float | None = None
    work_per_forget_pass: float | None = None
    stop_seconds: float | None = None
    runs: int = 0
    same_data: bool = False


def _median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None and math.isfinite(v) and v > 0]
    return statistics.median(values) if values else None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def rates_from_records(records: Iterable[RunRecord], dataset: str, method: str) -> Rates:
    """Per-image rates from finished runs: those on ``dataset`` when there are any, else all."""
    done = [r for r in records if r.status == "done" and r.kind in ("retrain", "unlearn")]
    same = [r for r in done if r.dataset == dataset]
    pool = same or done
    train, work, score, per_forget, per_pass, stops, used = [], [], [], [], [], [], set()
    for record in pool:
        result = RunResult.of(record)
        sizes = result.sizes or {}
        if record.kind == "retrain":
            epochs = _number((record.config or {}).get("epochs"))
            remain = _number(sizes.get("remain_train"))
            seconds = _number(result.timing.retrain)
            if epochs and remain and seconds:
                train.append(seconds / (epochs * remain))
                used.add(record.id)
            continue
        diagnostics = result.diagnostics or {}
        images = sum(_number(diagnostics.get(k)) or 0.0 for k in ("forward_images", "backward_images",
                                                                  "monitor_images"))
        stop = diagnostics.get("stop_target")
        stop_seconds = _number(stop.get("seconds")) if isinstance(stop, Mapping) else None
        if stop_seconds:
            stops.append(stop_seconds)
        unlearn_seconds = _number(result.timing.unlearn)
        if images and unlearn_seconds:
            work.append(max(unlearn_seconds - (stop_seconds or 0.0), 0.0) / images)
            used.add(record.id)
            forget = _number(sizes.get("forget_train"))
            if record.method == method and forget:
                per_forget.append(images / forget)
                passes = _number((record.config or {}).get("epochs"))
                if passes:
                    per_pass.append(images / (forget * passes))
        evaluate_seconds = _number(result.timing.evaluate)
        # images each model really read: the kept sets may have been sampled (evaluate.scored_split)
        scored = sum(_number(v) or 0.0 for v in (result.scored_sizes or sizes).values())
        models = len(result.blocks)
        if evaluate_seconds and scored and models:
            score.append(evaluate_seconds / (models * scored))
            used.add(record.id)
    return Rates(train=_median(train), work=_median(work), score=_median(score),
                 work_per_forget=_median(per_forget), work_per_forget_pass=_median(per_pass),
                 stop_seconds=_median(stops),
                 runs=len(used), same_data=bool(same) and bool(used))


# ---------------------------------------------------------------------- the estimate

def estimate_run(plan: RunPlan, records: Iterable[RunRecord] = (), rates: Rates | None = None,
                 stop_seconds: float | None = None) -> RunEstimate:
    """Seconds per stage of ``plan``, from ``rates`` (else measured from ``records``).

    ``stop_seconds``: the stop estimate as measured on this page for this very model and forget
    set (the run repeats it), preferred over any recorded figure.
    """
    if rates is None:
        rates = rates_from_records(records, plan.dataset, plan.method)
    scale = max(MIN_SCALE, plan.image_pixels / FALLBACK_PIXELS)
    forward = FALLBACK_FORWARD_S * scale
    train_rate = rates.train or (rates.work * 2.0 if rates.work else 3.0 * forward)
    work_rate = rates.work or (rates.train / 2.0 if rates.train else 1.5 * forward)
    score_rate = rates.score or (work_rate * SCORING_OVERHEAD)
    phases = []
    if plan.retrain_images > 0:
        phases.append(PhaseEstimate("retrain", STAGE_TEXT["retrain"], plan.retrain_images * train_rate))
    if plan.stop_target:
        proxy = stop_seconds or rates.stop_seconds or (
            min(plan.remain_images, 2000) / 2000 * PROXY_TRAINED_IMAGES * 3.0 * FALLBACK_FORWARD_S
            * max(MIN_SCALE, min(plan.image_pixels, PROXY_PIXELS) / FALLBACK_PIXELS))
        phases.append(PhaseEstimate("stop_target", STAGE_TEXT["stop_target"], proxy))
    per_forget = _work_per_forget(plan, rates)
    unlearn_text = f"Unlearning with {plan.method_title}" if plan.method_title else STAGE_TEXT[UNLEARN_STAGE]
    phases.append(PhaseEstimate(UNLEARN_STAGE, unlearn_text, plan.forget_images * per_forget * work_rate))
    phases.append(PhaseEstimate("evaluate", STAGE_TEXT["evaluate"],
                                plan.models_scored * plan.scored_images * score_rate))
    return RunEstimate(tuple(phases), basis_text(rates, stop_seconds is not None), plan.retrain_reused)


def _work_per_forget(plan: RunPlan, rates: Rates) -> float:
    """The method's work images per forget image for this run: it grows with the passes asked
    for (a run of 500 passes is not priced as the recorded run of 10)."""
    if plan.passes and rates.work_per_forget_pass:
        return plan.passes * rates.work_per_forget_pass
    if rates.work_per_forget:  # recorded runs that did not record their passes
        return rates.work_per_forget
    return plan.passes * FALLBACK_WORK_PER_FORGET_PASS if plan.passes else FALLBACK_WORK_PER_FORGET


def basis_text(rates: Rates, stop_measured: bool = False) -> str:
    """What the estimate rests on, in plain words."""
    measured = [name for name, value in (("training", rates.train), ("unlearning", rates.work),
                                         ("scoring", rates.score)) if value]
    if not measured:
        text = ("This is a rough first guess for a CPU: no run has been recorded in this workspace yet. "
                "Later estimates use the speed this computer shows.")
    else:
        where = "on this data set" if rates.same_data else "on other data sets (images of another size make it rougher)"
        runs = f"{rates.runs} earlier run{'s' if rates.runs != 1 else ''}"
        text = f"Based on the speed of {runs} {where} on this computer ({', '.join(measured)})"
        missing = [name for name in ("training", "unlearning", "scoring") if name not in measured]
        text += f"; {' and '.join(missing)} from a rough CPU guess." if missing else "."
        if not rates.work_per_forget:
            text += " How much work the method does per forget image is a first guess until it has run once."
    if stop_measured:
        text += " Where to stop takes as long as its estimate took on this page."
    return text + " Other work on the computer slows every figure."


# ---------------------------------------------------------------------- while it runs

#: The most the bar reaches by the clock alone: full only when the run says it is done.
LIVE_CAP = 0.99


@dataclass(frozen=True)
class LiveProgress:
    """What the progress panel shows now: the bar, the time left, and the line under the bar."""

    fraction: float
    eta_seconds: float | None
    text: str
    overdue: bool = False


def stage_label(event: Mapping[str, Any], fallback: str = "Working") -> str:
    """``Training the retrain reference (1 of 3)…`` (``fallback`` without a stage)."""
    text = str(event.get("stage_text") or "") or fallback
    if event.get("stage") and event.get("stages"):
        return f"{text} ({event['stage']} of {event['stages']})…"
    return f"{text}…"


def left_text(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return f"about {duration(seconds)} left"


def live_progress(event: Mapping[str, Any], now: float, details: str = "") -> LiveProgress:
    """The bar and the ETA at time ``now`` from the latest event of an :class:`OverallReporter` run.

    Between events the bar moves on with the time (never past the current stage's expected end)
    and the ETA counts down (never below the later stages'); when the current stage has run past
    its estimate the text says so instead of "about 0 s left". ``details`` (``epoch 3/10 · step
    4/40``) follows the stage's name.
    """
    fraction = float(event.get("fraction") or 0.0)
    eta = _number(event.get("eta_seconds"))
    label = stage_label(event)
    emitted, elapsed = _number(event.get("emitted")), _number(event.get("elapsed"))
    overdue = False
    if emitted is not None and elapsed is not None and eta is not None:
        waited = max(0.0, now - emitted)
        total = elapsed + eta
        stage_end = _number(event.get("stage_end")) or 1.0
        if total > 0:
            fraction = max(fraction, min(stage_end, LIVE_CAP, (elapsed + waited) / total))
        later = _number(event.get("later_seconds")) or 0.0
        left_here = eta - later - waited
        overdue = left_here < 1.0 and event.get("stage_fraction") is None or left_here < -1.0
        eta = later + max(left_here, 0.0)
    parts = [label, *([details] if details else [])]
    if overdue:
        parts.append("this step takes longer than estimated")
        if eta and eta >= 1.0:
            parts.append(f"then about {duration(eta)}")
    elif eta is not None:
        parts.append(left_text(eta) if eta >= 1.0 else "finishing")
    return LiveProgress(min(1.0, max(0.0, fraction)), eta, " · ".join(parts), overdue)
