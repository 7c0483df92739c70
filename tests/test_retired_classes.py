"""A class the forget set takes whole is retired at the end of a PSG run (``methods/retired_classes.py``).

What must hold: the model no longer names the class, fine-tuning on kept images cannot bring it
back (as with a retrain, which never saw it), nothing else about the run changes, and criteria
that leave every class some kept images change nothing at all.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fixtures_small import tiny_digits, tiny_model, tiny_split
from unlearn_core.forgetting_checks import RelearnConfig, relearn
from unlearn_core.methods import get_method
from unlearn_core.methods.base import UnlearnData
from unlearn_core.methods.retired_classes import (
    classes_without_kept_images, retirement_bias, whole_classes_only,
)
from unlearn_core.models.architectures import Classifier
from unlearn_core.models.inference import predict_logits, to_pixels

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: A short fixed run: the retiring step is what differs between the runs compared here.
SHORT_RUN = {"device": "cpu", "batch_size": 32, "epochs": 2, "stop_at": "passes"}


def run_psg(criteria: str, retire: bool, **settings) -> tuple[Classifier, dict, UnlearnData]:
    data = UnlearnData(tiny_digits(), tiny_split(criteria))
    method = get_method("psg")
    config = method.make_config({**SHORT_RUN, **settings, "retire_empty_classes": retire})
    result = method.run(tiny_model(), data, config)
    return result.model, result.diagnostics, data


def predictions(model: Classifier, data: UnlearnData, indices: np.ndarray) -> np.ndarray:
    return predict_logits(model, data.imageset.images, indices).argmax(1)


def test_classes_without_kept_images_come_from_the_data():
    data = tiny_digits()
    labels = data.labels
    whole_three, some_threes = tiny_split('label == "3"'), tiny_split("fraction(0.3, seed=0)")
    assert classes_without_kept_images(labels, whole_three.forget_train, whole_three.remain_train) == [3]
    assert classes_without_kept_images(labels, some_threes.forget_train, some_threes.remain_train) == []
    two = tiny_split('label in ("1", "3")')
    assert classes_without_kept_images(labels.numpy(), two.forget_train, two.remain_train) == [1, 3]
    assert whole_classes_only(labels, whole_three.forget_train,
                              classes_without_kept_images(labels, whole_three.forget_train, whole_three.remain_train))
    assert whole_classes_only(labels, two.forget_train, [1, 3])
    # all of class 3 and a few 2s: 3 is retired, but the 2s still need the hold check
    twos = np.flatnonzero(labels.numpy() == 2)
    some_twos = np.intersect1d(twos, whole_three.remain_train)[:5]
    mixed_forget = np.union1d(whole_three.forget_train, some_twos)
    mixed_remain = np.setdiff1d(whole_three.remain_train, some_twos)
    assert classes_without_kept_images(labels, mixed_forget, mixed_remain) == [3]
    assert not whole_classes_only(labels, mixed_forget, [3])
    assert not whole_classes_only(labels, some_threes.forget_train, [])


def test_a_class_forgotten_whole_is_never_named_again_even_after_relearning():
    model, diagnostics, data = run_psg('label == "3"', retire=True)
    assert diagnostics["retired_classes"] == ["3"]
    assert torch.count_nonzero(model.head.weight[3]) == 0
    assert float(model.head.bias[3].detach()) == pytest.approx(diagnostics["retired_class_bias"])
    split = data.split
    everything = np.concatenate([split.forget_test, split.remain_test, split.forget_train])
    assert (predictions(model, data, everything) != 3).all()


def test_retiring_holds_where_thin_forgetting_comes_back():
    """One gentle pass forgets a thin layer that fine-tuning on kept images undoes; a retired class stays gone."""
    thin = {"epochs": 1, "lr": 3e-3}
    split = tiny_split('label == "3"')

    def relearned_threes(retire: bool) -> int:
        model, _, data = run_psg('label == "3"', retire=retire, **thin)
        # Ordinary fine-tuning on kept images, longer and stronger than the benchmark's check.
        relearned = relearn(model, data.imageset, split.remain_train, recipe_lr=0.05,
                            config=RelearnConfig(steps=80, batch_size=32, lr_scale=0.2))
        return int((predictions(relearned, data, split.forget_test) == 3).sum())

    assert relearned_threes(retire=False) > 0  # the check has teeth: without retiring, threes come back
    assert relearned_threes(retire=True) == 0


def test_retiring_changes_only_the_retired_rows():
    retired, with_diagnostics, data = run_psg('label == "3"', retire=True)
    kept, without_diagnostics, _ = run_psg('label == "3"', retire=False)
    assert "retired_classes" not in without_diagnostics
    assert torch.count_nonzero(kept.head.weight[3]) > 0
    others = [k for k in range(len(data.imageset.classes)) if k != 3]
    assert torch.equal(retired.head.weight[others], kept.head.weight[others])
    assert torch.equal(retired.head.bias[others], kept.head.bias[others])
    for (name, a), (_, b) in zip(retired.body.state_dict().items(), kept.body.state_dict().items()):
        assert torch.equal(a, b), name


def test_criteria_that_leave_every_class_kept_images_retire_nothing():
    _, diagnostics, _ = run_psg("fraction(0.2, seed=0)", retire=True)
    assert "retired_classes" not in diagnostics


def test_the_bias_sits_below_what_kept_images_score_for_the_other_classes():
    model, data = tiny_model(), UnlearnData(tiny_digits(), tiny_split('label == "3"'))
    kept = to_pixels(data.imageset.images[data.split.remain_train[:200]], torch.device("cpu"))
    bias = retirement_bias(model, kept, [3])
    with torch.inference_mode():
        logits = model(kept)
    best_other = logits[:, [0, 1, 2]].max(dim=1).values
    assert (best_other > bias).all()
    assert model.training is False  # the model's mode is left as it was
