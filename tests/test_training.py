"""Training the original model and the retrain reference."""

from __future__ import annotations

import numpy as np
import pytest

from unlearn_core.data.builtin import load_builtin
from unlearn_core.progress import Cancelled
from unlearn_core.training import TrainConfig, accuracy_on, train_model
from unlearn_core.errors import UserError


@pytest.fixture(scope="module")
def digits():
    return load_builtin("digits")


def test_training_learns_and_reports_progress(digits):
    events = []
    subset = digits.train_indices[:600]
    result = train_model(digits, subset, TrainConfig(epochs=3, batch_size=16, seed=1), on_progress=events.append)
    assert result.test_acc > 0.8, "three epochs on 600 digits should already classify most test digits"
    assert len(result.history) == 3 and result.history[-1]["loss"] < result.history[0]["loss"]
    assert events[-1].fraction == pytest.approx(1.0) and events[-1].epoch == 3
    assert result.seconds > 0


def test_training_is_reproducible_with_a_seed(digits):
    subset = digits.train_indices[:200]
    a = train_model(digits, subset, TrainConfig(epochs=1, seed=3))
    b = train_model(digits, subset, TrainConfig(epochs=1, seed=3))
    for key, tensor in a.model.state_dict().items():
        assert (tensor == b.model.state_dict()[key]).all(), key


def test_retrain_reference_never_sees_the_forget_class(digits):
    labels = digits.labels.numpy()
    remain = digits.train_indices[labels[digits.train_indices] != 3][:700]
    result = train_model(digits, remain, TrainConfig(epochs=3, batch_size=16, seed=0), phase="retrain")
    threes = digits.test_indices[labels[digits.test_indices] == 3]
    others = digits.test_indices[labels[digits.test_indices] != 3]
    assert accuracy_on(result.model, digits, threes) == 0.0
    assert accuracy_on(result.model, digits, others) > 0.8


def test_cancel_stops_training_promptly(digits):
    calls = []

    def should_stop():
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(Cancelled):
        train_model(digits, digits.train_indices, TrainConfig(epochs=50), should_stop=should_stop)
    assert len(calls) == 4


def test_bad_training_requests(digits):
    with pytest.raises(UserError, match="empty"):
        train_model(digits, np.array([], dtype=np.int64), TrainConfig())
    with pytest.raises(UserError, match="epochs"):
        train_model(digits, digits.train_indices, TrainConfig(epochs=0))
