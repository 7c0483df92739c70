"""The retrain-free stop target and the stop rules built on it (unlearn_core.stop_target, methods.stopping)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from fixtures_small import tiny_digits, tiny_model, tiny_split
from unlearn_core.methods import get_method
from unlearn_core.methods.base import UnlearnData, load_pixels
from unlearn_core.methods.stopping import (
    HOLD_TOLERANCE, AccuracyStop, HoldProbe, MembershipStop, StopRule, make_hold_probe, make_stop_rule,
    normalized_by_kept_images, unseen_indices,
)
from unlearn_core.models.batchnorm import reestimate_statistics
from unlearn_core.models.inference import predict_logits
from unlearn_core.stop_target import ESTIMATORS, estimate_all, estimate_stop_target


def data_for(criteria: str) -> UnlearnData:
    return UnlearnData(tiny_digits(), tiny_split(criteria))


def pixel_loader(data: UnlearnData, device: torch.device):
    """``indices -> (pixels, labels)`` on ``device``: what the stop rules load their samples with."""
    return lambda indices: load_pixels(data, indices, device)


def accuracy(net, data: UnlearnData, indices: np.ndarray) -> float:
    labels = data.imageset.labels.numpy()[indices]
    return float((predict_logits(net, data.imageset.images, indices).argmax(1) == labels).mean())


@pytest.fixture(autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_a_whole_class_is_estimated_as_forgotten():
    target = estimate_stop_target(tiny_model(), data_for('label == "3"'))
    assert target.value <= 0.1, target
    assert target.original_forget_acc >= 0.9
    assert not target.keep_case
    assert "kept images" in target.explanation and f"{target.value:.0%}" in target.explanation


def test_a_random_share_is_a_keep_case():
    target = estimate_stop_target(tiny_model(), data_for("fraction(0.1, seed=0)"))
    assert target.keep_case, target
    assert target.value >= target.original_forget_acc - 0.05
    assert "membership" not in target.explanation  # plain words for the dashboard
    assert "would still recognize them" in target.explanation


def test_every_estimator_returns_an_accuracy_and_is_seeded():
    model, data = tiny_model(), data_for('label == "3"')
    first = estimate_all(model, data.imageset, data.split, seed=0)
    assert set(first) == {*ESTIMATORS, "original"}
    assert all(0.0 <= value <= 1.0 for value in first.values())
    assert estimate_all(model, data.imageset, data.split, seed=0) == first


def test_the_estimate_leaves_the_model_and_torch_seed_alone():
    model = tiny_model()
    before = copy.deepcopy(model.state_dict())
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    estimate_stop_target(model, data_for('label == "3"'))
    assert torch.equal(torch.rand(3), expected)
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())


def test_stop_rules_follow_the_config():
    method = get_method("psg")
    model, data = tiny_model(), data_for('label == "3"')
    device = torch.device("cpu")
    loader = pixel_loader(data, device)
    assert type(make_stop_rule(method.make_config({"stop_at": "passes"}), model, data, device, loader)) is StopRule
    fixed = make_stop_rule(method.make_config({"stop_at": "target", "target_forget_acc": 0.3}), model, data, device,
                           loader)
    assert isinstance(fixed, AccuracyStop) and fixed.value == 0.3 and fixed.target is None
    auto = make_stop_rule(method.make_config({}), model, data, device, loader)
    assert isinstance(auto, AccuracyStop) and auto.target is not None and auto.value == auto.target.value
    share = data_for("fraction(0.1, seed=0)")
    keep = make_stop_rule(method.make_config({}), model, share, device, pixel_loader(share, device))
    assert isinstance(keep, MembershipStop)


def test_membership_stop_compares_forget_and_unseen_losses():
    model, data = tiny_model(), data_for("fraction(0.1, seed=0)")
    device = torch.device("cpu")
    target = estimate_stop_target(model, data)
    forget = load_pixels(data, data.split.forget_train[:64], device)
    unseen = load_pixels(data, unseen_indices(data)[:64], device)
    rule = MembershipStop(target, *forget, *unseen)
    stop, accuracy = rule.should_stop(model, *forget)
    facts = rule.describe()
    assert facts["rule"] == "membership" and 0 <= accuracy <= 1
    assert stop == (facts["forget_median_loss"] >= facts["unseen_median_loss"]
                    or facts["forget_acc"] < facts["unseen_acc"])
    # Unseen images compared with themselves: their losses are equal, so the rule stops.
    assert MembershipStop(target, *unseen, *unseen).should_stop(model, *forget)[0]


def test_unseen_images_fall_back_to_test_images_of_the_forget_classes():
    data = data_for('label == "3"')
    labels = data.imageset.labels.numpy()
    assert np.array_equal(unseen_indices(data), data.split.forget_test)
    wider = unseen_indices(data, min_count=10**6)
    assert set(labels[wider]) == {3} and len(wider) == len(data.split.forget_test)


def test_kept_image_normalization_uses_only_the_kept_rows_and_updates_running_statistics():
    model = tiny_model().train()
    data = data_for('label == "3"')
    device = torch.device("cpu")
    forget, _ = load_pixels(data, data.split.forget_train[:16], device)
    kept, _ = load_pixels(data, data.split.remain_train[:32], device)
    layer = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = layer.running_mean.clone()
    with torch.no_grad(), normalized_by_kept_images(model, 16):
        mixed = model(torch.cat([forget, kept]))
    assert not torch.equal(layer.running_mean, before)  # kept images moved the statistics
    with torch.no_grad(), normalized_by_kept_images(model, 16):
        other = model(torch.cat([kept[:16], kept]))  # different first rows, same kept rows
    assert torch.allclose(mixed[16:], other[16:], atol=1e-5)  # the kept rows alone set the normalization
    assert "forward" not in vars(layer)  # the layer's own forward is back


def test_recalibration_reestimates_statistics_and_keeps_weights():
    model = tiny_model()
    data = data_for('label == "3"')
    device = torch.device("cpu")
    layer = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    layer.running_mean.add_(5.0)
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "tracked" not in k}
    batches = [load_pixels(data, data.split.remain_train[i : i + 64], device)[0] for i in range(0, 256, 64)]
    reestimate_statistics(model, iter(batches))
    assert layer.running_mean.abs().max() < 5.0 and layer.momentum == 0.1
    assert all(torch.equal(model.state_dict()[k], v) for k, v in weights.items())


def test_psg_auto_forgets_a_class_in_the_weights():
    """The default run forgets the class, keeps the rest, and the forgetting survives recalibration."""
    model, data = tiny_model(), data_for('label == "3"')
    method = get_method("psg")
    result = method.run(model, data, method.make_config({"device": "cpu", "batch_size": 32}))
    assert result.diagnostics["stop_target"]["value"] <= 0.1
    assert result.diagnostics["stop_rule"]["rule"] == "accuracy"
    forget_after = accuracy(result.model, data, data.split.forget_test)
    assert forget_after <= 0.2
    remain_before = accuracy(model, data, data.split.remain_test)
    assert accuracy(result.model, data, data.split.remain_test) >= remain_before - 0.05
    from unlearn_core.compose import recalibrate_batchnorm

    recalibrated = recalibrate_batchnorm(result.model, data.imageset, data.split.remain_train)
    assert accuracy(recalibrated, data, data.split.forget_test) <= forget_after + 0.1


def test_hold_probe_refuses_a_stop_that_fine_tuning_undoes():
    """The original recognizes D_f: a probe whose fine-tuned copy still does must refuse, then wait a pass."""
    model, data = tiny_model(), data_for('label == "3"')
    device = torch.device("cpu")
    forget = load_pixels(data, data.split.forget_train[:64], device)
    batches = iter(range(10**6))

    def remain_batch():
        start = 32 * (next(batches) % 8)
        return load_pixels(data, data.split.remain_train[start : start + 32], device)

    before = copy.deepcopy(model.state_dict())
    probe = HoldProbe(0.0, *forget, remain_batch, steps=3, lr=1e-3, wait_steps=4)
    assert not probe.confirm(model, step=1)
    assert probe.probes[0] >= 0.9
    assert not probe.ready(4) and probe.ready(5)
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())
    relearned = probe.relearned  # the failed probe's fine-tuned copy, for the run to carry on from
    assert relearned is not None and relearned is not model
    assert any(not torch.equal(before[key], value) for key, value in relearned.state_dict().items())
    with torch.inference_mode():
        assert float((relearned(forget[0]).argmax(1) == forget[1]).float().mean()) == probe.probes[0]
    carried = copy.deepcopy(model)
    probe.carry_on_from_copy(carried)
    assert all(torch.equal(relearned.state_dict()[key], value) for key, value in carried.state_dict().items())
    assert probe.relearned is None and probe.adopted == 1
    lenient = HoldProbe(1.0, *forget, remain_batch, steps=3, lr=1e-3, wait_steps=4)
    assert lenient.confirm(model, step=1) and lenient.relearned is None
    no_copy = HoldProbe(0.0, *forget, remain_batch, steps=3, lr=1e-3, wait_steps=4, keep_copy=False)
    assert not no_copy.confirm(model, step=1) and no_copy.relearned is None  # nothing kept that nobody uses


@pytest.mark.parametrize("adopt", [True, False])
def test_psg_carries_on_from_a_failed_probes_copy_only_when_asked(adopt):
    """Every failed probe's copy is taken over with hold_check_adopt, none without it.

    A random share has nothing to forget that fine-tuning on the rest would not bring back, so
    with no remain loss (φ = 0) the run reaches the target and every probe fails.
    """
    model, data = tiny_model(), data_for("fraction(0.2, seed=0)")
    method = get_method("psg")
    result = method.run(model, data, method.make_config(
        {"device": "cpu", "batch_size": 32, "stop_at": "target", "target_forget_acc": 0.5, "phi": 0.0,
         "lr": 1e-2, "epochs": 6, "hold_check_steps": 20, "hold_check_lr": 0.05, "hold_check_adopt": adopt}))
    rule = result.diagnostics["stop_rule"]
    failed = sum(accuracy > 0.5 + HOLD_TOLERANCE for accuracy in rule["hold_probe_forget_acc"])
    assert failed > 0
    assert rule["hold_probe_adopted"] == (failed if adopt else 0)


def test_hold_probe_only_guards_accuracy_stops():
    method = get_method("psg")
    data = data_for('label == "3"')
    device = torch.device("cpu")
    loader = pixel_loader(data, device)
    remain = iter(lambda: data.split.remain_train[:32], None)
    config = method.make_config({"stop_at": "target", "target_forget_acc": 0.1})
    assert isinstance(make_hold_probe(config, AccuracyStop(0.1), data, device, loader, remain, 3), HoldProbe)
    off = method.make_config({"stop_at": "target", "hold_check_steps": 0})
    assert make_hold_probe(off, AccuracyStop(0.1), data, device, loader, remain, 3) is None
    assert make_hold_probe(config, StopRule(), data, device, loader, remain, 3) is None


@pytest.mark.parametrize("retire", [False, True])
def test_psg_auto_forgetting_survives_fine_tuning_on_kept_images(retire):
    """After the run, ordinary fine-tuning on D_r alone does not bring the class back: held by the
    hold check when the class is not retired, by retiring it (and no hold check) when it is."""
    from unlearn_core.forgetting_checks import RelearnConfig, relearn

    model, data = tiny_model(), data_for('label == "3"')
    method = get_method("psg")
    result = method.run(model, data, method.make_config({"device": "cpu", "batch_size": 32,
                                                         "retire_empty_classes": retire}))
    rule = result.diagnostics["stop_rule"]
    if retire:
        assert "hold_probe_forget_acc" not in rule and rule["hold_check"].startswith("skipped")
        assert result.diagnostics["retired_classes"] == ["3"]
    else:
        probes = rule["hold_probe_forget_acc"]
        assert probes and probes[-1] <= result.diagnostics["stop_target"]["value"] + HOLD_TOLERANCE
    relearned = relearn(result.model, data.imageset, data.split.remain_train, recipe_lr=0.05,
                        config=RelearnConfig(steps=20, batch_size=32))
    assert accuracy(relearned, data, data.split.forget_test) <= (0.0 if retire else 0.2)


def test_a_subgroup_of_a_class_keeps_the_hold_check():
    """Some images of the class are kept, so nothing is retired and the stop must still hold."""
    model, data = tiny_model(), data_for('label == "3" and fraction(0.6, seed=0)')
    method = get_method("psg")
    result = method.run(model, data, method.make_config({"device": "cpu", "batch_size": 32, "epochs": 4}))
    assert "retired_classes" not in result.diagnostics and "hold_check" not in result.diagnostics["stop_rule"]


def test_psg_auto_leaves_a_random_share_almost_as_it_was():
    model, data = tiny_model(), data_for("fraction(0.1, seed=0)")
    method = get_method("psg")
    result = method.run(model, data, method.make_config({"device": "cpu", "batch_size": 32}))
    assert result.diagnostics["stop_target"]["keep_case"]
    assert result.diagnostics["stop_rule"]["rule"] == "membership"
    forget_before = accuracy(model, data, data.split.forget_train)
    remain_before = accuracy(model, data, data.split.remain_test)
    assert accuracy(result.model, data, data.split.forget_train) >= forget_before - 0.05
    assert accuracy(result.model, data, data.split.remain_test) >= remain_before - 0.02


def test_baselines_that_run_in_passes_can_stop_early():
    model, data = tiny_model(), data_for('label == "3"')
    method = get_method("random_labels")
    assert method.make_config().stop_at == "passes"  # the published behaviour stays the default
    stopped = method.run(model, data, method.make_config({"device": "cpu", "epochs": 4, "stop_at": "target",
                                                          "target_forget_acc": 1.0}))
    assert len(stopped.history) == 1 and stopped.history[0]["stopped"]
    full = method.run(model, data, method.make_config({"device": "cpu", "epochs": 2}))
    assert len(full.history) == 2 and "stopped" not in full.history[-1]
