"""Evaluation metrics for unlearning, as pure functions over logits and labels.

Why a separate, model-free module: every model (original, retrained, unlearned, merged) is
scored by the same code from its logits on the four index sets ``D_f`` (forget train),
``D_r`` (remain train), ``T_f`` (forget test) and ``T_r`` (remain test), so that numbers are
comparable between runs and can be recomputed from saved logits without the model. See
``docs/method.md`` ("Metrics").

Conventions:
- Inputs are numpy arrays (torch tensors are accepted and converted); logits ``[n, K]``,
  integer labels ``[n]``.
- Undefined values (an empty set, an attack group too small to fit) are ``nan`` instead of an
  exception, so a dashboard can always show the rest of the table. Results are plain Python
  floats/ints/lists, i.e. JSON-serializable (``json.dumps(..., allow_nan=True)``).
- Everything random (subsampling, cross-validation splits) is driven by one ``seed``, so the
  same logits always give the same numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import (
    StratifiedKFold,
    StratifiedShuffleSplit,
    cross_val_predict,
    cross_val_score,
)
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from unlearn_core.errors import UserError

__all__ = [
    "SplitOutputs",
    "accuracy",
    "avg_gap",
    "distance_to_retrain",
    "is_collapsed",
    "metric_block",
    "mia_loss_lr",
    "mia_membership_auc",
    "mia_svc_efficacy",
    "per_class_accuracy",
    "per_sample_loss",
]

#: Fewer samples than this in either attack group and an attack score means nothing (and the
#: stratified splits cannot be built), so the score is ``nan``.
MIN_ATTACK_GROUP = 5
#: Per-group cap of the SVC shadow sets: an RBF SVC is quadratic in its training size, and a
#: one-feature attack gains nothing from more than a few thousand samples.
SVC_MAX_SHADOW = 2000


@dataclass(frozen=True)
class SplitOutputs:
    """Logits ``[n, K]`` and integer labels ``[n]`` of ONE model on the four index sets.

    ``forget_train`` = ``D_f``, ``remain_train`` = ``D_r``, ``forget_test`` = ``T_f``,
    ``remain_test`` = ``T_r``. Any set may be empty (``n = 0``).
    """

    forget_train_logits: np.ndarray
    forget_train_labels: np.ndarray
    remain_train_logits: np.ndarray
    remain_train_labels: np.ndarray
    forget_test_logits: np.ndarray
    forget_test_labels: np.ndarray
    remain_test_logits: np.ndarray
    remain_test_labels: np.ndarray


# --------------------------------------------------------------------------------------------
# Input handling and shared numerics
# --------------------------------------------------------------------------------------------


def _to_numpy(x: Any) -> np.ndarray:
    """Array view of ``x``; torch tensors are detached and moved to the CPU first."""
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch here
        x = x.detach().cpu()
    return np.asarray(x)


def _checked(logits: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert one (logits, labels) pair to float64 ``[n, K]`` and int64 ``[n]``.

    Why strict: a silent shape or label mismatch would produce plausible-looking but wrong
    accuracies. Labels outside ``0..K-1`` usually mean the model and the data disagree on the
    class list, which the user can fix, hence :class:`UserError`.
    """
    z = _to_numpy(logits)
    y = _to_numpy(labels)
    if y.size == 0:
        y = y.reshape(0)
    if z.size == 0:
        z = z.reshape(0, z.shape[-1] if z.ndim == 2 else 0)
    if z.ndim != 2:
        raise ValueError(f"logits must be 2-D [n, K]; got shape {z.shape}")
    if y.ndim != 1 or len(y) != len(z):
        raise ValueError(f"labels must be 1-D with {len(z)} entries; got shape {y.shape}")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.isfinite(y)) or not np.all(np.mod(y, 1) == 0):
            raise ValueError("labels must be integer class indices")
    y = y.astype(np.int64)
    if y.size and (y.min() < 0 or y.max() >= z.shape[1]):
        raise UserError(
            f"Labels range over {int(y.min())}..{int(y.max())} but the model outputs "
            f"{z.shape[1]} classes; check that the model and the data use the same class list."
        )
    return z.astype(np.float64, copy=False), y


def _log_softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax, stable for large logits (subtract the row max first)."""
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _attack_features(logits: Any, labels: Any) -> np.ndarray:
    """Per-sample ``[loss, confidence, entropy]`` columns, the signals a black-box attacker sees.

    loss = cross-entropy, confidence = softmax probability of the true class, entropy of the
    predictive distribution (0·log 0 taken as 0).
    """
    z, y = _checked(logits, labels)
    logp = _log_softmax(z)
    true_logp = logp[np.arange(len(y)), y]
    p = np.exp(logp)
    ent = -np.sum(p * np.where(p > 0, logp, 0.0), axis=1)
    return np.column_stack([-true_logp, np.exp(true_logp), ent])


def _balanced(
    a: np.ndarray, b: np.ndarray, rng: np.random.Generator, cap: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Subsample both groups (without replacement) to the size of the smaller one (and ``cap``).

    Why: with balanced groups an attack's accuracy has a fixed chance level of 0.5, so scores
    are comparable between forget sets of different sizes.
    """
    m = min(len(a), len(b)) if cap is None else min(len(a), len(b), cap)
    a_idx, b_idx = (np.sort(rng.choice(len(x), size=m, replace=False)) for x in (a, b))
    return a[a_idx], b[b_idx]


def _member_dataset(members: np.ndarray, nonmembers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Stack two feature groups into ``X`` (2-D) and labels ``y`` (member = 1, non-member = 0)."""
    x = np.concatenate([members.reshape(len(members), -1), nonmembers.reshape(len(nonmembers), -1)])
    y = np.concatenate([np.ones(len(members), np.int64), np.zeros(len(nonmembers), np.int64)])
    return x, y


def _attackable(*groups: np.ndarray) -> bool:
    """True when every group is large enough and finite (a diverged model gives nan logits)."""
    return all(len(g) >= MIN_ATTACK_GROUP and np.all(np.isfinite(g)) for g in groups)


def _logistic_attack(class_weight: str | None = None) -> Pipeline:
    """Standardize, then logistic regression: scaling keeps lbfgs well-conditioned when losses
    reach hundreds after aggressive unlearning, and does not change what a linear model can fit."""
    return make_pipeline(StandardScaler(), LogisticRegression(class_weight=class_weight))


# --------------------------------------------------------------------------------------------
# Accuracy and loss
# --------------------------------------------------------------------------------------------


def accuracy(logits: Any, labels: Any) -> float:
    """Top-1 accuracy over ALL samples (none dropped; ties go to the lowest class index).

    Returns ``nan`` for an empty set, because "0 % of nothing" would read as a real score.
    """
    z, y = _checked(logits, labels)
    if len(y) == 0:
        return math.nan
    return float(np.mean(z.argmax(axis=1) == y))


def per_class_accuracy(logits: Any, labels: Any, num_classes: int) -> list[float]:
    """Accuracy restricted to the samples of each true class ``0..num_classes-1``.

    ``nan`` where a class has no samples (e.g. a forgotten class absent from a subset).
    """
    z, y = _checked(logits, labels)
    if y.size and y.max() >= num_classes:
        raise UserError(f"Label {int(y.max())} is outside the {num_classes} classes.")
    correct = z.argmax(axis=1) == y if len(y) else np.zeros(0, bool)
    return [
        float(correct[y == c].mean()) if np.any(y == c) else math.nan for c in range(num_classes)
    ]


def per_sample_loss(logits: Any, labels: Any) -> np.ndarray:
    """Cross-entropy of each sample, ``-log softmax(z)[y]``, computed with a stable log-softmax.

    Same values as ``torch.nn.functional.cross_entropy(..., reduction="none")``.
    """
    return _attack_features(logits, labels)[:, 0]


# --------------------------------------------------------------------------------------------
# Membership inference attacks
# --------------------------------------------------------------------------------------------


def mia_loss_lr(
    forget_train_loss: Any,
    test_loss: Any,
    seed: int = 0,
    n_splits: int = 5,
    test_size: float = 0.3,
) -> tuple[float, float]:
    """Reference-compatible "MIA efficacy" (Boundary Shrink / Nahass et al.): mean ± std accuracy.

    Procedure:
      1. Feature = per-sample loss. Members (label 1) = the forget-train losses ``D_f``;
         non-members (label 0) = the test losses the caller passes (``metric_block`` passes the
         whole test set ``T_f ∪ T_r``).
      2. Balance: subsample the larger group, without replacement, to the size of the smaller
         (seeded), so chance is exactly 0.5.
      3. ``n_splits`` stratified shuffle splits (``test_size`` held out, ``random_state=seed``);
         on each, fit a logistic regression (after standardizing the feature) and score the
         accuracy on the held-out part.
      4. Return ``(mean, std)`` of those accuracies.

    Reading it: 0.5 = an attacker cannot tell the forget samples from unseen test samples by
    their loss. The ideal after unlearning is the retrained model's value (near 0.5 for a
    well-generalising retrain). ``(nan, nan)`` if either group has fewer than
    ``MIN_ATTACK_GROUP`` samples or non-finite losses.
    """
    member = _to_numpy(forget_train_loss).astype(np.float64).reshape(-1)
    nonmember = _to_numpy(test_loss).astype(np.float64).reshape(-1)
    if not _attackable(member, nonmember):
        return math.nan, math.nan
    member, nonmember = _balanced(member, nonmember, np.random.default_rng(seed))
    x, y = _member_dataset(member, nonmember)
    cv = StratifiedShuffleSplit(n_splits=n_splits, test_size=test_size, random_state=seed)
    scores = cross_val_score(_logistic_attack(), x, y, cv=cv, scoring="accuracy")
    return float(np.mean(scores)), float(np.std(scores))


def mia_svc_efficacy(
    retain_logits: Any,
    retain_labels: Any,
    test_logits: Any,
    test_labels: Any,
    forget_logits: Any,
    forget_labels: Any,
    seed: int = 0,
    max_shadow: int = SVC_MAX_SHADOW,
) -> float:
    """SalUn's "MIA-Efficacy" (Jia et al. 2023, ``SVC_MIA`` with the confidence feature).

    Procedure:
      1. Feature = confidence, the softmax probability of the true label.
      2. Shadow training set: retain samples ``D_r`` as members (1) vs test samples as
         non-members (0); both subsampled (seeded) to the smaller group's size, at most
         ``max_shadow`` each (SalUn's shadow set is likewise a retain subset of test size).
      3. Fit ``SVC(C=3, gamma="auto", kernel="rbf")`` on it, as in their code.
      4. Return the fraction of the FORGET samples the SVC predicts as NON-member.

    Reading it: higher = the forget set looks more like data the model never trained on. It is
    not "higher is better" without bound: the ideal is the retrained model's value (a retrain
    on a class it never saw typically gives near 1; for random forgetting, the retrain's rate).
    When retain and test confidences are indistinguishable the SVC has nothing to learn and
    its decision regions (hence this score) are arbitrary, not 0.5: compare with the retrained
    model, never with a fixed number. ``nan`` if the forget set is empty, a shadow group has
    fewer than ``MIN_ATTACK_GROUP`` samples, or any confidence is non-finite.
    """
    member, nonmember, target = (
        _attack_features(z, y)[:, 1]
        for z, y in ((retain_logits, retain_labels), (test_logits, test_labels),
                     (forget_logits, forget_labels))
    )
    if len(target) == 0 or not np.all(np.isfinite(target)) or not _attackable(member, nonmember):
        return math.nan
    member, nonmember = _balanced(member, nonmember, np.random.default_rng(seed), cap=max_shadow)
    x, y = _member_dataset(member, nonmember)
    clf = SVC(C=3, gamma="auto", kernel="rbf").fit(x, y)
    return float(1.0 - clf.predict(target.reshape(-1, 1)).mean())


def mia_membership_auc(
    forget_train_logits: Any,
    forget_train_labels: Any,
    forget_test_logits: Any,
    forget_test_labels: Any,
    seed: int = 0,
    n_splits: int = 5,
) -> float:
    """Membership MIA (the correct comparison): can an attacker tell ``D_f`` from ``T_f``?

    Procedure:
      1. Members (1) = forget-train samples ``D_f``; non-members (0) = held-out test samples of
         the same kind ``T_f`` (same class / same metadata criterion), so the attacker must
         detect *training*, not a different distribution.
      2. Features per sample: loss, confidence (true-class probability), entropy.
      3. Standardize + logistic regression with ``class_weight="balanced"`` (keeps every
         sample while treating both groups equally), out-of-fold probabilities from
         ``StratifiedKFold(n_splits, shuffle=True, random_state=seed)``.
      4. Return the ROC AUC of those out-of-fold membership probabilities.

    Reading it: 0.5 = the attacker cannot tell the forget samples were trained on; the ideal
    after unlearning is the retrained model's value (≈ 0.5, since the retrain saw neither
    group). ``nan`` if either group has fewer than ``MIN_ATTACK_GROUP`` samples (common: an
    empty ``T_f``) or non-finite features.
    """
    member = _attack_features(forget_train_logits, forget_train_labels)
    nonmember = _attack_features(forget_test_logits, forget_test_labels)
    if not _attackable(member, nonmember):
        return math.nan
    x, y = _member_dataset(member, nonmember)
    cv = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    proba = cross_val_predict(_logistic_attack("balanced"), x, y, cv=cv, method="predict_proba")
    return float(roc_auc_score(y, proba[:, 1]))


# --------------------------------------------------------------------------------------------
# Comparisons with the retrained model and the original model
# --------------------------------------------------------------------------------------------


def distance_to_retrain(
    remain_test_acc: float,
    forget_test_acc: float,
    retrain_remain_test_acc: float,
    retrain_forget_test_acc: float,
) -> float:
    """Euclidean distance to the retrained model in the (remain, forget) TEST-accuracy plane.

    ``sqrt((R − R_retrain)² + (F − F_retrain)²)``. Uses the measured retrain forget accuracy
    (the reference code assumed 0). 0 is ideal; ``nan`` when an input is ``nan`` (empty T_f).
    """
    return float(math.hypot(remain_test_acc - retrain_remain_test_acc,
                            forget_test_acc - retrain_forget_test_acc))


def _salun_components(block: dict) -> np.ndarray:
    """SalUn's four quantities: UA = 1 − forget-train acc, RA, TA (remain test), MIA-Efficacy."""
    return np.array(
        [
            1.0 - block["forget_train_acc"],
            block["remain_train_acc"],
            block["remain_test_acc"],
            block["mia_svc_efficacy"],
        ],
        dtype=np.float64,
    )


def avg_gap(block: dict, retrain_block: dict) -> float:
    """SalUn's Avg. Gap: mean absolute difference to the retrained model over UA, RA, TA, MIA.

    UA = 1 − ``forget_train_acc``, RA = ``remain_train_acc``, TA = ``remain_test_acc``
    (our choice: SalUn's class-wise setting uses the remaining classes' test accuracy, and the
    forget-test accuracy is already covered by :func:`distance_to_retrain`), MIA =
    ``mia_svc_efficacy``. 0 is ideal. ``nan`` if any component is undefined: an average over
    fewer components would not be comparable with other runs.
    """
    return float(np.mean(np.abs(_salun_components(block) - _salun_components(retrain_block))))


def is_collapsed(
    original_block: dict, unlearned_block: dict, max_remain_drop: float = 0.10
) -> bool:
    """True when the unlearned model lost more than ``max_remain_drop`` remain-test accuracy.

    Absolute drop in accuracy (0.10 = 10 percentage points) versus the original model: such a
    model "forgot" by breaking, not by unlearning. ``False`` when either accuracy is ``nan``
    (cannot tell).
    """
    if not 0.0 <= max_remain_drop <= 1.0:
        raise UserError(f"The allowed remain-accuracy drop must be in 0..1; got {max_remain_drop}.")
    before, after = original_block["remain_test_acc"], unlearned_block["remain_test_acc"]
    if math.isnan(before) or math.isnan(after):
        return False
    return bool(before - after > max_remain_drop)


# --------------------------------------------------------------------------------------------
# Everything for one model
# --------------------------------------------------------------------------------------------


def _union(*pairs: tuple[Any, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate (logits, labels) pairs, skipping empty ones (whose K may be unknown)."""
    checked = [_checked(z, y) for z, y in pairs]
    nonempty = [p for p in checked if len(p[1])] or checked[:1]
    return np.concatenate([p[0] for p in nonempty]), np.concatenate([p[1] for p in nonempty])


def metric_block(
    outputs: SplitOutputs, num_classes: int, seed: int = 0
) -> dict[str, float | int | list]:
    """All per-model metrics from its logits on ``D_f``, ``D_r``, ``T_f``, ``T_r``.

    Keys (see :data:`unlearn_core.labels.METRIC_DEFINITIONS`): accuracies on each set and on the whole test set
    ``T_f ∪ T_r``, per-class test accuracy, the three MIA scores, and the set sizes. The MIA
    efficacy and the SVC efficacy use the whole test set as non-members (as their reference
    implementations do); the membership AUC uses ``T_f`` only.
    """
    o = outputs
    ftr = (o.forget_train_logits, o.forget_train_labels)
    rtr = (o.remain_train_logits, o.remain_train_labels)
    fte = (o.forget_test_logits, o.forget_test_labels)
    rte = (o.remain_test_logits, o.remain_test_labels)
    test = _union(fte, rte)
    lr_mean, lr_std = mia_loss_lr(per_sample_loss(*ftr), per_sample_loss(*test), seed=seed)
    return {
        "forget_train_acc": accuracy(*ftr),
        "remain_train_acc": accuracy(*rtr),
        "forget_test_acc": accuracy(*fte),
        "remain_test_acc": accuracy(*rte),
        "test_acc": accuracy(*test),
        "per_class_test_acc": per_class_accuracy(*test, num_classes=num_classes),
        "mia_loss_lr": lr_mean,
        "mia_loss_lr_std": lr_std,
        "mia_svc_efficacy": mia_svc_efficacy(*rtr, *test, *ftr, seed=seed),
        "mia_membership_auc": mia_membership_auc(*ftr, *fte, seed=seed),
        "n_forget_train": int(len(_to_numpy(o.forget_train_labels))),
        "n_remain_train": int(len(_to_numpy(o.remain_train_labels))),
        "n_forget_test": int(len(_to_numpy(o.forget_test_labels))),
        "n_remain_test": int(len(_to_numpy(o.remain_test_labels))),
    }


