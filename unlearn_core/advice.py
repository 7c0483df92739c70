"""What to do next, in words a user can act on, when a result says something went wrong.

Why a module: "try gentler settings" named no setting, and nothing warned when the starting model
itself was too weak for any comparison to mean much. The advice depends only on the run's method,
its recorded settings and its scores, so it lives here (testable, shared by the Results page and
the report) rather than in a page.
"""

from __future__ import annotations

from typing import Any

#: Below this test accuracy the original model is called weak: forgetting on it is hard to read,
#: since a model that recognizes little has little to forget.
WEAK_ORIGINAL_ACC = 0.7


def collapse_advice(method: str, config: dict[str, Any]) -> str:
    """Which settings to change, with their current values, after a run collapsed."""
    steps = []
    if _number(config.get("lr")):
        steps.append(f"halve the learning rate (lr, now {config['lr']:g} → {config['lr'] / 2:g})")
    if _number(config.get("epochs")) and config["epochs"] > 1:
        steps.append(f"use half as many passes (epochs, now {config['epochs']} → {max(1, config['epochs'] // 2)})")
    if method == "psg" and _number(config.get("phi")):
        steps.append(f"weigh the kept images twice as much (phi, now {config['phi']:g} → {2 * config['phi']:g})")
    if not steps:
        return "Run it again with a smaller learning rate or fewer passes."
    return "Try: " + "; or ".join(steps) + ". Change one at a time on the Unlearn page."


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def weak_original_warning(test_acc: float | None) -> str | None:
    """A warning when the starting model is weak, else None."""
    if test_acc is None or test_acc != test_acc or test_acc >= WEAK_ORIGINAL_ACC:
        return None
    return (f"The original model is weak: {test_acc:.0%} test accuracy. A model that recognizes little has "
            "little to forget, so these scores say little about unlearning. Train a better model on "
            "Data & model (more epochs), then run again.")
