"""Speed work checked by counters, never by timings (timings live in ``bench`` and docs/performance.md).

Every method counts the images through its models' forwards and backwards, the live monitor
stays within its share of that work, PSG does no repeated work (one first-step search per
image, the whole forget set searched in large batches with ``relabel=once``), and the naive
copy of the published loop agrees with ``psg_reference`` on the new labels.
"""

from __future__ import annotations

import math

import numpy as np

import pytest
import torch

from tests.fixtures_small import tiny_digits, tiny_model, tiny_split
from unlearn_core.bench_reference import label_agreement, reference_loop
from unlearn_core.methods import psg as psg_module
from unlearn_core.methods.base import (
    MONITOR_MAX_PER_SIDE, MONITOR_SHARE, CostMeter, LiveMonitor, UnlearnData, get_method, list_methods,
)
from unlearn_core.methods.boundary_search import PerturbedSignGradient

CPU = torch.device("cpu")


def unlearn_data() -> UnlearnData:
    return UnlearnData(tiny_digits(), tiny_split())


#: One short run per method (one epoch, small batches where the default would be slow).
QUICK = {"epochs": 1, "device": "cpu"}


def quick_config(name: str):
    method = get_method(name)
    fields = {f.name for f in method.fields()}
    overrides = {k: v for k, v in QUICK.items() if k in fields}
    if name == "scrub":
        overrides["msteps"] = 1
    return method, method.make_config(overrides)


@pytest.fixture(scope="module")
def results():
    """Every registered method run once on the tiny digits (class 3 forgotten)."""
    out = {}
    for cls in list_methods():
        method, config = quick_config(cls.name)
        out[cls.name] = method.run(tiny_model(), unlearn_data(), config)
    return out


def test_every_method_counts_forward_and_backward_images(results):
    n_forget, n_remain = len(unlearn_data().forget_indices), len(unlearn_data().remain_indices)
    for name, result in results.items():
        d = result.diagnostics
        assert d["forward_images"] >= d["backward_images"] > 0, name
        assert d["forward_images"] >= min(n_forget, n_remain), name
    retrain = results["retrain"].diagnostics
    assert retrain["forward_images"] == retrain["backward_images"] == n_remain  # one epoch on D_r


def test_live_monitor_stays_within_its_share_of_the_work(results):
    for name, result in results.items():
        d = result.diagnostics
        work = d["forward_images"] + d["backward_images"]
        assert d["monitor_images"] <= MONITOR_SHARE * work, name
        assert d["monitor_images"] <= 2 * MONITOR_MAX_PER_SIDE * max(len(result.history), 1), name
        assert result.seconds >= d["monitor_seconds"]  # the reported time includes the monitoring


def test_monitor_waits_for_budget_and_takes_a_small_fixed_sample():
    data = unlearn_data()
    cost = CostMeter()
    monitor = LiveMonitor(data, CPU, cost, seed=0)
    assert monitor.measure(tiny_model()) == {} and cost.monitor_images == 0  # no work yet, no look
    cost.forward_images = cost.backward_images = 100_000
    first = monitor.measure(tiny_model())
    assert set(first) == {"forget_acc", "remain_acc"} and cost.monitor_images == 2 * MONITOR_MAX_PER_SIDE
    assert monitor.measure(tiny_model()) == first  # the same sample every time


def test_psg_reference_counts_match_the_work_it_should_do():
    """One first-step forward+backward per image for the whole run, then per pass one scoring
    forward of x* and one learner forward+backward per image; no remain batches (φ = 0)."""
    data = unlearn_data()
    n = len(data.forget_indices)
    method = get_method("psg")
    config = method.make_config({"device": "cpu", "epochs": 3}, preset="psg_reference")
    d = method.run(tiny_model(), data, config).diagnostics
    assert d["forward_images"] == n + 3 * n + 3 * n
    assert d["backward_images"] == n + 3 * n
    assert d["searched_images"] == d["trained_images"] == 3 * n


def test_relabel_once_searches_the_whole_forget_set_in_large_batches(monkeypatch):
    calls = []
    real = PerturbedSignGradient.__call__

    def spy(self, model, pixels, labels, **kwargs):
        calls.append(len(pixels))
        return real(self, model, pixels, labels, **kwargs)

    monkeypatch.setattr(PerturbedSignGradient, "__call__", spy)
    monkeypatch.setattr(psg_module, "SEARCH_BATCH", 64)
    data = unlearn_data()
    method = get_method("psg")
    result = method.run(tiny_model(), data, method.make_config(
        {"device": "cpu", "epochs": 2, "relabel": "once", "batch_size": 16, "inner_steps": 1, "stop_at": "passes"}))
    n = len(data.forget_indices)
    assert calls == [min(64, n - start) for start in range(0, n, 64)]  # not one call per batch of 16
    assert result.diagnostics["searched_images"] == n
    assert sum(result.diagnostics["new_label_counts"].values()) == n


def test_new_label_bookkeeping_is_per_image():
    method = get_method("psg")
    method.record_labels = True
    data = unlearn_data()
    result = method.run(tiny_model(), data, method.make_config({"device": "cpu", "epochs": 2, "inner_steps": 1}))
    table = result.diagnostics["new_labels_per_pass"]
    assert table.shape == (2, len(data.forget_indices)) and bool((table >= 0).all())
    last = torch.bincount(table[-1], minlength=4).tolist()
    assert result.diagnostics["new_label_counts"] == {data.imageset.classes[k]: c for k, c in enumerate(last) if c}


def test_reference_loop_agrees_with_psg_reference_on_the_new_labels():
    """Same batches, same noise: the naive published loop and psg_reference pick the same ŷ."""
    data = unlearn_data()
    method = get_method("psg")
    method.record_labels = True
    config = method.make_config({"device": "cpu", "epochs": 2}, preset="psg_reference")
    ours = method.run(tiny_model(), data, config).diagnostics["new_labels_per_pass"]
    reference = reference_loop(tiny_model(), data, config)
    assert reference.new_labels.shape == ours.shape == (2, len(data.forget_indices))
    assert label_agreement(reference.new_labels, ours) >= 0.95
    assert not reference.model.training and reference.seconds > 0


def test_label_agreement_refuses_tables_of_different_shapes():
    with pytest.raises(ValueError, match="shape"):
        label_agreement(torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long))
    assert math.isclose(label_agreement(torch.tensor([[1, 2]]), torch.tensor([[1, 3]])), 0.5)


def test_bench_vs_reference_flag_reports_speedup_and_agreement(monkeypatch, capsys):
    """The CLI wiring (the timing itself is a benchmark, not a test): the flag runs the comparison
    on the first scenario given and prints the speed-up and the agreement."""
    from unlearn_core import bench_reference
    from unlearn_core.cli import main

    seen = {}

    def fake(scenario, device, repeats, seed, log):
        seen.update(scenario=scenario, repeats=repeats)
        return bench_reference.VsReference(scenario, "cpu", 146, repeats, [4.0, 6.0], [2.0, 2.0], agreement=0.99,
                                           diagnostics={"forward_images": 10, "backward_images": 5,
                                                        "monitor_images": 1, "monitor_seconds": 0.1})

    monkeypatch.setattr(bench_reference, "run_vs_reference", fake)
    assert main(["bench", "--vs-reference", "--scenarios", "digits_random10", "--repeats", "2"]) == 0
    out = capsys.readouterr().out
    assert seen == {"scenario": "digits_random10", "repeats": 2}
    assert "speed-up: 2.50x" in out and "99.0%" in out


def test_cpu_inference_uses_small_channels_last_batches_and_gives_the_same_logits():
    """Evaluation forwards on the CPU run in small channels_last batches (faster there) and give
    what one big default-layout batch gives, up to float rounding; the caller's model is untouched."""
    from unlearn_core.data.builtin import load_builtin
    from unlearn_core.models import inference
    from unlearn_core.models.architectures import build_model, spec_for

    data = load_builtin("digits")
    torch.manual_seed(0)
    model = build_model(spec_for(data)).eval()
    indices = np.arange(100)
    seen: list[torch.Tensor] = []
    handle = model.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    small = inference.predict_logits(model, data.images, indices)
    handle.remove()
    assert max(len(batch) for batch in seen) == inference.CPU_BATCH
    assert all(batch.is_contiguous(memory_format=torch.channels_last) for batch in seen)
    with torch.no_grad():
        whole = model(data.images[indices].float() / 255).numpy()
    np.testing.assert_allclose(small, whole, rtol=1e-4, atol=1e-4)
    assert all(p.is_contiguous() for p in model.parameters())
