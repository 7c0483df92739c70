"""What the dashboard says about where a run stops: before it (the estimate) and after it
(the estimate next to the retrained model's real value).

Why a module without Streamlit: the sentences are the product here (a clinician reads "will
stop near 12 % forget accuracy, estimated from …" before starting), so they are built and
tested as plain functions; :mod:`unlearn_core.ui.stop_panel` only shows them. The estimate
itself is :func:`unlearn_core.stop_target.estimate_stop_target` (no retrain needed); a method
that stops on it has ``stop_at == "auto"`` in its config, and records the estimate in its
result's ``diagnostics["stop_target"]``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from unlearn_core.data.criteria import ForgetSplit
    from unlearn_core.data.imageset import ImageSet
    from unlearn_core.models.architectures import Classifier
    from unlearn_core.runs.result import RunResult
    from unlearn_core.stop_target_cache import StopTargetCache

#: The config field, and its value, of a method that stops at the automatic target.
STOP_FIELD, AUTO = "stop_at", "auto"
#: The config field of PSG's check that the forgetting holds before a stop is accepted.
HOLD_FIELD = "hold_check_steps"
#: Key of the estimate in a run's diagnostics.
DIAGNOSTIC_KEY = "stop_target"
#: The config field of PSG's last step for classes the forget set takes whole.
RETIRE_FIELD = "retire_empty_classes"


def stops_automatically(values: Mapping[str, Any]) -> bool:
    """Does a method with these settings stop at the automatic target?"""
    return values.get(STOP_FIELD) == AUTO


def checks_hold(values: Mapping[str, Any]) -> bool:
    """Does the method confirm its stop on a briefly fine-tuned copy (PSG's ``hold_check_steps``)?"""
    steps = values.get(HOLD_FIELD)
    return isinstance(steps, int) and steps > 0


def retires_classes(values: Mapping[str, Any]) -> bool:
    """Does the method end by retiring classes with no kept training image (PSG's ``retire_empty_classes``)?"""
    return values.get(RETIRE_FIELD) is True


def classes_taken_whole(data: ImageSet, split: ForgetSplit) -> tuple[list[str], bool]:
    """Names of the classes whose every training image is in the forget set, and whether the
    forget set is those classes and nothing else (PSG then retires them and skips its hold
    check: there is nothing fine-tuning on kept images could bring back)."""
    from unlearn_core.methods.retired_classes import classes_without_kept_images, whole_classes_only

    retiring = classes_without_kept_images(data.labels, split.forget_train, split.remain_train)
    return [data.classes[k] for k in retiring], whole_classes_only(data.labels, split.forget_train, retiring)


def retired_text(names: Sequence[str], done: bool = False) -> str:
    """The sentence for classes the forget set takes whole ("" when there are none).

    ``done``: said of a finished run (Results page) rather than of one about to start.
    """
    if not names:
        return ""
    quoted = [f"“{name}”" for name in names]
    listed = quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} and {quoted[-1]}"
    it, class_word = ("it", "class") if len(names) == 1 else ("them", "classes")
    what = "the run ended by switching" if done else "the run ends by switching"
    return (f"Every training image of {class_word} {listed} is in the forget set, so {what} off the model's "
            f"output for {it}: the model no longer names {it}, as a model retrained without these images never "
            f"would, and fine-tuning on the kept images cannot bring {it} back.")


def estimate(model: Classifier, data: ImageSet, split: ForgetSplit, seed: int = 0,
             device: str = "cpu", cache: StopTargetCache | None = None) -> dict[str, Any]:
    """The automatic stop target of ``model`` for this forget set, as a plain dict.

    With ``cache`` (the workspace's), an estimate made before for the same model, forget set and
    seed is reused, and a new one is kept for the run and for the next page that asks.
    """
    from unlearn_core.methods.base import UnlearnData
    from unlearn_core.stop_target_cache import estimate_or_reuse

    return estimate_or_reuse(model, UnlearnData(data, split), device=device, seed=seed, cache=cache).to_dict()


def _pct(value: float) -> str:
    return f"{100 * value:.0f} %"


def before_run_text(target: Mapping[str, Any], holds: bool = False, retired: Sequence[str] = ()) -> str:
    """"Will stop near 12 % forget accuracy …, estimated from …" for the Unlearn page.

    ``holds``: the method only accepts the stop once the forgetting survives brief fine-tuning
    on the kept images (:func:`checks_hold`); said in the forget case, where it applies.
    ``retired``: names of the classes the run will retire at its end (:func:`retired_text`).
    """
    explanation = str(target.get("explanation") or "").strip()
    if explanation.lower().startswith("will stop near"):
        return explanation
    text = f"Will stop near {_pct(target['value'])} forget accuracy"
    original = target.get("original_forget_acc")
    if isinstance(original, (int, float)) and not math.isnan(original):
        text += f" (the original model has {_pct(original)})"
    text += "." if not explanation else f". {explanation[0].upper()}{explanation[1:]}"
    if not text.endswith("."):
        text += "."
    if target.get("keep_case"):
        text += (" A model that never saw these images would still recognize them, so the run removes what "
                 "marks them as training images (what a membership attack sees), not their accuracy.")
    elif holds:
        text += (" It stops there only once the forgetting holds: a copy briefly fine-tuned on the kept images "
                 "must not recognize the forgotten images again; until then unlearning goes on.")
    if retired:
        text += " " + retired_text(retired)
    return text


@dataclass(frozen=True)
class TargetCheck:
    """A run's estimated stop target next to the retrained model's real forget-set accuracy."""

    estimate: float
    estimator: str
    retrain: float | None = None

    @property
    def error(self) -> float | None:
        return None if self.retrain is None else self.estimate - self.retrain

    def text(self) -> str:
        text = f"Estimated stop target: {_pct(self.estimate)} forget accuracy ({self.estimator.replace('_', ' ')})"
        if self.retrain is None:
            return text + "; no retrained model to compare it with."
        return (text + f"; the retrained model's real value: {_pct(self.retrain)} "
                f"(the estimate is off by {100 * abs(self.error):.0f} points).")


def target_vs_retrain(result: RunResult) -> TargetCheck | None:
    """The run's recorded estimate and the retrain's accuracy on the forget set (``D_f``)."""
    target = result.diagnostics.get(DIAGNOSTIC_KEY)
    if not isinstance(target, Mapping) or not isinstance(target.get("value"), (int, float)):
        return None
    retrain = (result.retrain or {}).get("forget_train_acc")
    return TargetCheck(estimate=float(target["value"]), estimator=str(target.get("estimator") or "estimate"),
                       retrain=float(retrain) if isinstance(retrain, (int, float)) else None)
