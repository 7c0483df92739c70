"""Did the forgotten images stop looking like training images? One verdict in plain words, and ε.

Why: the Results page showed three membership-attack scores that move in different directions
(a retrained model scored 0.961, 1.000 and 0.390) and said nothing about whether the unlearned
model did well. The verdict compares the one attack that asks the right question (members =
the forgotten training images ``D_f``, non-members = unseen images like them ``T_f``; its AUC,
:func:`unlearn_core.metrics.membership_attack`) with the retrained model's, which is what a
model that never saw ``D_f`` would give away.

The ε score is the threshold-sweep distinguishability of the NeurIPS 2023 Machine Unlearning
Challenge (Triantafillou et al., "Are we making progress in unlearning?", 2024), as also shown
by the Unlearning Comparator (Lee et al., 2025): an attacker sees one forget image's loss and
guesses whether it came from the unlearned or the retrained model. For every threshold on the
loss, with false-positive and false-negative rates FPR and FNR,
``ε_t = max(log((1 − δ − FPR) / FNR), log((1 − δ − FNR) / FPR))``; ε is the worst case over
thresholds. 0 means the two models' losses are indistinguishable; larger is worse. The
challenge computes it per image over hundreds of models; with one model of each, the losses
are pooled over the forget images (rates are clipped at one image, so ε stays finite).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Membership AUCs within this of the retrained model's count as "no better" (issue 10's 3 points).
MEMBERSHIP_TOLERANCE = 0.03
#: δ of the ε score (the challenge's value).
EPSILON_DELTA = 0.01


@dataclass(frozen=True)
class PrivacyVerdict:
    """One line for a run; ``ok`` is None when there is nothing to compare with."""

    ok: bool | None
    text: str


def privacy_verdict(unlearned_auc: float | None, retrain_auc: float | None) -> PrivacyVerdict:
    """Compare the unlearned model's membership AUC on ``D_f`` vs ``T_f`` with the retrain's."""
    def known(value: float | None) -> bool:
        return value is not None and not math.isnan(value)

    if not known(unlearned_auc):
        return PrivacyVerdict(None, "The membership attack could not be scored (too few forget or unseen images).")
    if not known(retrain_auc):
        return PrivacyVerdict(None, f"An attacker's membership AUC is {unlearned_auc:.2f} (0.50 = guessing); "
                                    "train the retrain reference to know what a model that never saw these "
                                    "images would give away.")
    gap = unlearned_auc - retrain_auc
    scores = f"(membership AUC {unlearned_auc:.2f}; retrained model {retrain_auc:.2f})"
    if abs(gap) <= MEMBERSHIP_TOLERANCE:
        return PrivacyVerdict(True, "An attacker can tell the forgotten images were in training no better than "
                                    f"with the retrained model ✓ {scores}.")
    if gap > 0:
        return PrivacyVerdict(False, "An attacker can still tell the forgotten images were in training, "
                                     f"{100 * gap:.0f} points better than with the retrained model ✗ {scores}.")
    return PrivacyVerdict(False, "The forgotten images now look *less* like training images than a retrained "
                                 f"model's would ({100 * -gap:.0f} points), which can give them away too ✗ {scores}.")


def epsilon_score(unlearned_losses: np.ndarray, retrain_losses: np.ndarray, delta: float = EPSILON_DELTA) -> float:
    """Worst-case distinguishability of two models from per-image losses on the forget set (module doc)."""
    a = np.asarray(unlearned_losses, dtype=np.float64)
    b = np.asarray(retrain_losses, dtype=np.float64)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if len(a) == 0 or len(b) == 0:
        return float("nan")
    thresholds = np.unique(np.concatenate([a, b]))
    # "unlearned" when loss <= t: FNR = unlearned losses above t, FPR = retrained losses at or below t
    fnr = 1.0 - np.searchsorted(np.sort(a), thresholds, side="right") / len(a)
    fpr = np.searchsorted(np.sort(b), thresholds, side="right") / len(b)
    values = []
    for fnr_t, fpr_t in ((fnr, fpr), (1.0 - fnr, 1.0 - fpr)):  # and the reversed rule, loss > t
        fnr_t, fpr_t = np.maximum(fnr_t, 1.0 / len(a)), np.maximum(fpr_t, 1.0 / len(b))
        with np.errstate(divide="ignore"):
            values.append(np.log(np.maximum(1 - delta - fpr_t, 0) / fnr_t))
            values.append(np.log(np.maximum(1 - delta - fnr_t, 0) / fpr_t))
    finite = np.concatenate(values)
    finite = finite[np.isfinite(finite)]
    return float(max(0.0, finite.max())) if len(finite) else 0.0
