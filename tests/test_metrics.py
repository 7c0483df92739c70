"""Tests for unlearn_core.metrics: hand-made logits with known answers, and synthetic attack
groups whose distinguishability we control (the model's margin on the true class sets the loss)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from unlearn_core.errors import UserError
from unlearn_core.labels import METRIC_DEFINITIONS
from unlearn_core.metrics import (
    SplitOutputs,
    accuracy,
    avg_gap,
    distance_to_retrain,
    is_collapsed,
    metric_block,
    mia_loss_lr,
    mia_membership_auc,
    mia_svc_efficacy,
    per_class_accuracy,
    per_sample_loss,
)

K = 4


def fake_outputs(
    rng: np.random.Generator, n: int, margin: float, k: int = K
) -> tuple[np.ndarray, np.ndarray]:
    """Logits of ``n`` samples: noise plus ``margin`` on the true class.

    A large margin = confident and correct (near-zero loss, looks like a training member);
    a negative margin = wrong and high loss (looks unseen)."""
    labels = rng.integers(0, k, n)
    logits = rng.normal(0.0, 1.0, (n, k))
    logits[np.arange(n), labels] += margin
    return logits, labels


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(123)


# ---- accuracy ------------------------------------------------------------------------------


def test_accuracy_hand_made_and_torch_input() -> None:
    logits = np.array([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0], [0.0, 1.0]])
    labels = np.array([0, 1, 1, 1])
    assert accuracy(logits, labels) == pytest.approx(0.75)
    as_torch = torch.tensor(logits, requires_grad=True), torch.tensor(labels)
    assert accuracy(*as_torch) == pytest.approx(0.75)


def test_accuracy_empty_is_nan() -> None:
    assert math.isnan(accuracy(np.zeros((0, 3)), np.zeros(0, dtype=int)))
    assert math.isnan(accuracy([], []))


def test_per_class_accuracy_with_absent_class() -> None:
    logits = np.array([[5.0, 0, 0], [5.0, 0, 0], [0, 5.0, 0], [5.0, 0, 0]])
    labels = np.array([0, 0, 1, 1])  # class 0: 2/2, class 1: 1/2, class 2: no samples
    acc = per_class_accuracy(logits, labels, num_classes=3)
    assert acc[:2] == pytest.approx([1.0, 0.5])
    assert math.isnan(acc[2])
    assert all(math.isnan(a) for a in per_class_accuracy(np.zeros((0, 3)), [], num_classes=3))


def test_labels_outside_model_classes_are_a_user_error() -> None:
    with pytest.raises(UserError):
        accuracy(np.zeros((2, 3)), np.array([0, 3]))


# ---- loss ----------------------------------------------------------------------------------


def test_per_sample_loss_matches_torch_including_extreme_logits(rng: np.random.Generator) -> None:
    logits, labels = fake_outputs(rng, 50, margin=1.0)
    logits[0] = [1000.0, -1000.0, 0.0, 0.0]  # a naive softmax overflows here
    labels[0] = 1
    expected = F.cross_entropy(torch.tensor(logits), torch.tensor(labels), reduction="none").numpy()
    got = per_sample_loss(logits, labels)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)


# ---- MIA: reference-compatible loss/LR efficacy ---------------------------------------------


def test_mia_loss_lr_chance_on_same_distribution_unequal_groups(rng: np.random.Generator) -> None:
    forget = per_sample_loss(*fake_outputs(rng, 300, margin=1.0))
    test = per_sample_loss(*fake_outputs(rng, 900, margin=1.0))
    mean, std = mia_loss_lr(forget, test, seed=0)
    assert abs(mean - 0.5) < 0.1
    assert 0.0 <= std < 0.1


def test_mia_loss_lr_high_when_separable(rng: np.random.Generator) -> None:
    forget = per_sample_loss(*fake_outputs(rng, 200, margin=12.0))  # memorised: loss ~ 0
    test = per_sample_loss(*fake_outputs(rng, 200, margin=-3.0))  # unseen: high loss
    mean, _ = mia_loss_lr(forget, test, seed=0)
    assert mean > 0.8


def test_mia_loss_lr_deterministic_and_guards_tiny_groups(rng: np.random.Generator) -> None:
    forget = per_sample_loss(*fake_outputs(rng, 100, margin=2.0))
    test = per_sample_loss(*fake_outputs(rng, 400, margin=1.0))
    assert mia_loss_lr(forget, test, seed=7) == mia_loss_lr(forget, test, seed=7)
    assert all(math.isnan(v) for v in mia_loss_lr(forget[:4], test, seed=0))
    assert all(math.isnan(v) for v in mia_loss_lr(np.array([]), test, seed=0))


# ---- MIA: SalUn SVC efficacy ----------------------------------------------------------------


def test_mia_svc_efficacy_follows_what_the_forget_set_looks_like(rng: np.random.Generator) -> None:
    retain = fake_outputs(rng, 300, margin=10.0)  # members: confident
    test = fake_outputs(rng, 300, margin=0.0)  # non-members: unsure
    like_test = fake_outputs(rng, 200, margin=0.0)
    like_retain = fake_outputs(rng, 200, margin=10.0)
    high = mia_svc_efficacy(*retain, *test, *like_test, seed=0)
    low = mia_svc_efficacy(*retain, *test, *like_retain, seed=0)
    assert high > 0.8
    assert low < 0.2
    assert high == mia_svc_efficacy(*retain, *test, *like_test, seed=0)


def test_mia_svc_efficacy_nan_when_undefined(rng: np.random.Generator) -> None:
    retain, test = fake_outputs(rng, 50, margin=5.0), fake_outputs(rng, 50, margin=0.0)
    assert math.isnan(mia_svc_efficacy(*retain, *test, np.zeros((0, K)), np.zeros(0, int)))
    tiny = fake_outputs(rng, 3, margin=0.0)
    assert math.isnan(mia_svc_efficacy(*retain, *tiny, *test))


# ---- MIA: membership AUC (D_f vs T_f) -------------------------------------------------------


def test_mia_membership_auc_chance_and_separable(rng: np.random.Generator) -> None:
    same = mia_membership_auc(*fake_outputs(rng, 400, 1.0), *fake_outputs(rng, 150, 1.0))
    assert abs(same - 0.5) < 0.1
    separable = mia_membership_auc(*fake_outputs(rng, 200, 12.0), *fake_outputs(rng, 60, -3.0))
    assert separable > 0.9


def test_mia_membership_auc_deterministic_and_nan_without_t_f(rng: np.random.Generator) -> None:
    members, nonmembers = fake_outputs(rng, 200, 3.0), fake_outputs(rng, 80, 1.0)
    first = mia_membership_auc(*members, *nonmembers, seed=3)
    assert first == mia_membership_auc(*members, *nonmembers, seed=3)
    assert math.isnan(mia_membership_auc(*members, np.zeros((0, K)), np.zeros(0, int)))


def test_attacks_survive_a_diverged_model(rng: np.random.Generator) -> None:
    members, nonmembers = fake_outputs(rng, 50, 3.0), fake_outputs(rng, 50, 1.0)
    members[0][0, 0] = np.nan
    assert math.isnan(mia_membership_auc(*members, *nonmembers))
    assert math.isnan(mia_loss_lr(per_sample_loss(*members), per_sample_loss(*nonmembers))[0])


# ---- comparisons ----------------------------------------------------------------------------


def test_distance_to_retrain_worked_examples() -> None:
    # Boundary Shrink on CIFAR-10 from docs/method.md: R .837, F .089 vs retrain R .899, F 0.
    assert distance_to_retrain(0.837, 0.089, 0.899, 0.0) == pytest.approx(0.1085, abs=1e-4)
    assert distance_to_retrain(0.9, 0.3, 0.6, 0.7) == pytest.approx(0.5)  # 3-4-5 triangle
    assert math.isnan(distance_to_retrain(0.9, math.nan, 0.9, 0.0))


def test_avg_gap() -> None:
    keys = ("forget_train_acc", "remain_train_acc", "remain_test_acc", "mia_svc_efficacy")
    block = dict(zip(keys, (0.2, 0.9, 0.8, 0.7)))
    retrain = dict(zip(keys, (0.0, 1.0, 0.85, 0.9)))
    # |UA| .2, |RA| .1, |TA| .05, |MIA| .2
    assert avg_gap(block, retrain) == pytest.approx(0.1375)
    assert avg_gap(retrain, retrain) == 0.0
    assert math.isnan(avg_gap({**block, "mia_svc_efficacy": math.nan}, retrain))


def test_is_collapsed_both_ways() -> None:
    original = {"remain_test_acc": 0.90}
    assert is_collapsed(original, {"remain_test_acc": 0.75})
    assert not is_collapsed(original, {"remain_test_acc": 0.85})
    assert is_collapsed(original, {"remain_test_acc": 0.85}, max_remain_drop=0.02)
    assert not is_collapsed(original, {"remain_test_acc": math.nan})
    with pytest.raises(UserError):
        is_collapsed(original, original, max_remain_drop=5)


# ---- metric_block ---------------------------------------------------------------------------


def make_outputs(rng: np.random.Generator, n_forget_test: int = 40) -> SplitOutputs:
    return SplitOutputs(
        *fake_outputs(rng, 80, 6.0),
        *fake_outputs(rng, 200, 6.0),
        *fake_outputs(rng, n_forget_test, 1.0),
        *fake_outputs(rng, 120, 2.0),
    )


BLOCK_KEYS = {
    "forget_train_acc", "remain_train_acc", "forget_test_acc", "remain_test_acc", "test_acc",
    "per_class_test_acc", "mia_loss_lr", "mia_loss_lr_std", "mia_svc_efficacy",
    "mia_membership_auc",
    "n_forget_train", "n_remain_train", "n_forget_test", "n_remain_test",
}


def test_metric_block_keys_values_and_json(rng: np.random.Generator) -> None:
    out = make_outputs(rng)
    block = metric_block(out, num_classes=K, seed=0)
    assert set(block) == BLOCK_KEYS
    test_logits = np.concatenate([out.forget_test_logits, out.remain_test_logits])
    test_labels = np.concatenate([out.forget_test_labels, out.remain_test_labels])
    assert block["test_acc"] == pytest.approx(accuracy(test_logits, test_labels))
    assert (block["n_forget_train"], block["n_forget_test"]) == (80, 40)
    assert len(block["per_class_test_acc"]) == K
    for key, value in block.items():
        expected = list if key == "per_class_test_acc" else int if key.startswith("n_") else float
        assert type(value) is expected, key
    assert json.loads(json.dumps(block, allow_nan=True)).keys() == block.keys()
    # determinism: the same seed gives identical numbers
    assert json.dumps(metric_block(out, num_classes=K, seed=0)) == json.dumps(block)


def test_metric_block_with_empty_forget_test(rng: np.random.Generator) -> None:
    block = metric_block(make_outputs(rng, n_forget_test=0), num_classes=K)
    assert math.isnan(block["forget_test_acc"]) and math.isnan(block["mia_membership_auc"])
    assert not math.isnan(block["test_acc"]) and not math.isnan(block["mia_svc_efficacy"])
    json.dumps(block, allow_nan=True)


def test_every_reported_metric_has_a_definition() -> None:
    assert BLOCK_KEYS | {"distance_to_retrain", "avg_gap", "collapsed"} <= set(METRIC_DEFINITIONS)
    assert all(len(text) > 40 for text in METRIC_DEFINITIONS.values())
