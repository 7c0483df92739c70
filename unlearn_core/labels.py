"""The domain's words: the models, the four sets and the metrics, with their meaning and ideal.

Why one module: the dashboard pages, the report and the plots all name the same things, and
they drifted (the remain set went by four names on screen). Every label shown to a user comes
from here; the code keys (``remain_train``...) stay what the library computes. Torch-free and
dependency-free, so any layer may import it.

One word per set: **forget** and **remain**, in **training** and **test** images
(``D_f``, ``D_r``, ``T_f``, ``T_r``).
"""

from __future__ import annotations

from dataclasses import dataclass

#: The models a run compares, by their key in a result's blocks.
MODEL_TITLES = {"original": "Original model", "retrain": "Retrained reference", "unlearned": "Unlearned model"}
#: The same, for table rows and legends.
MODEL_SHORT = {"original": "Original", "retrain": "Retrained", "unlearned": "Unlearned"}


@dataclass(frozen=True)
class SetLabel:
    """One of the four sets: its key, symbol, name on screen, short name and what it is for."""

    key: str
    symbol: str
    name: str
    short: str
    meaning: str


#: The four sets, in the order they are shown.
SETS = (
    SetLabel("forget_train", "D_f", "Forget (training)", "Forget · train",
             "training images matching the criteria: the model must forget these"),
    SetLabel("remain_train", "D_r", "Remain (training)", "Remain · train",
             "all other training images: what the model should still know"),
    SetLabel("forget_test", "T_f", "Forget (test)", "Forget · test",
             "test images matching the criteria, never trained on: how the model treats such images"),
    SetLabel("remain_test", "T_r", "Remain (test)", "Remain · test",
             "test images outside the criteria: the usefulness that must be preserved"),
)
SET_BY_KEY = {s.key: s for s in SETS}

#: Short column names of the per-model metrics (their full names open METRIC_DEFINITIONS).
METRIC_SHORT = {
    "forget_train_acc": "Forget (train)", "remain_train_acc": "Remain (train)",
    "forget_test_acc": "Forget (test)", "remain_test_acc": "Remain (test)", "test_acc": "All test",
    "mia_loss_lr": "MIA", "mia_svc_efficacy": "MIA-SVC", "mia_membership_auc": "Member. AUC",
}
#: What a perfect unlearning would show for each metric (the retrain value is added when known).
IDEAL = {
    "forget_train_acc": "same as retrained",
    "remain_train_acc": "high, as original",
    "forget_test_acc": "same as retrained",
    "remain_test_acc": "high, as original",
    "test_acc": "same as retrained",
    "mia_loss_lr": "same as retrained",
    "mia_loss_lr_std": "no ideal (spread)",
    "mia_svc_efficacy": "same as retrained",
    "mia_membership_auc": "same as retrained, ≈ 0.5",
    "distance_to_retrain": "0",
    "original_distance_to_retrain": "— (where unlearning started)",
    "avg_gap": "0",
    "collapsed": "no",
}

#: One text per metric (``Name: what it measures, and its ideal``), for page help and the report.
METRIC_DEFINITIONS: dict[str, str] = {
    "forget_train_acc": (
        "Forget accuracy (train): share of the training samples to forget (D_f) that the model "
        "still classifies correctly. It should fall to what a model retrained without them "
        "achieves (near 0 when a whole class is forgotten, near test accuracy otherwise)."
    ),
    "remain_train_acc": (
        "Remain accuracy (train): accuracy on the training samples the model should keep (D_r). "
        "Ideal: unchanged from the original model, close to the retrained model."
    ),
    "forget_test_acc": (
        "Forget accuracy (test): accuracy on held-out test samples that match the forget "
        "criterion (T_f), i.e. how well the model still handles that kind of sample. Ideal: the "
        "retrained model's value. Empty (nan) when no test sample matches the criterion."
    ),
    "remain_test_acc": (
        "Remain accuracy (test): accuracy on test samples outside the forget criterion (T_r): "
        "the usefulness that unlearning must preserve. Ideal: as high as the original model "
        "and the retrained model."
    ),
    "test_acc": (
        "Test accuracy: accuracy on the whole test set (T_f and T_r together), counting every "
        "sample. Ideal: the retrained model's value."
    ),
    "per_class_test_acc": (
        "Per-class test accuracy: test accuracy for each true class separately (nan where a "
        "class has no test samples). Shows whether forgetting one group damaged other classes; "
        "ideal: the retrained model's values."
    ),
    "mia_loss_lr": (
        "MIA efficacy (reference-compatible): a logistic-regression attacker sees only each "
        "sample's loss and tries to tell the forget-train samples from test samples (equal-size "
        "groups, mean accuracy over 5 stratified shuffle splits). 0.5 means they are "
        "indistinguishable (chance); the ideal is the retrained model's value."
    ),
    "mia_loss_lr_std": (
        "Standard deviation of the MIA efficacy over its 5 splits: how much to trust small "
        "differences in it. Smaller is a more stable estimate; no ideal value of its own."
    ),
    "mia_svc_efficacy": (
        "MIA-Efficacy (SalUn): an SVM trained to tell remain-train samples (members) from test "
        "samples (non-members) by the confidence in the true label is applied to the forget "
        "set; the score is the share of forget samples it calls non-members. Higher means the "
        "forget set looks more unseen; ideal: the retrained model's value."
    ),
    "mia_membership_auc": (
        "Membership attack AUC: a logistic-regression attacker uses loss, confidence and "
        "entropy to tell forget-train samples (trained on) from test samples of the same kind "
        "(never trained on); ROC AUC of its cross-validated guesses. 0.5 = it cannot tell the "
        "forget samples were ever trained on; ideal: the retrained model's value (about 0.5)."
    ),
    "n_forget_train": "Number of training samples to forget (D_f). Context for every score.",
    "n_remain_train": "Number of training samples to keep (D_r). Context for every score.",
    "n_forget_test": (
        "Number of test samples matching the forget criterion (T_f). Below 5, the membership "
        "attack is not computed."
    ),
    "n_remain_test": "Number of test samples outside the forget criterion (T_r).",
    "distance_to_retrain": (
        "Distance to retrain: straight-line distance between this model and the retrained model "
        "in the plane of (remain test accuracy, forget test accuracy). 0 = behaves exactly like "
        "a model retrained without the forget set; smaller is better."
    ),
    "avg_gap": (
        "Avg. Gap (SalUn): mean absolute difference to the retrained model over four numbers: "
        "1 − forget-train accuracy, remain-train accuracy, remain-test accuracy and "
        "MIA-Efficacy. 0 is ideal; smaller is better."
    ),
    "collapsed": (
        "Collapsed: the unlearned model lost more than the allowed amount (default 10 "
        "percentage points) of remain-test accuracy compared with the original, so it forgot "
        "by breaking rather than by unlearning. Ideal: no."
    ),
}

#: Why a composition has no model of its own: it saves one only when the user picks a candidate.
NOTHING_SAVED = ("No candidate is saved yet: a composition keeps every candidate and saves a model only when "
                 "you pick one (on the Compose page, or `python -m unlearn_core save-candidate RUN LABEL`).")
#: The dashboard's name for "no preset": the method's own defaults (the Unlearn page's picker and
#: the report show the same words).
NO_PRESET = "(the method's defaults)"


def dataset_name(dataset: str) -> str:
    """A data set as a user knows it: a built-in set's name, or an upload's own file name.

    Why: runs record the path the workspace stored an upload under
    (``…/uploads/<hash>/user_digits.zip``); that hash is plumbing, not a name.
    """
    return dataset.replace("\\", "/").rsplit("/", 1)[-1] if "/" in dataset or "\\" in dataset else dataset
