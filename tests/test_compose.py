"""Composition: exact tensor bookkeeping of head swap, block choice, interpolation and task sums;
BatchNorm recalibration against statistics computed by hand; repair; scored candidates.

Small models on real digits; the "unlearned" runs are made by editing the head, so what they
forget is known exactly and the tests run in seconds."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from unlearn_core.compose import (
    CompositionConfig,
    blockwise,
    check_compatible,
    compose_candidates,
    head_swap,
    interpolate,
    recalibrate_batchnorm,
    repair,
    task_sum,
    union_split,
)
from unlearn_core.data.builtin import load_builtin
from unlearn_core.data.criteria import ForgetCriteria, ForgetSplit, split_sets
from unlearn_core.errors import UserError
from unlearn_core.evaluate import evaluate_model
from unlearn_core.models.architectures import ModelSpec, build_model, spec_for
from unlearn_core.models.inference import predict_logits, to_pixels
from unlearn_core.progress import Cancelled
from unlearn_core.training import TrainConfig, train_model


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data():
    return load_builtin("digits")


def _small(split: ForgetSplit, sizes=(60, 240, 30, 120)) -> ForgetSplit:
    """The first few indices of each set, so every evaluation is a few hundred images."""
    keys = ("forget_train", "remain_train", "forget_test", "remain_test")
    return ForgetSplit(**{key: getattr(split, key)[:n] for key, n in zip(keys, sizes)})


@pytest.fixture(scope="module")
def split(data) -> ForgetSplit:
    return _small(split_sets(data, ForgetCriteria.parse("label == 3")))


@pytest.fixture(scope="module")
def original(data):
    """Briefly trained (about 70 % test accuracy): good enough to see damage and repair."""
    train = np.random.default_rng(0).choice(data.train_indices, 300, replace=False)
    config = TrainConfig(epochs=3, batch_size=16, lr=0.05, seed=0, device="cpu")
    return train_model(data, train, config).model.eval()


def forgetting(model, cls: int):
    """A run that 'forgot' class ``cls``: same body, that class's logit pushed far down."""
    run = copy.deepcopy(model)
    with torch.no_grad():
        run.head.bias[cls] -= 100.0
    return run


def random_model(data, seed: int):
    """An untrained model with every buffer set to distinct values (running stats and counters),
    so equality checks on buffers can fail."""
    torch.manual_seed(seed)
    model = build_model(spec_for(data)).eval()
    generator = torch.Generator().manual_seed(seed)
    for name, buffer in model.named_buffers():
        if name.endswith("running_mean"):
            buffer.copy_(torch.randn(buffer.shape, generator=generator))
        elif name.endswith("running_var"):
            buffer.copy_(torch.rand(buffer.shape, generator=generator) + 0.5)
        elif name.endswith("num_batches_tracked"):
            buffer.fill_(100 + seed)
    return model


def snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_state_equal(model, expected: dict[str, torch.Tensor], keys=None) -> None:
    state = model.state_dict()
    for key in keys if keys is not None else expected:
        assert torch.equal(state[key], expected[key]), key


def mean_loss(model, data, indices) -> float:
    logits = torch.from_numpy(predict_logits(model, data.images, indices))
    return float(torch.nn.functional.cross_entropy(logits, data.labels[indices]))


def accuracy(model, data, indices) -> float:
    return float((predict_logits(model, data.images, indices).argmax(1) == data.labels.numpy()[indices]).mean())


# --- weight bookkeeping --------------------------------------------------------------------
def test_head_swap_takes_body_from_a_and_head_from_b_exactly(data):
    a, b = random_model(data, 1), random_model(data, 2)
    before_a, before_b = snapshot(a), snapshot(b)
    swapped = head_swap(a, b)
    for key, value in swapped.state_dict().items():
        source = before_b if key.startswith("head.") else before_a
        assert torch.equal(value, source[key]), key
    assert any(not torch.equal(before_a[k], before_b[k]) for k in before_a if k.startswith("head."))
    assert_state_equal(a, before_a)
    assert_state_equal(b, before_b)
    with torch.no_grad():
        swapped.head.weight.add_(1.0)
        swapped.body.block1[0][0].weight.add_(1.0)
    assert_state_equal(a, before_a)
    assert_state_equal(b, before_b)


def test_blockwise_takes_each_block_from_its_chosen_model(data):
    models = [random_model(data, seed) for seed in (1, 2, 3)]
    states = [snapshot(m) for m in models]
    choice = {"body.block2": 1, "head": 2}
    merged = blockwise(models, choice).state_dict()
    expected_source = {"body.block1": 0, "body.block2": 1, "body.block3": 0, "head": 2}
    for key, value in merged.items():
        block = next((b for b in expected_source if key.startswith(b + ".")), None)
        source = expected_source[block] if block else 0
        assert torch.equal(value, states[source][key]), key
    for model, state in zip(models, states):
        assert_state_equal(model, state)


def test_blockwise_rejects_unknown_blocks_and_sources(data):
    models = [random_model(data, 1), random_model(data, 2)]
    with pytest.raises(UserError, match="body.block9.*blocks are body.block1"):
        blockwise(models, {"body.block9": 1})
    with pytest.raises(UserError, match="only 2 models"):
        blockwise(models, {"head": 2})


def test_interpolation_endpoints_reproduce_the_inputs_exactly(data):
    a, b = random_model(data, 1), random_model(data, 2)
    assert_state_equal(interpolate(a, b, 0.0), snapshot(a))
    assert_state_equal(interpolate(a, b, 1.0), snapshot(b))


def test_interpolation_mixes_weights_and_running_stats(data):
    a, b = random_model(data, 1), random_model(data, 2)
    sa, sb = snapshot(a), snapshot(b)
    mixed = interpolate(a, b, 0.25).state_dict()
    for key, value in mixed.items():
        if value.is_floating_point():
            torch.testing.assert_close(value, 0.75 * sa[key] + 0.25 * sb[key], rtol=0, atol=1e-6)
        else:
            assert torch.equal(value, sa[key]), f"{key}: counters come from A"
    assert not torch.equal(mixed["body.block1.0.1.running_mean"], sa["body.block1.0.1.running_mean"])
    with pytest.raises(UserError, match="finite"):
        interpolate(a, b, float("nan"))


def test_task_sum_of_one_run_is_that_run(data):
    base, run = random_model(data, 1), random_model(data, 2)
    assert_state_equal(task_sum(base, [run], scale=1.0), snapshot(run))


def test_task_sum_of_two_runs_adds_both_changes(data):
    base, run1, run2 = (random_model(data, seed) for seed in (1, 2, 3))
    s0, s1, s2 = snapshot(base), snapshot(run1), snapshot(run2)
    combined = task_sum(base, [run1, run2], scale=0.5).state_dict()
    for key, value in combined.items():
        if not value.is_floating_point():
            continue
        expected = s0[key] + 0.5 * ((s1[key] - s0[key]) + (s2[key] - s0[key]))
        if key.endswith("running_var"):
            expected = expected.clamp(min=0)
        torch.testing.assert_close(value, expected, rtol=0, atol=1e-5)


def test_task_sum_clips_variances_that_the_sum_makes_negative(data):
    base, run1, run2 = (random_model(data, seed) for seed in (1, 2, 3))
    key = "body.block1.0.1.running_var"
    with torch.no_grad():
        base.state_dict()[key].fill_(1.0)
        run1.state_dict()[key].fill_(0.1)
        run2.state_dict()[key].fill_(0.1)
    assert torch.all(task_sum(base, [run1, run2]).state_dict()[key] == 0)


# --- compatibility -------------------------------------------------------------------------
def test_different_architectures_are_refused_with_what_differs(data):
    spec = spec_for(data)
    other = ModelSpec(**{**spec.to_dict(), "num_classes": 3})
    with pytest.raises(UserError, match=r"num_classes \(10 vs 3\)"):
        check_compatible([build_model(spec), build_model(other)], names=["run a", "run b"])
    with pytest.raises(UserError, match="num_classes"):
        head_swap(build_model(spec), build_model(other))
    renormalized = ModelSpec(**{**spec.to_dict(), "mean": (0.5,)})
    with pytest.raises(UserError, match="normalization"):
        interpolate(build_model(spec), build_model(renormalized), 0.5)


def test_different_original_models_are_refused(data):
    models = [random_model(data, 1), random_model(data, 2)]
    check_compatible(models, ["abc", "abc"])
    with pytest.raises(UserError, match="different original models.*run 1: abc.*run 2: def"):
        check_compatible(models, ["abc", "def"], names=["run 1", "run 2"])


# --- BatchNorm recalibration ---------------------------------------------------------------
def _first_bn_input(model, data, indices) -> torch.Tensor:
    """What the first BatchNorm sees: the first convolution of the normalized images."""
    with torch.no_grad():
        pixels = model.normalize(to_pixels(data.images[indices], torch.device("cpu")))
        return model.body.block1[0][0](pixels)


def test_recalibration_recovers_the_datas_statistics(data, original, split):
    damaged = copy.deepcopy(original)
    bn = damaged.body.block1[0][1]
    with torch.no_grad():
        bn.running_mean.fill_(5.0)
        bn.running_var.fill_(9.0)
    weights = {k: v.clone() for k, v in damaged.named_parameters()}
    remain = split.remain_train
    activations = _first_bn_input(original, data, remain)
    true_mean = activations.mean(dim=(0, 2, 3))
    true_var = activations.transpose(0, 1).reshape(activations.shape[1], -1).var(dim=1, unbiased=True)

    fixed = recalibrate_batchnorm(damaged, data, remain, batches=1, batch_size=len(remain))
    fixed_bn = fixed.body.block1[0][1]
    torch.testing.assert_close(fixed_bn.running_mean, true_mean, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(fixed_bn.running_var, true_var, rtol=1e-4, atol=1e-4)
    assert float(bn.running_mean[0]) == 5.0, "input untouched"
    for name, value in fixed.named_parameters():
        assert torch.equal(value, weights[name]), name
    assert fixed_bn.momentum == bn.momentum and not fixed.training
    assert accuracy(fixed, data, split.remain_test) > accuracy(damaged, data, split.remain_test) + 0.2


def test_recalibration_over_equal_batches_averages_their_means(data, original, split):
    remain = split.remain_train  # 240 images: three batches of 80
    fixed = recalibrate_batchnorm(original, data, remain, batches=3, batch_size=80, seed=1)
    true_mean = _first_bn_input(original, data, remain).mean(dim=(0, 2, 3))
    torch.testing.assert_close(fixed.body.block1[0][1].running_mean, true_mean, rtol=1e-4, atol=1e-4)


# --- repair --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def damaged(original):
    """The original with a freshly initialized head: the body still knows digits."""
    model = copy.deepcopy(original)
    torch.manual_seed(5)
    model.head.reset_parameters()
    return model


def test_repair_lowers_remain_loss_and_reports_progress(data, damaged, split):
    before = snapshot(damaged)
    events = []
    fixed = repair(damaged, data, split.remain_train, epochs=2, lr=1e-3, batch_size=32, on_progress=events.append)
    assert mean_loss(fixed, data, split.remain_train) < mean_loss(damaged, data, split.remain_train) - 0.1
    assert accuracy(fixed, data, split.remain_test) > accuracy(damaged, data, split.remain_test)
    assert_state_equal(damaged, before)
    assert len(events) == 2 * 8 and {e.phase for e in events} == {"repair"}
    assert events[-1].fraction == 1.0 and events[-1].epoch == 2
    assert not torch.equal(fixed.body.block1[0][0].weight, damaged.body.block1[0][0].weight)


def test_head_only_repair_leaves_the_body_unchanged(data, damaged, split):
    fixed = repair(damaged, data, split.remain_train, epochs=2, lr=1e-3, batch_size=32, head_only=True)
    body = [k for k in damaged.state_dict() if k.startswith("body.")]
    assert_state_equal(fixed, snapshot(damaged), keys=body)
    assert not torch.equal(fixed.head.weight, damaged.head.weight)
    assert mean_loss(fixed, data, split.remain_train) < mean_loss(damaged, data, split.remain_train) - 0.1
    assert all(p.requires_grad for p in fixed.parameters())


def test_repair_stops_when_asked(data, damaged, split):
    calls = iter(range(100))
    with pytest.raises(Cancelled):
        repair(damaged, data, split.remain_train, epochs=2, should_stop=lambda: next(calls) >= 2)


# --- candidates ----------------------------------------------------------------------------
def test_interpolation_sweep_gives_one_scored_candidate_per_alpha(data, original, split):
    unlearned = forgetting(original, 3)
    before = snapshot(original)
    config = CompositionConfig(strategy="interpolate", alphas=(0.0, 0.5, 1.0), recalibrate_bn=False)
    events = []
    candidates = compose_candidates(config, original, [original, unlearned], data, split, on_progress=events.append)
    assert [c.label for c in candidates] == ["α=0", "α=0.5", "α=1"]
    assert [c.params["alpha"] for c in candidates] == [0.0, 0.5, 1.0]
    reference = evaluate_model(original, data, split)
    assert candidates[0].metrics["forget_test_acc"] == reference["forget_test_acc"]
    assert candidates[0].metrics["remain_test_acc"] == reference["remain_test_acc"]
    assert reference["forget_test_acc"] > 0.0 and candidates[2].metrics["forget_test_acc"] == 0.0
    assert_state_equal(original, before)
    fractions = [e.fraction for e in events]
    assert fractions == sorted(fractions) and events[-1].phase == "done"


def test_candidates_are_recalibrated_and_repaired_when_asked(data, original, split):
    config = CompositionConfig(strategy="head_swap", recalibrate_bn=True, repair_epochs=1,
                               repair_head_only=True, repair_lr=1e-3)
    events = []
    (candidate,) = compose_candidates(config, original, [original, forgetting(original, 3)], data, split,
                                      on_progress=events.append)
    assert candidate.params["strategy"] == "head_swap" and candidate.params["repair_epochs"] == 1
    assert {"compose", "repair", "done"} <= {e.phase for e in events}
    assert not torch.equal(candidate.model.head.weight, original.head.weight)
    assert not torch.equal(candidate.model.body.block1[0][1].running_mean, original.body.block1[0][1].running_mean)


def test_blockwise_candidate_names_its_sources(data, original, split):
    config = CompositionConfig(strategy="blockwise", block_choice={"head": 1}, recalibrate_bn=False)
    (candidate,) = compose_candidates(config, original, [original, forgetting(original, 3)], data, split)
    assert candidate.label == "blocks: head←1" and candidate.params["block_choice"] == {"head": 1}
    assert candidate.metrics["forget_test_acc"] == 0.0


def test_task_sum_of_runs_with_different_forget_sets_reports_each(data, original, split):
    other = _small(split_sets(data, ForgetCriteria.parse("label == 5")))
    union = union_split([split, other])
    config = CompositionConfig(strategy="task_sum", scales=(1.0,), recalibrate_bn=False)
    (candidate,) = compose_candidates(config, original, [forgetting(original, 3), forgetting(original, 5)],
                                      data, union, forget_splits=[split, other])
    metrics = candidate.metrics
    assert candidate.label == "scale=1"
    assert metrics["forget_test_acc_run0"] == 0.0 and metrics["forget_test_acc_run1"] == 0.0
    assert metrics["forget_test_acc"] == 0.0
    assert metrics["remain_test_acc"] > 0.3


def test_union_split_unites_forget_sets_and_intersects_remain_sets():
    a = ForgetSplit(np.array([1, 2]), np.array([3, 4, 5]), np.array([10]), np.array([11, 12]))
    b = ForgetSplit(np.array([4]), np.array([1, 2, 3, 5]), np.array([12]), np.array([10, 11]))
    union = union_split([a, b])
    assert union.forget_train.tolist() == [1, 2, 4] and union.remain_train.tolist() == [3, 5]
    assert union.forget_test.tolist() == [10, 12] and union.remain_test.tolist() == [11]


def test_configs_validate_and_round_trip(data, original, split):
    config = CompositionConfig(strategy="blockwise", block_choice={"head": 1}, seed=3)
    assert CompositionConfig.from_dict(config.to_dict()) == config
    models = [original, forgetting(original, 3), forgetting(original, 5)]
    with pytest.raises(UserError, match="interpolate needs exactly 2"):
        compose_candidates(CompositionConfig(strategy="interpolate"), original, models, data, split)
    with pytest.raises(UserError, match="Unknown composition strategy"):
        compose_candidates(CompositionConfig(strategy="average"), original, models, data, split)
    with pytest.raises(UserError, match="needs the original"):
        compose_candidates(CompositionConfig(strategy="task_sum"), None, models, data, split)
    with pytest.raises(Cancelled):
        compose_candidates(CompositionConfig(strategy="blockwise"), original, models, data, split,
                           should_stop=lambda: True)
